//! DeepSeek LLM's scaling laws (arXiv 2401.02954, sections 3.1-3.2): hyperparameters and the
//! model/data split from a compute budget, and the model scale M of a config.
//!
//! M is non-embedding FLOPs per token (forward and backward), attention included:
//! `6 x non-embedding matmul parameters + 6 n_layer l_seq n_h (d_qk + d_v)`, which for a
//! multi-head model with a 8/3 d SwiGLU is the paper's `72 n_layer d^2 + 12 n_layer d l_seq`.
//! Compute C = M D for D training tokens.

use ferrolab_models::{LmConfig, V3Config};

/// `eta_opt = 0.3118 C^-0.1250`.
pub fn eta_opt(c: f64) -> f64 {
    0.3118 * c.powf(-0.1250)
}

/// `B_opt = 0.2920 C^0.3271` tokens.
pub fn batch_opt_tokens(c: f64) -> f64 {
    0.2920 * c.powf(0.3271)
}

/// `M_opt = 0.1715 C^0.5243` FLOPs per token.
pub fn m_opt(c: f64) -> f64 {
    0.1715 * c.powf(0.5243)
}

/// `D_opt = 5.8316 C^0.4757` tokens.
pub fn d_opt(c: f64) -> f64 {
    5.8316 * c.powf(0.4757)
}

/// The paper's M for a multi-head model of `layers` x width `d` at sequence length `l`.
pub fn m_standard(layers: usize, d: usize, l: usize) -> f64 {
    let (n, d, l) = (layers as f64, d as f64, l as f64);
    72.0 * n * d * d + 12.0 * n * d * l
}

/// M of a config at sequence length `l` from its real shapes (GQA counted exactly).
pub fn m_of(cfg: &LmConfig, l: usize) -> f64 {
    let (_, non_emb) = cfg.num_params();
    // norms are not matmuls
    let norm = cfg.num_hidden_layers * 2 * cfg.hidden_size + cfg.hidden_size;
    let matmul = (non_emb - norm) as f64;
    let attn = 6.0
        * cfg.num_hidden_layers as f64
        * l as f64
        * cfg.num_attention_heads as f64
        * (2 * cfg.head_dim()) as f64;
    6.0 * matmul + attn
}

/// M of a DeepSeek-V3-style config at sequence length `l`: 6 x the matmul parameters one token
/// uses (routed experts counted `num_experts_per_tok` times, not all of them; MTP modules
/// left out, as they are not part of the model at inference) plus MLA's attention term
/// `6 n l H (d_qk + d_v)`.
pub fn m_of_v3(cfg: &V3Config, l: usize) -> f64 {
    let main = V3Config {
        num_nextn_predict_layers: 0,
        ..cfg.clone()
    };
    let (_, active) = main.num_params();
    let (c, n) = (cfg.hidden_size, cfg.num_hidden_layers);
    let emb = cfg.vocab_size * c * if cfg.tie_word_embeddings { 1 } else { 2 };
    let moe_layers = (0..n).filter(|&i| cfg.is_moe_layer(i)).count();
    let not_matmul = emb
        + c
        + n * (2 * c + cfg.kv_lora_rank + cfg.q_lora_rank)
        + moe_layers * cfg.n_routed_experts;
    let attn = 6.0
        * n as f64
        * l as f64
        * cfg.num_attention_heads as f64
        * (cfg.qk_head_dim() + cfg.v_head_dim) as f64;
    6.0 * (active - not_matmul) as f64 + attn
}

/// A plan for a compute budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Compute budget C (FLOPs).
    pub compute: f64,
    /// Sequence length used to turn tokens into sequences.
    pub seq_len: usize,
    /// Optimal peak learning rate.
    pub eta: f64,
    /// Optimal batch size in tokens.
    pub batch_tokens: f64,
    /// Optimal model scale M (FLOPs per token).
    pub m: f64,
    /// Optimal data D (tokens).
    pub d: f64,
    /// A model shape `(layers, width)` whose M is close to `m`.
    pub layers: usize,
    /// Its width (a multiple of 64).
    pub width: usize,
    /// Its M.
    pub shape_m: f64,
    /// Whether `shape_m` is within 10% of `m`; when no shape of the searched range is, the
    /// closest is given (very small or very large budgets).
    pub shape_fits: bool,
}

impl Plan {
    /// Batch size in sequences of `seq_len` tokens.
    pub fn batch_seqs(&self) -> f64 {
        self.batch_tokens / self.seq_len as f64
    }
}

/// Deepest shape [`plan`] considers.
pub const MAX_LAYERS: usize = 256;
/// Widest shape [`plan`] considers (ferrolab's limit on `hidden_size`).
pub const MAX_WIDTH: usize = 1 << 16;

/// Plans a run of compute `c` at sequence length `l`.
///
/// The shape: for each depth the width (multiple of 64) that brings M closest to M_opt,
/// choosing the depth whose width/depth ratio is closest to 128 among shapes within 10% of
/// M_opt (DeepSeek LLM 7B has 4096/30 = 137, 67B 8192/95 = 86).
pub fn plan(c: f64, l: usize) -> Plan {
    let m = m_opt(c);
    let mut best: Option<(f64, usize, usize, f64)> = None;
    for n in 1..=MAX_LAYERS {
        let (nf, lf) = (n as f64, l as f64);
        // 72 n d^2 + 12 n l d - M = 0
        let d = (-(12.0 * nf * lf) + ((12.0 * nf * lf).powi(2) + 4.0 * 72.0 * nf * m).sqrt())
            / (2.0 * 72.0 * nf);
        // a multiple of 64 in 64..=MAX_WIDTH (clamped in f64: no integer overflow)
        let w = ((d / 64.0).round().clamp(1.0, (MAX_WIDTH / 64) as f64) as usize) * 64;
        let sm = m_standard(n, w, l);
        let m_err = (sm / m).ln().abs();
        let aspect_err = ((w as f64 / nf) / 128.0).ln().abs();
        let score = if m_err <= 0.1f64.ln_1p() {
            aspect_err
        } else {
            10.0 + m_err
        };
        if best.is_none_or(|b| score < b.0) {
            best = Some((score, n, w, sm));
        }
    }
    let (score, layers, width, shape_m) =
        best.unwrap_or((f64::INFINITY, 1, 64, m_standard(1, 64, l)));
    Plan {
        compute: c,
        seq_len: l,
        eta: eta_opt(c),
        batch_tokens: batch_opt_tokens(c),
        m,
        d: d_opt(c),
        layers,
        width,
        shape_m,
        shape_fits: score < 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn deepseek_llm_7b_check() {
        // 30 layers, d 4096, l 4096: M = 4.23e10; 2T tokens -> C = 8.46e22
        let m = m_standard(30, 4096, 4096);
        assert!(rel(m, 4.23e10) < 2e-3, "{m}");
        let c = m * 2e12;
        assert!(rel(c, 8.46e22) < 2e-3, "{c}");
        assert!(
            rel(batch_opt_tokens(c), 9.22e6) < 5e-3,
            "{}",
            batch_opt_tokens(c)
        );
        assert!(rel(eta_opt(c), 4.25e-4) < 5e-3, "{}", eta_opt(c));
        // 2,252 sequences of 4096 (the paper used 2,304)
        let p = plan(c, 4096);
        assert_eq!(p.batch_seqs().round(), 2252.0);
    }

    #[test]
    fn budgets_outside_the_shapes_give_the_closest_shape_and_say_so() {
        // a budget of the paper's range has a shape within 10%
        let p = plan(1e18, 4096);
        assert!(
            p.shape_fits && (p.shape_m / p.m - 1.0).abs() <= 0.1,
            "{p:?}"
        );
        // too small for the narrowest shape, too large for the widest: the closest, flagged
        let small = plan(1e12, 4096);
        assert!(
            !small.shape_fits && (small.layers, small.width) == (1, 64),
            "{small:?}"
        );
        for c in [1e30, 1e80, 1e308] {
            let big = plan(c, 4096);
            assert!(!big.shape_fits, "{big:?}");
            assert_eq!((big.layers, big.width), (MAX_LAYERS, MAX_WIDTH), "{c}");
        }
    }

    #[test]
    fn deepseek_llm_67b_check() {
        let c = m_standard(95, 8192, 4096) * 2e12;
        assert!(rel(eta_opt(c), 3.12e-4) < 5e-3, "{}", eta_opt(c));
    }

    #[test]
    fn m_of_a_multi_head_swiglu_config_is_the_papers_formula() {
        // intermediate 8/3 d exactly (d = 3 * 128): 72 n d^2 + 12 n d l
        let cfg = LmConfig {
            hidden_size: 384,
            intermediate_size: 1024,
            num_hidden_layers: 3,
            num_attention_heads: 6,
            num_key_value_heads: 6,
            ..LmConfig::tiny(1000)
        };
        let a = m_of(&cfg, 512);
        let b = m_standard(3, 384, 512);
        assert!(rel(a, b) < 1e-12, "{a} vs {b}");
        // grouped-query attention has fewer k/v parameters, the same attention cost
        let gqa = LmConfig {
            num_key_value_heads: 2,
            ..cfg.clone()
        };
        let saved = 6.0 * 3.0 * 2.0 * 384.0 * (384.0 - 128.0);
        assert!(rel(a - m_of(&gqa, 512), saved) < 1e-12);
    }

    #[test]
    fn planned_shape_matches_m_opt() {
        for c in [1e15, 1e17, 1e19, 1e21] {
            let p = plan(c, 2048);
            assert!(rel(p.shape_m, p.m) < 0.1, "C {c}: {} vs {}", p.shape_m, p.m);
            assert!(
                rel(p.m * p.d, c) < 0.05,
                "M D should be about C: {}",
                p.m * p.d
            );
        }
    }

    #[test]
    fn deepseek_v3_counts_671b_total_37b_active_and_576_cached_numbers() {
        let cfg: V3Config = serde_json::from_str(
            r#"{"vocab_size":129280,"hidden_size":7168,"intermediate_size":18432,
            "moe_intermediate_size":2048,"num_hidden_layers":61,"num_attention_heads":128,
            "q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,
            "v_head_dim":128,"n_routed_experts":256,"n_shared_experts":1,"num_experts_per_tok":8,
            "n_group":8,"topk_group":4,"routed_scaling_factor":2.5,"first_k_dense_replace":3,
            "num_nextn_predict_layers":0,"max_position_embeddings":4096}"#,
        )
        .unwrap();
        let (total, active) = cfg.num_params();
        // the paper: 671B total, 37B activated per token (main model, MTP excluded)
        assert!((total as f64 / 671e9 - 1.0).abs() < 0.005, "{total}");
        assert!((active as f64 / 37e9 - 1.0).abs() < 0.03, "{active}");
        assert_eq!(cfg.kv_cache_elems_per_token_per_layer(), 576);
        // M: 6 x the active non-embedding matmul parameters plus attention, which at 4096
        // tokens adds 6 * 61 * 4096 * 128 * (192 + 128) = 6.14e10
        let m = m_of_v3(&cfg, 4096);
        let non_emb = active as f64 - 2.0 * 129280.0 * 7168.0;
        let attn = 6.0 * 61.0 * 4096.0 * 128.0 * 320.0;
        assert!(
            (m - attn) / (6.0 * non_emb) > 0.999 && (m - attn) / (6.0 * non_emb) < 1.0,
            "{m}"
        );
    }
}
