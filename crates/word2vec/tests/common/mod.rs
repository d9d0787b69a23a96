//! Shared helpers of the integration tests (included with `mod common;`).

use std::path::{Path, PathBuf};

/// A path for a file named `name` in a fresh scratch folder; the folder and what is in it are
/// removed when this is dropped.
pub struct TempPath {
    path: PathBuf,
    _folder: ferrolab_data::TempFolder,
}

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A fresh path in a scratch folder of its own (see [`TempPath`]).
pub fn temp_path(name: &str) -> TempPath {
    let folder = ferrolab_data::TempFolder::new("w2v").expect("create a scratch folder");
    TempPath {
        path: folder.join(name),
        _folder: folder,
    }
}
