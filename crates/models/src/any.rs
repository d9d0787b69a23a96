//! One handle over the model families a training run can hold, so the trainer, generation
//! and benchmarks do not care which one it is.
//!
//! [`ModelConfig`] is tagged by HF's `model_type` key (`llama`, `deepseek_v3`); a config
//! without the key (runs written before the tag existed) reads as `llama`.

use ferrolab_nn::Vars;
use ferrolab_tensor::{backward_in_parts, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::deepseek_v3::{DeepseekV3, MlaCache, V3Config};
use crate::lm::{KvCache, Lm, LmConfig};

/// The shape of a model of any family, with HF `config.json` keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "model_type")]
pub enum ModelConfig {
    /// DeepSeek LLM / LLaMA decoder ([`Lm`]).
    #[serde(rename = "llama")]
    Llama(LmConfig),
    /// DeepSeek-V3 style: MLA, DeepSeekMoE, MTP.
    #[serde(rename = "deepseek_v3")]
    DeepseekV3(V3Config),
}

#[derive(Deserialize)]
#[serde(tag = "model_type")]
enum Tagged {
    #[serde(rename = "llama")]
    Llama(LmConfig),
    #[serde(rename = "deepseek_v3")]
    DeepseekV3(V3Config),
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut v = serde_json::Value::deserialize(d)?;
        if let Some(o) = v.as_object_mut() {
            o.entry("model_type")
                .or_insert_with(|| serde_json::Value::String("llama".into()));
        }
        Ok(
            match serde_json::from_value(v).map_err(serde::de::Error::custom)? {
                Tagged::Llama(c) => ModelConfig::Llama(c),
                Tagged::DeepseekV3(c) => ModelConfig::DeepseekV3(c),
            },
        )
    }
}

impl ModelConfig {
    /// HF `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Llama(_) => "llama",
            ModelConfig::DeepseekV3(_) => "deepseek_v3",
        }
    }

    /// V.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
            ModelConfig::DeepseekV3(c) => c.vocab_size,
        }
    }

    /// Longest sequence the model takes.
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.max_position_embeddings,
            ModelConfig::DeepseekV3(c) => c.max_position_embeddings,
        }
    }

    /// Residual width.
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.hidden_size,
            ModelConfig::DeepseekV3(c) => c.hidden_size,
        }
    }

    /// Standard deviation of the initial weights.
    pub fn initializer_range(&self) -> f32 {
        match self {
            ModelConfig::Llama(c) => c.initializer_range,
            ModelConfig::DeepseekV3(c) => c.initializer_range,
        }
    }

    /// Decoder layers.
    pub fn num_hidden_layers(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.num_hidden_layers,
            ModelConfig::DeepseekV3(c) => c.num_hidden_layers,
        }
    }

    /// Checks the shape; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Llama(c) => c.validate(),
            ModelConfig::DeepseekV3(c) => c.validate(),
        }
    }

    /// Parameters: `(total, active per token)`.
    pub fn num_params(&self) -> (usize, usize) {
        match self {
            ModelConfig::Llama(c) => (c.num_params().0, c.num_params().0),
            ModelConfig::DeepseekV3(c) => c.num_params(),
        }
    }

    /// Bytes of attention cache per token over all layers (f32).
    pub fn cache_bytes_per_token(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => KvCache::bytes_per_token(c),
            ModelConfig::DeepseekV3(c) => {
                4 * c.num_hidden_layers * c.kv_cache_elems_per_token_per_layer()
            }
        }
    }
}

/// The training loss of one micro-batch, split into its parts.
pub struct LossParts {
    /// The scalar to differentiate (main + extra losses).
    pub total: Tensor,
    /// Next-token cross-entropy of the main head (nats per token).
    pub main: f32,
    /// Multi-token-prediction cross-entropy per depth (empty without MTP).
    pub mtp: Vec<f32>,
    /// Sum of the expert-balance losses, coefficients applied (0 without MoE).
    pub balance: f32,
    /// Tokens routed to each expert, per MoE layer (empty without MoE).
    pub loads: Vec<Vec<u64>>,
}

/// The loss values of a micro-batch whose backward has run ([`Model::forward_backward`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossValues {
    /// The differentiated scalar (main + extra losses), before the caller's scale.
    pub total: f32,
    /// Next-token cross-entropy of the main head (nats per token).
    pub main: f32,
    /// Multi-token-prediction cross-entropy per depth (empty without MTP).
    pub mtp: Vec<f32>,
    /// Sum of the expert-balance losses, coefficients applied (0 without MoE).
    pub balance: f32,
    /// Tokens routed to each expert, per MoE layer (empty without MoE).
    pub loads: Vec<Vec<u64>>,
}

/// A model of any family.
pub enum Model {
    /// DeepSeek LLM / LLaMA decoder.
    Llama(Lm),
    /// DeepSeek-V3 style.
    DeepseekV3(DeepseekV3),
}

/// The decoding cache of a [`Model`].
pub enum Cache {
    /// Keys and values per layer.
    Kv(KvCache),
    /// MLA latents (absorbed) or per-head keys and values.
    Mla(MlaCache),
}

impl Cache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        match self {
            Cache::Kv(c) => c.len(),
            Cache::Mla(c) => c.len(),
        }
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Model {
    /// A freshly initialised model with its parameters registered in `vars` under HF names.
    pub fn new(vars: &Vars, cfg: &ModelConfig) -> Result<Model> {
        Ok(match cfg {
            ModelConfig::Llama(c) => Model::Llama(Lm::new(vars, c.clone())?),
            ModelConfig::DeepseekV3(c) => Model::DeepseekV3(DeepseekV3::new(vars, c.clone())?),
        })
    }

    /// Its config.
    pub fn config(&self) -> ModelConfig {
        match self {
            Model::Llama(m) => ModelConfig::Llama(m.cfg.clone()),
            Model::DeepseekV3(m) => ModelConfig::DeepseekV3(m.cfg.clone()),
        }
    }

    /// Main-head logits for ids `(B, T)`: `(B, T, V)`.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(ids, b, t),
            Model::DeepseekV3(m) => m.forward(ids, b, t),
        }
    }

    /// The training loss of `(B, T)` inputs against `(B, T)` targets (-100 ignored).
    pub fn loss(&self, ids: &[u32], targets: &[i64], b: usize, t: usize) -> Result<LossParts> {
        match self {
            Model::Llama(m) => {
                let total = m.loss(ids, targets, b, t)?;
                Ok(LossParts {
                    main: total.item()?,
                    total,
                    mtp: Vec::new(),
                    balance: 0.0,
                    loads: Vec::new(),
                })
            }
            Model::DeepseekV3(m) => {
                let l = m.loss(ids, targets, b, t)?;
                Ok(LossParts {
                    total: l.total,
                    main: l.main,
                    mtp: l.mtp,
                    balance: l.balance,
                    loads: l.loads,
                })
            }
        }
    }

    /// Whether the loss of a batch is the mean of its sequences' losses, so that parts of the
    /// batch can run side by side ([`Model::forward_backward`]): everything but the
    /// Switch/GShard balance loss, whose load and score means span the whole batch.
    fn loss_splits_by_sequence(&self) -> bool {
        match self {
            Model::Llama(_) => true,
            Model::DeepseekV3(m) => {
                m.cfg.moe_balance != crate::deepseek_v3::Balance::AuxLoss
                    || m.cfg.aux_loss_alpha == 0.0
            }
        }
    }

    /// The forward and backward of one training micro-batch: [`Model::loss`] of `(B, T)` inputs,
    /// times `scale`, back-propagated into the parameters' gradients (added to what they
    /// hold). On several threads the batch runs as that many parts of whole sequences side by
    /// side ([`parallel_backward`]) when the loss splits that way: no target ignored (each
    /// part's mean then weighs by its share of the sequences) and no batch-wide balance loss.
    /// The values are those of the whole micro-batch, before `scale`.
    pub fn forward_backward(
        &self,
        ids: &[u32],
        targets: &[i64],
        b: usize,
        t: usize,
        scale: f32,
    ) -> Result<LossValues> {
        let parts = if self.loss_splits_by_sequence()
            && targets.len() == b * t
            && ids.len() == b * t
            && targets.iter().all(|&x| x >= 0)
        {
            ferrolab_tensor::num_threads().min(b).max(1)
        } else {
            1
        };
        let values = backward_in_parts(b, parts, scale, |lo, hi| {
            // one part: the whole slices (a length error comes from the model, naming them)
            let (ids, targets) = if parts == 1 {
                (ids, targets)
            } else {
                (&ids[lo * t..hi * t], &targets[lo * t..hi * t])
            };
            let p = self.loss(ids, targets, hi - lo, t)?;
            let values = LossValues {
                total: p.total.item()?,
                main: p.main,
                mtp: p.mtp,
                balance: p.balance,
                loads: p.loads,
            };
            Ok((p.total, values))
        })?;
        if let [(v, _)] = values.as_slice() {
            return Ok(v.clone());
        }
        let mut out = LossValues::default();
        for (v, w) in values {
            out.total += w * v.total;
            out.main += w * v.main;
            out.balance += w * v.balance;
            out.mtp.resize(v.mtp.len(), 0.0);
            for (m, x) in out.mtp.iter_mut().zip(&v.mtp) {
                *m += w * x;
            }
            out.loads.resize(v.loads.len(), Vec::new());
            for (l, x) in out.loads.iter_mut().zip(&v.loads) {
                l.resize(x.len(), 0);
                for (a, b) in l.iter_mut().zip(x) {
                    *a += b;
                }
            }
        }
        Ok(out)
    }

    /// Work done after each optimizer step with the loads summed over its micro-batches
    /// (the auxiliary-loss-free bias update); nothing for dense models.
    pub fn after_step(&self, loads: &[Vec<u64>]) -> Result<()> {
        match self {
            Model::Llama(_) => Ok(()),
            Model::DeepseekV3(m) => m.update_bias(loads),
        }
    }

    /// Per-expert routing biases per MoE layer (empty without MoE).
    pub fn biases(&self) -> Vec<Vec<f32>> {
        match self {
            Model::Llama(_) => Vec::new(),
            Model::DeepseekV3(m) => m.biases(),
        }
    }

    /// An empty decoding cache.
    pub fn new_cache(&self) -> Cache {
        match self {
            Model::Llama(_) => Cache::Kv(KvCache::new()),
            Model::DeepseekV3(_) => Cache::Mla(MlaCache::new(true)),
        }
    }

    /// Feeds `ids` after the cached tokens; returns the last position's logits.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        match (self, cache) {
            (Model::Llama(m), Cache::Kv(c)) => m.forward_cached(ids, c),
            (Model::DeepseekV3(m), Cache::Mla(c)) => m.forward_cached(ids, c),
            _ => Err(ferrolab_tensor::Error::Invalid {
                op: "Model::forward_cached",
                msg: "the cache belongs to another model family".into(),
            }),
        }
    }
}

pub use crate::deepseek_v3::max_vio;
