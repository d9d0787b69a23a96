//! Shared helpers of the integration tests (included with `mod common;`).

use std::path::PathBuf;

/// A fresh path in the temp directory, unique per process and name.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolab_w2v_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.join(name)
}
