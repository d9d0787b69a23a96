//! `ferrolab data`: list and fetch the real data sets.

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    what: DataWhat,
}

#[derive(Subcommand)]
enum DataWhat {
    /// Show the data sets and whether they are in the cache.
    List,
    /// Fetch data sets (all when none is named) into the cache.
    Fetch {
        /// Data set names.
        names: Vec<String>,
    },
}

pub fn run(a: DataArgs) -> Result<()> {
    let root = ferrolab_data::cache_root()?;
    ferrolab_data::check_root(&root)?;
    match a.what {
        DataWhat::List => {
            println!("cache: {}", root.display());
            for d in ferrolab_data::DATASETS {
                let dir = ferrolab_data::dataset_dir(&root, d);
                let state = if std::fs::symlink_metadata(&dir).is_err() {
                    "-"
                } else if !dir.is_dir() {
                    "damaged" // not a folder
                } else if ferrolab_data::check_cached(d, &dir).is_ok() {
                    "cached"
                } else {
                    "damaged" // `data fetch NAME` says what is wrong
                };
                println!("{:<13} {:<8} {}", d.name, state, d.about);
            }
            Ok(())
        }
        DataWhat::Fetch { names } => {
            let names: Vec<String> = if names.is_empty() {
                ferrolab_data::DATASETS
                    .iter()
                    .map(|d| d.name.to_string())
                    .collect()
            } else {
                names
            };
            for n in names {
                let ds = ferrolab_data::dataset(&n)?;
                if std::fs::symlink_metadata(ferrolab_data::dataset_dir(&root, ds)).is_err() {
                    eprintln!("fetching {n} ({})", ds.spec);
                }
                let dir = ferrolab_data::fetch_into(&root, ds)?;
                let files = std::fs::read_dir(&dir)?
                    .filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count();
                println!("{n}: {} ({files} files)", dir.display());
            }
            Ok(())
        }
    }
}
