//! A GPT-2-style decoder: the model of ferrolab's training-step benchmark.
//!
//! Exactly the model of `shared/bench/gpt_step_torch.py` (and of nanoGPT without weight
//! tying): learned token and position embeddings, pre-LN blocks of causal multi-head attention
//! and a 4x MLP with exact GELU, final LayerNorm, untied output head without bias. Names follow
//! that script's `state_dict` so its weights load directly.
//!
//! Letters: B batch, T time, C channels (`d_model`), H heads, D head dim, V vocab.

use std::sync::Arc;

use ferrolab_nn::{Embedding, Init, LayerNorm, Linear, Vars};
use ferrolab_tensor::{
    linear_cross_entropy, packed_qkv_attention, recompute, segments, AttnMask, Error, Result,
    Tensor,
};

/// Shape of the decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    /// V: vocabulary size.
    pub vocab: usize,
    /// C: residual width.
    pub d_model: usize,
    /// Number of blocks.
    pub layers: usize,
    /// H: attention heads (`d_model % heads == 0`).
    pub heads: usize,
    /// Longest sequence (size of the position table).
    pub max_seq: usize,
    /// Run blocks as recomputed segments of ~sqrt(layers) blocks (activation checkpointing).
    pub recompute: bool,
}

impl GptConfig {
    /// The benchmark model: vocab 4096, width 256, 4 heads, sequence 128.
    pub fn bench(layers: usize) -> GptConfig {
        GptConfig {
            vocab: 4096,
            d_model: 256,
            layers,
            heads: 4,
            max_seq: 128,
            recompute: false,
        }
    }

    /// Checks the shape, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::Invalid {
                op: "GptConfig",
                msg,
            })
        };
        if self.vocab == 0 || self.d_model == 0 || self.heads == 0 || self.max_seq == 0 {
            return bad("vocab, d_model, heads and max_seq must be > 0".into());
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return bad(format!(
                "d_model ({}) is not divisible by heads ({})",
                self.d_model, self.heads
            ));
        }
        Ok(())
    }
}

/// One pre-LN block: `x + attn(ln1(x))`, then `x + fc2(gelu(fc1(ln2(x))))`.
#[derive(Clone)]
pub struct Block {
    /// Norm before attention.
    pub ln1: LayerNorm,
    /// Fused q, k, v projection `(3C, C)`.
    pub qkv: Linear,
    /// Output projection `(C, C)`.
    pub proj: Linear,
    /// Norm before the MLP.
    pub ln2: LayerNorm,
    /// `(4C, C)`.
    pub fc1: Linear,
    /// `(C, 4C)`.
    pub fc2: Linear,
    heads: usize,
}

impl Block {
    /// A block of width `c` with `heads` heads, initialised like the benchmark.
    pub fn new(vars: &Vars, c: usize, heads: usize) -> Result<Block> {
        let w = Init::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Ok(Block {
            ln1: LayerNorm::new(&vars.pp("ln1"), c, 1e-5)?,
            qkv: Linear::new(&vars.pp("qkv"), c, 3 * c, true, w)?,
            proj: Linear::new(&vars.pp("proj"), c, c, true, w)?,
            ln2: LayerNorm::new(&vars.pp("ln2"), c, 1e-5)?,
            fc1: Linear::new(&vars.pp("fc1"), c, 4 * c, true, w)?,
            fc2: Linear::new(&vars.pp("fc2"), 4 * c, c, true, w)?,
            heads,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?; // (B, T, 3C)
                                                            // q, k, v as (B, H, T, D) heads of the fused projection, causal softmax(q k^T / sqrt(D)) v
        let y = packed_qkv_attention(&qkv, self.heads, AttnMask::Causal, None)?; // (B, T, C)
        let x = x.add(&self.proj.forward(&y)?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.ln2.forward(&x)?)?.gelu())?;
        x.add(&m)
    }
}

/// The decoder.
pub struct Gpt {
    /// Shape.
    pub cfg: GptConfig,
    /// Token embedding `(V, C)`.
    pub tok: Embedding,
    /// Position embedding `(max_seq, C)`.
    pub pos: Embedding,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
    /// Output head `(V, C)`, no bias.
    pub head: Linear,
}

impl Gpt {
    /// A model with the benchmark's init: N(0, 0.02) matrices, zero biases, unit norms.
    pub fn new(vars: &Vars, cfg: GptConfig) -> Result<Gpt> {
        cfg.validate()?;
        let w = Init::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let c = cfg.d_model;
        Ok(Gpt {
            tok: Embedding::new(&vars.pp("tok"), cfg.vocab, c, w)?,
            pos: Embedding::new(&vars.pp("pos"), cfg.max_seq, c, w)?,
            blocks: (0..cfg.layers)
                .map(|i| Block::new(&vars.pp(format!("blocks.{i}")), c, cfg.heads))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::new(&vars.pp("ln_f"), c, 1e-5)?,
            head: Linear::new(&vars.pp("head"), c, cfg.vocab, false, w)?,
            cfg,
        })
    }

    /// Logits for token ids `(B, T)` given row-major.
    ///
    /// # Shapes
    /// `ids` `(B, T)` -> `(B, T, V)`.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        self.head.forward(&self.hidden(ids, b, t)?)
    }

    /// The final hidden states (after `ln_f`, before the head).
    ///
    /// # Shapes
    /// `ids` `(B, T)` -> `(B, T, C)`.
    pub fn hidden(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        if b == 0 || t == 0 || t > self.cfg.max_seq || ids.len() != b * t {
            return Err(Error::Invalid {
                op: "Gpt::forward",
                msg: format!(
                    "{} ids for batch {b} x time {t} (max_seq {})",
                    ids.len(),
                    self.cfg.max_seq
                ),
            });
        }
        let positions: Vec<u32> = (0..t as u32).collect();
        let x = self.tok.forward(ids, &[b, t])?; // (B, T, C)
        let p = self.pos.forward(&positions, &[t])?; // (T, C)
        let mut x = x.add(&p)?;
        if self.cfg.recompute {
            for seg in segments(self.blocks.len()) {
                let blocks: Vec<Block> = self.blocks[seg].to_vec();
                x = recompute(
                    &[&x],
                    Arc::new(move |xs: &[Tensor]| {
                        let mut h = xs[0].clone();
                        for blk in &blocks {
                            h = blk.forward(&h)?;
                        }
                        Ok(h)
                    }),
                )?;
            }
        } else {
            for blk in &self.blocks {
                x = blk.forward(&x)?;
            }
        }
        self.ln_f.forward(&x)
    }

    /// Mean next-token cross-entropy of `(B, T)` inputs against `(B, T)` targets, through the
    /// fused head + cross-entropy ([`linear_cross_entropy`]): the `(B T, V)` logits are never
    /// materialised.
    pub fn loss(&self, ids: &[u32], targets: &[i64], b: usize, t: usize) -> Result<Tensor> {
        let h = self.hidden(ids, b, t)?;
        linear_cross_entropy(
            &h.reshape(&[b * t, self.cfg.d_model])?,
            &self.head.weight,
            targets,
        )
    }
}
