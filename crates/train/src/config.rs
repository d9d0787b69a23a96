//! The resolved configuration of a training run: a preset, then a TOML file, then `--set`
//! overrides, validated once and written into the run directory before step 0.

use std::path::Path;

use ferrolab_models::{LmConfig, ModelConfig, V3Config};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// How text becomes token ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per UTF-8 byte (vocabulary 256): no training, every text encodes.
    Bytes,
    /// Byte-level BPE with `model.vocab_size` tokens, trained on the run's training text
    /// (DeepSeek pre-tokenisation) and stored in the run as `tokenizer.json`.
    Bpe,
}

/// Everything a run needs besides the data; saved as `train.json` (the model part also as an
/// HF `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the preset this started from.
    pub preset: String,
    /// Tokenizer.
    pub tokenizer: TokenizerKind,
    /// Model family (`model_type`) and shape (HF `config.json` keys).
    pub model: ModelConfig,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (at most `model.max_position_embeddings`).
    pub seq_len: usize,
    /// Micro-batches summed into one optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub max_lr: f32,
    /// Warm-up steps of the multi-step schedule (DeepSeek LLM: 2000 of ~100k; the presets:
    /// 1/12 of `steps` for `tiny` and `llama-tiny`, 1/20 for the `small` ones). At most
    /// [`RunConfig::first_decay_step`].
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay on matrices (DeepSeek LLM: 0.1); norms are not decayed.
    pub weight_decay: f32,
    /// AdamW beta1 (DeepSeek LLM: 0.9).
    pub beta1: f32,
    /// AdamW beta2 (DeepSeek LLM: 0.95).
    pub beta2: f32,
    /// Global gradient-norm clip (DeepSeek LLM: 1.0; 0: no clipping).
    pub grad_clip: f32,
    /// Steps between validations (0: only at the end).
    pub eval_every: usize,
    /// Micro-batches per validation.
    pub eval_batches: usize,
    /// Steps between snapshots (0: only at the end and on Ctrl-C).
    pub snapshot_every: usize,
    /// Fraction of the corpus (its end) held out for validation.
    pub val_fraction: f32,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
    /// Non-finite losses in a row after which the run stops.
    pub max_bad_steps: usize,
}

impl RunConfig {
    /// The preset names, default first.
    pub const PRESETS: [&'static str; 4] = ["tiny", "small", "llama-tiny", "llama-small"];

    /// A named preset: `tiny` (a DeepSeek-V3-style model: MLA, DeepSeekMoE with
    /// auxiliary-loss-free balancing, one MTP module; about 12.5 minutes on two cores, measured), `small`
    /// (the same family, wider and deeper), `llama-tiny` and `llama-small` (the dense DeepSeek
    /// LLM / LLaMA decoder). All use a BPE vocabulary trained on the run's text.
    pub fn preset(name: &str) -> Result<RunConfig> {
        match name {
            "llama-tiny" => Ok(RunConfig {
                preset: name.into(),
                // a 2048-token BPE vocabulary: ~3.5x fewer tokens than bytes for ~17% more
                // compute per token (the larger head), so far more text per second
                tokenizer: TokenizerKind::Bpe,
                model: ModelConfig::Llama(LmConfig::tiny(2048)),
                batch_size: 16,
                seq_len: 256,
                grad_accum: 1,
                steps: 600, // ~10 minutes on two cores (4,100 tokens/s measured)
                max_lr: 3e-3,
                warmup_steps: 50,
                weight_decay: 0.1,
                beta1: 0.9,
                beta2: 0.95,
                grad_clip: 1.0,
                eval_every: 100,
                eval_batches: 8,
                snapshot_every: 100,
                val_fraction: 0.1,
                seed: 1234,
                max_bad_steps: 5,
            }),
            "llama-small" => Ok(RunConfig {
                preset: name.into(),
                model: ModelConfig::Llama(LmConfig::small(8192)),
                batch_size: 16,
                seq_len: 512,
                steps: 4000,
                max_lr: 1.5e-3,
                warmup_steps: 200,
                eval_every: 250,
                snapshot_every: 250,
                ..RunConfig::preset("llama-tiny")?
            }),
            "tiny" => Ok(RunConfig {
                preset: name.into(),
                model: ModelConfig::DeepseekV3(V3Config::tiny(2048)),
                steps: 600,
                ..RunConfig::preset("llama-tiny")?
            }),
            "small" => Ok(RunConfig {
                preset: name.into(),
                model: ModelConfig::DeepseekV3(V3Config {
                    hidden_size: 512,
                    intermediate_size: 1376,
                    moe_intermediate_size: 256,
                    num_hidden_layers: 8,
                    num_attention_heads: 8,
                    kv_lora_rank: 128,
                    qk_nope_head_dim: 64,
                    qk_rope_head_dim: 32,
                    v_head_dim: 64,
                    n_routed_experts: 16,
                    num_experts_per_tok: 4,
                    n_group: 4,
                    topk_group: 2,
                    routed_scaling_factor: 2.0,
                    max_position_embeddings: 512,
                    ..V3Config::tiny(8192)
                }),
                ..RunConfig::preset("llama-small")?
            }),
            other => Err(TrainError::Config {
                key: "preset".into(),
                msg: format!(
                    "unknown preset `{other}` (known: {})",
                    RunConfig::PRESETS.join(", ")
                ),
            }),
        }
    }

    /// Merges a TOML file over this config: top-level keys are run settings, `[model]` holds
    /// model keys. Unknown keys are errors.
    pub fn merge_toml_file(self, path: &Path) -> Result<RunConfig> {
        Ok(self.merge_toml_keys(path)?.0)
    }

    /// [`RunConfig::merge_toml_file`], also returning the (dotted) keys the file set.
    fn merge_toml_keys(self, path: &Path) -> Result<(RunConfig, Vec<String>)> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TrainError::Config {
                key: path.display().to_string(),
                msg: e.to_string(),
            })?;
        let mut cfg = self;
        let mut keys = Vec::new();
        for (key, value) in flatten("", &toml::Value::Table(table)) {
            if let toml::Value::Float(x) = value {
                if !x.is_finite() {
                    return Err(TrainError::Config {
                        key,
                        msg: format!("{x} is not a usable value: a finite number is needed"),
                    });
                }
                check_f32_range(&key, &format!("{x:e}"), x)?;
            }
            let value = serde_json::to_value(&value).map_err(|e| TrainError::Config {
                key: key.clone(),
                msg: format!("bad value: {e}"),
            })?;
            cfg = cfg.set_value(&key, value)?;
            keys.push(key);
        }
        Ok((cfg, keys))
    }

    /// Applies `key=value` (dotted keys reach into `model`, e.g. `model.hidden_size=128`).
    pub fn set(self, assignment: &str) -> Result<RunConfig> {
        let (key, raw) = assignment
            .split_once('=')
            .ok_or_else(|| TrainError::Config {
                key: assignment.into(),
                msg: "expected key=value".into(),
            })?;
        let (key, raw) = (key.trim(), raw.trim());
        if raw.parse::<f64>().is_ok_and(|x| !x.is_finite()) {
            return Err(TrainError::Config {
                key: key.into(),
                msg: format!("{raw} is not a usable value: a finite number is needed"),
            });
        }
        if let Ok(x) = raw.parse::<f64>() {
            check_f32_range(key, raw, x)?;
        }
        // numbers and booleans as such, anything else as a string
        let value = serde_json::from_str::<serde_json::Value>(raw)
            .ok()
            .filter(|v| !v.is_object() && !v.is_array())
            .unwrap_or_else(|| serde_json::Value::String(raw.to_string()));
        self.set_value(key, value)
    }

    fn set_value(self, key: &str, value: serde_json::Value) -> Result<RunConfig> {
        let err = |msg: String| TrainError::Config {
            key: key.to_string(),
            msg,
        };
        if key == "preset" {
            return Err(err(
                "names the preset this config started from; choose one with --preset".into(),
            ));
        }
        if key == "model.model_type" && value.as_str() != Some(self.model.model_type()) {
            return Err(err(format!(
                "the model family ({}) comes with the preset: choose another with --preset (one \
                 of {})",
                self.model.model_type(),
                RunConfig::PRESETS.join(", ")
            )));
        }
        let mut json = serde_json::to_value(&self).map_err(|e| err(e.to_string()))?;
        let mut slot = &mut json;
        for part in key.split('.') {
            slot = slot
                .as_object_mut()
                .and_then(|o| o.get_mut(part))
                .ok_or_else(|| err("no such setting".into()))?;
        }
        if slot.is_object() {
            return Err(err("is a table; set one of its keys".into()));
        }
        *slot = value;
        serde_json::from_value(json).map_err(|e| err(format!("bad value: {e}")))
    }

    /// Checks every setting; the error names the key.
    pub fn validate(&self) -> Result<()> {
        self.model.validate().map_err(|e| TrainError::Config {
            key: "model".into(),
            msg: e.to_string(),
        })?;
        let bad = |key: &str, msg: String| {
            Err(TrainError::Config {
                key: key.into(),
                msg,
            })
        };
        match self.tokenizer {
            TokenizerKind::Bytes if self.model.vocab_size() < 256 => {
                return bad(
                    "model.vocab_size",
                    format!(
                        "{} is too small for byte tokens (256)",
                        self.model.vocab_size()
                    ),
                )
            }
            TokenizerKind::Bytes => {}
            TokenizerKind::Bpe if self.model.vocab_size() < 257 => {
                return bad(
                    "model.vocab_size",
                    format!(
                        "{} leaves no room for merges (BPE needs more than the 256 byte tokens)",
                        self.model.vocab_size()
                    ),
                )
            }
            TokenizerKind::Bpe => {}
        }
        for (key, v) in [
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("grad_accum", self.grad_accum),
            ("steps", self.steps),
            ("eval_batches", self.eval_batches),
            ("max_bad_steps", self.max_bad_steps),
        ] {
            if v == 0 {
                return bad(key, "must be > 0".into());
            }
        }
        // bounds that keep token counts well inside 64 bits; what fits in memory is checked
        // against the machine before a run starts
        for (key, v, max) in [
            ("batch_size", self.batch_size, 1usize << 24),
            ("grad_accum", self.grad_accum, 1 << 16),
            ("eval_batches", self.eval_batches, 1 << 16),
            ("steps", self.steps, 1 << 40),
        ] {
            if v > max {
                return bad(key, format!("{v} is above the limit of {max}"));
            }
        }
        if self.seq_len > self.model.max_position_embeddings() {
            return bad(
                "seq_len",
                format!(
                    "{} exceeds model.max_position_embeddings ({})",
                    self.seq_len,
                    self.model.max_position_embeddings()
                ),
            );
        }
        // (key, value, low end, high end (excluded), whether the low end is excluded, why)
        for (key, v, lo, hi, lo_open, why) in [
            ("max_lr", self.max_lr, 0.0, 10.0, true, ""),
            ("weight_decay", self.weight_decay, 0.0, 1.0, false, ""),
            ("beta1", self.beta1, 0.0, 1.0, false, ""),
            ("beta2", self.beta2, 0.0, 1.0, false, ""),
            (
                "val_fraction",
                self.val_fraction,
                0.0,
                0.5,
                true,
                " (a held-out split is needed)",
            ),
        ] {
            let above_lo = if lo_open { v > lo } else { v >= lo };
            if !(v.is_finite() && above_lo && v < hi) {
                let open = if lo_open { '(' } else { '[' };
                let why = if v <= lo { why } else { "" };
                return bad(key, format!("{v} is outside {open}{lo}, {hi}){why}"));
            }
        }
        if self.grad_clip.is_nan() || self.grad_clip < 0.0 {
            return bad(
                "grad_clip",
                format!("{} must be >= 0 (0: no clipping)", self.grad_clip),
            );
        }
        let decay = self.first_decay_step();
        if self.warmup_steps > decay {
            return bad(
                "warmup_steps",
                format!(
                    "{} runs past the schedule's first decay (x0.316 from step {decay}, 80% of \
                     steps = {}): the rate would never hold its peak and the decay would be \
                     cut short; give at most {decay} (`--set warmup_steps=N` for a new run, \
                     `warmup_steps` in the run's train.json to resume one)",
                    self.warmup_steps, self.steps
                ),
            );
        }
        Ok(())
    }

    /// The norm gradients are clipped to: `grad_clip`, or no limit when it is 0 (the norm is
    /// still measured and logged).
    pub fn clip_limit(&self) -> f32 {
        if self.grad_clip > 0.0 {
            self.grad_clip
        } else {
            f32::INFINITY
        }
    }

    /// The first (0-based) step of the multi-step schedule's x0.316 phase: 80% of `steps`,
    /// rounded up.
    pub fn first_decay_step(&self) -> usize {
        (0.8 * self.steps as f64).ceil() as usize
    }

    /// A preset with a TOML file (`--config`) and `key=value` overrides (`--set`) merged over
    /// it, in that order. When `steps` is changed but `warmup_steps` is not given, the
    /// preset's warm-up is scaled with the run (the same share of its steps, at least 1), so
    /// that a shorter or longer run keeps the schedule's shape. Returns the config and, if the
    /// warm-up was scaled, its preset value.
    pub fn resolve(
        preset: &str,
        toml: Option<&Path>,
        sets: &[String],
    ) -> Result<(RunConfig, Option<usize>)> {
        let base = RunConfig::preset(preset)?;
        let mut cfg = base.clone();
        let mut given = Vec::new();
        if let Some(p) = toml {
            let (c, keys) = cfg.merge_toml_keys(p)?;
            cfg = c;
            given.extend(keys);
        }
        for s in sets {
            cfg = cfg.set(s)?;
            given.extend(s.split_once('=').map(|(k, _)| k.trim().to_string()));
        }
        let has = |k: &str| given.iter().any(|g| g == k);
        if cfg.steps != base.steps && has("steps") && !has("warmup_steps") && base.steps > 0 {
            let share = base.warmup_steps as f64 / base.steps as f64;
            cfg.warmup_steps = ((cfg.steps as f64 * share).round() as usize).max(1);
            return Ok((cfg, Some(base.warmup_steps)));
        }
        Ok((cfg, None))
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len * self.grad_accum
    }
}

/// Settings are 32-bit floats: a number past their range (`shown` as the user wrote it) was
/// read as inf or 0, and then refused as that ("inf must be > 1" for 1e39).
fn check_f32_range(key: &str, shown: &str, x: f64) -> Result<()> {
    if x != 0.0 && (x.abs() > f32::MAX as f64 || x.abs() < f32::MIN_POSITIVE as f64) {
        return Err(TrainError::Config {
            key: key.to_string(),
            msg: format!(
                "{shown} is beyond the range of the 32-bit numbers settings are held in ({:e} \
                 to {:e} in size)",
                f32::MIN_POSITIVE,
                f32::MAX
            ),
        });
    }
    Ok(())
}

/// `(dotted key, value)` for every leaf of a TOML value.
fn flatten(prefix: &str, v: &toml::Value) -> Vec<(String, toml::Value)> {
    match v {
        toml::Value::Table(t) => t
            .iter()
            .flat_map(|(k, v)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v)
            })
            .collect(),
        other => vec![(prefix.to_string(), other.clone())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for p in ["tiny", "small"] {
            RunConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(RunConfig::preset("huge")
            .unwrap_err()
            .to_string()
            .contains("huge"));
    }

    #[test]
    fn set_overrides_nested_keys_and_rejects_unknown_ones() {
        let c = RunConfig::preset("tiny").unwrap();
        let c = c
            .set("model.hidden_size=128")
            .unwrap()
            .set("steps = 7")
            .unwrap();
        assert_eq!((c.model.hidden_size(), c.steps), (128, 7));
        let c = c.set("max_lr=1e-4").unwrap();
        assert_eq!(c.max_lr, 1e-4);
        let e = c.clone().set("model.hiden_size=3").unwrap_err().to_string();
        assert!(
            e.contains("model.hiden_size") && e.contains("no such setting"),
            "{e}"
        );
        let e = c.clone().set("steps=many").unwrap_err().to_string();
        assert!(e.contains("steps") && e.contains("bad value"), "{e}");
        let e = c.clone().set("model=3").unwrap_err().to_string();
        assert!(e.contains("table"), "{e}");
        // a non-finite number is named as such (not as a `null` nobody wrote)
        for v in ["nan", "inf", "-inf", "NaN"] {
            let e = c
                .clone()
                .set(&format!("max_lr={v}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("max_lr") && e.contains("finite number"), "{e}");
        }
        let folder = ferrolab_data::TempFolder::new("cfg-nan").unwrap();
        let toml = folder.join("run.toml");
        std::fs::write(&toml, "steps = 5\n[model]\nrope_theta = nan\n").unwrap();
        let e = c.clone().merge_toml_file(&toml).unwrap_err().to_string();
        assert!(
            e.contains("model.rope_theta") && e.contains("finite number") && !e.contains("null"),
            "{e}"
        );
        std::fs::write(&toml, "steps = 5\n[model]\nrope_theta = 5e4\n").unwrap();
        let ok = c.clone().merge_toml_file(&toml).unwrap();
        assert_eq!(ok.steps, 5);
        // the model family comes from the preset; naming the same one is fine
        let e = c
            .clone()
            .set("model.model_type=llama")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--preset") && e.contains("deepseek_v3"), "{e}");
        c.clone().set("model.model_type=deepseek_v3").unwrap();
        // interval ends as the checks apply them
        let e = c.clone().set("max_lr=0").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("0 is outside (0, 10)"), "{e}");
        let e = c
            .clone()
            .set("val_fraction=0.5")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("0.5 is outside (0, 0.5)"), "{e}");
        let e = c.set("beta1=1").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("1 is outside [0, 1)"), "{e}");
    }

    #[test]
    fn numbers_past_the_range_of_a_32_bit_float_are_named_as_given() {
        let c = RunConfig::preset("llama-tiny").unwrap();
        for (set, shown) in [
            ("model.rope_theta=1e39", "1e39"),
            ("model.rms_norm_eps=1e-50", "1e-50"),
            ("max_lr=-1e-45", "-1e-45"),
        ] {
            let e = c.clone().set(set).unwrap_err().to_string();
            assert!(
                e.contains(shown) && e.contains("beyond the range") && !e.contains("inf"),
                "{set}: {e}"
            );
        }
        let ok = c.clone().set("model.rms_norm_eps=1e-30").unwrap();
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(
            json["model"]["rms_norm_eps"].as_f64().unwrap() as f32,
            1e-30
        );
        let dir = ferrolab_data::TempFolder::new("cfg-range").unwrap();
        let p = dir.join("run.toml");
        std::fs::write(&p, "max_lr = 5e-324\n").unwrap();
        let e = c.merge_toml_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("max_lr") && e.contains("5e-324 is beyond the range"),
            "{e}"
        );
    }

    #[test]
    fn validate_names_the_bad_key() {
        let e = RunConfig::preset("llama-tiny")
            .unwrap()
            .set("model.num_attention_heads=3")
            .unwrap()
            .validate();
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("hidden_size") && e.contains("num_attention_heads"),
            "{e}"
        );
        let c = RunConfig::preset("tiny").unwrap();
        let e = c.clone().set("model.n_group=3").unwrap().validate();
        assert!(e.unwrap_err().to_string().contains("n_group"));
        let e = c.clone().set("model.moe_balance=sometimes").unwrap_err();
        assert!(e.to_string().contains("moe_balance"), "{e}");
        for name in RunConfig::PRESETS {
            RunConfig::preset(name).unwrap().validate().unwrap();
        }
        let e = c
            .clone()
            .set("seq_len=4096")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("seq_len"), "{e}");
        let e = c.set("beta2=1.5").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("beta2"), "{e}");
    }

    #[test]
    fn toml_file_merges_over_the_preset() {
        let dir = ferrolab_data::TempFolder::new("cfg").unwrap();
        let p = dir.join("run.toml");
        std::fs::write(
            &p,
            "steps = 12\nmax_lr = 0.001\n[model]\nnum_hidden_layers = 2\n",
        )
        .unwrap();
        let c = RunConfig::preset("tiny")
            .unwrap()
            .merge_toml_file(&p)
            .unwrap();
        assert_eq!(
            (c.steps, c.max_lr, c.model.num_hidden_layers()),
            (12, 0.001, 2)
        );
        std::fs::write(&p, "stepz = 12\n").unwrap();
        let e = RunConfig::preset("tiny")
            .unwrap()
            .merge_toml_file(&p)
            .unwrap_err();
        assert!(e.to_string().contains("stepz"), "{e}");
        std::fs::write(&p, "steps = \n").unwrap();
        let e = RunConfig::preset("tiny")
            .unwrap()
            .merge_toml_file(&p)
            .unwrap_err();
        assert!(e.to_string().contains("run.toml"), "{e}");
    }

    #[test]
    fn the_preset_name_cannot_be_set() {
        let e = RunConfig::preset("llama-tiny")
            .unwrap()
            .set("preset=small")
            .unwrap_err()
            .to_string();
        assert!(e.contains("preset") && e.contains("--preset"), "{e}");
        let dir = ferrolab_data::TempFolder::new("cfg-preset").unwrap();
        let p = dir.join("run.toml");
        std::fs::write(&p, "preset = \"nope\"\n").unwrap();
        let e = RunConfig::preset("tiny")
            .unwrap()
            .merge_toml_file(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("preset"), "{e}");
    }
    #[test]
    fn a_warm_up_past_the_first_decay_is_refused() {
        let c = RunConfig::preset("llama-tiny").unwrap();
        let with = |steps: usize, warmup: usize| RunConfig {
            steps,
            warmup_steps: warmup,
            ..c.clone()
        };
        // 10 steps: x0.316 from step 8, so the peak must be reached by step 7
        assert_eq!(with(10, 8).first_decay_step(), 8);
        with(10, 8).validate().unwrap();
        with(10, 0).validate().unwrap();
        with(1, 1).validate().unwrap();
        for (steps, warmup) in [(10, 9), (10, 40), (1, 2), (600, 481)] {
            let e = with(steps, warmup).validate().unwrap_err().to_string();
            assert!(
                e.contains("warmup_steps")
                    && e.contains(&format!("at most {}", (steps * 4).div_ceil(5))),
                "{e}"
            );
        }
    }

    #[test]
    fn resolve_scales_the_preset_warm_up_with_steps_unless_it_is_given() {
        let sets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (c, was) = RunConfig::resolve("llama-tiny", None, &sets(&["steps=120"])).unwrap();
        assert_eq!((c.steps, c.warmup_steps, was), (120, 10, Some(50)));
        let (c, _) = RunConfig::resolve("llama-tiny", None, &sets(&["steps=3"])).unwrap();
        assert_eq!(c.warmup_steps, 1);
        c.validate().unwrap();
        let (c, _) = RunConfig::resolve("llama-small", None, &sets(&["steps=400"])).unwrap();
        assert_eq!(c.warmup_steps, 20);
        // given, in either order, it is kept (and checked)
        for v in [
            ["steps=20", "warmup_steps=4"],
            ["warmup_steps=4", "steps=20"],
        ] {
            let (c, was) = RunConfig::resolve("llama-tiny", None, &sets(&v)).unwrap();
            assert_eq!((c.steps, c.warmup_steps, was), (20, 4, None));
        }
        let (c, _) =
            RunConfig::resolve("tiny", None, &sets(&["steps=20", "warmup_steps=50"])).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("warmup_steps"));
        // untouched steps keep the preset's warm-up; a TOML file counts as given
        let (c, was) = RunConfig::resolve("tiny", None, &sets(&["max_lr=1e-3"])).unwrap();
        assert_eq!((c.warmup_steps, was), (50, None));
        let dir = ferrolab_data::TempFolder::new("cfg-warm").unwrap();
        let p = dir.join("run.toml");
        std::fs::write(&p, "steps = 30\nwarmup_steps = 6\n").unwrap();
        let (c, was) = RunConfig::resolve("tiny", Some(&p), &[]).unwrap();
        assert_eq!((c.steps, c.warmup_steps, was), (30, 6, None));
        std::fs::write(&p, "steps = 30\n").unwrap();
        let (c, was) = RunConfig::resolve("tiny", Some(&p), &sets(&["max_lr=1e-3"])).unwrap();
        assert_eq!((c.steps, c.warmup_steps, was), (30, 3, Some(50)));
    }
}
