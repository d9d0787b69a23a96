//! A DeepSeek-V3-style model (arXiv 2412.19437): multi-head latent attention, DeepSeekMoE with
//! auxiliary-loss-free load balancing, multi-token prediction; HF `DeepseekV3ForCausalLM`
//! config keys and tensor names.

pub mod config;

pub use config::{Balance, V3Config};
