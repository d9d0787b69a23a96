//! The DeepSeek-V3-style decoder: MLA attention, dense SwiGLU in the first
//! `first_k_dense_replace` layers and DeepSeekMoE after, a final RMSNorm and output head, plus
//! `num_nextn_predict_layers` multi-token-prediction (MTP) modules.
//!
//! ## MTP (V3 paper, section 2.2)
//! Module `k` (1-based) at position `i` combines the previous depth's hidden state `h^{k-1}_i`
//! (`h^0` is the main model's last layer output, before the final norm) with the embedding of
//! token `t_{i+k}`:
//! `h'_i = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)])` (embedding first, hidden
//! second: the order of the released V3 weights; the paper writes the other order), then one
//! causal decoder layer `h^k = TRM_k(h')`, and `shared_head.norm` + the shared output head
//! predict `t_{i+k+1}`. The loss is `lambda / D * sum_k CE_k`; positions whose input or target
//! falls past the window are ignored (the window keeps its length at every depth).
//! Names follow the V3 checkpoint: module `k` is `model.layers.{L + k - 1}` with `enorm`,
//! `hnorm`, `eh_proj`, the decoder-layer tensors, and `shared_head.norm` (the embedding and the
//! head are shared, so they are not stored again).
//!
//! Letters: B batch, T tokens, C width, V vocab, L layers, D MTP depth.

use std::sync::Arc;

use ferrolab_nn::{Embedding, Init, Linear, RmsNorm, Vars};
use ferrolab_tensor::{
    cat, linear, linear_cross_entropy, no_grad, recompute, rope_tables, Error, Result, Tensor,
};

use super::config::V3Config;
use super::mla::{LayerCache, Mla};
use super::moe::Moe;
use crate::lm::SwiGlu;

/// The feed-forward of a layer.
#[derive(Clone)]
pub enum Ffn {
    /// Dense SwiGLU (`intermediate_size`).
    Dense(SwiGlu),
    /// DeepSeekMoE.
    Moe(Moe),
}

/// `x + attn(norm(x))`, then `x + ffn(norm(x))`.
#[derive(Clone)]
pub struct V3Layer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Multi-head latent attention.
    pub self_attn: Mla,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: RmsNorm,
    /// Dense or MoE feed-forward.
    pub mlp: Ffn,
}

/// What the MoE feed-forward of a layer reported.
pub struct MoeStats {
    /// Balance loss, coefficient applied.
    pub balance_loss: Option<Tensor>,
    /// Token-slots per expert.
    pub loads: Vec<u64>,
}

impl V3Layer {
    fn new(vars: &Vars, cfg: &V3Config, index: usize, init: Init) -> Result<V3Layer> {
        let c = cfg.hidden_size;
        let mlp = if cfg.is_moe_layer(index) {
            Ffn::Moe(Moe::new(&vars.pp("mlp"), cfg, init)?)
        } else {
            Ffn::Dense(SwiGlu::new(
                &vars.pp("mlp"),
                c,
                cfg.intermediate_size,
                init,
            )?)
        };
        Ok(V3Layer {
            input_layernorm: RmsNorm::new(&vars.pp("input_layernorm"), c, cfg.rms_norm_eps)?,
            self_attn: Mla::new(&vars.pp("self_attn"), cfg, init)?,
            post_attention_layernorm: RmsNorm::new(
                &vars.pp("post_attention_layernorm"),
                c,
                cfg.rms_norm_eps,
            )?,
            mlp,
        })
    }

    fn attn_residual(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut LayerCache>,
        absorbed: bool,
    ) -> Result<Tensor> {
        let a =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, cos, sin, cache, absorbed)?;
        x.add(&a)
    }

    /// # Shapes
    /// `x` `(B, T, C)` -> `(B, T, C)`.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut LayerCache>,
        absorbed: bool,
        recompute_attn: bool,
    ) -> Result<(Tensor, Option<MoeStats>)> {
        let x = if recompute_attn && cache.is_none() {
            // activation checkpointing of the attention half: its inner activations (queries,
            // keys, values, latents) are recomputed in the backward
            let (me, cos, sin) = (self.clone(), cos.clone(), sin.clone());
            recompute(
                &[x],
                Arc::new(move |xs: &[Tensor]| me.attn_residual(&xs[0], &cos, &sin, None, false)),
            )?
        } else {
            self.attn_residual(x, cos, sin, cache, absorbed)?
        };
        let hn = self.post_attention_layernorm.forward(&x)?;
        match &self.mlp {
            Ffn::Dense(m) => Ok((x.add(&m.forward(&hn)?)?, None)),
            Ffn::Moe(m) => {
                let o = m.forward(&hn)?;
                Ok((
                    x.add(&o.y)?,
                    Some(MoeStats {
                        balance_loss: o.balance_loss,
                        loads: o.loads,
                    }),
                ))
            }
        }
    }
}

/// One multi-token-prediction module.
#[derive(Clone)]
pub struct MtpModule {
    /// Norm of the next token's embedding.
    pub enorm: RmsNorm,
    /// Norm of the previous depth's hidden state.
    pub hnorm: RmsNorm,
    /// `(C, 2C)` projection of `[enorm(emb) ; hnorm(h)]`.
    pub eh_proj: Linear,
    /// The module's transformer block.
    pub block: V3Layer,
    /// Norm before the shared output head (`shared_head.norm`).
    pub shared_head_norm: RmsNorm,
}

impl MtpModule {
    /// `h^k` from `h^{k-1}` `(B, T, C)` and the embedded shifted tokens `(B, T, C)`.
    fn forward(
        &self,
        h_prev: &Tensor,
        emb: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut LayerCache>,
        absorbed: bool,
    ) -> Result<(Tensor, Option<MoeStats>)> {
        let z = cat(
            &[&self.enorm.forward(emb)?, &self.hnorm.forward(h_prev)?],
            2,
        )?;
        let h = self.eh_proj.forward(&z)?;
        self.block.forward(&h, cos, sin, cache, absorbed, false)
    }
}

/// The decoding cache of a [`DeepseekV3`] model.
#[derive(Clone)]
pub struct MlaCache {
    /// true: latents and rope keys (absorbed path); false: per-head keys and values.
    pub absorbed: bool,
    layers: Vec<LayerCache>,
    len: usize,
}

impl MlaCache {
    /// An empty cache for the absorbed (`true`) or naive path.
    pub fn new(absorbed: bool) -> MlaCache {
        MlaCache {
            absorbed,
            layers: Vec::new(),
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Numbers held per token over all layers.
    pub fn elems_per_token(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(a, b)| (a.numel() + b.numel()) / self.len.max(1))
            .sum()
    }

    /// Forgets every token from position `len` on (rejected speculative tokens).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        // the absorbed cache is (B, 1, S, ..), the naive one (B, S, H, ..)
        let dim = if self.absorbed { 2 } else { 1 };
        for (a, b) in self.layers.iter_mut().flatten() {
            *a = a.narrow(dim, 0, len)?.contiguous();
            *b = b.narrow(dim, 0, len)?.contiguous();
        }
        self.len = len;
        Ok(())
    }
}

/// The parts of the training loss.
pub struct V3Loss {
    /// The scalar to differentiate: main + MTP + balance.
    pub total: Tensor,
    /// Main-head cross-entropy (nats per token).
    pub main: f32,
    /// MTP cross-entropy per depth.
    pub mtp: Vec<f32>,
    /// Sum of the balance losses (coefficients applied).
    pub balance: f32,
    /// Token-slots per expert for each MoE layer (main layers, then MTP blocks).
    pub loads: Vec<Vec<u64>>,
}

/// Counts of a speculative decoding run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Draft tokens proposed by the MTP module.
    pub drafted: usize,
    /// Draft tokens the main model agreed with.
    pub accepted: usize,
    /// Forward passes of the main model after the prompt.
    pub main_passes: usize,
}

/// The model.
pub struct DeepseekV3 {
    /// Shape.
    pub cfg: V3Config,
    /// `(V, C)`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<V3Layer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// `(V, C)`; `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    /// MTP modules, depth 1 first.
    pub mtp: Vec<MtpModule>,
    rope: (Tensor, Tensor),
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

impl DeepseekV3 {
    /// A model with normal(0, `initializer_range`) matrices, unit norms and zero routing
    /// biases, registered in `vars` under HF names.
    pub fn new(vars: &Vars, cfg: V3Config) -> Result<DeepseekV3> {
        cfg.validate()?;
        let init = Init::Normal {
            mean: 0.0,
            std: cfg.initializer_range,
        };
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let m = vars.pp("model");
        let embed_tokens = Embedding::new(&m.pp("embed_tokens"), v, c, init)?;
        let lv = m.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| V3Layer::new(&lv.pp(i.to_string()), &cfg, i, init))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&m.pp("norm"), c, cfg.rms_norm_eps)?;
        let mtp = (0..cfg.num_nextn_predict_layers)
            .map(|k| {
                let idx = cfg.num_hidden_layers + k;
                let p = lv.pp(idx.to_string());
                Ok(MtpModule {
                    enorm: RmsNorm::new(&p.pp("enorm"), c, cfg.rms_norm_eps)?,
                    hnorm: RmsNorm::new(&p.pp("hnorm"), c, cfg.rms_norm_eps)?,
                    eh_proj: Linear::new(&p.pp("eh_proj"), 2 * c, c, false, init)?,
                    block: V3Layer::new(&p, &cfg, idx, init)?,
                    shared_head_norm: RmsNorm::new(
                        &p.pp("shared_head").pp("norm"),
                        c,
                        cfg.rms_norm_eps,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(&vars.pp("lm_head"), c, v, false, init)?)
        };
        let positions: Vec<usize> = (0..cfg.max_position_embeddings).collect();
        let rope = rope_tables(&positions, cfg.qk_rope_head_dim, cfg.rope_theta)?;
        Ok(DeepseekV3 {
            cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
            mtp,
            rope,
        })
    }

    fn check_ids(&self, ids: &[u32], b: usize, t: usize, past: usize) -> Result<()> {
        crate::lm::check_ids(
            "DeepseekV3",
            ids,
            (b, t, past),
            self.cfg.max_position_embeddings,
            self.cfg.vocab_size,
        )
    }

    fn tables(&self, past: usize, t: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.rope.0.narrow(0, past, t)?,
            self.rope.1.narrow(0, past, t)?,
        ))
    }

    /// The output head.
    fn head(&self, h: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(l) => l.forward(h),
            None => linear(h, &self.embed_tokens.weight, None),
        }
    }

    /// The output head's weight `(V, C)` (the embedding when tied).
    fn head_weight(&self) -> &Tensor {
        match &self.lm_head {
            Some(l) => &l.weight,
            None => &self.embed_tokens.weight,
        }
    }

    /// Last-layer hidden states `(B, T, C)` (before the final norm) and the MoE reports.
    fn trunk(
        &self,
        ids: &[u32],
        b: usize,
        t: usize,
        mut cache: Option<&mut MlaCache>,
    ) -> Result<(Tensor, Vec<MoeStats>)> {
        let past = cache.as_ref().map_or(0, |c| c.len);
        self.check_ids(ids, b, t, past)?;
        let (cos, sin) = self.tables(past, t)?;
        let mut x = self.embed_tokens.forward(ids, &[b, t])?;
        let mut stats = Vec::new();
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.layers.len(), None);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let (slot, absorbed) = match cache.as_deref_mut() {
                Some(c) => (Some(&mut c.layers[i]), c.absorbed),
                None => (None, false),
            };
            let (y, s) = layer.forward(&x, &cos, &sin, slot, absorbed, self.cfg.recompute)?;
            x = y;
            stats.extend(s);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok((x, stats))
    }

    /// Main-head logits for ids `(B, T)`.
    ///
    /// # Shapes
    /// `ids` `(B, T)` -> `(B, T, V)`.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        let (h, _) = self.trunk(ids, b, t, None)?;
        self.head(&self.norm.forward(&h)?)
    }

    /// The training loss of inputs `(B, T)` against next-token targets `(B, T)` (-100 ignored):
    /// main cross-entropy + `lambda / D * sum_k` MTP cross-entropy + balance losses.
    pub fn loss(&self, ids: &[u32], targets: &[i64], b: usize, t: usize) -> Result<V3Loss> {
        if targets.len() != b * t {
            return Err(Error::Invalid {
                op: "DeepseekV3::loss",
                msg: format!("{} targets for a ({b}, {t}) batch", targets.len()),
            });
        }
        let v = self.cfg.vocab_size;
        let (h0, mut stats) = self.trunk(ids, b, t, None)?;
        let c = self.cfg.hidden_size;
        // output head and cross-entropy fused, block by block: the (B T, V) logits never exist
        let main = linear_cross_entropy(
            &self.norm.forward(&h0)?.reshape(&[b * t, c])?,
            self.head_weight(),
            targets,
        )?;
        let mut total = main.clone();
        let mut mtp = Vec::new();
        let (cos, sin) = self.tables(0, t)?;
        let mut h = h0;
        let d = self.mtp.len();
        for (k1, module) in self.mtp.iter().enumerate() {
            let k = k1 + 1;
            // input token t_{i+k} = targets[i + k - 1]; target t_{i+k+1} = targets[i + k]
            let mut tok = vec![0u32; b * t];
            let mut tgt = vec![-100i64; b * t];
            for bi in 0..b {
                for i in 0..t {
                    if i + k - 1 < t {
                        let x = targets[bi * t + i + k - 1];
                        if x >= 0 && (x as usize) < v {
                            tok[bi * t + i] = x as u32;
                        }
                    }
                    if i + k < t {
                        tgt[bi * t + i] = targets[bi * t + i + k];
                    }
                }
            }
            let emb = self.embed_tokens.forward(&tok, &[b, t])?;
            let (hk, s) = module.forward(&h, &emb, &cos, &sin, None, false)?;
            stats.extend(s);
            if tgt.iter().any(|&x| x >= 0) {
                let lk = linear_cross_entropy(
                    &module.shared_head_norm.forward(&hk)?.reshape(&[b * t, c])?,
                    self.head_weight(),
                    &tgt,
                )?;
                mtp.push(lk.item()?);
                total = total.add(&lk.mul_scalar(self.cfg.mtp_loss_weight / d as f32))?;
            }
            h = hk;
        }
        let mut balance = 0.0;
        let mut loads = Vec::new();
        for s in stats {
            if let Some(l) = s.balance_loss {
                balance += l.item()?;
                total = total.add(&l)?;
            }
            loads.push(s.loads);
        }
        Ok(V3Loss {
            main: main.item()?,
            total,
            mtp,
            balance,
            loads,
        })
    }

    /// The MoE layers in loss order: main layers, then MTP blocks.
    pub fn moe_layers(&self) -> Vec<&Moe> {
        self.layers
            .iter()
            .chain(self.mtp.iter().map(|m| &m.block))
            .filter_map(|l| match &l.mlp {
                Ffn::Moe(m) => Some(m),
                Ffn::Dense(_) => None,
            })
            .collect()
    }

    /// The auxiliary-loss-free bias update with the loads of one optimizer step (one entry
    /// per MoE layer, as in [`V3Loss::loads`]).
    pub fn update_bias(&self, loads: &[Vec<u64>]) -> Result<()> {
        let layers = self.moe_layers();
        if loads.len() != layers.len() {
            return Err(Error::Invalid {
                op: "DeepseekV3::update_bias",
                msg: format!(
                    "loads for {} layers, model has {}",
                    loads.len(),
                    layers.len()
                ),
            });
        }
        for (m, l) in layers.iter().zip(loads) {
            m.update_bias(l)?;
        }
        Ok(())
    }

    /// Routing bias per MoE layer.
    pub fn biases(&self) -> Vec<Vec<f32>> {
        self.moe_layers().iter().map(|m| m.bias()).collect()
    }

    /// Feeds `ids` (one sequence) after the cached tokens and returns the logits of every new
    /// position `(T, V)` row-major, and the last hidden states `(1, T, C)`. No gradients.
    fn step(&self, ids: &[u32], cache: &mut MlaCache) -> Result<(Vec<f32>, Tensor)> {
        no_grad(|| {
            let t = ids.len();
            let (h, _) = self.trunk(ids, 1, t, Some(cache))?;
            Ok((self.head(&self.norm.forward(&h)?)?.to_vec(), h))
        })
    }

    /// Feeds `ids` (one sequence) after the tokens in `cache`; returns the last position's
    /// logits. Each new token costs O(S) attention work.
    ///
    /// # Shapes
    /// `ids` `(T)` -> `(V)`.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut MlaCache) -> Result<Vec<f32>> {
        let v = self.cfg.vocab_size;
        let (l, _) = self.step(ids, cache)?;
        Ok(l[l.len() - v..].to_vec())
    }

    /// Plain greedy decoding of `n` tokens after `prompt` with the absorbed cache.
    pub fn generate_greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        self.generate_greedy_with(prompt, n, true)
    }

    /// Greedy decoding with the absorbed (`true`) or the naive per-head cache.
    pub fn generate_greedy_with(
        &self,
        prompt: &[u32],
        n: usize,
        absorbed: bool,
    ) -> Result<Vec<u32>> {
        let mut cache = MlaCache::new(absorbed);
        let mut out = Vec::with_capacity(n.min(4096)); // grows past that: n is a user's number
        if n == 0 {
            return Ok(out);
        }
        let mut next = argmax(&self.forward_cached(prompt, &mut cache)?);
        out.push(next);
        while out.len() < n {
            next = argmax(&self.forward_cached(&[next], &mut cache)?);
            out.push(next);
        }
        Ok(out)
    }

    /// Self-speculative greedy decoding with the first MTP module as the draft: each round the
    /// main model checks `[next, draft]` in one pass; the draft is kept when it equals the
    /// main model's own choice (so the output is exactly [`Self::generate_greedy`]'s), and
    /// then the pass also gives the token after it. Needs `num_nextn_predict_layers >= 1`.
    pub fn generate_speculative(&self, prompt: &[u32], n: usize) -> Result<(Vec<u32>, SpecStats)> {
        let Some(module) = self.mtp.first() else {
            return Err(Error::Invalid {
                op: "speculative decoding",
                msg: "the model has no MTP module (num_nextn_predict_layers = 0)".into(),
            });
        };
        let v = self.cfg.vocab_size;
        let mut stats = SpecStats::default();
        let mut out = Vec::with_capacity(n.min(4096) + 1); // grows past that
        if n == 0 {
            return Ok((out, stats));
        }
        let mut main = MlaCache::new(true);
        let mut mtp = MlaCache::new(true);
        mtp.layers.resize(1, None);
        // the MTP stream at position i takes (h_i, x_{i+1}); returns the draft after the last
        let mtp_feed = |h: &Tensor, toks: &[u32], mtp: &mut MlaCache| -> Result<u32> {
            no_grad(|| {
                let t = toks.len();
                let (cos, sin) = self.tables(mtp.len, t)?;
                let emb = self.embed_tokens.forward(toks, &[1, t])?;
                let (hk, _) =
                    module.forward(h, &emb, &cos, &sin, Some(&mut mtp.layers[0]), true)?;
                mtp.len += t;
                let last = hk.narrow(1, t - 1, 1)?;
                Ok(argmax(
                    &self
                        .head(&module.shared_head_norm.forward(&last)?)?
                        .to_vec(),
                ))
            })
        };
        let (logits, h) = self.step(prompt, &mut main)?;
        let p = prompt.len();
        let mut next = argmax(&logits[(p - 1) * v..]);
        let mut toks: Vec<u32> = prompt[1..].to_vec();
        toks.push(next);
        let mut draft = mtp_feed(&h, &toks, &mut mtp)?;
        out.push(next);
        while out.len() < n {
            if main.len + 2 > self.cfg.max_position_embeddings {
                // no room to verify a draft: finish one token at a time
                next = argmax(&self.forward_cached(&[next], &mut main)?);
                out.push(next);
                continue;
            }
            stats.drafted += 1;
            stats.main_passes += 1;
            let n0 = main.len;
            let (logits, h) = self.step(&[next, draft], &mut main)?;
            let t1 = argmax(&logits[..v]);
            if t1 == draft {
                stats.accepted += 1;
                let t2 = argmax(&logits[v..]);
                out.push(draft);
                if out.len() < n {
                    out.push(t2);
                }
                // MTP positions n0 (h_n0, draft) and n0 + 1 (h_n0+1, t2)
                draft = mtp_feed(&h, &[draft, t2], &mut mtp)?;
                next = t2;
            } else {
                main.truncate(n0 + 1)?;
                out.push(t1);
                draft = mtp_feed(&h.narrow(1, 0, 1)?, &[t1], &mut mtp)?;
                next = t1;
            }
        }
        out.truncate(n);
        Ok((out, stats))
    }
}
