//! Errors of training runs: each names the file, key or step involved.

use std::path::Path;

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad setting.
    #[error("config `{key}`: {msg}")]
    Config {
        /// The dotted key (or the file).
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// The corpus cannot be used.
    #[error("corpus {path}: {msg}")]
    Corpus {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A run directory or snapshot is unusable.
    #[error("run {path}: {msg}")]
    Snapshot {
        /// The file or folder.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// Another process is training this run (it holds the run's `.lock`).
    #[error("run {path}: is being trained by another ferrolab process (it holds .lock): wait for it to end, or stop it, before training this run")]
    Busy {
        /// The run folder.
        path: String,
    },
    /// Too many steps in a row with a non-finite loss or gradient.
    #[error("stopped at step {step}: {count} steps in a row with a non-finite loss or gradient (last: loss {loss}, gradient norm {}); the last snapshot (step {snapshot_step}) is kept; lower max_lr or check the data", grad_norm.map_or("not computed".to_string(), |g| g.to_string()))]
    Diverged {
        /// The step that failed last.
        step: usize,
        /// How many in a row.
        count: usize,
        /// The last loss.
        loss: f32,
        /// The last gradient norm (none when the loss was not finite: it is not computed then).
        grad_norm: Option<f32>,
        /// Step of the snapshot on disk.
        snapshot_step: usize,
    },
    /// Stopped (Ctrl-C) before the end; the snapshot in `dir` continues it.
    #[error("stopped at step {step}{}; the snapshot in {} continues it", if *dropped_micro_batches > 0 { format!(" (step {} was dropped after {dropped_micro_batches} micro-batches)", step + 1) } else { String::new() }, dir.display())]
    Interrupted {
        /// Steps done.
        step: usize,
        /// The run directory.
        dir: std::path::PathBuf,
        /// Micro-batches done of the step the stop dropped (0: stopped between steps).
        dropped_micro_batches: usize,
    },
    /// Generation cannot go on: bad sampling settings, or a model whose outputs are not finite.
    #[error("generate: {0}")]
    Generate(String),
    /// A tensor-engine error.
    #[error(transparent)]
    Tensor(#[from] ferrolab_tensor::Error),
    /// A data-set error.
    #[error(transparent)]
    Data(#[from] ferrolab_data::DataError),
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn snapshot(path: &Path, msg: impl Into<String>) -> TrainError {
        TrainError::Snapshot {
            path: path.display().to_string(),
            msg: msg.into(),
        }
    }
}
