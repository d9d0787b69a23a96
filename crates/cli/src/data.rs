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
    match a.what {
        DataWhat::List => {
            println!("cache: {}", root.display());
            for d in ferrolab_data::DATASETS {
                let here = ferrolab_data::dataset_dir(&root, d).is_dir();
                println!(
                    "{:<13} {:<8} {}",
                    d.name,
                    if here { "cached" } else { "-" },
                    d.about
                );
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
                if !ferrolab_data::dataset_dir(&root, ds).is_dir() {
                    eprintln!("fetching {n} ({})", ds.spec);
                }
                let dir = ferrolab_data::fetch_into(&root, ds)?;
                let files = std::fs::read_dir(&dir)?.count();
                println!("{n}: {} ({files} files)", dir.display());
            }
            Ok(())
        }
    }
}
