//! One handle over the model families a training run can hold, so the trainer, generation
//! and benchmarks do not care which one it is.
//!
//! [`ModelConfig`] is tagged by HF's `model_type` key (`llama`, `deepseek_v3`); a config
//! without the key (runs written before the tag existed) reads as `llama`.

use ferrolab_nn::Vars;
use ferrolab_tensor::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::lm::{KvCache, Lm, LmConfig};

/// The shape of a model of any family, with HF `config.json` keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "model_type")]
pub enum ModelConfig {
    /// DeepSeek LLM / LLaMA decoder ([`Lm`]).
    #[serde(rename = "llama")]
    Llama(LmConfig),
}

#[derive(Deserialize)]
#[serde(tag = "model_type")]
enum Tagged {
    #[serde(rename = "llama")]
    Llama(LmConfig),
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
            },
        )
    }
}

impl ModelConfig {
    /// HF `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Llama(_) => "llama",
        }
    }

    /// V.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    /// Longest sequence the model takes.
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    /// Residual width.
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    /// Decoder layers.
    pub fn num_hidden_layers(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.num_hidden_layers,
        }
    }

    /// Checks the shape; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Llama(c) => c.validate(),
        }
    }

    /// Parameters: `(total, active per token)`.
    pub fn num_params(&self) -> (usize, usize) {
        match self {
            ModelConfig::Llama(c) => (c.num_params().0, c.num_params().0),
        }
    }

    /// Bytes of attention cache per token over all layers (f32).
    pub fn cache_bytes_per_token(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => KvCache::bytes_per_token(c),
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

/// A model of any family.
pub enum Model {
    /// DeepSeek LLM / LLaMA decoder.
    Llama(Lm),
}

/// The decoding cache of a [`Model`].
pub enum Cache {
    /// Keys and values per layer.
    Kv(KvCache),
}

impl Cache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        match self {
            Cache::Kv(c) => c.len(),
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
        })
    }

    /// Its config.
    pub fn config(&self) -> ModelConfig {
        match self {
            Model::Llama(m) => ModelConfig::Llama(m.cfg.clone()),
        }
    }

    /// Main-head logits for ids `(B, T)`: `(B, T, V)`.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize) -> Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(ids, b, t),
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
        }
    }

    /// Work done after each optimizer step with the loads summed over its micro-batches
    /// (the auxiliary-loss-free bias update); nothing for dense models.
    pub fn after_step(&self, loads: &[Vec<u64>]) -> Result<()> {
        let _ = loads;
        match self {
            Model::Llama(_) => Ok(()),
        }
    }

    /// Per-expert routing biases per MoE layer (empty without MoE).
    pub fn biases(&self) -> Vec<Vec<f32>> {
        match self {
            Model::Llama(_) => Vec::new(),
        }
    }

    /// An empty decoding cache.
    pub fn new_cache(&self) -> Cache {
        match self {
            Model::Llama(_) => Cache::Kv(KvCache::new()),
        }
    }

    /// Feeds `ids` after the cached tokens; returns the last position's logits.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        match (self, cache) {
            (Model::Llama(m), Cache::Kv(c)) => m.forward_cached(ids, c),
        }
    }
}

/// TEMPORARY until moe.rs lands: (max load - mean load) / mean load.
pub fn max_vio(loads: &[u64]) -> f64 {
    let n = loads.len().max(1) as f64;
    let mean = loads.iter().sum::<u64>() as f64 / n;
    if mean == 0.0 {
        return 0.0;
    }
    (*loads.iter().max().unwrap_or(&0) as f64 - mean) / mean
}
