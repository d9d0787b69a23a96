//! `ferrolab generate`: continue a prompt with a trained run's model.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ferrolab_train::{generate_within, load_model, SampleOpts};

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
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = f32_in_range)]
    temperature: f32,
    /// Greedy decoding (same as --temperature 0; the sampling options do not apply).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    greedy: bool,
    /// Keep only the k most likely tokens (0: all) [default: 0]
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability (1: all)
    /// [default: 0.95]
    #[arg(long, allow_negative_numbers = true, value_parser = f32_in_range)]
    top_p: Option<f32>,
    /// Sampler seed [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Kernel threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// DeepSeek-V3 runs: greedy self-speculative decoding with the MTP module as the draft;
    /// also decodes plainly, checks both give the same tokens, and reports the acceptance rate
    /// and both speeds. Greedy within one context window.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    speculative: bool,
    /// DeepSeek-V3 runs, greedy: decode with the per-head key/value cache (naive MLA) instead
    /// of the absorbed latent cache, for comparison. Greedy within one context window.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    naive_cache: bool,
}

/// A 32-bit float as given: a number past that range (1e300, 1e-320) was read as inf or 0 and
/// then refused, or taken, as that.
fn f32_in_range(s: &str) -> Result<f32, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if x.is_finite()
        && x != 0.0
        && (x.abs() > f32::MAX as f64 || x.abs() < f32::MIN_POSITIVE as f64)
    {
        return Err(format!(
            "{s} is beyond the range of a 32-bit float ({:e} to {:e} in size)",
            f32::MIN_POSITIVE,
            f32::MAX
        ));
    }
    Ok(x as f32)
}

/// `--speculative` and `--naive-cache`: greedy decoding of a DeepSeek-V3 run.
fn v3_greedy(
    a: &GenerateArgs,
    model: &ferrolab_models::Model,
    tok: &ferrolab_train::Tokenizer,
    prompt: &[u32],
) -> Result<()> {
    let ferrolab_models::Model::DeepseekV3(m) = model else {
        anyhow::bail!("--speculative and --naive-cache need a deepseek_v3 run");
    };
    if tok.vocab_size() < m.cfg.vocab_size {
        anyhow::bail!(
            "--speculative and --naive-cache take the argmax over the model's whole head, and \
             this run's vocabulary has only {} of its {} ids (ids past it have no text); use \
             plain generation",
            tok.vocab_size(),
            m.cfg.vocab_size
        );
    }
    let n = a.max_tokens;
    let ctx = m.cfg.max_position_embeddings;
    // the last new token is never fed back, so a prompt of p tokens and n new ones take
    // p + n - 1 positions
    if prompt.len() > ctx {
        anyhow::bail!(
            "--speculative and --naive-cache decode within one context of {ctx} positions, and \
             the prompt alone is {} tokens: shorten it",
            prompt.len()
        );
    }
    if prompt.len().saturating_add(n) > ctx + 1 {
        anyhow::bail!(
            "--speculative and --naive-cache decode within one context of {ctx} positions: the \
             prompt's {} tokens + --max-tokens {n} do not fit (they take {} positions: every \
             token but the last new one is fed to the model); lower --max-tokens to {} (plain \
             generation slides its window instead)",
            prompt.len(),
            prompt.len().saturating_add(n) - 1, // the prompt has a token
            ctx + 1 - prompt.len()
        );
    }
    if n == 0 {
        println!("{}", a.prompt);
        eprintln!("--max-tokens 0: nothing to decode");
        return Ok(());
    }
    let t0 = Instant::now();
    let plain = m.generate_greedy_with(prompt, n, !a.naive_cache)?;
    let plain_s = t0.elapsed().as_secs_f64();
    let cache = if a.naive_cache {
        "naive per-head key/value"
    } else {
        "absorbed latent"
    };
    let bytes = if a.naive_cache {
        4 * m.cfg.num_hidden_layers
            * m.cfg.num_attention_heads
            * (m.cfg.qk_head_dim() + m.cfg.v_head_dim)
    } else {
        model.config().cache_bytes_per_token()
    };
    if !a.speculative {
        println!("{}{}", a.prompt, tok.decode(&plain));
        eprintln!(
            "{} tokens in {plain_s:.2} s ({:.1} tokens/s), greedy with the {cache} cache: {bytes} bytes per token",
            plain.len(),
            plain.len() as f64 / plain_s
        );
        return Ok(());
    }
    let t0 = Instant::now();
    let (spec, st) = m.generate_speculative(prompt, n)?;
    let spec_s = t0.elapsed().as_secs_f64();
    println!("{}{}", a.prompt, tok.decode(&spec));
    if spec != plain {
        anyhow::bail!("speculative decoding gave other tokens than greedy decoding");
    }
    eprintln!(
        "speculative: {} drafts, {} accepted ({:.1}%), {} main passes for {} tokens; {:.1} tokens/s vs {:.1} plain greedy with the {cache} cache ({:.2}x); same tokens as greedy",
        st.drafted,
        st.accepted,
        100.0 * st.accepted as f64 / st.drafted.max(1) as f64,
        st.main_passes + 1,
        spec.len(),
        spec.len() as f64 / spec_s,
        plain.len() as f64 / plain_s,
        plain_s / spec_s
    );
    Ok(())
}

pub fn run(a: GenerateArgs) -> Result<()> {
    crate::train::start_threads(a.threads)?;
    ferrolab_tensor::on_pool(move || -> Result<()> {
        let (model, _cfg, tok) = load_model(&a.run)?;
        if a.temperature == 0.0 && (a.top_k.is_some() || a.top_p.is_some() || a.seed.is_some()) {
            anyhow::bail!(
                "--temperature 0 is greedy decoding: --top-k, --top-p and --seed do not apply"
            );
        }
        let d = SampleOpts::default();
        let opts = SampleOpts {
            max_tokens: a.max_tokens,
            temperature: if a.greedy { 0.0 } else { a.temperature },
            top_k: a.top_k.unwrap_or(d.top_k),
            top_p: a.top_p.unwrap_or(d.top_p),
            seed: a.seed.unwrap_or(d.seed),
        };
        opts.check()?; // before the prompt is printed
        if opts.top_k >= tok.vocab_size() {
            eprintln!(
                "note: --top-k {} is not below the vocabulary's {} tokens: it keeps them all, as \
                 --top-k 0 does",
                opts.top_k,
                tok.vocab_size()
            );
        }
        let prompt = tok.encode(&a.prompt)?;
        if prompt.is_empty() {
            anyhow::bail!("--prompt is empty: give at least one character");
        }
        if a.speculative || a.naive_cache {
            return v3_greedy(&a, &model, &tok, &prompt);
        }
        let ctx = model.config().max_position_embeddings();
        if prompt.len() >= ctx {
            eprintln!(
                "note: the prompt is {} tokens and the model's context {ctx} \
                 (max_position_embeddings): it continues from the last {} of them",
                prompt.len(),
                ctx - 1
            );
        }
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{}", a.prompt)?;
        // a token can end inside a character: print only complete UTF-8
        let mut pending: Vec<u32> = Vec::new();
        let t0 = Instant::now();
        // a vocabulary smaller than the model's head (a small corpus, or byte tokens): ids past
        // its end have no text and are never sampled
        let out = generate_within(&model, &prompt, &opts, Some(tok.vocab_size()), |id| {
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
    })
}
