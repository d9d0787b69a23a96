//! Typed errors of the tokenizer library: each names the file, line or key it is about.

use std::path::PathBuf;

use crate::Rank;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a `.tiktoken` rank file or a GPT-2 `vocab.bpe` merges file is malformed.
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The file (or `<memory>` for text given directly).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A JSON file (`tokenizer.json`, `encoder.json`) is malformed or has an unsupported value.
    #[error("{}: {}{message}", path.display(), key_part(key))]
    BadJson {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// The JSON key (dotted path) that is wrong.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The vocabulary is inconsistent (missing byte tokens, duplicate ids, ...).
    #[error("invalid vocabulary: {0}")]
    BadVocab(String),
    /// A pre-tokenisation regex does not compile.
    #[error("bad pre-tokenisation pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// The pre-tokenisation pattern could not be matched against the text (the backtracking
    /// engine's limits: e.g. a run of hundreds of thousands of spaces).
    #[error("pre-tokenising the text failed at byte {offset}: {message}{hint}")]
    PretokenizeFailed {
        /// Where the last piece ended.
        offset: usize,
        /// The regex engine's message.
        message: String,
        /// What in the text likely caused it.
        hint: String,
    },
    /// A name that is neither a built-in tokenizer nor an existing file.
    #[error("unknown tokenizer {0:?}: not a built-in name (cl100k_base, o200k_base, r50k_base, p50k_base) nor a file")]
    UnknownTokenizer(String),
    /// An unknown pre-tokenisation preset name.
    #[error("unknown preset {0:?} (expected gpt2, cl100k, o200k or deepseek)")]
    UnknownPreset(String),
    /// The text contains a special token that the caller did not allow (tiktoken's semantics).
    #[error("the text contains the special token {token:?} at byte {offset}, which is not allowed; allow it, or encode it as ordinary text")]
    DisallowedSpecial {
        /// The special token.
        token: String,
        /// Its byte offset in the text.
        offset: usize,
    },
    /// A token id that is not in the vocabulary.
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(Rank),
    /// Decoded bytes are not valid UTF-8 (use `decode_bytes` for partial characters).
    #[error(
        "the decoded bytes are not valid UTF-8 at byte {valid_up_to}; decode to bytes instead"
    )]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// Training options that cannot work.
    #[error("invalid training option `{field}`: {message}")]
    BadTrainConfig {
        /// The option.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Result with [`TokenizerError`].
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// `key `k`: ` for a message about one key, nothing for the file as a whole.
fn key_part(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}
