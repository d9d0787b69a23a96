//! `ferrolab generate`: continue a prompt with a trained run's model.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ferrolab_train::{generate, load_model, SampleOpts};

#[derive(Args)]
pub struct GenerateArgs {
    /// Run directory written by `ferrolab train`.
    #[arg(long)]
    run: PathBuf,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability (1: all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Kernel threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    ferrolab_tensor::set_num_threads(a.threads)?;
    let (model, _cfg, tok) = load_model(&a.run)?;
    let opts = SampleOpts {
        max_tokens: a.max_tokens,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let prompt = tok.encode(&a.prompt)?;
    if prompt.is_empty() {
        anyhow::bail!("--prompt is empty: give at least one character");
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", a.prompt)?;
    // a token can end inside a character: print only complete UTF-8
    let mut pending: Vec<u32> = Vec::new();
    let t0 = Instant::now();
    let out = generate(&model, &prompt, &opts, |id| {
        pending.push(id);
        let text = tok.decode(&pending);
        if !text.ends_with('\u{FFFD}') {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
            pending.clear();
        }
    })?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some(p) = ferrolab_tensor::profile::report() {
        eprintln!("{p}");
    }
    writeln!(stdout, "{}", tok.decode(&pending))?;
    eprintln!(
        "{} tokens in {:.2} s ({:.1} tokens/s, prompt included); KV cache {} bytes per token ({} layers)",
        out.len(),
        secs,
        out.len() as f64 / secs,
        model.config().cache_bytes_per_token(),
        model.config().num_hidden_layers()
    );
    Ok(())
}
