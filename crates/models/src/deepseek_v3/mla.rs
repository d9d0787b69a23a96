//! Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 section 2.1; V3 section 2.1.1).
//!
//! Queries: `q = W_q x` (`q_lora_rank` 0) or `q = W_qb RMSNorm(W_qa x)`, per head
//! `[q_nope (d_nope) | q_pe (d_rope)]`. Keys and values come from one compressed latent:
//! `[c | k_pe] = W_kva x`, `c' = RMSNorm(c)` (`kv_lora_rank` = d_c), `[k_nope | v] = W_kvb c'`
//! per head, and one rope key `k_pe` shared by all heads (decoupled RoPE). Scores use
//! `[q_nope | rope(q_pe)] . [k_nope | rope(k_pe)] / sqrt(d_nope + d_rope)`.
//!
//! Two paths:
//! - **naive** (training, prefill, and the plain KV cache): materialise `k` and `v` per head.
//! - **absorbed** (decoding): cache only `c'` and `rope(k_pe)` per token (`d_c + d_rope`
//!   numbers, 576 at V3's sizes) and fold `W_UK` (the key rows of `W_kvb`) into the query,
//!   `W_UV` (the value rows) into the output: `q_nope . (W_UK_h c') = (W_UK_h^T q_nope) . c'`,
//!   so attention runs as multi-query attention over the latents with one shared "head".
//!
//! HF names: `q_proj` or `q_a_proj`, `q_a_layernorm`, `q_b_proj`; `kv_a_proj_with_mqa`,
//! `kv_a_layernorm`, `kv_b_proj`, `o_proj`. RoPE pairs channels `(2i, 2i + 1)` when
//! `rope_interleave` (HF's default for this model, which de-interleaves then rotates halves:
//! the same scores) and `(i, i + d_rope / 2)` otherwise.
//!
//! Letters: B batch, T new tokens, S cached + new, C width, H heads.

use ferrolab_nn::{Init, Linear, RmsNorm, Vars};
use ferrolab_tensor::{
    attention_bthd, cat, head_cat, rope_tail, scaled_dot_product_attention, AttnMask, Result,
    RopeLayout, Tensor,
};

use super::config::V3Config;

/// Epsilon of the latent norms (`q_a_layernorm`, `kv_a_layernorm`): fixed at 1e-6 in
/// DeepSeek's and HF's code whatever `rms_norm_eps` says.
pub const LATENT_EPS: f32 = 1e-6;

/// The query projection: plain or low-rank.
#[derive(Clone)]
pub enum QProj {
    /// `q_proj` `(H (d_nope + d_rope), C)`.
    Plain(Linear),
    /// `q_a_proj` `(d_q, C)`, `q_a_layernorm` `(d_q)`, `q_b_proj` `(H (d_nope + d_rope), d_q)`.
    LowRank {
        /// Down-projection.
        q_a_proj: Linear,
        /// Norm of the query latent.
        q_a_layernorm: RmsNorm,
        /// Up-projection.
        q_b_proj: Linear,
    },
}

/// Cached state of one layer: `(k, v)` `(B, S, H, ..)` for the naive path, `(c', k_pe)`
/// `(B, 1, S, d_c)` and `(B, 1, S, d_rope)` for the absorbed one.
pub type LayerCache = Option<(Tensor, Tensor)>;

/// One MLA block.
#[derive(Clone)]
pub struct Mla {
    /// Query projection.
    pub q: QProj,
    /// `(d_c + d_rope, C)`.
    pub kv_a_proj_with_mqa: Linear,
    /// Norm of the latent `(d_c)`.
    pub kv_a_layernorm: RmsNorm,
    /// `(H (d_nope + d_v), d_c)`.
    pub kv_b_proj: Linear,
    /// `(C, H d_v)`.
    pub o_proj: Linear,
    heads: usize,
    nope: usize,
    rope_dim: usize,
    v_dim: usize,
    latent: usize,
    layout: RopeLayout,
}

impl Mla {
    /// A block registered under `vars` (a layer's `self_attn`).
    pub fn new(vars: &Vars, cfg: &V3Config, init: Init) -> Result<Mla> {
        let c = cfg.hidden_size;
        let h = cfg.num_attention_heads;
        let qk = cfg.qk_head_dim();
        let q = if cfg.q_lora_rank == 0 {
            QProj::Plain(Linear::new(&vars.pp("q_proj"), c, h * qk, false, init)?)
        } else {
            QProj::LowRank {
                q_a_proj: Linear::new(&vars.pp("q_a_proj"), c, cfg.q_lora_rank, false, init)?,
                q_a_layernorm: RmsNorm::new(
                    &vars.pp("q_a_layernorm"),
                    cfg.q_lora_rank,
                    LATENT_EPS,
                )?,
                q_b_proj: Linear::new(&vars.pp("q_b_proj"), cfg.q_lora_rank, h * qk, false, init)?,
            }
        };
        Ok(Mla {
            q,
            kv_a_proj_with_mqa: Linear::new(
                &vars.pp("kv_a_proj_with_mqa"),
                c,
                cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                false,
                init,
            )?,
            kv_a_layernorm: RmsNorm::new(&vars.pp("kv_a_layernorm"), cfg.kv_lora_rank, LATENT_EPS)?,
            kv_b_proj: Linear::new(
                &vars.pp("kv_b_proj"),
                cfg.kv_lora_rank,
                h * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                false,
                init,
            )?,
            o_proj: Linear::new(&vars.pp("o_proj"), h * cfg.v_head_dim, c, false, init)?,
            heads: h,
            nope: cfg.qk_nope_head_dim,
            rope_dim: cfg.qk_rope_head_dim,
            v_dim: cfg.v_head_dim,
            latent: cfg.kv_lora_rank,
            layout: if cfg.rope_interleave {
                RopeLayout::Interleaved
            } else {
                RopeLayout::HalfSplit
            },
        })
    }

    fn scale(&self) -> f32 {
        1.0 / ((self.nope + self.rope_dim) as f32).sqrt()
    }

    /// Queries `(B, T, H qk)` with the rope part of each head rotated, and the key projection
    /// `[c | rope(k_pe)]` `(B, T, d_c + d_rope)`.
    fn project(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<[Tensor; 2]> {
        let (nope, r) = (self.nope, self.rope_dim);
        let q = match &self.q {
            QProj::Plain(l) => l.forward(x)?,
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => q_b_proj.forward(&q_a_layernorm.forward(&q_a_proj.forward(x)?)?)?,
        };
        let q = rope_tail(&q, nope + r, r, cos, sin, self.layout)?;
        let kv_a = self.kv_a_proj_with_mqa.forward(x)?; // (B, T, d_c + r)
        let kv_a = rope_tail(&kv_a, self.latent + r, r, cos, sin, self.layout)?;
        Ok([q, kv_a])
    }

    /// # Shapes
    /// `x` `(B, T, C)`, `cos`/`sin` `(T, d_rope / 2)` for positions `S - T..S` -> `(B, T, C)`.
    /// `cache` (if any) holds the state of the first `S - T` tokens before the call and of
    /// all `S` after; `absorbed` picks the path (and so the cache format).
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut LayerCache>,
        absorbed: bool,
    ) -> Result<Tensor> {
        let [b, t, _] = x.dims::<3>("Mla")?;
        let (h, nope, r, dv) = (self.heads, self.nope, self.rope_dim, self.v_dim);
        let [q, kv_a] = self.project(x, cos, sin)?;
        let c = self
            .kv_a_layernorm
            .forward(&kv_a.narrow(2, 0, self.latent)?)?; // (B, T, d_c)
        let heads = |x: &Tensor, d: usize| -> Result<Tensor> {
            x.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]) // (B, H, T, d) view
        };
        let y = if absorbed {
            let q = heads(&q, nope + r)?; // (B, H, T, qk)
            let kv_w = self
                .kv_b_proj
                .weight
                .reshape(&[h, nope + dv, self.latent])?;
            let w_uk = kv_w.narrow(1, 0, nope)?; // (H, d_nope, d_c)
            let w_uv = kv_w.narrow(1, nope, dv)?; // (H, d_v, d_c)
            let q_lat = q.narrow(3, 0, nope)?.matmul(&w_uk)?; // (B, H, T, d_c)
            let q = cat(&[&q_lat, &q.narrow(3, nope, r)?], 3)?; // (B, H, T, d_c + r)
            let mut lat = c.reshape(&[b, 1, t, self.latent])?;
            let mut kpe = kv_a.narrow(2, self.latent, r)?.reshape(&[b, 1, t, r])?;
            if let Some(slot) = cache {
                if let Some((pc, pk)) = slot.take() {
                    lat = cat(&[&pc, &lat], 2)?;
                    kpe = cat(&[&pk, &kpe], 2)?;
                } else {
                    kpe = kpe.contiguous();
                }
                *slot = Some((lat.clone(), kpe.clone()));
            }
            // multi-query attention over the latents; the values are the latents themselves
            let k = cat(&[&lat, &kpe], 3)?; // (B, 1, S, d_c + r)
            let o =
                scaled_dot_product_attention(&q, &k, &lat, AttnMask::Causal, Some(self.scale()))?;
            o.matmul(&w_uv.transpose(1, 2)?)?.permute(&[0, 2, 1, 3])? // (B, T, H, d_v) view
        } else {
            let kv = self.kv_b_proj.forward(&c)?; // (B, T, H (d_nope + d_v))
                                                  // per head [k_nope | shared rope key], one contiguous pass
            let mut k =
                head_cat(&kv, h, nope, &kv_a, self.latent, r)?.reshape(&[b, t, h, nope + r])?;
            let mut v = kv.reshape(&[b, t, h, nope + dv])?.narrow(3, nope, dv)?; // view
            if let Some(slot) = cache {
                // cached token-major: (B, S, H, ..)
                if let Some((pk, pv)) = slot.take() {
                    k = cat(&[&pk, &k], 1)?;
                    v = cat(&[&pv, &v], 1)?;
                } else {
                    v = v.contiguous();
                }
                *slot = Some((k.clone(), v.clone()));
            }
            // attention on token-major operands: no head transposes forward or backward
            let q = q.reshape(&[b, t, h, nope + r])?;
            attention_bthd(&q, &k, &v, AttnMask::Causal, Some(self.scale()))?
        }; // (B, T, H, d_v)
        let y = y.reshape(&[b, t, h * dv])?;
        self.o_proj.forward(&y)
    }
}
