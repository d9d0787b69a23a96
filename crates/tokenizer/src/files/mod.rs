//! Vocabulary files: tiktoken rank files, GPT-2 `encoder.json` + `vocab.bpe`, HF
//! `tokenizer.json`.

pub mod base64;
pub mod gpt2;
pub mod hf;
pub mod tiktoken;

use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizerError};

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    ferrolab_data::read_regular_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a vocabulary file atomically (a failed write leaves the file that was there).
pub(crate) fn write(path: &Path, data: &[u8]) -> Result<()> {
    ferrolab_data::write_atomic_with(path, data, ferrolab_data::Links::Follow).map_err(|source| {
        TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The name used in errors for text that did not come from a file.
pub(crate) fn memory() -> PathBuf {
    PathBuf::from("<memory>")
}
