//! The `ferrolab` command line: one subcommand per file, thin over the libraries.

mod bench;
mod data;
mod experiment;
mod export;
mod generate;
mod interleave;
mod logits;
mod plan;
mod tokenizer;
mod train;
mod word2vec;

use clap::{Parser, Subcommand};

/// ferrolab: a deep-learning lab in Rust, from its own tensor engine up.
#[derive(Parser)]
#[command(name = "ferrolab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a language model on real text (the main job).
    Train(train::TrainArgs),
    /// Continue a prompt with a trained run.
    Generate(generate::GenerateArgs),
    /// Scaling-law planner (DeepSeek LLM): hyperparameters from a compute budget.
    Plan(plan::PlanArgs),
    /// Real data sets: list and fetch.
    Data(data::DataArgs),
    /// Benchmarks, with the PyTorch peer side by side where it is installed.
    Bench(bench::BenchArgs),
    /// Byte-level BPE tokenizers: encode, decode, train, inspect.
    Tokenizer(tokenizer::TokenizerArgs),
    /// word2vec: train, evaluate and query word vectors.
    Word2vec(word2vec::Word2VecArgs),
    /// Logits of a token sequence from a run or an HF model directory (parity checks).
    Logits(logits::LogitsArgs),
    /// Write a trained run as an HF model directory (config.json + model.safetensors).
    Export(export::ExportArgs),
    /// DeepSeek-V3 ablations on the real corpus: balance, mtp, attention.
    Experiment(experiment::ExperimentArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A reader that goes away (`ferrolab data list | head -1`) ends the process quietly, as it
    // does other command-line tools, instead of making `println!` panic on the broken pipe.
    // Not for `train` and `experiment`: a log pipe that dies with a Ctrl-C (`2>&1 | tee log`)
    // must not end them before the snapshot the Ctrl-C asks for (their stdout results are
    // written with broken pipes ignored). Not for `bench`: it writes to the pipes of the
    // processes it interleaves, and one that has ended is an error it reports.
    #[cfg(unix)]
    if !matches!(
        cli.command,
        Command::Bench(_) | Command::Train(_) | Command::Experiment(_)
    ) {
        // SAFETY: restores the default action of one signal before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // `train` and `experiment` stop at a snapshot; `bench` interleaves processes of its own.
    // The others end at once, removing the temporary files of writes in progress (vectors,
    // vocabularies, exports), whose destinations keep what they held.
    if !matches!(
        cli.command,
        Command::Bench(_) | Command::Train(_) | Command::Experiment(_)
    ) {
        let _ = ctrlc::set_handler(|| {
            ferrolab_data::remove_temporaries();
            // ended by the signal, as without a handler, so that a shell loop stops too
            #[cfg(unix)]
            // SAFETY: restores the default action of SIGINT and raises it in this process.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::raise(libc::SIGINT);
            }
            std::process::exit(train::INTERRUPTED);
        });
    }
    let res = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Data(a) => data::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Word2vec(a) => word2vec::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Export(a) => export::run(a),
        Command::Experiment(a) => experiment::run(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // the error and its causes, skipping a cause that the message already quotes
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            // (not eprintln!: a closed stderr must not turn the error into a panic)
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
