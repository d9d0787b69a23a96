//! Errors of fetching and reading data sets: each names the data set, what failed, and what
//! to pass instead.

use std::path::Path;

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// What went wrong while fetching or reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No data set of that name.
    #[error("unknown data set `{name}` (known: {known})")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// The package client is not installed.
    #[error("data set `{dataset}`: the package client `{client}` is not installed (install it, or {hint})")]
    ClientMissing {
        /// The data set.
        dataset: String,
        /// The program that was not found.
        client: String,
        /// What to pass instead.
        hint: String,
    },
    /// The package client ran and failed (no network, unknown package, ...).
    #[error("data set `{dataset}`: `{command}` failed: {stderr} ({advice}, or {hint})")]
    ClientFailed {
        /// The data set.
        dataset: String,
        /// The command line that failed.
        command: String,
        /// The end of its error output.
        stderr: String,
        /// What to check first (the network; free disk space when the client ran out of it).
        advice: &'static str,
        /// What to pass instead.
        hint: String,
    },
    /// A downloaded file does not have the published hash.
    #[error("data set `{dataset}`: {file} has sha256 {actual}, expected {expected}; nothing was kept ({hint})")]
    HashMismatch {
        /// The data set.
        dataset: String,
        /// The archive or the file inside it.
        file: String,
        /// The published hash.
        expected: String,
        /// The hash of what was downloaded.
        actual: String,
        /// What to pass instead.
        hint: String,
    },
    /// The archive lacks a file the data set needs.
    #[error("data set `{dataset}`: the package has no file matching `{pattern}` ({hint})")]
    MissingMember {
        /// The data set.
        dataset: String,
        /// The file pattern that matched nothing.
        pattern: String,
        /// What to pass instead.
        hint: String,
    },
    /// A cached data set's folder lacks a file or holds a damaged one.
    #[error("data set `{dataset}`: the cached copy in {dir} is incomplete or damaged ({problem}); remove {dir} to fetch it again")]
    DamagedCache {
        /// The data set.
        dataset: String,
        /// Its folder.
        dir: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// The archive cannot be read.
    #[error("{path}: not a readable archive: {msg}")]
    BadArchive {
        /// The archive.
        path: String,
        /// What the reader said.
        msg: String,
    },
    /// A text file is not UTF-8.
    #[error("{path}: not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// The file.
        path: String,
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Neither `FERROLAB_DATA` nor a platform cache folder is available.
    #[error("no cache folder: set FERROLAB_DATA to a writable folder")]
    NoCacheDir,
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
