//! The `ferrolab` command line: one subcommand per file, thin over the libraries.

mod bench;

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
    /// Benchmarks, with the PyTorch peer side by side where it is installed.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Bench(a) => bench::run(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
