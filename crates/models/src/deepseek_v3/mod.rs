//! A DeepSeek-V3-style model (arXiv 2412.19437): multi-head latent attention, DeepSeekMoE with
//! auxiliary-loss-free load balancing, multi-token prediction; HF `DeepseekV3ForCausalLM`
//! config keys and tensor names.

pub mod config;
pub mod hf;
pub mod mla;
pub mod model;
pub mod moe;

pub use config::{Balance, V3Config};
pub use hf::{hf_files, load_hf, load_hf_for, save_hf};
pub use mla::{Mla, QProj};
pub use model::{DeepseekV3, Ffn, MlaCache, MtpModule, SpecStats, V3Layer, V3Loss};
pub use moe::{max_vio, route, Gate, Moe, MoeOutput};
