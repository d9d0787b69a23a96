//! The shape and training switches of a DeepSeek-V3-style model, with HF `config.json` key
//! names (`transformers`' `DeepseekV3Config`, model_type `deepseek_v3`).
//!
//! Keys that are not HF's (`moe_balance`, `bias_update_speed`, `mtp_loss_weight`,
//! `recompute`) are ferrolab training switches; HF ignores them when it reads the file.

use ferrolab_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the routed experts are kept in balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The V3 sigmoid gate with nothing pulling towards balance (the bias stays 0).
    None,
    /// The classic baseline: a softmax gate and the Switch/GShard auxiliary loss
    /// `aux_loss_alpha * N_r * sum_i f_i P_i` over the whole micro-batch.
    AuxLoss,
    /// DeepSeek-V3: the sigmoid gate selects on score + per-expert bias, the bias is moved by
    /// `bias_update_speed * sign(mean load - load)` after each optimizer step (no gradient), plus
    /// the complementary sequence-wise loss with `aux_loss_alpha` when `seq_aux` is set.
    AuxFree,
}

/// DeepSeek-V3 shape (HF key names) plus ferrolab's training switches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct V3Config {
    /// V: vocabulary size.
    pub vocab_size: usize,
    /// C: residual width.
    pub hidden_size: usize,
    /// Inner width of the dense SwiGLU layers (the first `first_k_dense_replace`).
    pub intermediate_size: usize,
    /// Inner width of one routed (and of one shared) expert.
    pub moe_intermediate_size: usize,
    /// Decoder layers (the MTP modules are extra).
    pub num_hidden_layers: usize,
    /// H: attention heads.
    pub num_attention_heads: usize,
    /// Rank of the query compression (`q_a_proj`); 0 (HF: null) = one plain `q_proj`.
    #[serde(
        default,
        deserialize_with = "null_as_zero",
        serialize_with = "zero_as_null"
    )]
    pub q_lora_rank: usize,
    /// d_c: rank of the compressed key/value latent (`kv_a_proj_with_mqa`, `kv_a_layernorm`).
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without position (from the latent).
    pub qk_nope_head_dim: usize,
    /// Per-head query dims and the one shared key with RoPE (decoupled RoPE).
    pub qk_rope_head_dim: usize,
    /// Per-head value dim.
    pub v_head_dim: usize,
    /// N_r: routed experts per MoE layer.
    pub n_routed_experts: usize,
    /// N_s: shared experts per MoE layer (one SwiGLU `n_shared_experts` times as wide).
    pub n_shared_experts: usize,
    /// K_r: routed experts per token.
    pub num_experts_per_tok: usize,
    /// Expert groups for group-limited routing.
    pub n_group: usize,
    /// Groups kept per token.
    pub topk_group: usize,
    /// Routed weights are multiplied by this.
    pub routed_scaling_factor: f32,
    /// Renormalise the selected weights to sum to 1 (before the scaling factor).
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    /// Layers `[0, first_k_dense_replace)` are dense, the rest MoE.
    pub first_k_dense_replace: usize,
    /// D: multi-token-prediction modules (0 = none; V3: 1).
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    /// Longest sequence (RoPE tables are built this long).
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base. HF writes it inside `rope_parameters` in newer files; [`V3Config::from_hf`]
    /// reads both.
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    /// RoPE pairs channels `(2i, 2i + 1)` (true, HF's default for DeepSeek-V3) or
    /// `(i, i + d/2)`.
    #[serde(default = "yes")]
    pub rope_interleave: bool,
    /// Std of the normal init.
    #[serde(default = "default_init")]
    pub initializer_range: f32,
    /// Output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Balance loss coefficient: the sequence-wise loss's alpha for `aux_free` (V3: 1e-4), the
    /// auxiliary loss coefficient for `aux_loss` (Switch: 1e-2).
    #[serde(default = "default_alpha")]
    pub aux_loss_alpha: f32,
    /// Apply the complementary sequence-wise balance loss (`aux_free` only).
    #[serde(default = "yes")]
    pub seq_aux: bool,
    /// ferrolab: balancing policy.
    #[serde(default = "default_balance")]
    pub moe_balance: Balance,
    /// ferrolab: gamma of the bias update (V3: 0.001).
    #[serde(default = "default_gamma")]
    pub bias_update_speed: f32,
    /// ferrolab: lambda, the weight of the MTP loss (`lambda / D * sum_k L_k`; V3: 0.3 then 0.1).
    #[serde(default = "default_lambda")]
    pub mtp_loss_weight: f32,
    /// ferrolab: run the layers as recomputed segments (activation checkpointing).
    #[serde(default)]
    pub recompute: bool,
}

fn yes() -> bool {
    true
}
fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    10000.0
}
fn default_init() -> f32 {
    0.02
}
fn default_alpha() -> f32 {
    1e-4
}
fn default_balance() -> Balance {
    Balance::AuxFree
}
fn default_gamma() -> f32 {
    1e-3
}
fn default_lambda() -> f32 {
    0.3
}
fn zero_as_null<S: serde::Serializer>(v: &usize, s: S) -> std::result::Result<S::Ok, S::Error> {
    if *v == 0 {
        s.serialize_none()
    } else {
        s.serialize_u64(*v as u64)
    }
}
fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.unwrap_or(0))
}

impl V3Config {
    /// The `tiny` DeepSeek-V3-style preset: 4 layers of width 256, the first dense, then MoE
    /// with 1 shared + 8 routed experts (2 per token), MLA with a 96-dim latent and a 16-dim
    /// rope key, one MTP module.
    pub fn tiny(vocab_size: usize) -> V3Config {
        V3Config {
            vocab_size,
            hidden_size: 256,
            intermediate_size: 688,
            moe_intermediate_size: 176,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            q_lora_rank: 0,
            kv_lora_rank: 96,
            qk_nope_head_dim: 48,
            qk_rope_head_dim: 16,
            v_head_dim: 64,
            n_routed_experts: 8,
            n_shared_experts: 1,
            num_experts_per_tok: 2,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            norm_topk_prob: true,
            first_k_dense_replace: 1,
            num_nextn_predict_layers: 1,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_interleave: true,
            initializer_range: 0.02,
            tie_word_embeddings: false,
            aux_loss_alpha: 1e-4,
            seq_aux: true,
            moe_balance: Balance::AuxFree,
            bias_update_speed: 1e-3,
            mtp_loss_weight: 0.3,
            recompute: false,
        }
    }

    /// Per-head query/key dim (`qk_nope_head_dim + qk_rope_head_dim`).
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether decoder layer `i` (or MTP module block `i >= num_hidden_layers`) is MoE.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.n_routed_experts > 0 && i >= self.first_k_dense_replace
    }

    /// Elements cached per token per layer by the absorbed MLA path: the normalised latent
    /// plus the shared rope key (`kv_lora_rank + qk_rope_head_dim`; 576 for DeepSeek-V3).
    pub fn kv_cache_elems_per_token_per_layer(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Parameters (routing-bias buffers included): `(total, active per token)`, where active
    /// counts only `num_experts_per_tok` of the routed experts of each MoE layer. MTP modules
    /// are included in both.
    pub fn num_params(&self) -> (usize, usize) {
        let (c, h) = (self.hidden_size, self.num_attention_heads);
        let qk = self.qk_head_dim();
        let q = if self.q_lora_rank == 0 {
            c * h * qk
        } else {
            c * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * qk
        };
        let attn = q
            + c * (self.kv_lora_rank + self.qk_rope_head_dim)
            + self.kv_lora_rank
            + self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
            + h * self.v_head_dim * c
            + 2 * c;
        let expert = 3 * c * self.moe_intermediate_size;
        let layer = |i: usize| -> (usize, usize) {
            if self.is_moe_layer(i) {
                let e = self.n_routed_experts;
                let fixed = e * c + e + self.n_shared_experts * expert;
                (
                    attn + fixed + e * expert,
                    attn + fixed + self.num_experts_per_tok * expert,
                )
            } else {
                let d = attn + 3 * c * self.intermediate_size;
                (d, d)
            }
        };
        let emb = self.vocab_size * c * if self.tie_word_embeddings { 1 } else { 2 };
        let (mut total, mut active) = (emb + c, emb + c);
        for i in 0..self.num_hidden_layers {
            let (t, a) = layer(i);
            total += t;
            active += a;
        }
        for k in 0..self.num_nextn_predict_layers {
            let extra = 2 * c + 2 * c * c + c;
            let (t, a) = layer(self.num_hidden_layers + k);
            total += t + extra;
            active += a + extra;
        }
        (total, active)
    }

    /// Checks the shape; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::Invalid {
                op: "V3Config",
                msg: format!("`{field}`: {msg}"),
            })
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(field, "must be > 0".into());
            }
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("q_lora_rank", self.q_lora_rank),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("n_routed_experts", self.n_routed_experts),
            ("n_shared_experts", self.n_shared_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("n_group", self.n_group),
            ("first_k_dense_replace", self.first_k_dense_replace),
            ("num_nextn_predict_layers", self.num_nextn_predict_layers),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v > crate::size_limit(field) {
                return bad(
                    field,
                    format!(
                        "{v} is above ferrolab's limit of {}",
                        crate::size_limit(field)
                    ),
                );
            }
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return bad(
                "qk_rope_head_dim",
                format!("{} must be even for RoPE", self.qk_rope_head_dim),
            );
        }
        if self.n_routed_experts > 0 {
            if self.moe_intermediate_size == 0 {
                return bad(
                    "moe_intermediate_size",
                    "must be > 0 with routed experts".into(),
                );
            }
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
                return bad(
                    "num_experts_per_tok",
                    format!(
                        "{} must be in 1..={} (n_routed_experts)",
                        self.num_experts_per_tok, self.n_routed_experts
                    ),
                );
            }
            if self.n_group == 0 || !self.n_routed_experts.is_multiple_of(self.n_group) {
                return bad(
                    "n_group",
                    format!(
                        "{} must divide n_routed_experts ({})",
                        self.n_group, self.n_routed_experts
                    ),
                );
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return bad(
                    "topk_group",
                    format!(
                        "{} must be in 1..={} (n_group)",
                        self.topk_group, self.n_group
                    ),
                );
            }
            let per_group = self.n_routed_experts / self.n_group;
            if self.n_group > 1 && per_group < 2 {
                return bad(
                    "n_group",
                    format!("groups of {per_group} expert: group scores need at least 2"),
                );
            }
            if self.topk_group * per_group < self.num_experts_per_tok {
                return bad(
                    "topk_group",
                    format!(
                        "{} groups of {per_group} experts hold fewer than num_experts_per_tok ({})",
                        self.topk_group, self.num_experts_per_tok
                    ),
                );
            }
        }
        for (field, v) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("initializer_range", self.initializer_range),
            ("routed_scaling_factor", self.routed_scaling_factor),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(field, format!("{v} must be > 0"));
            }
        }
        if self.initializer_range > 1.0 {
            return bad(
                "initializer_range",
                format!(
                    "{} is the standard deviation of the initial weights: above 1 the \
                     activations saturate and nothing trains (0.02 is usual)",
                    self.initializer_range
                ),
            );
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return bad("rope_theta", format!("{} must be > 1", self.rope_theta));
        }
        for (field, v) in [
            ("aux_loss_alpha", self.aux_loss_alpha),
            ("bias_update_speed", self.bias_update_speed),
            ("mtp_loss_weight", self.mtp_loss_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("{v} must be >= 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_bad_fields_are_named() {
        V3Config::tiny(2048).validate().unwrap();
        let mut c = V3Config::tiny(100);
        c.n_group = 3;
        assert!(c.validate().unwrap_err().to_string().contains("n_group"));
        let mut c = V3Config::tiny(100);
        c.num_experts_per_tok = 9;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_experts_per_tok"));
        let mut c = V3Config::tiny(100);
        c.qk_rope_head_dim = 15;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("qk_rope_head_dim"));
    }

    #[test]
    fn deepseek_v3_caches_576_elements_per_token_per_layer() {
        let c = V3Config {
            kv_lora_rank: 512,
            qk_rope_head_dim: 64,
            ..V3Config::tiny(129280)
        };
        assert_eq!(c.kv_cache_elems_per_token_per_layer(), 576);
    }

    #[test]
    fn hf_null_q_lora_rank_reads_as_zero() {
        let mut v = serde_json::to_value(V3Config::tiny(10)).unwrap();
        v["q_lora_rank"] = serde_json::Value::Null;
        let c: V3Config = serde_json::from_value(v).unwrap();
        assert_eq!(c.q_lora_rank, 0);
    }
}
