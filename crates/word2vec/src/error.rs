//! Typed errors of the word2vec crate.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while building a vocabulary, training, reading/writing vectors
/// or evaluating them. File errors name the file and, where meaningful, the line or byte offset.
#[derive(Debug, Error)]
pub enum Word2VecError {
    /// An operating-system I/O error on `path`.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The corpus file contains no token at all.
    #[error("{path}: empty corpus (no tokens)")]
    EmptyCorpus {
        /// The corpus file.
        path: PathBuf,
    },
    /// The corpus has tokens but none occurs at least `min_count` times.
    #[error("{path}: no word reaches min_count={min_count} ({distinct} distinct words)")]
    NoWordAboveMinCount {
        /// The corpus file.
        path: PathBuf,
        /// The threshold that was applied.
        min_count: u64,
        /// How many distinct words the corpus has.
        distinct: usize,
    },
    /// A text file (vectors, analogies, similarities) is malformed at `line` (1-based).
    #[error("{path}:{line}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A binary vectors file is malformed at byte `offset`.
    #[error("{path}: byte offset {offset}: {problem}")]
    Binary {
        /// The file.
        path: PathBuf,
        /// Byte offset (from the start of the file) where the problem was detected.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A query used a word that is not in the vocabulary.
    #[error("word {0:?} is not in the vocabulary")]
    UnknownWord(String),
}

/// Shorthand result type of this crate.
pub type Result<T> = std::result::Result<T, Word2VecError>;

/// Builds an [`Word2VecError::Io`] mapper for `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Word2VecError + '_ {
    move |source| Word2VecError::Io {
        path: path.to_path_buf(),
        source,
    }
}
