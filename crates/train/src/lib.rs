//! Training for ferrolab: run configs (presets, TOML, `--set`), token data and batches, the
//! training loop with snapshots that survive `kill -9` and resume exactly, text generation
//! with a KV cache, and DeepSeek LLM's scaling-law planner.

/// `eprintln!` that never panics: a log pipe that has gone away (`2>&1 | tee log`, then
/// Ctrl-C) must not end a run before its snapshot; the line is dropped instead.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod config;
pub mod data;
pub mod error;
pub mod experiment;
pub mod generate;
pub mod plan;
pub mod run;
pub mod trainer;

pub use config::{RunConfig, TokenizerKind};
pub use data::{CorpusSource, TokenData, Tokenizer};
pub use error::{Result, TrainError};
pub use generate::{generate, generate_within, sample, SampleOpts};
pub use plan::{plan, Plan};
pub use run::{CrashPoint, RunDir, State};
pub use trainer::{
    available_memory, check_memory, eval_cost_warning, load_model, load_run,
    training_memory_lower_bound, Eval, GroupedAdamW, Outcome, Trainer,
};
