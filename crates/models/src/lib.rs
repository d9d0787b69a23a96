//! Models built from [`ferrolab_nn`] layers.

pub mod any;
pub mod deepseek_v3;
pub mod gpt;
pub mod lm;

pub use any::{max_vio, Cache, LossParts, Model, ModelConfig};
pub use deepseek_v3::{Balance, DeepseekV3, MlaCache, SpecStats, V3Config, V3Loss};
pub use gpt::{Gpt, GptConfig};
pub use lm::{Attention, DecoderLayer, KvCache, Lm, LmConfig, SwiGlu};
