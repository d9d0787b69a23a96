//! Models built from [`ferrolab_nn`] layers.

pub mod gpt;
pub mod lm;

pub use gpt::{Gpt, GptConfig};
pub use lm::{Attention, DecoderLayer, KvCache, Lm, LmConfig, SwiGlu};
