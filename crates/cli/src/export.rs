//! `ferrolab export`: a trained run as an HF model directory (`config.json` with HF keys and
//! `model_type`, `model.safetensors` with the `transformers` tensor names, and the run's
//! `tokenizer.json`), loadable by `transformers` and by `ferrolab logits`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use ferrolab_models::ModelConfig;
use ferrolab_tensor::{io, DType};

#[derive(Args)]
pub struct ExportArgs {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// The HF directory to write (created if needed): a new or empty folder, or an earlier
    /// export (its files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// DeepSeek-V3 runs: leave the MTP module out (`transformers` does not use it and lists
    /// its tensors as unexpected). By default it is written as DeepSeek's checkpoints hold it,
    /// as layer `num_hidden_layers`.
    #[arg(long)]
    no_mtp: bool,
}

/// What `export` writes into `--out`.
const EXPORT_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Refuses an `--out` that is a file or a folder holding anything but an earlier export (a
/// run, another model's shards, notes), whose files would be overwritten or left beside the
/// new ones.
fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!("--out {}: is a file, not a directory", out.display());
    }
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // not there yet: created
    };
    if out.join("train.json").exists() {
        anyhow::bail!(
            "--out {}: is a run folder; export into a folder of its own",
            out.display()
        );
    }
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        // (a temporary file an interrupted export left is passed over)
        if !EXPORT_FILES.contains(&name.as_str()) && !ferrolab_data::is_temp_name(&name) {
            anyhow::bail!(
                "--out {}: holds {name}, which export does not write; give a new or empty \
                 folder (or an earlier export, whose files are replaced)",
                out.display()
            );
        }
    }
    Ok(())
}

pub fn run(a: ExportArgs) -> Result<()> {
    check_out(&a.out)?;
    // read only (the run may be training): the last committed snapshot's weights, checked
    // against its sha256 and the run's vocabulary
    let (vars, _model, cfg, _tok) = ferrolab_train::load_run(&a.run)?;
    // a model for others to load is not written with weights that are not finite (it was,
    // as they were)
    for (name, t) in vars.all() {
        let bad = t.to_vec().iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            anyhow::bail!(
                "{}: {bad} of the {} values of `{name}` are not finite (a diverged or damaged \
                 run?): nothing is exported",
                a.run.display(),
                t.numel()
            );
        }
    }
    if a.no_mtp && !matches!(cfg.model, ModelConfig::DeepseekV3(_)) {
        anyhow::bail!(
            "--no-mtp: {} runs have no MTP module",
            cfg.model.model_type()
        );
    }
    let mut notes = Vec::new();
    // temporary files of an export killed before it could remove them (`kill -9`; Ctrl-C
    // removes its own): this export replaces those files anyway
    if let Ok(entries) = std::fs::read_dir(&a.out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = EXPORT_FILES
                .iter()
                .any(|f| name.starts_with(&format!(".{f}.tmp-")));
            // (not another export's that is running: where /proc tells)
            if ours && ferrolab_data::is_stale_temp_name(&name) {
                let _ = std::fs::remove_file(e.path());
                notes.push(format!("removed {name}, left by an interrupted export"));
            }
        }
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    let mut files = match &cfg.model {
        ModelConfig::DeepseekV3(c) => {
            if c.num_nextn_predict_layers > 0 && !a.no_mtp {
                notes.push(format!(
                    "the MTP module is model.layers.{}.* (DeepSeek's layout; `transformers` \
                     does not use it and lists its tensors as unexpected; --no-mtp leaves it out)",
                    c.num_hidden_layers
                ));
            }
            ferrolab_models::deepseek_v3::hf_files(&a.out, c, &vars, !a.no_mtp)?
        }
        ModelConfig::Llama(c) => {
            let mut v = ferrolab_models::json_value(c)?;
            v["model_type"] = "llama".into();
            v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            let model = a.out.join("model.safetensors");
            let weights = io::encode_safetensors(&model, &vars.all(), DType::F32, None)?;
            vec![
                (model, weights),
                (
                    a.out.join("config.json"),
                    serde_json::to_string_pretty(&v)?.into_bytes(),
                ),
            ]
        }
    };
    // the run's vocabulary, for `AutoTokenizer` (a byte-token run has none)
    let tok_src = a.run.join("tokenizer.json");
    let tok_dst = a.out.join("tokenizer.json");
    // (by the run's recorded kind, not by what the folder holds: a tokenizer.json left in a
    // byte-token run's folder is not its vocabulary)
    let with_tok = !matches!(cfg.tokenizer, ferrolab_train::TokenizerKind::Bytes);
    if !with_tok && tok_src.exists() {
        notes.push(format!(
            "{} is not this byte-token run's vocabulary: not exported",
            tok_src.display()
        ));
    }
    if with_tok {
        let bytes =
            std::fs::read(&tok_src).map_err(|e| anyhow::anyhow!("{}: {e}", tok_src.display()))?;
        files.push((tok_dst.clone(), bytes));
    }
    // all or none: an earlier export in --out stays whole if this one fails (a full disk)
    let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (p.as_path(), &b[..])).collect();
    io::write_all_atomic(&refs)?;
    if !with_tok {
        if tok_dst.exists() {
            // an earlier export's vocabulary is not this run's
            std::fs::remove_file(&tok_dst)
                .map_err(|e| anyhow::anyhow!("{}: {e}", tok_dst.display()))?;
        }
        notes.push("the run uses byte tokens: no tokenizer.json".into());
    }
    eprintln!(
        "wrote {} (config.json + model.safetensors{}) to {}",
        cfg.model.model_type(),
        if with_tok { " + tokenizer.json" } else { "" },
        a.out.display()
    );
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(())
}
