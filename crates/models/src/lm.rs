//! A decoder-only language model as in DeepSeek LLM (arXiv 2401.02954, section 2.2), which is
//! the LLaMA architecture: pre-norm RMSNorm, rotary position embedding, SwiGLU feed-forward,
//! multi-head or grouped-query attention, optional tied input/output embeddings.
//!
//! Config keys and tensor names are those of HF `transformers`' `LlamaForCausalLM` (DeepSeek
//! LLM checkpoints are published in that format), so `config.json` and `model.safetensors`
//! of a run load there and back: `model.embed_tokens.weight`,
//! `model.layers.N.self_attn.{q,k,v,o}_proj.weight`, `model.layers.N.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.N.{input,post_attention}_layernorm.weight`, `model.norm.weight`,
//! `lm_head.weight`. RoPE uses HF's half-split pair layout.
//!
//! Letters: B batch, T new tokens, S cached + new tokens, C `hidden_size`, H heads, Hkv key/value
//! heads, D head dim, F `intermediate_size`, V vocab.

use std::sync::Arc;

use ferrolab_nn::{Embedding, Init, Linear, RmsNorm, Vars};
use ferrolab_tensor::{
    cat, is_grad_enabled, linear, linear_cross_entropy, no_grad, packed_gqa_attention, recompute,
    rope_packed, rope_tables, scaled_dot_product_attention, segments, swiglu, AttnMask, Error,
    Result, RopeLayout, Tensor,
};
use serde::{Deserialize, Serialize};

/// Shape of the model, with HF `config.json` key names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmConfig {
    /// V: vocabulary size (256 for byte tokens).
    pub vocab_size: usize,
    /// C: residual width.
    pub hidden_size: usize,
    /// F: SwiGLU inner width (DeepSeek LLM: about 8/3 C).
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// H: query heads.
    pub num_attention_heads: usize,
    /// Hkv: key/value heads (= H for multi-head attention, fewer for GQA).
    pub num_key_value_heads: usize,
    /// Longest sequence the model is used with (RoPE tables are built this long).
    pub max_position_embeddings: usize,
    /// Added to the mean square in RMSNorm (DeepSeek LLM: 1e-6).
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base (DeepSeek LLM: 10000).
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    /// Output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Std of the normal init (DeepSeek LLM: 0.006 at 7B; small models train faster with
    /// GPT-2's 0.02).
    #[serde(default = "default_init")]
    pub initializer_range: f32,
    /// Run the layers as recomputed segments (activation checkpointing); not an HF key.
    #[serde(default)]
    pub recompute: bool,
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

impl LmConfig {
    /// The `tiny` preset for byte tokens: 4 layers of width 256 (3.2M parameters), trained
    /// in about ten minutes on two cores.
    pub fn tiny(vocab_size: usize) -> LmConfig {
        LmConfig {
            vocab_size,
            hidden_size: 256,
            intermediate_size: 688, // 8/3 * 256 rounded to a multiple of 16
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            initializer_range: 0.02,
            recompute: false,
        }
    }

    /// The `small` preset: 8 layers of width 512 with grouped-query attention (4 KV heads),
    /// about 25M parameters.
    pub fn small(vocab_size: usize) -> LmConfig {
        LmConfig {
            vocab_size,
            hidden_size: 512,
            intermediate_size: 1376,
            num_hidden_layers: 8,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            max_position_embeddings: 512,
            ..LmConfig::tiny(vocab_size)
        }
    }

    /// D: the head dim.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the shape; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::Invalid {
                op: "LmConfig",
                msg: format!("`{field}`: {msg}"),
            })
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(field, "must be > 0".into());
            }
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
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "hidden_size",
                format!(
                    "{} is not divisible by num_attention_heads ({})",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(
                "hidden_size",
                format!("head dim {} must be even for RoPE", self.head_dim()),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "num_attention_heads ({}) is not a multiple of {}",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            );
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return bad("rms_norm_eps", format!("{} must be > 0", self.rms_norm_eps));
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return bad("rope_theta", format!("{} must be > 1", self.rope_theta));
        }
        if !(self.initializer_range > 0.0 && self.initializer_range <= 1.0) {
            return bad(
                "initializer_range",
                format!(
                    "{} must be in (0, 1]: it is the standard deviation of the initial \
                     weights, and above 1 the activations saturate and nothing trains (0.02 is \
                     usual)",
                    self.initializer_range
                ),
            );
        }
        Ok(())
    }

    /// Parameters: `(total, non-embedding)` (non-embedding excludes the embedding table and
    /// an untied output head).
    pub fn num_params(&self) -> (usize, usize) {
        let (c, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let per_layer = c * c + 2 * c * kv + c * c + 3 * c * f + 2 * c;
        let body = self.num_hidden_layers * per_layer + c;
        let emb = v * c * if self.tie_word_embeddings { 1 } else { 2 };
        (body + emb, body)
    }
}

/// Checks ids `(B, T)` fed after `past` cached tokens against the position table and the
/// vocabulary; the error names the problem.
pub(crate) fn check_ids(
    op: &'static str,
    ids: &[u32],
    (b, t, past): (usize, usize, usize),
    max_positions: usize,
    vocab: usize,
) -> Result<()> {
    let bad = |msg: String| Err(Error::Invalid { op, msg });
    if b == 0 || t == 0 || ids.len() != b * t {
        return bad(format!("{} ids for batch {b} x time {t}", ids.len()));
    }
    if past + t > max_positions {
        return bad(format!(
            "{past} cached + {t} new tokens exceed max_position_embeddings ({max_positions})"
        ));
    }
    if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
        return bad(format!("token id {id} is outside the vocabulary ({vocab})"));
    }
    Ok(())
}

/// `o_proj(attention(rope(q_proj x), rope(k_proj x), v_proj x))`.
#[derive(Clone)]
pub struct Attention {
    /// `(H D, C)`.
    pub q_proj: Linear,
    /// `(Hkv D, C)`.
    pub k_proj: Linear,
    /// `(Hkv D, C)`.
    pub v_proj: Linear,
    /// `(C, H D)`.
    pub o_proj: Linear,
    heads: usize,
    kv_heads: usize,
}

/// Keys and values of the tokens seen so far, per layer, for decoding one token at a time.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of key/value state held per token (f32), over all layers.
    pub fn bytes_per_token(cfg: &LmConfig) -> usize {
        2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim() * 4
    }
}

impl Attention {
    fn new(vars: &Vars, cfg: &LmConfig, init: Init) -> Result<Attention> {
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let (h, hkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Attention {
            q_proj: Linear::new(&vars.pp("q_proj"), c, h * d, false, init)?,
            k_proj: Linear::new(&vars.pp("k_proj"), c, hkv * d, false, init)?,
            v_proj: Linear::new(&vars.pp("v_proj"), c, hkv * d, false, init)?,
            o_proj: Linear::new(&vars.pp("o_proj"), h * d, c, false, init)?,
            heads: h,
            kv_heads: hkv,
        })
    }

    /// # Shapes
    /// `x` `(B, T, C)`, `cos`/`sin` `(T, D/2)` -> `(B, T, C)`; `cache` holds `(B, Hkv, S - T, D)`
    /// keys and values before the call and `(B, Hkv, S, D)` after.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let [b, t, _c] = x.dims::<3>("Attention")?;
        let (h, hkv) = (self.heads, self.kv_heads);
        let qkv = if is_grad_enabled() {
            // training: one product with the three weights stacked, so x is read once and the
            // backward gives one input gradient instead of three to add up
            let w = cat(
                &[
                    &self.q_proj.weight,
                    &self.k_proj.weight,
                    &self.v_proj.weight,
                ],
                0,
            )?; // ((H + 2 Hkv) D, C)
            linear(x, &w, None)?
        } else {
            // inference (often one token): stacking the weights would copy them every call;
            // stack the small outputs instead
            let (q, k, v) = (
                self.q_proj.forward(x)?,
                self.k_proj.forward(x)?,
                self.v_proj.forward(x)?,
            );
            cat(&[&q, &k, &v], 2)?
        }; // (B, T, (H + 2 Hkv) D)
        let d = qkv.shape()[2] / (h + 2 * hkv);
        // rotate the q and k heads in place in the packed layout (v passes through)
        let qkv = rope_packed(&qkv, d, h + hkv, cos, sin, RopeLayout::HalfSplit)?;
        let Some(slot) = cache else {
            // training and prefill without a cache: attention straight from the packed
            // projection, no head split or transpose copies forward or backward
            let y = packed_gqa_attention(&qkv, h, hkv, AttnMask::Causal, None)?; // (B, T, H D)
            return self.o_proj.forward(&y);
        };
        let heads = |start: usize, n: usize| -> Result<Tensor> {
            qkv.narrow(2, start * d, n * d)?
                .reshape(&[b, t, n, d])?
                .permute(&[0, 2, 1, 3]) // (B, n, T, D) view
        };
        let q = heads(0, h)?; // (B, H, T, D)
        let (mut k, mut v) = (heads(h, hkv)?, heads(h + hkv, hkv)?); // (B, Hkv, T, D)
        if let Some((pk, pv)) = slot.take() {
            k = cat(&[&pk, &k], 2)?; // (B, Hkv, S, D)
            v = cat(&[&pv, &v], 2)?;
        } else {
            (k, v) = (k.contiguous(), v.contiguous());
        }
        *slot = Some((k.clone(), v.clone()));
        // causal with the new queries aligned to the last keys
        let y = scaled_dot_product_attention(&q, &k, &v, AttnMask::Causal, None)?; // (B, H, T, D)
        let y = y.permute(&[0, 2, 1, 3])?.reshape(&[b, t, h * d])?; // (B, T, H D)
        self.o_proj.forward(&y)
    }
}

/// `down_proj(silu(gate_proj x) * up_proj x)`.
#[derive(Clone)]
pub struct SwiGlu {
    /// `(F, C)`.
    pub gate_proj: Linear,
    /// `(F, C)`.
    pub up_proj: Linear,
    /// `(C, F)`.
    pub down_proj: Linear,
}

impl SwiGlu {
    /// A SwiGLU of width `f` on `c` channels, registered under `vars` (`gate_proj`, `up_proj`,
    /// `down_proj`).
    pub fn new(vars: &Vars, c: usize, f: usize, init: Init) -> Result<SwiGlu> {
        Ok(SwiGlu {
            gate_proj: Linear::new(&vars.pp("gate_proj"), c, f, false, init)?,
            up_proj: Linear::new(&vars.pp("up_proj"), c, f, false, init)?,
            down_proj: Linear::new(&vars.pp("down_proj"), f, c, false, init)?,
        })
    }

    /// # Shapes
    /// `(.., C)` -> `(.., C)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // gate and up projections side by side, then the fused activation (stacked weights
        // when training, stacked outputs at inference; see Attention::forward)
        let gu = if is_grad_enabled() {
            let w = cat(&[&self.gate_proj.weight, &self.up_proj.weight], 0)?; // (2F, C)
            linear(x, &w, None)?
        } else {
            let last = x.rank() as isize - 1;
            cat(
                &[&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?],
                last,
            )?
        }; // (.., 2F)
        let h = swiglu(&gu)?; // (.., F)
        self.down_proj.forward(&h)
    }
}

/// `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Clone)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward.
    pub mlp: SwiGlu,
}

impl DecoderLayer {
    fn new(vars: &Vars, cfg: &LmConfig, init: Init) -> Result<DecoderLayer> {
        let c = cfg.hidden_size;
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(&vars.pp("input_layernorm"), c, cfg.rms_norm_eps)?,
            self_attn: Attention::new(&vars.pp("self_attn"), cfg, init)?,
            post_attention_layernorm: RmsNorm::new(
                &vars.pp("post_attention_layernorm"),
                c,
                cfg.rms_norm_eps,
            )?,
            mlp: SwiGlu::new(&vars.pp("mlp"), c, cfg.intermediate_size, init)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let a = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, cos, sin, cache)?;
        let x = x.add(&a)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        x.add(&m)
    }
}

/// The language model.
pub struct Lm {
    /// Shape.
    pub cfg: LmConfig,
    /// `(V, C)`.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// `(V, C)` output head; `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    /// RoPE `cos`, `sin` tables `(max_position_embeddings, D/2)`.
    rope: (Tensor, Tensor),
}

impl Lm {
    /// A model with normal(0, `initializer_range`) matrices and unit norms, its parameters
    /// registered in `vars` under HF names.
    pub fn new(vars: &Vars, cfg: LmConfig) -> Result<Lm> {
        cfg.validate()?;
        let init = Init::Normal {
            mean: 0.0,
            std: cfg.initializer_range,
        };
        let m = vars.pp("model");
        let c = cfg.hidden_size;
        let positions: Vec<usize> = (0..cfg.max_position_embeddings).collect();
        Ok(Lm {
            embed_tokens: Embedding::new(&m.pp("embed_tokens"), cfg.vocab_size, c, init)?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| DecoderLayer::new(&m.pp(format!("layers.{i}")), &cfg, init))
                .collect::<Result<_>>()?,
            norm: RmsNorm::new(&m.pp("norm"), c, cfg.rms_norm_eps)?,
            lm_head: if cfg.tie_word_embeddings {
                None
            } else {
                Some(Linear::new(
                    &vars.pp("lm_head"),
                    c,
                    cfg.vocab_size,
                    false,
                    init,
                )?)
            },
            rope: rope_tables(&positions, cfg.head_dim(), cfg.rope_theta)?,
            cfg,
        })
    }

    fn check_ids(&self, ids: &[u32], b: usize, t: usize, past: usize) -> Result<()> {
        check_ids(
            "Lm::forward",
            ids,
            (b, t, past),
            self.cfg.max_position_embeddings,
            self.cfg.vocab_size,
        )
    }

    /// Final hidden states for ids `(B, T)` at positions `past..past + T`.
    ///
    /// # Shapes
    /// `ids` `(B, T)` -> `(B, T, C)`.
    fn hidden(
        &self,
        ids: &[u32],
        b: usize,
        t: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.len);
        self.check_ids(ids, b, t, past)?;
        let cos = self.rope.0.narrow(0, past, t)?; // (T, D/2)
        let sin = self.rope.1.narrow(0, past, t)?;
        let mut x = self.embed_tokens.forward(ids, &[b, t])?; // (B, T, C)
        match cache {
            Some(cache) => {
                cache.layers.resize(self.layers.len(), None);
                for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    x = layer.forward(&x, &cos, &sin, Some(slot))?;
                }
                cache.len += t;
            }
            None if self.cfg.recompute => {
                for seg in segments(self.layers.len()) {
                    let layers: Vec<DecoderLayer> = self.layers[seg].to_vec();
                    let (cos, sin) = (cos.clone(), sin.clone());
                    x = recompute(
                        &[&x],
                        Arc::new(move |xs: &[Tensor]| {
                            let mut h = xs[0].clone();
                            for l in &layers {
                                h = l.forward(&h, &cos, &sin, None)?;
                            }
                            Ok(h)
                        }),
                    )?;
                }
            }
            None => {
                for layer in &self.layers {
                    x = layer.forward(&x, &cos, &sin, None)?;
                }
            }
        }
        self.norm.forward(&x)
    }

    fn head(&self, h: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => linear(h, &self.embed_tokens.weight, None),
        }
    }

    /// Logits for token ids `(B, T)` given row-major.
    ///
    /// # Shapes
    /// `ids` `(B, T)` -> `(B, T, V)`.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        self.head(&self.hidden(ids, b, t, None)?)
    }

    /// Mean next-token cross-entropy of `(B, T)` inputs against `(B, T)` targets (-100 is
    /// ignored).
    /// The output head and the cross-entropy run fused, block by block
    /// ([`linear_cross_entropy`]): the `(B T, V)` logits are never materialised.
    pub fn loss(&self, ids: &[u32], targets: &[i64], b: usize, t: usize) -> Result<Tensor> {
        let h = self.hidden(ids, b, t, None)?; // (B, T, C)
        let w = match &self.lm_head {
            Some(head) => &head.weight,
            None => &self.embed_tokens.weight,
        };
        linear_cross_entropy(&h.reshape(&[b * t, self.cfg.hidden_size])?, w, targets)
    }

    /// Feeds `ids` (one sequence) after the tokens in `cache` and returns the logits of the
    /// last one; the cache then holds them all. Each new token costs O(S) attention work
    /// instead of recomputing the whole prefix. Runs without gradients.
    ///
    /// # Shapes
    /// `ids` `(T)` -> `(V)`.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        no_grad(|| {
            let t = ids.len();
            let h = self.hidden(ids, 1, t, Some(cache))?; // (1, T, C)
            let last = h.narrow(1, t - 1, 1)?; // (1, 1, C)
            Ok(self.head(&last)?.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_tensor::rng;

    fn tiny_cfg() -> LmConfig {
        LmConfig {
            vocab_size: 37,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 40,
            ..LmConfig::tiny(37)
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = tiny_cfg();
        c.hidden_size = 30;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("hidden_size") && e.contains("num_attention_heads"),
            "{e}"
        );
        let mut c = tiny_cfg();
        c.num_key_value_heads = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let mut c = tiny_cfg();
        c.vocab_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("vocab_size"));
    }

    #[test]
    fn param_count_matches_the_built_model() {
        for tie in [false, true] {
            let cfg = LmConfig {
                tie_word_embeddings: tie,
                ..tiny_cfg()
            };
            let vars = Vars::new();
            let _m = Lm::new(&vars, cfg.clone()).unwrap();
            assert_eq!(cfg.num_params().0, vars.num_params());
        }
    }

    #[test]
    fn kv_cache_matches_full_recomputation() {
        rng::manual_seed(3);
        let vars = Vars::new();
        let m = Lm::new(&vars, tiny_cfg()).unwrap();
        let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 37).collect();
        let full = m.forward(&ids, 1, 20).unwrap().to_vec(); // (20 x 37)
                                                             // a prompt of 6, then one token at a time
        let mut cache = KvCache::new();
        let mut got = vec![m.forward_cached(&ids[..6], &mut cache).unwrap()];
        for i in 6..20 {
            got.push(m.forward_cached(&ids[i..i + 1], &mut cache).unwrap());
        }
        assert_eq!(cache.len(), 20);
        for (j, row) in got.iter().enumerate() {
            let pos = 5 + j;
            let want = &full[pos * 37..(pos + 1) * 37];
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-4, "position {pos}: {a} vs {b}");
            }
        }
        // past the position table: a clear error, not a panic
        let long: Vec<u32> = ids.iter().chain(&ids).copied().collect();
        let e = m.forward_cached(&long, &mut cache).unwrap_err().to_string();
        assert!(e.contains("max_position_embeddings"), "{e}");
    }

    #[test]
    fn rejects_out_of_vocabulary_ids() {
        let vars = Vars::new();
        let m = Lm::new(&vars, tiny_cfg()).unwrap();
        let e = m.forward(&[1, 99], 1, 2).unwrap_err().to_string();
        assert!(e.contains("99"), "{e}");
    }

    #[test]
    fn recompute_gives_the_same_loss_and_gradients() {
        let ids: Vec<u32> = (0..24).map(|i| (i * 5 + 1) % 37).collect();
        let tg: Vec<i64> = ids.iter().map(|&i| ((i + 1) % 37) as i64).collect();
        let run = |recompute: bool| {
            rng::manual_seed(9);
            let vars = Vars::new();
            let m = Lm::new(
                &vars,
                LmConfig {
                    recompute,
                    num_hidden_layers: 4,
                    ..tiny_cfg()
                },
            )
            .unwrap();
            let loss = m.loss(&ids, &tg, 2, 12).unwrap();
            loss.backward().unwrap();
            let g: Vec<f32> = vars
                .tensors()
                .iter()
                .flat_map(|t| t.grad().unwrap().to_vec())
                .collect();
            (loss.item().unwrap(), g)
        };
        let (l0, g0) = run(false);
        let (l1, g1) = run(true);
        assert_eq!(l0, l1);
        for (a, b) in g0.iter().zip(&g1) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
