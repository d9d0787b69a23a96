//! `ferrolab experiment NAME`: the DeepSeek-V3 ablations, each arm a full training run on the
//! same tokens (same corpus, tokenizer, batches, steps and seed), so every arm gets the same
//! data and the same number of optimizer steps.
//!
//! - `balance`: expert balancing none vs auxiliary loss vs auxiliary-loss-free (V3 tiny, MTP
//!   off): held-out loss, MaxVio per batch (mean over training steps and MoE layers) and over
//!   the whole held-out set.
//! - `mtp`: multi-token prediction off vs on (V3 tiny): main-head held-out loss; for the MTP
//!   arm, self-speculative greedy decoding against plain greedy decoding (acceptance, speed).
//! - `attention`: MLA vs MHA vs GQA with dense SwiGLU layers of the same width (so only the
//!   attention differs), at similar parameter counts: held-out loss and KV-cache bytes/token.
//!
//! Arms are ordinary run directories under `OUT/ARM`: an interrupted experiment continues
//! from their snapshots, and a finished arm is not trained again.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ferrolab_models::{Balance, LmConfig, Model, ModelConfig, V3Config};
use serde::Serialize;

use crate::config::RunConfig;
use crate::data::{TokenData, Tokenizer};
use crate::error::{Result, TrainError};
use crate::run::RunDir;
use crate::trainer::Trainer;

/// The experiments `ferrolab experiment` knows.
pub const EXPERIMENTS: [&str; 3] = ["balance", "mtp", "attention"];

/// One arm's measured outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ArmResult {
    /// Arm name.
    pub arm: String,
    /// Main-head held-out loss (nats/token).
    pub val_loss: f64,
    /// Held-out bits per byte.
    pub val_bpb: f64,
    /// Parameters: total.
    pub params_total: usize,
    /// Parameters active per token.
    pub params_active: usize,
    /// Attention cache per token over all layers, bytes (f32).
    pub kv_bytes_per_token: usize,
    /// MaxVio of the training batches, mean over steps and MoE layers.
    pub max_vio_batch: Option<f64>,
    /// MaxVio over the whole held-out set, mean over MoE layers.
    pub max_vio_global: Option<f64>,
    /// Held-out MTP loss per depth.
    pub val_mtp_loss: Vec<f64>,
    /// Self-speculative decoding against greedy decoding (MTP arms).
    pub speculative: Option<SpecReport>,
    /// Training throughput of the arm's last `train` call.
    pub tokens_per_s: f64,
}

/// Self-speculative decoding measured against plain greedy decoding on held-out prompts.
#[derive(Clone, Debug, Serialize)]
pub struct SpecReport {
    /// Prompts decoded.
    pub prompts: usize,
    /// New tokens per prompt.
    pub new_tokens: usize,
    /// Draft tokens proposed by the MTP module.
    pub drafted: usize,
    /// Draft tokens the main model accepted.
    pub accepted: usize,
    /// Greedy decoding tokens/s.
    pub greedy_tokens_per_s: f64,
    /// Speculative decoding tokens/s.
    pub speculative_tokens_per_s: f64,
    /// Whether both produced the same tokens for every prompt.
    pub identical: bool,
}

/// The arms of experiment `name` on top of `base` (a `tiny`-like run config).
pub fn arms(name: &str, base: &RunConfig) -> Result<Vec<(String, RunConfig)>> {
    let v3 = match &base.model {
        ModelConfig::DeepseekV3(c) => c.clone(),
        other => {
            return Err(TrainError::Config {
                key: "preset".into(),
                msg: format!(
                    "experiment `{name}` compares DeepSeek-V3 arms, and this preset is a `{}` \
                     model; use a DeepSeek-V3 preset (tiny, small)",
                    other.model_type()
                ),
            })
        }
    };
    let with = |model: ModelConfig| RunConfig {
        model,
        ..base.clone()
    };
    let arm_v3 = |f: &dyn Fn(&mut V3Config)| {
        let mut c = v3.clone();
        f(&mut c);
        with(ModelConfig::DeepseekV3(c))
    };
    if name == "balance"
        && (v3.n_routed_experts == 0 || v3.num_hidden_layers <= v3.first_k_dense_replace)
    {
        return Err(TrainError::Config {
            key: "model".into(),
            msg: format!(
                "experiment `balance` compares load balancing of routed experts, and this model \
                 has no MoE layer (n_routed_experts {}, {} layers, the first {} dense)",
                v3.n_routed_experts, v3.num_hidden_layers, v3.first_k_dense_replace
            ),
        });
    }
    Ok(match name {
        "balance" => vec![
            (
                "none".into(),
                arm_v3(&|c| {
                    c.num_nextn_predict_layers = 0;
                    c.moe_balance = Balance::None;
                }),
            ),
            (
                "aux-loss".into(),
                arm_v3(&|c| {
                    c.num_nextn_predict_layers = 0;
                    c.moe_balance = Balance::AuxLoss;
                    c.aux_loss_alpha = 0.01;
                }),
            ),
            (
                "aux-free".into(),
                arm_v3(&|c| {
                    c.num_nextn_predict_layers = 0;
                    c.moe_balance = Balance::AuxFree;
                }),
            ),
            // V3's gamma = 0.001 moves a bias by at most 0.001 per step: a few hundred steps
            // move it less than the spread of the sigmoid scores. A short run needs a faster
            // update to reach the balanced state the paper reports.
            (
                "aux-free-g0.01".into(),
                arm_v3(&|c| {
                    c.num_nextn_predict_layers = 0;
                    c.moe_balance = Balance::AuxFree;
                    c.bias_update_speed = 0.01;
                }),
            ),
        ],
        "mtp" => vec![
            (
                "mtp-off".into(),
                arm_v3(&|c| c.num_nextn_predict_layers = 0),
            ),
            ("mtp-on".into(), arm_v3(&|c| c.num_nextn_predict_layers = 1)),
        ],
        "attention" => {
            // dense SwiGLU everywhere so that only the attention differs
            let mla = {
                let mut c = v3.clone();
                c.n_routed_experts = 0;
                c.num_nextn_predict_layers = 0;
                c
            };
            let llama = |kv_heads: usize| LmConfig {
                vocab_size: mla.vocab_size,
                hidden_size: mla.hidden_size,
                intermediate_size: mla.intermediate_size,
                num_hidden_layers: mla.num_hidden_layers,
                num_attention_heads: mla.num_attention_heads,
                num_key_value_heads: kv_heads,
                max_position_embeddings: mla.max_position_embeddings,
                rms_norm_eps: mla.rms_norm_eps,
                rope_theta: mla.rope_theta,
                tie_word_embeddings: mla.tie_word_embeddings,
                initializer_range: mla.initializer_range,
                recompute: false,
            };
            let heads = mla.num_attention_heads;
            let gqa = (heads / 2).max(1);
            vec![
                ("mla".into(), with(ModelConfig::DeepseekV3(mla.clone()))),
                ("mha".into(), with(ModelConfig::Llama(llama(heads)))),
                (format!("gqa-{gqa}kv"), with(ModelConfig::Llama(llama(gqa)))),
            ]
        }
        other => {
            return Err(TrainError::Config {
                key: "experiment".into(),
                msg: format!(
                    "unknown experiment `{other}` (known: {})",
                    EXPERIMENTS.join(", ")
                ),
            })
        }
    })
}

/// The settings the arms of experiment `name` set themselves (dotted keys): a `--set` of one
/// of them would be overridden in some arm, or make two arms alike.
pub fn arm_keys(name: &str) -> &'static [&'static str] {
    match name {
        "balance" => &[
            "model.num_nextn_predict_layers",
            "model.moe_balance",
            "model.aux_loss_alpha",
            "model.bias_update_speed",
        ],
        "mtp" => &["model.num_nextn_predict_layers"],
        "attention" => &[
            "model.n_routed_experts",
            "model.num_nextn_predict_layers",
            "model.num_key_value_heads",
            "model.recompute",
        ],
        _ => &[],
    }
}

/// Refuses an `out` whose arm directories hold runs of another config (before the corpus is
/// read and a vocabulary trained for nothing); [`run_experiment`] checks again.
pub fn check_out(name: &str, base: &RunConfig, out: &Path) -> Result<()> {
    for (arm, cfg) in arms(name, base)? {
        let dir = out.join(&arm);
        if dir.join("train.json").exists() {
            let (_, saved) = RunDir::open(&dir)?;
            if saved != cfg {
                let json = |c: &RunConfig| crate::run::config_json(c).unwrap_or_default();
                let changes = crate::run::config_changes(&json(&saved), &json(&cfg));
                return Err(TrainError::Config {
                    key: dir.display().to_string(),
                    msg: format!(
                        "holds a run with another config ({}); remove it or choose another \
                         --out",
                        crate::run::ConfigChange::list(&changes)
                    ),
                });
            }
        } else {
            // the arm will be created there
            RunDir::check_new(&dir)?;
        }
    }
    Ok(())
}

/// Trains (or continues, or reuses) every arm of `name` under `out` and measures it.
/// `base` fixes the data, steps and seed shared by all arms; `tok` and `data` come from
/// [`Trainer::prepare`] on `base`.
pub fn run_experiment(
    name: &str,
    base: &RunConfig,
    out: &Path,
    tok: &Tokenizer,
    data: &TokenData,
    stop: &AtomicBool,
    progress: bool,
) -> Result<Vec<ArmResult>> {
    check_out(name, base, out)?;
    let mut results = Vec::new();
    for (arm, cfg) in arms(name, base)? {
        let dir: PathBuf = out.join(&arm);
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            // asked to stop between two arms: the next one is not started
            return Err(TrainError::Interrupted {
                step: 0,
                dir: out.to_path_buf(),
                dropped_micro_batches: 0,
            });
        }
        crate::note!("== {name}: arm {arm} ({})", dir.display());
        let mut t = if dir.join("train.json").exists() {
            // (checked here for an experiment's advice: the resume's own is train's)
            if let Some(rec) = RunDir::open(&dir)?.0.corpus()? {
                if rec.sha256 != data.source.sha256 {
                    return Err(TrainError::Corpus {
                        path: data.source.origin.clone(),
                        msg: format!(
                            "is not the text arm {arm} was trained on ({}, {} bytes): run the \
                             experiment with the --corpus it started with, or give another --out",
                            rec.origin, rec.bytes
                        ),
                    });
                }
            }
            Trainer::resume(&dir, data.clone())?
        } else {
            Trainer::create(&dir, cfg.clone(), tok.clone(), data.clone())?
        };
        t.progress = progress;
        let outcome = if t.step() < cfg.steps {
            let o = t.train(stop)?;
            if o.interrupted {
                return Err(TrainError::Interrupted {
                    step: o.step,
                    dir: dir.clone(),
                    dropped_micro_batches: o.dropped_micro_batches,
                });
            }
            o.tokens_per_s
        } else {
            f64::NAN
        };
        let e = t.evaluate_full()?;
        let mean = |v: &[f64]| {
            if v.is_empty() {
                None
            } else {
                Some(v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        let batch_vio: Vec<f64> = t
            .run
            .metrics()?
            .iter()
            .filter_map(|m| m.get("max_vio")?.as_array().cloned())
            .filter_map(|layers| {
                mean(&layers.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>())
            })
            .collect();
        let speculative = match &t.model {
            Model::DeepseekV3(m) if m.cfg.num_nextn_predict_layers > 0 => {
                Some(speculative_report(m, data)?)
            }
            _ => None,
        };
        let (params_total, params_active) = cfg.model.num_params();
        let r = ArmResult {
            arm: arm.clone(),
            val_loss: e.loss,
            val_bpb: e.bits_per_byte,
            params_total,
            params_active,
            kv_bytes_per_token: cfg.model.cache_bytes_per_token(),
            max_vio_batch: mean(&batch_vio),
            max_vio_global: mean(&e.max_vio_global),
            val_mtp_loss: e.mtp.clone(),
            speculative,
            tokens_per_s: outcome,
        };
        crate::note!("{}", serde_json::to_string(&r).unwrap_or_default());
        results.push(r);
    }
    let json = serde_json::to_string_pretty(&results).map_err(|e| TrainError::Config {
        key: "results".into(),
        msg: e.to_string(),
    })?;
    let path = out.join("results.json");
    ferrolab_tensor::io::write_atomic(&path, json.as_bytes())?;
    Ok(results)
}

/// Greedy vs self-speculative decoding of 64 tokens after 4 held-out prompts of 32 tokens.
fn speculative_report(m: &ferrolab_models::DeepseekV3, data: &TokenData) -> Result<SpecReport> {
    let (prompts, prompt_len, new_tokens) = (4usize, 32usize, 64usize);
    let new_tokens = new_tokens.min(m.cfg.max_position_embeddings.saturating_sub(prompt_len + 2));
    let span = data.val.len().saturating_sub(prompt_len).max(1);
    let (mut drafted, mut accepted) = (0, 0);
    let (mut t_greedy, mut t_spec) = (0f64, 0f64);
    let mut identical = true;
    for k in 0..prompts {
        let s = k * span / prompts;
        let prompt = &data.val[s..(s + prompt_len).min(data.val.len())];
        let t0 = Instant::now();
        let g = m.generate_greedy(prompt, new_tokens)?;
        t_greedy += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let (sp, stats) = m.generate_speculative(prompt, new_tokens)?;
        t_spec += t0.elapsed().as_secs_f64();
        identical &= g == sp;
        drafted += stats.drafted;
        accepted += stats.accepted;
    }
    let n = (prompts * new_tokens) as f64;
    Ok(SpecReport {
        prompts,
        new_tokens,
        drafted,
        accepted,
        greedy_tokens_per_s: n / t_greedy.max(1e-9),
        speculative_tokens_per_s: n / t_spec.max(1e-9),
        identical,
    })
}

/// The results as a markdown table.
pub fn table(name: &str, results: &[ArmResult]) -> String {
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut s = String::new();
    match name {
        "balance" => {
            s += "| arm | val loss | val bits/byte | MaxVio batch | MaxVio global |\n|---|---|---|---|---|\n";
            for r in results {
                s += &format!(
                    "| {} | {:.4} | {:.4} | {} | {} |\n",
                    r.arm,
                    r.val_loss,
                    r.val_bpb,
                    opt(r.max_vio_batch),
                    opt(r.max_vio_global)
                );
            }
        }
        "mtp" => {
            s += "| arm | main val loss | val MTP loss | draft acceptance | greedy tok/s | speculative tok/s | speed-up | same tokens |\n|---|---|---|---|---|---|---|---|\n";
            for r in results {
                let mtp = r
                    .val_mtp_loss
                    .iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (acc, g, sp, up, same) = match &r.speculative {
                    // a context too short for a 32-token prompt and new tokens
                    Some(p) if p.new_tokens == 0 => (
                        "no room to decode".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ),
                    Some(p) => (
                        format!(
                            "{:.1}% ({}/{})",
                            100.0 * p.accepted as f64 / p.drafted.max(1) as f64,
                            p.accepted,
                            p.drafted
                        ),
                        format!("{:.1}", p.greedy_tokens_per_s),
                        format!("{:.1}", p.speculative_tokens_per_s),
                        format!("{:.2}x", p.speculative_tokens_per_s / p.greedy_tokens_per_s),
                        if p.identical { "yes" } else { "NO" }.to_string(),
                    ),
                    None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
                };
                s += &format!(
                    "| {} | {:.4} | {} | {acc} | {g} | {sp} | {up} | {same} |\n",
                    r.arm,
                    r.val_loss,
                    if mtp.is_empty() { "-".into() } else { mtp }
                );
            }
        }
        _ => {
            s += "| arm | val loss | val bits/byte | parameters | KV cache bytes/token (f32, all layers) |\n|---|---|---|---|---|\n";
            for r in results {
                s += &format!(
                    "| {} | {:.4} | {:.4} | {:.2}M | {} |\n",
                    r.arm,
                    r.val_loss,
                    r.val_bpb,
                    r.params_total as f64 / 1e6,
                    r.kv_bytes_per_token
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_differ_only_where_the_experiment_says() {
        let base = RunConfig::preset("tiny").unwrap();
        let b = arms("balance", &base).unwrap();
        assert_eq!(b.len(), 4);
        for (_, c) in &b {
            assert_eq!(
                (c.steps, c.seed, c.batch_size),
                (base.steps, base.seed, base.batch_size)
            );
            c.validate().unwrap();
        }
        let a = arms("attention", &base).unwrap();
        let kv: Vec<usize> = a
            .iter()
            .map(|(_, c)| c.model.cache_bytes_per_token())
            .collect();
        // MLA caches less than GQA, which caches less than MHA
        assert!(kv[0] < kv[2] && kv[2] < kv[1], "{kv:?}");
        let e = arms("nope", &base).unwrap_err().to_string();
        assert!(e.contains("balance") && e.contains("nope"), "{e}");
        // a model without MoE layers has nothing to balance
        let mut no_moe = base.clone();
        if let ModelConfig::DeepseekV3(c) = &mut no_moe.model {
            c.first_k_dense_replace = c.num_hidden_layers;
        }
        let e = arms("balance", &no_moe).unwrap_err().to_string();
        assert!(e.contains("no MoE layer"), "{e}");
        // a dense preset is refused, not silently replaced by the V3 `tiny` model
        let dense = RunConfig::preset("llama-tiny").unwrap();
        let e = arms("mtp", &dense).unwrap_err().to_string();
        assert!(e.contains("DeepSeek-V3") && e.contains("llama"), "{e}");
    }

    #[test]
    fn arm_keys_name_every_setting_an_arm_changes() {
        let base = RunConfig::preset("tiny").unwrap();
        let base_json = crate::run::config_json(&base).unwrap();
        for name in EXPERIMENTS {
            for (arm, cfg) in arms(name, &base).unwrap() {
                let changes =
                    crate::run::config_changes(&base_json, &crate::run::config_json(&cfg).unwrap());
                for c in changes {
                    // keys of one model family only (the attention arms' llama models) are
                    // not settings a --set could reach in both
                    if c.old == "-" || c.new == "-" || c.key == "model.model_type" {
                        continue;
                    }
                    assert!(
                        arm_keys(name).contains(&c.key.as_str()),
                        "{name}/{arm} changes {} ({} -> {})",
                        c.key,
                        c.old,
                        c.new
                    );
                }
            }
        }
    }

    #[test]
    fn an_out_holding_another_configs_arm_is_refused_before_any_work() {
        let out = ferrolab_data::TempFolder::new("exp-out").unwrap();
        std::fs::remove_dir(&out).unwrap();
        let base = RunConfig::preset("tiny").unwrap();
        // nothing there yet, then an arm written with this base's config: both taken
        check_out("mtp", &base, &out).unwrap();
        let (arm, cfg) = arms("mtp", &base).unwrap().pop().unwrap();
        RunDir::create(&out.join(&arm), &cfg).unwrap();
        check_out("mtp", &base, &out).unwrap();
        // the same out with more steps per arm: the existing arm is named
        let more = RunConfig {
            steps: base.steps + 1,
            ..base.clone()
        };
        let e = check_out("mtp", &more, &out).unwrap_err().to_string();
        assert!(e.contains(&arm) && e.contains("another config"), "{e}");
        assert!(
            e.contains(&format!("steps {} -> {}", base.steps, more.steps)),
            "{e}"
        );
        // an arm's folder that holds something else is refused too, before any work
        let (other_arm, _) = arms("mtp", &base).unwrap().remove(0);
        std::fs::create_dir_all(out.join(&other_arm)).unwrap();
        std::fs::write(out.join(&other_arm).join("notes.txt"), "mine").unwrap();
        let e = check_out("mtp", &base, &out).unwrap_err().to_string();
        assert!(e.contains("is not empty") && e.contains("notes.txt"), "{e}");
    }

    #[test]
    fn the_mtp_table_has_no_nan_when_the_context_left_no_room_to_decode() {
        let arm = |new_tokens: usize, tok_s: f64| ArmResult {
            arm: "mtp1".into(),
            val_loss: 5.0,
            val_bpb: 1.5,
            params_total: 1,
            params_active: 1,
            kv_bytes_per_token: 1,
            max_vio_batch: None,
            max_vio_global: None,
            val_mtp_loss: vec![5.5],
            speculative: Some(SpecReport {
                prompts: 4,
                new_tokens,
                drafted: 0,
                accepted: 0,
                greedy_tokens_per_s: tok_s,
                speculative_tokens_per_s: tok_s,
                identical: true,
            }),
            tokens_per_s: 1.0,
        };
        // no new token: 0 tokens in ~0 s on both sides
        let t = table("mtp", &[arm(0, 0.0)]);
        assert!(!t.contains("NaN") && t.contains("no room to decode"), "{t}");
        let t = table("mtp", &[arm(64, 100.0)]);
        assert!(t.contains("1.00x") && !t.contains("no room"), "{t}");
    }
}
