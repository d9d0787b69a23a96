//! Models built from [`ferrolab_nn`] layers.

pub mod any;
pub mod deepseek_v3;
pub mod gpt;
pub mod hf;
pub mod lm;

pub use any::{max_vio, Cache, LossParts, Model, ModelConfig};
pub use deepseek_v3::{Balance, DeepseekV3, MlaCache, SpecStats, V3Config, V3Loss};
pub use gpt::{Gpt, GptConfig};
pub use lm::{Attention, DecoderLayer, KvCache, Lm, LmConfig, SwiGlu};

/// `x` as a JSON value as `serde_json::to_string` writes it: an `f32` such as 1e-4 stays 1e-4,
/// where `serde_json::to_value` widens it to 0.00009999999747378752.
pub fn json_value<T: serde::Serialize>(x: &T) -> serde_json::Result<serde_json::Value> {
    serde_json::from_str(&serde_json::to_string(x)?)
}

/// The largest value ferrolab accepts for a config's size field, far above any published
/// model's (DeepSeek-V3: hidden 7168, vocabulary 129,280, 256 experts, 61 layers). The bounds
/// keep parameter counts and buffer sizes well inside 64 bits; what a machine can hold is
/// checked separately against its memory.
pub(crate) fn size_limit(field: &str) -> usize {
    match field {
        "vocab_size" | "max_position_embeddings" => 1 << 22,
        "intermediate_size" | "moe_intermediate_size" => 1 << 18,
        "hidden_size" | "kv_lora_rank" | "q_lora_rank" => 1 << 16,
        "n_routed_experts" => 1 << 12,
        _ => 1 << 10, // layers, heads, head dims, shared experts, top-k
    }
}
