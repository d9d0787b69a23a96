//! `ferrolab experiment NAME`: the DeepSeek-V3 ablations (balance, mtp, attention), every arm
//! trained on the same tokens for the same steps; prints a markdown table and writes
//! `results.json` beside the arms' run directories.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use ferrolab_train::{experiment, RunConfig, Trainer};

#[derive(Args)]
pub struct ExperimentArgs {
    /// Which experiment: balance, mtp or attention.
    name: String,
    /// Preset the arms start from.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Optimizer steps of every arm.
    #[arg(long, default_value_t = 300, value_parser = crate::bench::at_least_one)]
    steps: usize,
    /// Override one setting of every arm, as `ferrolab train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Directory of the arms' runs (default: runs/experiments/NAME); an existing one is
    /// continued.
    #[arg(long)]
    out: Option<PathBuf>,
    /// UTF-8 text to train on (default, or `sotu`: the State of the Union corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Kernel threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let threads = crate::train::threads_or_all(a.threads);
    crate::train::start_threads(threads)?;
    ferrolab_tensor::on_pool(move || -> Result<()> {
        let mut base = RunConfig::preset(&a.preset)?;
        base.steps = a.steps;
        base.eval_every = 0;
        base.warmup_steps = base.warmup_steps.min(a.steps / 10 + 1);
        for s in &a.sets {
            if s.split('=').next().map(str::trim) == Some("steps") {
                // --steps also sizes the warm-up
                anyhow::bail!("--set {s}: give the steps of every arm with --steps");
            }
            base = base.set(s)?;
        }
        // checks the experiment name and that the arms fit before any work
        let arms = experiment::arms(&a.name, &base)?;
        for (_, arm) in &arms {
            arm.validate()?;
            ferrolab_train::check_memory(arm)?;
        }
        // a --set of a setting the arms set would be overridden in some arm without a word,
        // or make two arms alike
        for s in &a.sets {
            let key = s.split('=').next().unwrap_or_default().trim();
            if experiment::arm_keys(&a.name).contains(&key) {
                anyhow::bail!(
                    "--set {s}: the {} experiment sets `{key}` in its arms ({}), so it cannot \
                     be set for all of them",
                    a.name,
                    arms.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs/experiments").join(&a.name));
        let stop = Arc::new(AtomicBool::new(false));
        let phases = crate::train::Phases::install(
            stop.clone(),
            "stop requested: writing a snapshot at the end of this step, or at its next \
             micro-batch, dropping it (Ctrl-C again to quit now)",
            "second stop request: quitting at once (the same command goes on from the last \
             complete snapshot)",
            "stop requested: the arms are trained and saved",
        )?;
        experiment::check_out(&a.name, &base, &out)?;
        let (tok, data) = Trainer::prepare(&base, a.corpus.as_deref(), true)?;
        phases.begin_training();
        let results =
            match experiment::run_experiment(&a.name, &base, &out, &tok, &data, &stop, true) {
                Err(e @ ferrolab_train::TrainError::Interrupted { .. }) => {
                    // as `train`: the snapshot is written, and 130 says the work is not done
                    ferrolab_train::note!("{e}; run the same command again to continue");
                    std::process::exit(crate::train::INTERRUPTED);
                }
                r => r?,
            };
        phases.end_training();
        let text = format!(
            "\nexperiment {} ({} steps x {} tokens per arm, {} threads; runs in {})\n\n{}",
            a.name,
            base.steps,
            base.tokens_per_step(),
            threads,
            out.display(),
            experiment::table(&a.name, &results)
        );
        // the arms are saved (results.json too): a reader that went away is no error
        match std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        }
    })
}
