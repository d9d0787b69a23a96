//! `ferrolab logits`: the logits of a token sequence, from a ferrolab run directory or an HF
//! model directory, written as a safetensors tensor `logits` `[T, vocab]` in f32 (for parity
//! checks against other implementations).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrolab_models::Model;
use ferrolab_tensor::{io, no_grad, DType};

#[derive(Args)]
pub struct LogitsArgs {
    /// A ferrolab run directory, or an HF directory (`config.json` + `model.safetensors` or a
    /// sharded index) of a `deepseek_v3` or `llama` model.
    #[arg(long)]
    model: PathBuf,
    /// Token ids separated by spaces or commas, e.g. "1 5 42".
    #[arg(long)]
    ids: String,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

/// Parses "1 5, 42" into ids; a bad entry is named.
fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for word in s.split_whitespace() {
        let parts: Vec<&str> = word.split(',').collect();
        for (k, p) in parts.iter().enumerate() {
            if p.is_empty() {
                // a comma beside white space separates; two in a row leave an id out
                if k > 0 && k + 1 < parts.len() {
                    bail!("--ids: `{word}` has an empty place between two commas");
                }
                continue;
            }
            ids.push(
                p.parse::<u32>()
                    .with_context(|| format!("--ids: `{p}` is not a token id"))?,
            );
        }
    }
    if ids.is_empty() {
        bail!("--ids: no token ids given");
    }
    Ok(ids)
}

/// The model in `dir`: a run (has `train.json`) or an HF directory, the latter able to take
/// `positions` tokens even past its `max_position_embeddings` (as `transformers`).
fn load(dir: &std::path::Path, positions: usize) -> Result<Model> {
    if dir.join("train.json").exists() {
        return Ok(ferrolab_train::load_model(dir)?.0);
    }
    if dir.is_file() {
        bail!(
            "{}: is a file (give a run or an HF model folder)",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!(
            "{}: no such folder (give a run or an HF model folder)",
            dir.display()
        );
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        bail!(
            "{}: not a run (no train.json) nor an HF model folder (no config.json)",
            dir.display()
        );
    }
    let text = ferrolab_data::read_regular_to_string(&cfg_path)
        .with_context(|| format!("reading {}", cfg_path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", cfg_path.display()))?;
    let limit = v.get("max_position_embeddings").and_then(|x| x.as_u64());
    if let Some(limit) = limit.filter(|&l| (positions as u64) > l) {
        eprintln!(
            "note: {positions} ids are more than max_position_embeddings ({limit}): RoPE is \
             computed for all of them, as transformers does"
        );
    }
    match v.get("model_type").and_then(|t| t.as_str()) {
        Some("deepseek_v3") => {
            let (_vars, m) = ferrolab_models::deepseek_v3::load_hf_for(dir, positions)?;
            Ok(Model::DeepseekV3(m))
        }
        Some("llama") => {
            let (_vars, m) = ferrolab_models::hf::load_llama_for(dir, positions)?;
            Ok(Model::Llama(m))
        }
        Some(other) => bail!(
            "{}: model_type \"{other}\" is not one ferrolab runs (deepseek_v3, llama)",
            cfg_path.display()
        ),
        None => bail!(
            "{}: no model_type (ferrolab runs deepseek_v3 and llama)",
            cfg_path.display()
        ),
    }
}

pub fn run(a: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&a.ids)?;
    // an existing file of the model's own folder (its weights, its config) is never replaced
    let parent = a.out.parent().map(|p| {
        if p.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            p
        }
    });
    if a.out.exists() {
        if let Ok(model) = std::fs::canonicalize(&a.model) {
            // the folder --out is in, and the one of the file it links to (written through)
            let real = std::fs::canonicalize(&a.out).ok();
            let folders = [
                parent.and_then(|p| std::fs::canonicalize(p).ok()),
                real.as_deref()
                    .and_then(std::path::Path::parent)
                    .map(std::path::Path::to_path_buf),
            ];
            // and the files the model folder's own files are, through links (an HF cache
            // keeps the weights elsewhere and links them in)
            let targets: Vec<std::path::PathBuf> = std::fs::read_dir(&model)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| std::fs::canonicalize(e.path()).ok())
                        .collect()
                })
                .unwrap_or_default();
            let is_target = real.as_ref().is_some_and(|r| targets.contains(r));
            if is_target || folders.iter().flatten().any(|d| d == &model) {
                bail!(
                    "--out {} is a file of the model directory {}: write the logits elsewhere",
                    a.out.display(),
                    a.model.display()
                );
            }
        }
    }
    let model = load(&a.model, ids.len())?;
    let cfg = model.config();
    let t = ids.len();
    let logits = no_grad(|| model.forward(&ids, 1, t))?; // (1, T, V)
    let logits = logits.reshape(&[t, cfg.vocab_size()])?;
    let bad = logits.to_vec().iter().filter(|x| !x.is_finite()).count();
    // written even when some are not finite (a parity check wants to see them), but then not
    // as a success
    // a file the user names: a link to one is written through
    let bytes =
        io::encode_safetensors(&a.out, &[("logits".to_string(), logits)], DType::F32, None)?;
    ferrolab_data::write_atomic_with(&a.out, &bytes, ferrolab_data::Links::Follow)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    if bad > 0 {
        bail!(
            "{bad} of the {} logits are not finite (NaN or infinite): the weights of {} hold \
             such values or overflow; written to {} anyway",
            t * cfg.vocab_size(),
            a.model.display(),
            a.out.display()
        );
    }
    eprintln!(
        "wrote logits [{t}, {}] (f32) to {}",
        cfg.vocab_size(),
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ids;

    #[test]
    fn ids_are_separated_by_white_space_or_commas_but_none_is_left_out() {
        for ok in ["1 5 42", "1,5,42", "1, 5, 42", "1 ,5 , 42", " 1\n5\t42,"] {
            assert_eq!(parse_ids(ok).unwrap(), vec![1, 5, 42], "{ok:?}");
        }
        for bad in ["1,,2", "1,, 2", "", " , ", "1 x", "-1"] {
            assert!(parse_ids(bad).is_err(), "{bad:?}");
        }
    }
}
