//! `ferrolab export`: a trained run as an HF model directory (`config.json` with HF keys and
//! `model_type`, `model.safetensors` with the `transformers` tensor names), loadable by
//! `transformers` and by `ferrolab logits`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ferrolab_models::ModelConfig;
use ferrolab_tensor::{io, DType};

#[derive(Args)]
pub struct ExportArgs {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// The HF directory to write (created if needed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ExportArgs) -> Result<()> {
    if a.out.exists() && !a.out.is_dir() {
        anyhow::bail!("--out {}: is a file, not a directory", a.out.display());
    }
    // read only (the run may be training): the last committed snapshot's weights, checked
    // against its sha256 and the run's vocabulary
    let (vars, _model, cfg, _tok) = ferrolab_train::load_run(&a.run)?;
    match &cfg.model {
        ModelConfig::DeepseekV3(c) => ferrolab_models::deepseek_v3::save_hf(&a.out, c, &vars)?,
        ModelConfig::Llama(c) => {
            std::fs::create_dir_all(&a.out)
                .map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
            let mut v = ferrolab_models::json_value(c)?;
            v["model_type"] = "llama".into();
            v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            io::write_atomic(
                &a.out.join("config.json"),
                serde_json::to_string_pretty(&v)?.as_bytes(),
            )?;
            io::save_safetensors(
                &a.out.join("model.safetensors"),
                &vars.all(),
                DType::F32,
                None,
            )?;
        }
    }
    eprintln!(
        "wrote {} (config.json + model.safetensors) to {}",
        cfg.model.model_type(),
        a.out.display()
    );
    Ok(())
}
