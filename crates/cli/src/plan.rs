//! `ferrolab plan`: DeepSeek LLM's scaling laws for a compute budget, or the model scale of a
//! config.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrolab_models::{LmConfig, V3Config};
use ferrolab_train::plan;

#[derive(Args)]
pub struct PlanArgs {
    /// Compute budget C in FLOPs (e.g. 1e18).
    #[arg(long, allow_negative_numbers = true)]
    compute: Option<f64>,
    /// A model config (HF `config.json`, or a run's), or the folder that holds it, to measure
    /// instead.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sequence length l (in the attention term of M, and B_opt in sequences). Default: 4096
    /// with `--compute` (DeepSeek LLM's), the config's `max_position_embeddings` with `--model`.
    #[arg(long)]
    seq_len: Option<usize>,
}

/// The compute budgets DeepSeek LLM fitted its hyperparameter laws on.
const FIT_LOW: f64 = 1e17;
const FIT_HIGH: f64 = 2e19;

/// The sequence length `--model` counts at, and how it was chosen; a `--seq-len` beyond the
/// model's context is refused.
fn model_seq_len(
    given: Option<usize>,
    max_positions: usize,
    path: &std::path::Path,
) -> Result<(usize, String)> {
    match given {
        None => Ok((max_positions, "max_position_embeddings".into())),
        Some(l) if l > max_positions => bail!(
            "--seq-len {l} is longer than the context of {} (max_position_embeddings {max_positions})",
            path.display()
        ),
        Some(l) => Ok((l, "--seq-len".into())),
    }
}

/// A note naming the sizes the config leaves out, counted with `transformers`' defaults
/// (`plan --model` on a config without `hidden_size` counted a 4096-wide model silently).
fn defaults_note(
    v: &serde_json::Value,
    defaults: &[(&'static str, serde_json::Value)],
    class: &str,
) {
    let missing: Vec<String> = defaults
        .iter()
        .filter(|(k, _)| v.get(k).is_none())
        .map(|(k, d)| format!("{k} = {d}"))
        .collect();
    if !missing.is_empty() {
        println!(
            "note               the config leaves out {}: counted with transformers' {class} defaults",
            missing.join(", ")
        );
    }
}

pub fn run(a: PlanArgs) -> Result<()> {
    if a.seq_len == Some(0) {
        bail!("--seq-len must be > 0");
    }
    match (a.compute, &a.model) {
        (Some(c), None) => {
            if !(c.is_finite() && c > 0.0) {
                bail!("--compute must be a positive number of FLOPs, got {c}");
            }
            let p = plan::plan(c, a.seq_len.unwrap_or(4096));
            println!("compute C          {:.3e} FLOPs", p.compute);
            println!("eta_opt            {:.3e}   (0.3118 C^-0.1250)", p.eta);
            let seqs = p.batch_seqs();
            println!(
                "B_opt              {:.4e} tokens = {} sequences of {}   (0.2920 C^0.3271)",
                p.batch_tokens,
                if seqs < 10.0 {
                    format!("{seqs:.3}")
                } else if seqs < 1e9 {
                    format!("{seqs:.0}")
                } else {
                    format!("{seqs:.4e}")
                },
                p.seq_len
            );
            println!(
                "M_opt              {:.4e} FLOPs/token   (0.1715 C^0.5243)",
                p.m
            );
            println!("D_opt              {:.4e} tokens   (5.8316 C^0.4757)", p.d);
            let ratio = p.shape_m / p.m;
            let off = if (0.01..=100.0).contains(&ratio) {
                format!("{:+.1}% of M_opt", 100.0 * (ratio - 1.0))
            } else {
                format!("{ratio:.3e} x M_opt")
            };
            println!(
                "shape              {} layers x {} wide (M = 72 n d^2 + 12 n d l = {:.4e}, {off})",
                p.layers, p.width, p.shape_m,
            );
            if !(FIT_LOW..=FIT_HIGH).contains(&c) {
                println!(
                    "note               the laws were fitted on budgets of {FIT_LOW:.0e}-{FIT_HIGH:.0e} \
                     FLOPs (and checked at 1e20); at {c:.3e} they are extrapolated"
                );
            }
            if !p.shape_fits {
                println!(
                    "note               no shape of 1-{} layers and width 64-{} (multiples of 64) \
                     is within 10% of M_opt at this budget: the closest one is shown",
                    plan::MAX_LAYERS,
                    plan::MAX_WIDTH
                );
            }
            Ok(())
        }
        (None, Some(path)) => {
            // a run folder: its train.json (what every other command reads; its config.json
            // is a copy for HF); an HF model folder: its config.json
            let (run_config, dir_config) = (path.join("train.json"), path.join("config.json"));
            let path = match path.is_dir() {
                true if run_config.is_file() => &run_config,
                true => &dir_config,
                false => path,
            };
            let text = ferrolab_data::read_regular_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            // a run's train.json holds the model's config under `model`
            if v.get("model_type").is_none() && v.get("model").is_some_and(|m| m.is_object()) {
                v = v["model"].take();
            }
            if v.get("model_type").and_then(|t| t.as_str()) == Some("deepseek_v3") {
                // RoPE scaling (DeepSeek-V3's own config has YaRN) changes no count
                let mut shapes = v.clone();
                // (both keys removed: `any` would stop at the first scaled one)
                let scaled = ["rope_scaling", "rope_parameters"]
                    .map(|k| {
                        shapes
                            .as_object_mut()
                            .and_then(|o| o.remove(k))
                            .and_then(|r| {
                                let kind = r.get("rope_type").or_else(|| r.get("type"))?;
                                Some(kind.as_str() != Some("default"))
                            })
                            .unwrap_or(false)
                    })
                    .contains(&true);
                let cfg = V3Config::from_hf(&shapes)
                    .with_context(|| format!("{}: not a deepseek_v3 config", path.display()))?;
                // the main model, and the MTP modules apart (`transformers` builds none of them)
                let main = V3Config {
                    num_nextn_predict_layers: 0,
                    ..cfg.clone()
                };
                let (total, active) = main.num_params();
                let (all, all_active) = cfg.num_params();
                let (l, from) = model_seq_len(a.seq_len, cfg.max_position_embeddings, path)?;
                let m = plan::m_of_v3(&cfg, l);
                let experts = if cfg.n_routed_experts == 0 {
                    "no routed experts".to_string()
                } else {
                    format!(
                        "{} of {} routed experts",
                        cfg.num_experts_per_tok, cfg.n_routed_experts
                    )
                };
                println!(
                    "parameters         {total} total, {active} active per token ({experts}; main model)"
                );
                if cfg.num_nextn_predict_layers > 0 {
                    println!(
                        "MTP modules        {} more in {} module(s) ({} active per token)",
                        all - total,
                        cfg.num_nextn_predict_layers,
                        all_active - active
                    );
                }
                if scaled {
                    println!("note               RoPE scaling is not computed by ferrolab; it changes no count");
                }
                defaults_note(
                    &v,
                    &ferrolab_models::deepseek_v3::hf::v3_defaults(),
                    "DeepseekV3Config",
                );
                println!(
                    "M                  {m:.4e} non-embedding FLOPs/token at sequence {l} ({from}; active experts only, attention included, MTP excluded)"
                );
                let per_layer = cfg.kv_cache_elems_per_token_per_layer();
                println!(
                    "KV cache (MLA)     {per_layer} elements per token per layer (kv_lora_rank {} + qk_rope_head_dim {}); {} bytes (f32) per token, all layers",
                    cfg.kv_lora_rank,
                    cfg.qk_rope_head_dim,
                    4 * per_layer * cfg.num_hidden_layers
                );
                return Ok(());
            }
            match v.get("model_type").and_then(|t| t.as_str()) {
                Some("llama") => {}
                None => bail!(
                    "{}: no model_type (ferrolab counts deepseek_v3 and llama)",
                    path.display()
                ),
                Some(other) => bail!(
                    "{}: model_type {other:?} is not one ferrolab counts (deepseek_v3, llama)",
                    path.display()
                ),
            }
            // as `logits` reads an HF llama: settings ferrolab does not count (biases, another
            // head_dim, RoPE scaling) are refused by name rather than counted wrong
            let cfg = LmConfig::from_hf(&v)
                .with_context(|| format!("{}: not a valid llama config", path.display()))?;
            let (total, non_emb) = cfg.num_params();
            let (l, from) = model_seq_len(a.seq_len, cfg.max_position_embeddings, path)?;
            let m = plan::m_of(&cfg, l);
            println!(
                "parameters         {total} total, {non_emb} non-embedding (all active: dense)"
            );
            defaults_note(&v, &ferrolab_models::hf::llama_defaults(), "LlamaConfig");
            println!(
                "M                  {m:.4e} non-embedding FLOPs/token at sequence {l} ({from}; attention included)"
            );
            println!(
                "KV cache           {} elements = {} bytes (f32) per token, all layers",
                2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim(),
                ferrolab_models::KvCache::bytes_per_token(&cfg)
            );
            Ok(())
        }
        _ => bail!("give exactly one of --compute C or --model CONFIG.json"),
    }
}
