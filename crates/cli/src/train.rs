//! `ferrolab train`: train a language model on real text, with progress, snapshots, Ctrl-C
//! and `--resume`; then print samples.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrolab_train::{generate, RunConfig, SampleOpts, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// Preset to start from: tiny (DeepSeek-V3-style, about 12 minutes on 2 cores), small,
    /// llama-tiny or llama-small (the dense DeepSeek LLM / LLaMA decoder).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// TOML file merged over the preset (top-level run keys, `[model]` for model keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set steps=200 --set model.hidden_size=128` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (default: runs/<preset>, or runs/<preset>-N if that exists).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Continue the run in this directory from its last snapshot.
    #[arg(long, conflicts_with_all = ["preset", "config", "sets", "run"])]
    resume: Option<PathBuf>,
    /// UTF-8 text to train on (default, or `sotu`: the State of the Union corpus, fetched on
    /// first use; a file named sotu is `./sotu`; with --resume, the text the run recorded in
    /// its `corpus.json`, which this must equal).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Kernel threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Samples printed at the end.
    #[arg(long, default_value_t = 3)]
    samples: usize,
}

fn free_run_dir(preset: &str) -> PathBuf {
    let base = PathBuf::from("runs").join(preset);
    let free = |p: &PathBuf| ferrolab_train::RunDir::check_new(p).is_ok();
    if free(&base) {
        return base;
    }
    (2..)
        .map(|i| PathBuf::from("runs").join(format!("{preset}-{i}")))
        .find(free)
        .unwrap_or(base)
}

/// Sizes the kernel thread pool to `--threads n`: at least 1, and at most 4 per core (each op
/// splits its work over every thread, so far more threads than cores only adds waiting; 1,000
/// threads on 2 cores made one small step take over 20 s). More than one per core is allowed
/// with a warning.
pub fn start_threads(n: usize) -> Result<()> {
    let cores = check_threads(n)?;
    if n > cores {
        ferrolab_train::note!("warning: {n} threads on {cores} cores: ops will wait on each other");
    }
    ferrolab_tensor::set_num_threads(n)?;
    Ok(())
}

/// Refuses a `--threads n` that [`start_threads`] would refuse; returns the number of cores.
pub fn check_threads(n: usize) -> Result<usize> {
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    if n > 4 * cores {
        bail!("--threads {n} is more than 4 per core on this machine's {cores} cores");
    }
    Ok(cores)
}

/// Exit status of a run stopped by Ctrl-C or SIGTERM after writing its snapshot (128 + SIGINT,
/// as shells report an interrupted command).
pub const INTERRUPTED: i32 = 130;

/// Stop requests closer than this to the first one are taken as the same request: `timeout`
/// and a kill of a process group signal the process and then its group, microseconds apart.
const SAME_REQUEST: std::time::Duration = std::time::Duration::from_millis(500);

/// Installs the handler of stop requests (Ctrl-C, SIGTERM, SIGHUP): the first sets `stop` and
/// calls `first`; a later one (at least half a second after it) calls `again` and exits at
/// once with [`INTERRUPTED`].
pub fn on_stop(
    stop: Arc<AtomicBool>,
    first: impl Fn() + Send + 'static,
    again: impl Fn() + Send + 'static,
) -> Result<()> {
    let since = std::sync::Mutex::new(None::<std::time::Instant>);
    ctrlc::set_handler(move || {
        let mut since = since.lock().unwrap_or_else(|e| e.into_inner());
        match *since {
            None => {
                *since = Some(std::time::Instant::now());
                stop.store(true, Ordering::SeqCst);
                first();
            }
            Some(t) if t.elapsed() < SAME_REQUEST => {}
            Some(_) => {
                again();
                ferrolab_data::remove_temporaries();
                std::process::exit(INTERRUPTED);
            }
        }
    })
    .context("installing the Ctrl-C handler")
}

/// What a stop request does in each phase of a training command (`train`, `experiment`):
/// while the text is read and encoded (nothing written yet) it ends the command at once; while
/// training (from setting up a run) it lets the step finish and a snapshot be written; after
/// training it ends what is left (the samples).
pub struct Phases(Arc<AtomicU8>);

const PREPARING: u8 = 0;
const TRAINING: u8 = 1;
const AFTER: u8 = 2;
const EXITING: u8 = 3;

impl Phases {
    /// Installs the stop handler ([`on_stop`]) in the preparing phase: `training` is said at a
    /// first stop request while training, `again` at a second one, `after` at one after
    /// training.
    pub fn install(
        stop: Arc<AtomicBool>,
        training: &'static str,
        again: &'static str,
        after: &'static str,
    ) -> Result<Phases> {
        let phase = Arc::new(AtomicU8::new(PREPARING));
        let (p1, p2) = (phase.clone(), phase.clone());
        on_stop(
            stop,
            move || match p1.compare_exchange(
                PREPARING,
                EXITING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    ferrolab_train::note!(
                        "\nstop requested before training began: nothing to save, quitting"
                    );
                    std::process::exit(INTERRUPTED);
                }
                Err(TRAINING) => ferrolab_train::note!("\n{training}"),
                Err(_) => ferrolab_train::note!("\n{after}"),
            },
            move || {
                if p2.load(Ordering::SeqCst) == TRAINING {
                    ferrolab_train::note!("\n{again}");
                }
            },
        )?;
        Ok(Phases(phase))
    }

    /// Leaves the preparing phase, before anything is written. If a stop request has just
    /// ended it (the process is exiting), this never returns.
    pub fn begin_training(&self) {
        if self
            .0
            .compare_exchange(PREPARING, TRAINING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            loop {
                std::thread::park();
            }
        }
    }

    /// Training is over (the run is saved).
    pub fn end_training(&self) {
        self.0.store(AFTER, Ordering::SeqCst);
    }
}

/// `--threads`, or every core the machine has.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

pub fn run(a: TrainArgs) -> Result<()> {
    let threads = crate::train::threads_or_all(a.threads);
    start_threads(threads)?;
    ferrolab_tensor::on_pool(move || -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let phases = Phases::install(
            stop.clone(),
            "stop requested (Ctrl-C, SIGTERM or SIGHUP): writing a snapshot at the end of this \
             step, or at its next micro-batch, dropping it (Ctrl-C again to quit at once)",
            "second stop request: quitting at once (`--resume` goes on from the last complete \
             snapshot)",
            "stop requested: no more samples (the run is saved)",
        )?;
        let mut trainer = match &a.resume {
            Some(dir) => {
                let data = Trainer::corpus_for_run(dir, a.corpus.as_deref())?;
                phases.begin_training();
                let t = Trainer::resume(dir, data)?;
                if t.step() >= t.cfg.steps {
                    ferrolab_train::note!(
                        "{} has done {} of its {} steps: nothing is left to train (raise \
                         `steps` in its train.json to train on; samples: ferrolab generate --run {})",
                        dir.display(),
                        t.step(),
                        t.cfg.steps,
                        dir.display()
                    );
                    return Ok(());
                } else {
                    ferrolab_train::note!(
                        "resuming {} at step {}/{}",
                        dir.display(),
                        t.step(),
                        t.cfg.steps
                    );
                }
                t
            }
            None => {
                let (cfg, scaled) = RunConfig::resolve(&a.preset, a.config.as_deref(), &a.sets)?;
                if let Some(was) = scaled {
                    ferrolab_train::note!(
                        "warmup_steps: {} (the preset's {was} of its steps, scaled to steps = {}; \
                         set warmup_steps to choose)",
                        cfg.warmup_steps,
                        cfg.steps
                    );
                }
                cfg.validate()?;
                if let ferrolab_models::ModelConfig::DeepseekV3(v3) = &cfg.model {
                    if v3.n_routed_experts > 0 && v3.first_k_dense_replace >= v3.num_hidden_layers {
                        ferrolab_train::note!(
                            "note: model.first_k_dense_replace {} covers all {} layers: no layer \
                             has routed experts, so the MoE settings do nothing",
                            v3.first_k_dense_replace,
                            v3.num_hidden_layers
                        );
                    }
                }
                ferrolab_train::check_memory(&cfg)?;
                let dir = a.run.clone().unwrap_or_else(|| free_run_dir(&cfg.preset));
                // before the text is read and a vocabulary trained on it
                ferrolab_train::RunDir::check_new(&dir)?;
                let (tok, data) = Trainer::prepare(&cfg, a.corpus.as_deref(), true)?;
                if tok.vocab_size() < cfg.model.vocab_size() {
                    ferrolab_train::note!(
                        "warning: the text gave a vocabulary of {} tokens, fewer than the model's \
                         {} (model.vocab_size); the other ids are never used (a small corpus: \
                         --set model.vocab_size={} would save their parameters)",
                        tok.vocab_size(),
                        cfg.model.vocab_size(),
                        tok.vocab_size()
                    );
                }
                phases.begin_training();
                let t = Trainer::create(&dir, cfg, tok, data)?;
                describe(&t, &dir, threads);
                t
            }
        };
        let start = trainer.step();
        let out = trainer.train(&stop)?;
        phases.end_training();
        let dir = trainer.run.path.clone();
        if out.interrupted {
            let dropped = if out.dropped_micro_batches > 0 {
                format!(
                    " (step {} was dropped after {} of its {} micro-batches)",
                    out.step + 1,
                    out.dropped_micro_batches,
                    trainer.cfg.grad_accum
                )
            } else {
                String::new()
            };
            ferrolab_train::note!(
                "stopped at step {}{dropped}; continue with: ferrolab train --resume {}",
                out.step,
                dir.display()
            );
            // the snapshot is written and synced; 130 tells a script the run is not finished
            std::process::exit(INTERRUPTED);
        }
        let steps = if start == 0 {
            format!("{} steps", out.step)
        } else {
            format!(
                "steps {start} to {} ({} this time)",
                out.step,
                out.step - start
            )
        };
        ferrolab_train::note!(
            "done: {steps} in {:.1} s, {:.0} tokens/s{}",
            out.seconds,
            out.tokens_per_s,
            out.val
                .map(|(l, b)| format!(", val loss {l:.4}, val bits/byte {b:.4}"))
                .unwrap_or_default()
        );
        if out.skipped_steps > 0 {
            ferrolab_train::note!(
                "warning: {} of these steps were skipped for a non-finite loss or gradient \
                 (see metrics.jsonl); a lower max_lr may help",
                out.skipped_steps
            );
        }
        // finite but exploding losses are not caught as divergence: a model worse than a
        // uniform guess over its vocabulary has learned nothing
        // (over the model's ids, where a run starts: a short sound run on a text whose
        // vocabulary is smaller than the head is still above a guess over the text's ids)
        let ids = trainer.cfg.model.vocab_size();
        let uniform = (ids as f64).ln();
        if let Some((l, _)) = out.val.filter(|&(l, _)| l.is_nan() || l > uniform + 0.5) {
            ferrolab_train::note!(
                "warning: the held-out loss {l:.4} is above {uniform:.4}, the loss of a uniform \
                 guess over {ids} tokens: training diverged; try a lower max_lr (this run: {})",
                trainer.cfg.max_lr
            );
        } else if let Some((l, _)) = out.val.filter(|&(l, _)| l > uniform - 0.02) {
            // settings that cannot train (a vanishing initializer_range or max_lr) leave the
            // loss at a uniform guess, finite: no divergence to report, but nothing learned
            ferrolab_train::note!(
                "warning: the held-out loss {l:.4} is no better than {uniform:.4}, a uniform \
                 guess over {ids} tokens: the model has learned nothing (too few steps, or \
                 settings that cannot train: max_lr {}, initializer_range {})",
                trainer.cfg.max_lr,
                trainer.cfg.model.initializer_range()
            );
        }
        print_samples(&trainer, a.samples, &stop)?;
        ferrolab_train::note!(
            "run directory: {}  (generate: ferrolab generate --run {} --prompt \"...\")",
            dir.display(),
            dir.display()
        );
        Ok(())
    })
}

fn describe(t: &Trainer, dir: &Path, threads: usize) {
    let c = &t.cfg;
    let (total, active) = c.model.num_params();
    let d = t.data();
    ferrolab_train::note!(
        "run {}: preset {}, {} layers x {} wide, {:.2}M parameters ({:.2}M active per token), {} threads",
        dir.display(),
        c.preset,
        c.model.num_hidden_layers(),
        c.model.hidden_size(),
        total as f64 / 1e6,
        active as f64 / 1e6,
        threads
    );
    ferrolab_train::note!(
        "data: {} training / {} held-out tokens ({}, {:.2} bytes/token held out); {} steps x {} tokens = {:.2} epochs; unigram baseline {:.4} nats/token",
        d.train.len(),
        d.val.len(),
        t.tokenizer.id(),
        d.val_bytes as f64 / d.val.len() as f64,
        c.steps,
        c.tokens_per_step(),
        (c.steps * c.tokens_per_step()) as f64 / d.train.len() as f64,
        d.unigram_baseline(c.model.vocab_size())
    );
}

fn print_samples(t: &Trainer, n: usize, stop: &AtomicBool) -> Result<()> {
    let prompts = [
        "The ",
        "We must ",
        "Congress ",
        "In the year ",
        "Our country ",
    ];
    for (i, p) in prompts.iter().cycle().take(n).enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let ids = t.tokenizer.encode(p)?;
        let opts = SampleOpts {
            max_tokens: 200,
            temperature: 0.8,
            top_k: 0,
            top_p: 0.95,
            seed: i as u64,
        };
        let out = generate(&t.model, &ids, &opts, |_| {})?;
        let text = format!(
            "--- sample {} ---\n{p}{}\n",
            i + 1,
            t.tokenizer.decode(&out)
        );
        // a reader that went away (`| head`) ends the samples, not the (saved) run
        match std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            r => r?,
        }
    }
    Ok(())
}
