//! `ferrolab bench`: the training-step benchmark of the GPT decoder.
//!
//! `ferrolab bench train-step --layers N` times forward + cross-entropy + backward + AdamW on a
//! fixed random batch (3 warm-up steps, median of 20) and prints one line with
//! `step_ms_median=` and `peak_rss_mib=`. With `--peer`, our binary and the PyTorch script
//! (`bench/gpt_step_torch.py`) run side by side, one step at a time in turn
//! ([`crate::interleave`]; `--sequential` runs whole processes one after the other instead),
//! and a table with the medians and ratios follows. `ferrolab bench lm` does the same for a
//! `ferrolab train` preset against `bench/lm_train_torch.py` or `bench/v3_train_torch.py`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ferrolab_models::{Gpt, GptConfig};
use ferrolab_nn::{AdamW, AdamWConfig, Optimizer, Vars};
use ferrolab_tensor::rng::{self, Rng};
use indicatif::{ProgressBar, ProgressStyle};

use crate::interleave::{self, Lockstep};

/// Pause before each interleaved step, so that the other engine's threads have gone idle.
const GAP: Duration = Duration::from_millis(50);

/// The longest wait for one step of a side-by-side run (the first includes starting Python
/// and importing torch): `FERROLAB_STEP_LIMIT_SECS`, or 15 minutes.
fn step_limit() -> Duration {
    let secs = match std::env::var("FERROLAB_STEP_LIMIT_SECS") {
        Err(_) => 900,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => s,
            _ => {
                eprintln!(
                    "warning: FERROLAB_STEP_LIMIT_SECS={v:?} is not a whole number of seconds \
                     above 0; waiting at most 900 s for a step"
                );
                900
            }
        },
    };
    Duration::from_secs(secs)
}

/// Warm-up steps below which PyTorch's first, slower steps fall into the timed ones.
const MIN_PEER_WARMUP: usize = 3;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// One training step of the GPT benchmark model (vocab 4096, d_model 256, 4 heads,
    /// seq 128, batch 8, AdamW).
    TrainStep(TrainStepArgs),
    /// Training throughput (tokens/s) of a `ferrolab train` preset, side by side with the
    /// same model in PyTorch (`bench/lm_train_torch.py`) when torch is installed.
    Lm(LmArgs),
}

#[derive(Args, Clone)]
struct LmArgs {
    /// Preset (as `ferrolab train --preset`).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Overrides (as `ferrolab train --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Kernel threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds of (ours, peer): fresh processes each round.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    rounds: usize,
    /// Run our process and the peer's one after the other instead of interleaving their steps.
    #[arg(long)]
    sequential: bool,
    /// Python interpreter with torch for the peer.
    #[arg(long, env = "FERROLAB_PYTHON", default_value = "python3")]
    python: String,
    /// The peer script (default: `bench/lm_train_torch.py` for a `llama` model,
    /// `bench/v3_train_torch.py` for `deepseek_v3`).
    #[arg(long)]
    peer_script: Option<PathBuf>,
    /// Any other peer instead of the PyTorch script: a shell command, run as `sh -c "CMD"
    /// peer CONFIG.json --threads N --warmup W --steps S` (the arguments are `$1`..`$7`), that
    /// prints `step_ms_median=`/`tokens_per_s_median=` like ours. With `bench/self_peer.sh`
    /// it is ferrolab itself, for an A/B run of two builds or of an environment switch.
    #[arg(long, conflicts_with = "peer_script")]
    peer_cmd: Option<String>,
    /// Internal: run only our side once and print its figures.
    #[arg(long, hide = true)]
    ours_only: bool,
    /// With --ours-only: the resolved run configuration (the JSON a side-by-side run hands
    /// its peer) instead of --preset and --set.
    #[arg(long, hide = true)]
    run_config: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct TrainStepArgs {
    /// Number of transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Kernel threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Recompute blocks in ~sqrt(layers) segments (activation checkpointing).
    #[arg(long)]
    recompute: bool,
    /// Also run the PyTorch peer, alternating with ours, and print the ratio.
    #[arg(long)]
    peer: bool,
    /// Rounds of (ours, peer) with --peer: fresh processes each round.
    #[arg(long, default_value_t = 2, value_parser = at_least_one, requires = "peer")]
    rounds: usize,
    /// With --peer: run our process and the peer's one after the other instead of
    /// interleaving their steps.
    #[arg(long, requires = "peer")]
    sequential: bool,
    /// Python interpreter with torch, for --peer.
    #[arg(long, env = "FERROLAB_PYTHON", default_value = "python3")]
    python: String,
    /// The peer script.
    #[arg(long, default_value = "bench/gpt_step_torch.py", requires = "peer")]
    peer_script: PathBuf,
    /// Any other peer instead of the PyTorch script: a shell command, run as `sh -c "CMD"
    /// peer LAYERS`, that runs 3 + 20 steps of the interleaving protocol. With
    /// `bench/self_peer.sh` it is ferrolab itself (an A/B run of two builds or of an environment
    /// switch).
    #[arg(long, requires = "peer")]
    peer_cmd: Option<String>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Lm(l) => {
            if l.steps == 0 {
                bail!("--steps must be at least 1");
            }
            if l.ours_only {
                lm_ours(&l)
            } else {
                lm_side_by_side(&l)
            }
        }
        BenchWhat::TrainStep(t) => {
            if t.peer {
                side_by_side(&t)
            } else {
                train_step(&t)
            }
        }
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Parses a count that must be at least 1 (clap's own range check printed the type's maximum).
pub(crate) fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Medians over interleaved step pairs `(ours ms, peer ms)`.
struct PairStats {
    n: usize,
    ours_ms: f64,
    peer_ms: f64,
    ours_over_peer_median: f64,
    peer_over_ours_median: f64,
    ours_faster: usize,
}

impl PairStats {
    fn of(pairs: &[(f64, f64)]) -> Result<PairStats> {
        if pairs.is_empty() {
            bail!("the two benchmark processes have no timed steps in common");
        }
        let col = |f: &dyn Fn(&(f64, f64)) -> f64| -> f64 {
            let mut v: Vec<f64> = pairs.iter().map(f).collect();
            median(&mut v)
        };
        Ok(PairStats {
            n: pairs.len(),
            ours_ms: col(&|p| p.0),
            peer_ms: col(&|p| p.1),
            ours_over_peer_median: col(&|p| p.0 / p.1),
            peer_over_ours_median: col(&|p| p.1 / p.0),
            ours_faster: pairs.iter().filter(|p| p.0 < p.1).count(),
        })
    }
}

/// Runs `rounds` rounds of interleaved steps of our binary `me` with `ours_args` and of `peer`,
/// fresh processes each round ([`interleave::run`]), echoing both processes' output tagged
/// with the round and handing each round's statistics to `per_round`. Returns the statistics over all rounds' pairs and the two processes' largest
/// peak RSS (MiB).
fn interleaved_rounds(
    rounds: usize,
    (me, ours_args): (&std::path::Path, &[String]),
    peer: impl Fn() -> Command,
    warmup: usize,
    per_round: impl Fn(usize, &PairStats),
) -> Result<(PairStats, f64, f64)> {
    let mut pairs = Vec::new();
    let (mut orss, mut prss) = (0f64, 0f64);
    for round in 0..rounds.max(1) {
        let (o, p) = interleave::run(
            Command::new(me).args(ours_args),
            &mut peer(),
            GAP,
            step_limit(),
        )?;
        print!("[round {round}] {}[round {round}] {}", o.text, p.text);
        orss = orss.max(field(&o.text, "peak_rss_mib=").unwrap_or(f64::NAN));
        prss = prss.max(peer_rss(&p.text));
        let pr = interleave::timed_pairs(&o, &p, warmup);
        per_round(round, &PairStats::of(&pr)?);
        pairs.extend(pr);
    }
    Ok((PairStats::of(&pairs)?, orss, prss))
}

/// A file removed when dropped (the run configuration handed to a peer).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn train_step(a: &TrainStepArgs) -> Result<()> {
    let zero: Vec<&str> = [
        ("--steps", a.steps),
        ("--batch", a.batch),
        ("--seq", a.seq),
        ("--layers", a.layers),
        ("--threads", a.threads),
    ]
    .iter()
    .filter(|&&(_, v)| v == 0)
    .map(|&(name, _)| name)
    .collect();
    if !zero.is_empty() {
        let (last, rest) = zero.split_last().unwrap_or((&"", &[]));
        let names = if rest.is_empty() {
            last.to_string()
        } else {
            format!("{} and {last}", rest.join(", "))
        };
        bail!("{names} must be at least 1");
    }
    {
        // at least the weights, gradients and AdamW moments (16 bytes a parameter) and the
        // attention probabilities (batch x heads x seq x seq) of every layer, or of one with
        // recompute
        let c = GptConfig::bench(a.layers);
        let f = |x: usize| x as f64;
        let params = (f(c.vocab) + f(a.seq) + 12.0 * f(c.layers) * f(c.d_model)) * f(c.d_model);
        let live = if a.recompute { 1.0 } else { f(c.layers) };
        let probs = live * f(a.batch) * f(c.heads) * f(a.seq).powi(2);
        let need = 16.0 * params + 4.0 * probs;
        if let Some(avail) = ferrolab_train::available_memory() {
            if need > avail as f64 {
                bail!(
                    "--layers {} --batch {} --seq {} needs at least {:.1} GiB, and this machine \
                     has {:.1} GiB available",
                    a.layers,
                    a.batch,
                    a.seq,
                    need / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                );
            }
        }
    }
    crate::train::start_threads(a.threads)?;
    ferrolab_tensor::on_pool(move || -> Result<()> {
        rng::manual_seed(0);
        let vars = Vars::new();
        let mut cfg = GptConfig::bench(a.layers);
        cfg.max_seq = a.seq;
        cfg.recompute = a.recompute;
        let model = Gpt::new(&vars, cfg.clone())?;
        let mut opt = AdamW::new(
            vars.all(),
            AdamWConfig {
                lr: 1e-3,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.01,
                decoupled: true,
            },
        );
        let mut r = Rng::new(1234);
        let n = a.batch * a.seq;
        let x: Vec<u32> = (0..n).map(|_| r.below(cfg.vocab) as u32).collect();
        let y: Vec<i64> = (0..n).map(|_| r.below(cfg.vocab) as i64).collect();
        let mut losses = Vec::new();
        let mut times = Vec::new();
        // progress on stderr (drawn only on a terminal); Ctrl-C simply ends the run: nothing is
        // written to disk
        let bar = ProgressBar::new((a.warmup + a.steps) as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps, loss {msg}, ETA {eta}")
                .expect("valid template"),
        );
        let lock = Lockstep::from_env();
        for i in 0..a.warmup + a.steps {
            lock.wait()?;
            let t0 = Instant::now();
            ferrolab_tensor::profile::mark();
            opt.zero_grad();
            // as the trainer does: the batch's halves side by side, one per thread
            let (b, t) = (a.batch, a.seq);
            let parts = ferrolab_tensor::num_threads().min(b);
            let l: f32 = ferrolab_tensor::backward_in_parts(b, parts, 1.0, |lo, hi| {
                let loss = model.loss(&x[lo * t..hi * t], &y[lo * t..hi * t], hi - lo, t)?;
                let l = loss.item()?;
                Ok((loss, l))
            })?
            .iter()
            .map(|(l, share)| l * share)
            .sum();
            let t1 = Instant::now();
            opt.step()?;
            ferrolab_tensor::profile::record("optimizer.step", t1.elapsed());
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            lock.report(ms);
            losses.push(l);
            if i >= a.warmup {
                times.push(ms);
            }
            bar.set_message(format!("{l:.4}"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(p) = ferrolab_tensor::profile::report() {
            eprintln!("{p}");
        }
        let (mn, mx) = times
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
        let med = median(&mut times);
        println!(
            "ferrolab threads={} layers={} batch={} seq={} recompute={} params={}",
            a.threads,
            a.layers,
            a.batch,
            a.seq,
            a.recompute,
            vars.num_params()
        );
        println!(
            "losses: {}",
            losses
                .iter()
                .map(|l| format!("{l:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "init_loss={:.4} (ln V={:.4}) final_loss={:.4}",
            losses[0],
            (cfg.vocab as f64).ln(),
            losses[losses.len() - 1]
        );
        println!(
            "step_ms_median={med:.1} min={mn:.1} max={mx:.1} peak_rss_mib={:.1}",
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        Ok(())
    })
}

fn field(out: &str, key: &str) -> Option<f64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.parse().ok())
}

/// A peer's peak RSS (the PyTorch scripts print `peak_rss_MiB=`, ferrolab `peak_rss_mib=`).
fn peer_rss(out: &str) -> f64 {
    field(out, "peak_rss_MiB=")
        .or_else(|| field(out, "peak_rss_mib="))
        .unwrap_or(f64::NAN)
}

/// The peer's command line before its arguments: `sh -c CMD peer` for a `--peer-cmd`, else
/// `PYTHON SCRIPT`.
fn peer_command(peer_cmd: Option<&str>, python: &str, script: &std::path::Path) -> Command {
    match peer_cmd {
        Some(cmd) => {
            let mut c = Command::new("sh");
            c.args(["-c", cmd, "peer"]);
            c
        }
        None => {
            let mut c = Command::new(python);
            c.arg(script);
            c
        }
    }
}

/// Whether `python -c "import torch"` works.
fn has_torch(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a benchmark process to the end, echoes its output tagged with the round, and returns
/// it; a failure to start or a non-zero exit is an error naming `what` with its stderr.
fn run_round(cmd: &mut Command, what: &str, round: usize) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    print!("[round {round}] {out}");
    Ok(out)
}

fn side_by_side(a: &TrainStepArgs) -> Result<()> {
    let torch_ok = a.peer_cmd.is_some() || has_torch(&a.python);
    let peer_name = if a.peer_cmd.is_some() {
        "peer"
    } else {
        "PyTorch"
    };
    let peer_cmd = || {
        let mut c = peer_command(a.peer_cmd.as_deref(), &a.python, &a.peer_script);
        c.arg(a.layers.to_string());
        c
    };
    let me = std::env::current_exe().context("locating the ferrolab binary")?;
    let mut ours_args = vec![
        "bench".to_string(),
        "train-step".into(),
        "--layers".into(),
        a.layers.to_string(),
        "--batch".into(),
        a.batch.to_string(),
        "--seq".into(),
        a.seq.to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--warmup".into(),
        a.warmup.to_string(),
        "--steps".into(),
        a.steps.to_string(),
    ];
    if a.recompute {
        ours_args.push("--recompute".into());
    }
    if !torch_ok {
        eprintln!(
            "peer: `{} -c \"import torch\"` failed; running ferrolab only (set --python or FERROLAB_PYTHON)",
            a.python
        );
    }
    // a --peer-cmd is held to the script's contract: it is given only the layer count
    let peer_what = if a.peer_cmd.is_some() {
        "the peer command (--peer-cmd, given only the layer count, as the PyTorch script)"
    } else {
        "the PyTorch peer script"
    };
    if torch_ok && (a.batch != 8 || a.seq != 128) {
        bail!("{peer_what} runs batch 8 and seq 128 only");
    }
    if torch_ok && !a.sequential {
        if a.warmup != 3 || a.steps != 20 {
            bail!(
                "{peer_what} runs 3 warm-up and 20 timed steps: keep --warmup 3 --steps 20 (the \
                 defaults) or add --sequential"
            );
        }
        let (st, orss, prss) = interleaved_rounds(
            a.rounds,
            (&me, &ours_args),
            peer_cmd,
            a.warmup,
            |round, st| {
                println!(
                    "[round {round}] interleaved steps: ferrolab {:.1} ms, {peer_name} {:.1} ms (medians of {}), time ratio {:.3}",
                    st.ours_ms, st.peer_ms, st.n, st.ours_ms / st.peer_ms
                )
            },
        )?;
        println!();
        println!("| engine | layers | step ms (median of all interleaved steps) | peak RSS MiB |");
        println!("|---|---|---|---|");
        println!(
            "| ferrolab | {} | {:.1} | {orss:.1} |",
            a.layers, st.ours_ms
        );
        println!(
            "| {peer_name} | {} | {:.1} | {prss:.1} |",
            a.layers, st.peer_ms
        );
        println!();
        println!(
            "step_ms_median={:.1} peak_rss_mib={orss:.1} peer_step_ms_median={:.1} peer_peak_rss_mib={prss:.1} time_ratio={:.3} memory_ratio={:.3} pair_time_ratio_median={:.3} pairs={} ours_faster_pairs={}",
            st.ours_ms,
            st.peer_ms,
            st.ours_ms / st.peer_ms,
            orss / prss,
            st.ours_over_peer_median,
            st.n,
            st.ours_faster
        );
        return Ok(());
    }
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for round in 0..a.rounds.max(1) {
        let so = run_round(Command::new(&me).args(&ours_args), "ferrolab", round)?;
        ours.push((
            field(&so, "step_ms_median=").context("no step_ms_median in our output")?,
            field(&so, "peak_rss_mib=").unwrap_or(f64::NAN),
            so.clone(),
        ));
        if torch_ok {
            let sp = run_round(
                &mut peer_cmd(),
                &format!(
                    "peer {}",
                    a.peer_cmd
                        .clone()
                        .unwrap_or_else(|| a.peer_script.display().to_string())
                ),
                round,
            )?;
            peer.push((
                field(&sp, "median=")
                    .or_else(|| field(&sp, "step_ms_median="))
                    .context("no step_ms median in the peer's output")?,
                peer_rss(&sp),
            ));
        }
    }
    let mut om: Vec<f64> = ours.iter().map(|o| o.0).collect();
    let orss = ours.iter().map(|o| o.1).fold(0f64, f64::max);
    let om = median(&mut om);
    println!();
    println!("| engine | layers | step ms (median of rounds) | peak RSS MiB |");
    println!("|---|---|---|---|");
    println!("| ferrolab | {} | {om:.1} | {orss:.1} |", a.layers);
    if !peer.is_empty() {
        let mut pm: Vec<f64> = peer.iter().map(|p| p.0).collect();
        let prss = peer.iter().map(|p| p.1).fold(0f64, f64::max);
        let pm = median(&mut pm);
        println!("| {peer_name} | {} | {pm:.1} | {prss:.1} |", a.layers);
        println!();
        println!(
            "step_ms_median={om:.1} peak_rss_mib={orss:.1} peer_step_ms_median={pm:.1} peer_peak_rss_mib={prss:.1} time_ratio={:.3} memory_ratio={:.3}",
            om / pm,
            orss / prss
        );
    } else {
        println!("step_ms_median={om:.1} peak_rss_mib={orss:.1}");
    }
    Ok(())
}

fn lm_config(a: &LmArgs) -> Result<ferrolab_train::RunConfig> {
    if let Some(p) = &a.run_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let cfg: ferrolab_train::RunConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run configuration", p.display()))?;
        cfg.validate()?;
        return Ok(cfg);
    }
    // as `ferrolab train` reads them (a new `steps` scales the preset's warm-up)
    let (cfg, scaled) = ferrolab_train::RunConfig::resolve(&a.preset, None, &a.sets)?;
    if let (Some(was), false) = (scaled, a.ours_only) {
        eprintln!(
            "warmup_steps: {} (the preset's {was} of its steps, scaled to steps = {}; set \
             warmup_steps to choose)",
            cfg.warmup_steps, cfg.steps
        );
    }
    cfg.validate()?;
    ferrolab_train::check_memory(&cfg)?;
    Ok(cfg)
}

/// One process's measurement of the `ferrolab train` step: the same work as the trainer
/// (forward, cross-entropy, backward, clip, grouped AdamW) on random windows of a random
/// token stream.
fn lm_ours(a: &LmArgs) -> Result<()> {
    crate::train::start_threads(a.threads)?;
    // on a pool thread, as `ferrolab train` runs
    ferrolab_tensor::on_pool(|| lm_ours_body(a))
}

fn lm_ours_body(a: &LmArgs) -> Result<()> {
    let cfg = lm_config(a)?;
    let (b, t, v) = (cfg.batch_size, cfg.seq_len, cfg.model.vocab_size());
    rng::manual_seed(0);
    let vars = Vars::new();
    let model = ferrolab_models::Model::new(&vars, &cfg.model)?;
    let mut opt = ferrolab_train::GroupedAdamW::for_run(vars.all(), &cfg);
    let mut r = Rng::new(1);
    let stream: Vec<u32> = (0..1 << 20).map(|_| r.below(v) as u32).collect();
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let lock = Lockstep::from_env();
    for step in 0..a.warmup + a.steps {
        let starts: Vec<usize> = (0..b).map(|_| r.below(stream.len() - t - 1)).collect();
        let ids: Vec<u32> = starts
            .iter()
            .flat_map(|&s| stream[s..s + t].to_vec())
            .collect();
        let tg: Vec<i64> = starts
            .iter()
            .flat_map(|&s| stream[s + 1..s + t + 1].iter().map(|&x| x as i64))
            .collect();
        lock.wait()?;
        let t0 = Instant::now();
        ferrolab_tensor::profile::mark();
        opt.zero_grad();
        let parts = model.forward_backward(&ids, &tg, b, t, 1.0)?;
        let t1 = Instant::now();
        ferrolab_nn::clip_grad_norm(&vars.tensors(), cfg.clip_limit())?;
        opt.step()?;
        model.after_step(&parts.loads)?;
        ferrolab_tensor::profile::record("clip + optimizer.step", t1.elapsed());
        let dt = t0.elapsed().as_secs_f64();
        lock.report(dt * 1e3);
        losses.push(parts.main);
        if step >= a.warmup {
            times.push(dt);
        }
    }
    if let Some(p) = ferrolab_tensor::profile::report() {
        eprintln!("{p}");
    }
    let med = median(&mut times);
    println!(
        "ferrolab threads={} params={} B={b} T={t} init_loss={:.4} final_loss={:.4}",
        a.threads,
        vars.num_params(),
        losses[0],
        losses[losses.len() - 1]
    );
    println!(
        "step_ms_median={:.1} tokens_per_s_median={:.0} peak_rss_mib={:.1}",
        med * 1e3,
        (b * t) as f64 / med,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}

fn lm_side_by_side(a: &LmArgs) -> Result<()> {
    // before the peer is looked for (ours would fail with the message inside its own)
    crate::train::check_threads(a.threads)?;
    let cfg = lm_config(a)?;
    let peer_script = a.peer_script.clone().unwrap_or_else(|| {
        PathBuf::from(match cfg.model.model_type() {
            "deepseek_v3" => "bench/v3_train_torch.py",
            _ => "bench/lm_train_torch.py",
        })
    });
    let torch_ok = a.peer_cmd.is_some() || has_torch(&a.python);
    if !torch_ok {
        eprintln!(
            "peer: `{} -c \"import torch\"` failed; running ferrolab only (set --python or FERROLAB_PYTHON)",
            a.python
        );
    }
    if torch_ok && a.peer_cmd.is_none() && a.warmup < MIN_PEER_WARMUP {
        eprintln!(
            "warning: --warmup {} times PyTorch's first steps, which are still slow: the ratio \
             overstates ferrolab's lead (one 2-step run with --warmup 1 read 1.66); use at least \
             {MIN_PEER_WARMUP}",
            a.warmup
        );
    }
    let cfg_file = TempFile(
        std::env::temp_dir().join(format!("ferrolab-bench-lm-{}.json", std::process::id())),
    );
    let cfg_path = &cfg_file.0;
    std::fs::write(cfg_path, serde_json::to_string_pretty(&cfg)?)
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    let me = std::env::current_exe().context("locating the ferrolab binary")?;
    let mut ours_args: Vec<String> = vec![
        "bench".into(),
        "lm".into(),
        "--ours-only".into(),
        "--preset".into(),
        a.preset.clone(),
        "--threads".into(),
        a.threads.to_string(),
        "--warmup".into(),
        a.warmup.to_string(),
        "--steps".into(),
        a.steps.to_string(),
    ];
    for s in &a.sets {
        ours_args.push("--set".into());
        ours_args.push(s.clone());
    }
    let peer_cmd = || {
        let mut c = peer_command(a.peer_cmd.as_deref(), &a.python, &peer_script);
        c.arg(cfg_path)
            .args(["--threads", &a.threads.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--steps", &a.steps.to_string()]);
        c
    };
    let peer_name = if a.peer_cmd.is_some() {
        "peer"
    } else {
        "PyTorch"
    };
    if torch_ok && !a.sequential {
        let tokens = (cfg.batch_size * cfg.seq_len) as f64;
        let (st, orss, prss) = interleaved_rounds(
            a.rounds,
            (&me, &ours_args),
            peer_cmd,
            a.warmup,
            |round, st| {
                println!(
                    "[round {round}] interleaved steps: ferrolab {:.0} tokens/s, {peer_name} {:.0} tokens/s (medians of {}), ratio {:.3}",
                    tokens * 1e3 / st.ours_ms,
                    tokens * 1e3 / st.peer_ms,
                    st.n,
                    st.peer_ms / st.ours_ms
                )
            },
        )?;
        let (om, pm) = (tokens * 1e3 / st.ours_ms, tokens * 1e3 / st.peer_ms);
        println!();
        println!("| engine | preset | tokens/s (median of all interleaved steps) | peak RSS MiB |");
        println!("|---|---|---|---|");
        println!("| ferrolab | {} | {om:.0} | {orss:.1} |", a.preset);
        println!("| {peer_name} | {} | {pm:.0} | {prss:.1} |", a.preset);
        println!();
        println!(
            "tokens_per_s={om:.0} peer_tokens_per_s={pm:.0} throughput_ratio={:.3} memory_ratio={:.3} pair_throughput_ratio_median={:.3} pairs={} ours_faster_pairs={}",
            om / pm,
            orss / prss,
            st.peer_over_ours_median,
            st.n,
            st.ours_faster
        );
        return Ok(());
    }
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    let (mut orss, mut prss) = (0f64, 0f64);
    for round in 0..a.rounds.max(1) {
        let so = run_round(Command::new(&me).args(&ours_args), "ferrolab", round)?;
        ours.push(
            field(&so, "tokens_per_s_median=").context("no tokens_per_s_median in our output")?,
        );
        orss = orss.max(field(&so, "peak_rss_mib=").unwrap_or(f64::NAN));
        if torch_ok {
            let sp = run_round(
                &mut peer_cmd(),
                &format!(
                    "peer {}",
                    a.peer_cmd
                        .clone()
                        .unwrap_or_else(|| peer_script.display().to_string())
                ),
                round,
            )?;
            peer.push(
                field(&sp, "tokens_per_s_median=")
                    .context("no tokens_per_s_median in the peer's output")?,
            );
            prss = prss.max(peer_rss(&sp));
        }
    }
    let om = median(&mut ours);
    println!();
    println!("| engine | preset | tokens/s (median of rounds) | peak RSS MiB |");
    println!("|---|---|---|---|");
    println!("| ferrolab | {} | {om:.0} | {orss:.1} |", a.preset);
    if !peer.is_empty() {
        let pm = median(&mut peer);
        println!("| {peer_name} | {} | {pm:.0} | {prss:.1} |", a.preset);
        println!();
        println!(
            "tokens_per_s={om:.0} peer_tokens_per_s={pm:.0} throughput_ratio={:.3} memory_ratio={:.3}",
            om / pm,
            orss / prss
        );
    } else {
        println!("tokens_per_s={om:.0}");
    }
    Ok(())
}
