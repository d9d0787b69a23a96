//! A run directory and its snapshots.
//!
//! ```text
//! RUN/config.json            model config, HF key names (written before step 0)
//! RUN/train.json             the whole resolved run config (written before step 0)
//! RUN/model.safetensors      parameters            }
//! RUN/optimizer.safetensors  AdamW moments and step } the snapshot
//! RUN/state.json             step, RNG, checksums  }
//! RUN/metrics.jsonl          one line per step, one per validation
//! ```
//!
//! A snapshot is three files that must match. They are replaced with a small journal so that a
//! `kill -9` at any moment leaves a loadable snapshot:
//! 1. write `*.next` files (each fsynced);
//! 2. write `snapshot.commit` atomically: from here the new snapshot is complete;
//! 3. rename each `*.next` over its file, then delete `snapshot.commit`.
//!
//! Loading first finishes an interrupted step 3 when `snapshot.commit` exists (roll forward),
//! else deletes stray `*.next` files (the old snapshot is untouched). `state.json` records the
//! sha256 of the two tensor files, so a truncated or corrupt file is reported, never loaded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ferrolab_nn::{Optimizer, Vars};
use ferrolab_tensor::{io, rng::RngState, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// Version of the snapshot format; bumped when its meaning changes.
pub const FORMAT_VERSION: u32 = 1;

const FILES: [&str; 3] = ["model.safetensors", "optimizer.safetensors", "state.json"];
const COMMIT: &str = "snapshot.commit";

/// `state.json`: what besides tensors a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Optimizer steps done; the data position (batches are a function of the step).
    pub step: usize,
    /// Seed of the tensor engine's generator.
    pub rng_seed: u64,
    /// Numbers drawn from it.
    pub rng_offset: u64,
    /// Identifier of the tokenizer's vocabulary.
    pub tokenizer: String,
    /// Tokens trained on so far.
    pub tokens_seen: u64,
    /// sha256 of `model.safetensors`.
    pub model_sha256: String,
    /// sha256 of `optimizer.safetensors`.
    pub optimizer_sha256: String,
    /// The run config (`train.json`) the snapshot was trained with, so that `--resume` can
    /// tell an edited `train.json` (absent in snapshots written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

impl State {
    /// The engine generator's state.
    pub fn rng(&self) -> RngState {
        RngState {
            seed: self.rng_seed,
            offset: self.rng_offset,
        }
    }
}

/// Run settings that decide the model or which tokens are trained on and held out: a resumed
/// run whose `train.json` changed one of them cannot continue from its snapshot.
const FIXED_SETTINGS: [&str; 6] = [
    "batch_size",
    "seq_len",
    "grad_accum",
    "val_fraction",
    "seed",
    // only a label (the model is given by `model`), but an edited one says the run is another
    "preset",
];

/// Model settings that only steer training (memory, the initial weights, loss and balance
/// terms): the trained weights mean the same without them, and a resumed run may change them.
const TRAINING_ONLY_MODEL_SETTINGS: [&str; 6] = [
    "model.recompute",
    "model.initializer_range",
    "model.aux_loss_alpha",
    "model.seq_aux",
    "model.bias_update_speed",
    "model.mtp_loss_weight",
];

/// One setting that differs between two run configs: dotted key, old value, new value.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigChange {
    /// Dotted key (`steps`, `model.hidden_size`).
    pub key: String,
    /// Value in the snapshot's config (`-` where absent).
    pub old: String,
    /// Value in the config now (`-` where absent).
    pub new: String,
}

impl ConfigChange {
    /// Whether a run cannot continue its snapshot with this change: the model, the tokenizer,
    /// or the batches and held-out split change (or the preset's name: a folder taken for
    /// another run).
    pub fn is_fixed(&self) -> bool {
        self.is_model() || FIXED_SETTINGS.contains(&self.key.as_str())
    }

    /// Whether this is a setting of the model or its tokenizer that the trained weights depend
    /// on (not one that only steers training, such as `model.recompute`).
    pub fn is_model(&self) -> bool {
        let model = self.key.starts_with("model.") || self.key == "model";
        (model && !TRAINING_ONLY_MODEL_SETTINGS.contains(&self.key.as_str()))
            || self.key == "tokenizer"
    }
}

impl ConfigChange {
    /// `key old -> new, ...`, for messages.
    pub fn list(changes: &[ConfigChange]) -> String {
        changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.old, self.new)
    }
}

/// A run config as a JSON value, as `train.json` writes it (an `f32` such as 0.1 stays 0.1, where
/// `serde_json::to_value` would widen it to 0.10000000149011612).
pub fn config_json(cfg: &RunConfig) -> serde_json::Result<serde_json::Value> {
    ferrolab_models::json_value(cfg)
}

/// The settings that differ between `old` and `new` (JSON of two run configs), by dotted key
/// in key order.
pub fn config_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<ConfigChange> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| ConfigChange {
            key: k.clone(),
            old: a.get(k).cloned().unwrap_or_else(|| "-".into()),
            new: b.get(k).cloned().unwrap_or_else(|| "-".into()),
        })
        .collect()
}

/// Where a snapshot write stops, for tests that simulate a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After writing some `*.next` files.
    BeforeCommit,
    /// After the commit record, before the renames.
    AfterCommit,
    /// After renaming the first file.
    MidRename,
}

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
    /// `RUN/.lock`, held locked while a trainer owns the run ([`RunDir::lock`]).
    lock: Option<std::sync::Arc<std::fs::File>>,
}

impl RunDir {
    /// Creates `path` for a new run and writes `config.json` and `train.json`. Refuses a
    /// folder that already holds a run.
    ///
    /// The run's lock is taken first, and the folder checked again under it, so that of two
    /// processes making the same run one gets it and the other is refused as
    /// [`TrainError::Busy`]. Files that could not all be written (a full disk) are removed
    /// again, and a folder this made with them.
    pub fn create(path: &Path, cfg: &RunConfig) -> Result<RunDir> {
        RunDir::check_new(path)?;
        let existed = path.exists();
        std::fs::create_dir_all(path).map_err(|e| TrainError::io(path, e))?;
        let mut run = RunDir {
            path: path.into(),
            lock: None,
        };
        run.lock()?;
        // under the lock: still empty (another process may have made a run here meanwhile)
        RunDir::check_new(path)?;
        let written = (|| {
            run.write_json("config.json", &cfg.model)?;
            run.write_json("train.json", cfg)?;
            std::fs::write(run.file("metrics.jsonl"), b"")
                .map_err(|e| TrainError::io(&run.file("metrics.jsonl"), e))
        })();
        if let Err(e) = written {
            RunDir::discard_new(path, existed);
            return Err(e);
        }
        Ok(run)
    }

    /// Takes the run for this process: `RUN/.lock` is locked (an advisory lock the system
    /// drops when the process ends, however it ends) for as long as this `RunDir` or a clone
    /// of it lives. A run that another process is training is refused, since the two would
    /// write over each other's snapshots and metrics. Readers (generation, export) take no
    /// lock. Where the file system cannot lock, the run goes on unlocked.
    pub fn lock(&mut self) -> Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        let p = self.file(".lock");
        if p.exists() && !p.is_file() {
            // (a pipe would block the open below)
            return Err(TrainError::snapshot(
                &p,
                "is not a regular file (a folder, a pipe or a device): a run's files are plain \
                 files",
            ));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| TrainError::io(&p, e))?;
        match f.try_lock() {
            Ok(()) => self.lock = Some(std::sync::Arc::new(f)),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(TrainError::Busy {
                    path: self.path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => crate::note!(
                "warning: {}: cannot be locked here ({e}): nothing stops another process from \
                 training this run at the same time",
                p.display()
            ),
        }
        Ok(())
    }

    /// Removes the temporary files that killed writers left in the run (`kill -9` during a
    /// snapshot; a stop request removes its own), returning their names. Only files whose
    /// writer is known to be gone are removed ([`ferrolab_data::is_stale_temp_name`]): call it
    /// with the run locked, so that no other trainer writes here meanwhile.
    pub fn remove_stale_temporaries(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return removed;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ferrolab_data::is_stale_temp_name(&name) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(name);
            }
        }
        removed.sort();
        removed
    }

    /// Refuses at once a run that another process is training ([`TrainError::Busy`]), before
    /// work that takes a while (reading and encoding its text). Takes no lock.
    pub fn check_not_busy(path: &Path) -> Result<()> {
        let p = path.join(".lock");
        if !p.is_file() {
            return Ok(()); // none (or not a file: refused when the run is opened)
        }
        let Ok(f) = std::fs::File::open(&p) else {
            return Ok(()); // no lock file: nobody has trained it since locks were taken
        };
        match f.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Busy {
                path: path.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Removes what [`RunDir::create`] and the first writes of a new run left at `path` when
    /// the run could not be set up (a full disk, say), so that the same command can be run
    /// again: the folder itself if it did not exist before (`existed` false), else its
    /// contents (it was empty: [`RunDir::check_new`]). Only for the process that made the run
    /// and holds its lock.
    pub fn discard_new(path: &Path, existed: bool) {
        if !existed {
            let _ = std::fs::remove_dir_all(path);
        } else if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }

    /// Checks that a new run may be created at `path`: a folder that does not exist yet, or an
    /// empty one. A run is refused (resume it instead), and so is a folder holding anything
    /// else (an exported HF model, say), whose files the run would overwrite.
    pub fn check_new(path: &Path) -> Result<()> {
        // (`file/` does not exist as such, but names the file)
        if path.components().as_path().is_file() {
            return Err(TrainError::snapshot(
                path,
                "is a file: a run needs a folder (give a new or empty one)",
            ));
        }
        if !path.exists() {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(TrainError::snapshot(
                    path,
                    "is a link to nothing: give a new or empty folder for the run",
                ));
            }
            // the first part of the path that is there must be a folder
            if let Some(there) = path.ancestors().skip(1).find(|a| a.exists()) {
                if !there.is_dir() {
                    return Err(TrainError::snapshot(
                        there,
                        "is a file, so no run folder can be made in it",
                    ));
                }
            }
            return Ok(());
        }
        if !path.is_dir() {
            return Err(TrainError::snapshot(
                path,
                "is a file: a run needs a folder (give a new or empty one)",
            ));
        }
        if path.join("train.json").exists() {
            // (one that another process is training says so)
            RunDir::check_not_busy(path)?;
            return Err(TrainError::snapshot(
                path,
                "already holds a run; continue it with --resume or choose another --run",
            ));
        }
        for e in std::fs::read_dir(path).map_err(|e| TrainError::io(path, e))? {
            let name = e.map_err(|e| TrainError::io(path, e))?.file_name();
            let name = name.to_string_lossy();
            // what a run being set up when it was killed leaves: its lock, a temporary file
            if name == ".lock" || ferrolab_data::is_temp_name(&name) {
                continue;
            }
            return Err(TrainError::snapshot(
                path,
                format!(
                    "is not empty (it holds {name}, and is not a ferrolab run): a new run would \
                     overwrite what is there; choose a new or empty folder"
                ),
            ));
        }
        Ok(())
    }

    /// Opens an existing run and reads its config.
    pub fn open(path: &Path) -> Result<(RunDir, RunConfig)> {
        let run = RunDir {
            path: path.into(),
            lock: None,
        };
        let p = run.file("train.json");
        if !path.exists() {
            return Err(TrainError::snapshot(path, "does not exist"));
        }
        if !p.exists() {
            return Err(TrainError::snapshot(
                path,
                "is not a run directory (no train.json)",
            ));
        }
        // a FIFO or a device in place of a run file would block the read (or never end)
        for name in [
            "train.json",
            "config.json",
            "corpus.json",
            "tokenizer.json",
            "metrics.jsonl",
            ".lock",
            COMMIT,
        ]
        .into_iter()
        .chain(FILES)
        .flat_map(|n| [n.to_string(), format!("{n}.next")])
        {
            let f = run.file(&name);
            if f.exists() && !f.is_file() {
                return Err(TrainError::snapshot(
                    &f,
                    "is not a regular file (a folder, a pipe or a device): a run's files are \
                     plain files",
                ));
            }
        }
        let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
        let cfg: RunConfig = serde_json::from_str(&text)
            .map_err(|e| TrainError::snapshot(&p, format!("unreadable: {e}")))?;
        // the model part is read leniently (HF configs carry keys of their own), but this is
        // ferrolab's file: a key it does not know is a typo that would be dropped unseen
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::snapshot(&p, format!("unreadable: {e}")))?;
        let known = serde_json::to_value(&cfg.model)
            .map_err(|e| TrainError::snapshot(&p, e.to_string()))?;
        if let Some(model) = raw.get("model").and_then(|m| m.as_object()) {
            let unknown: Vec<&str> = model
                .keys()
                .map(String::as_str)
                .filter(|k| known.get(k).is_none())
                .collect();
            if !unknown.is_empty() {
                return Err(TrainError::Config {
                    key: p.display().to_string(),
                    msg: format!(
                        "model.{} is not a setting of a {} model",
                        unknown.join(", model."),
                        cfg.model.model_type()
                    ),
                });
            }
        }
        run.note_stale_hf_config(&cfg);
        Ok((run, cfg))
    }

    /// `config.json` is written from `train.json` for other tools (HF names); ferrolab reads
    /// only `train.json`. A `config.json` edited since would be ignored without a word, so its
    /// differing settings are named (a setting it lacks, from a run written by an earlier
    /// ferrolab, is not).
    fn note_stale_hf_config(&self, cfg: &RunConfig) {
        let p = self.file("config.json");
        let Ok(text) = std::fs::read_to_string(&p) else {
            return;
        };
        let Ok(want) = ferrolab_models::json_value(&cfg.model) else {
            return;
        };
        let changes: Vec<ConfigChange> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(got) => config_changes(&want, &got)
                .into_iter()
                .filter(|c| c.new != "-")
                .collect(),
            Err(_) => {
                crate::note!(
                    "note: {} is not JSON; ferrolab reads the run's train.json, not it",
                    p.display()
                );
                return;
            }
        };
        if !changes.is_empty() {
            crate::note!(
                "note: {} differs from the model in train.json ({}); ferrolab reads train.json \
                 and ignores config.json, which it writes for other tools",
                p.display(),
                ConfigChange::list(&changes)
            );
        }
    }

    /// The step and run config of the last committed snapshot, read without changing the
    /// folder (nothing is loaded or checked but `state.json` itself): `None` without a
    /// snapshot, or for one written before configs were recorded. The config is read back as a
    /// [`RunConfig`] and written out again, so that settings added since (with their defaults)
    /// compare equal. A file renamed away by a training run meanwhile is read again.
    pub fn snapshot_config(&self) -> Result<Option<(usize, serde_json::Value)>> {
        retried(
            |e| matches!(e, TrainError::Io { .. }),
            || self.read_snapshot_config(),
        )
    }

    fn read_snapshot_config(&self) -> Result<Option<(usize, serde_json::Value)>> {
        let p = self.committed(FILES[2]);
        if !p.exists() {
            return Ok(None);
        }
        let state = parse_state(&p)?;
        let damaged = |e: String| {
            TrainError::snapshot(
                &p,
                format!("its `config` is not a run config ({e}): the file is damaged"),
            )
        };
        match state.config {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(c) => {
                let cfg: RunConfig =
                    serde_json::from_value(c).map_err(|e| damaged(e.to_string()))?;
                let c = config_json(&cfg).map_err(|e| damaged(e.to_string()))?;
                Ok(Some((state.step, c)))
            }
        }
    }

    /// The file `name` of the last committed snapshot: its `*.next` file when a commit record
    /// says the renames are not done yet, else the file in place.
    fn committed(&self, name: &str) -> PathBuf {
        let next = self.file(&format!("{name}.next"));
        if self.file(COMMIT).exists() && next.exists() {
            next
        } else {
            self.file(name)
        }
    }

    /// Records which text the run trains on (`corpus.json`).
    pub fn write_corpus(&self, source: &crate::data::CorpusSource) -> Result<()> {
        self.write_json("corpus.json", source)
    }

    /// The text the run was trained on, when recorded (runs made before `corpus.json` existed
    /// have none).
    pub fn corpus(&self) -> Result<Option<crate::data::CorpusSource>> {
        let p = self.file("corpus.json");
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            TrainError::snapshot(
                &p,
                format!(
                    "unreadable: {e} (remove it and resume with --corpus PATH, the text the run \
                     was trained on)"
                ),
            )
        })
    }

    /// A file of the run.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<()> {
        let p = self.file(name);
        let text =
            serde_json::to_string_pretty(v).map_err(|e| TrainError::snapshot(&p, e.to_string()))?;
        io::write_atomic(&p, format!("{text}\n").as_bytes())?;
        Ok(())
    }

    /// Writes a snapshot (see the module docs).
    pub fn save_snapshot(
        &self,
        vars: &Vars,
        opt: &dyn Optimizer,
        state: State,
        crash: Option<CrashPoint>,
    ) -> Result<()> {
        let next = |n: &str| self.file(&format!("{n}.next"));
        let written = self.write_snapshot_files(vars, opt, state, crash);
        if written.is_err() && !self.file(COMMIT).exists() {
            // (a full disk, say: the half-written files of this snapshot are not kept)
            for n in FILES {
                let _ = std::fs::remove_file(next(n));
            }
        }
        written
    }

    fn write_snapshot_files(
        &self,
        vars: &Vars,
        opt: &dyn Optimizer,
        state: State,
        crash: Option<CrashPoint>,
    ) -> Result<()> {
        let next = |n: &str| self.file(&format!("{n}.next"));
        let model = encode_tensors(&vars.all(), &next(FILES[0]))?;
        let optim = encode_tensors(&opt.state(), &next(FILES[1]))?;
        let state = State {
            format_version: FORMAT_VERSION,
            model_sha256: ferrolab_data::sha256_hex(&model),
            optimizer_sha256: ferrolab_data::sha256_hex(&optim),
            ..state
        };
        write_synced(&next(FILES[0]), &model)?;
        write_synced(&next(FILES[1]), &optim)?;
        if crash == Some(CrashPoint::BeforeCommit) {
            return Ok(());
        }
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| TrainError::snapshot(&self.path, e.to_string()))?;
        write_synced(&next(FILES[2]), json.as_bytes())?;
        io::write_atomic(&self.file(COMMIT), b"complete\n")?;
        if crash == Some(CrashPoint::AfterCommit) {
            return Ok(());
        }
        self.finish_commit(crash == Some(CrashPoint::MidRename))
    }

    /// Renames the `*.next` files into place and removes the commit record.
    fn finish_commit(&self, crash_mid: bool) -> Result<()> {
        for (i, n) in FILES.iter().enumerate() {
            let from = self.file(&format!("{n}.next"));
            if from.exists() {
                std::fs::rename(&from, self.file(n)).map_err(|e| TrainError::io(&from, e))?;
            }
            if crash_mid && i == 0 {
                return Ok(());
            }
        }
        sync_dir(&self.path);
        let c = self.file(COMMIT);
        std::fs::remove_file(&c).map_err(|e| TrainError::io(&c, e))?;
        sync_dir(&self.path);
        Ok(())
    }

    /// Brings the files to a consistent snapshot after a crash (see the module docs).
    pub fn recover(&self) -> Result<()> {
        if self.file(COMMIT).exists() {
            return self.finish_commit(false);
        }
        for n in FILES {
            let p = self.file(&format!("{n}.next"));
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Loads the last committed snapshot's weights into `vars` (not the optimizer), checking
    /// them against the sha256 in `state.json`, and that the run's vocabulary is the one it was
    /// trained with: what [`RunDir::load_snapshot`] checks, for reading the weights alone
    /// (generation, export, logits).
    ///
    /// Nothing in the folder is changed, so this is safe while the run is training and
    /// writing its next snapshot: the `*.next` files of a snapshot being written are left
    /// alone, and those of one committed but not yet renamed into place are read instead of
    /// the files they replace. A read that fails (a file renamed away, or a model that does
    /// not match its `state.json` because a snapshot was committed in between) is tried again a
    /// few times before the error is reported, so only a damage that stays is reported.
    pub fn load_weights(&self, vars: &Vars, tokenizer: &str) -> Result<State> {
        retried(
            |e| matches!(e, TrainError::Snapshot { .. } | TrainError::Io { .. }),
            || self.read_committed_weights(vars, tokenizer),
        )
    }

    fn read_committed_weights(&self, vars: &Vars, tokenizer: &str) -> Result<State> {
        let sp = self.committed(FILES[2]);
        if !sp.exists() {
            self.check_snapshot_complete()?;
            return Err(TrainError::snapshot(
                &self.path,
                "has no snapshot yet (no state.json: nothing was trained or saved)",
            ));
        }
        let state = read_state(&sp, tokenizer)?;
        let mp = self.committed(FILES[0]);
        if !mp.exists() {
            return Err(TrainError::snapshot(
                &mp,
                "is missing while state.json is there: the snapshot is damaged",
            ));
        }
        let bytes = read_checked(&mp, &state.model_sha256)?;
        let model = io::parse_safetensors(&bytes, &mp.display().to_string())?;
        drop(bytes);
        check_params(vars, &model, &mp)?;
        for (name, p) in vars.all() {
            p.copy_from(&model[&name])?;
        }
        drop(model);
        ferrolab_tensor::release_free_memory(); // the file and its copy, freed, stay resident
        Ok(state)
    }

    /// Whether a snapshot exists (after [`RunDir::recover`]).
    pub fn has_snapshot(&self) -> bool {
        self.file("state.json").exists()
    }

    /// Refuses a folder whose weights are there without their `state.json` (deleted or lost):
    /// the run would otherwise look unstarted and begin again over the trained weights.
    pub fn check_snapshot_complete(&self) -> Result<()> {
        if self.has_snapshot() {
            // a rename journal that was interrupted keeps the files as `*.next`
            for n in &FILES[..2] {
                if !self.committed(n).exists() {
                    return Err(TrainError::snapshot(
                        &self.file(n),
                        "is missing while state.json is there: the snapshot is damaged \
                         (nothing was changed; restore it, or start a new run)",
                    ));
                }
            }
            return Ok(());
        }
        for n in &FILES[..2] {
            if self.file(n).exists() {
                return Err(TrainError::snapshot(
                    &self.file("state.json"),
                    format!(
                        "is missing while {n} is there: the snapshot is damaged (nothing was \
                         changed; restore state.json, or start a new run)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Loads the snapshot into `vars` and `opt` and returns its state. Checksums, the format
    /// version and the tokenizer are checked first; nothing is changed on error.
    pub fn load_snapshot(
        &self,
        vars: &Vars,
        opt: &mut dyn Optimizer,
        tokenizer: &str,
    ) -> Result<State> {
        self.recover()?;
        let sp = self.file("state.json");
        if !sp.exists() {
            return Err(TrainError::snapshot(
                &self.path,
                "has no snapshot yet (state.json missing): it was stopped before its first snapshot; start it again",
            ));
        }
        let state = read_state(&sp, tokenizer)?;
        let mp = self.file(FILES[0]);
        let op = self.file(FILES[1]);
        let model = read_checked(&mp, &state.model_sha256)?;
        let optim = read_checked(&op, &state.optimizer_sha256)?;
        let optim = io::parse_safetensors(&optim, &op.display().to_string())?;
        let model = io::parse_safetensors(&model, &mp.display().to_string())?;
        // check every parameter before changing any
        check_params(vars, &model, &mp)?;
        opt.load_state(&optim)?;
        for (name, p) in vars.all() {
            p.copy_from(&model[&name])?;
        }
        drop((model, optim));
        ferrolab_tensor::release_free_memory(); // the files and their copies stay resident
        Ok(state)
    }

    /// Appends one JSON line to `metrics.jsonl`.
    pub fn log_metrics(&self, line: &serde_json::Value) -> Result<()> {
        let p = self.file("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| TrainError::io(&p, e))?;
        writeln!(f, "{line}").map_err(|e| TrainError::io(&p, e))
    }

    /// Drops metrics lines of steps after `step` (written after the snapshot a run resumes
    /// from, and about to be written again).
    ///
    /// Each line is read on its own: a damaged one (bad UTF-8 or JSON; the last one is often
    /// cut short by a kill) is dropped with a warning, and the others are kept. A file that
    /// cannot be read is an error (the history is never dropped whole).
    pub fn truncate_metrics(&self, step: usize) -> Result<()> {
        let p = self.file("metrics.jsonl");
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TrainError::io(&p, e)),
        };
        // (line number, line) of the lines with text
        let lines: Vec<(usize, &[u8])> = bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| (i + 1, l))
            .collect();
        let mut kept = Vec::new();
        let mut damaged = Vec::new();
        for (k, (number, l)) in lines.iter().enumerate() {
            let line_step = std::str::from_utf8(l)
                .ok()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
            match line_step {
                Some(s) if s as usize <= step => {
                    kept.extend_from_slice(l);
                    kept.push(b'\n');
                }
                Some(_) => {}
                // a last line cut short by a kill is expected
                None if k + 1 == lines.len() && !bytes.ends_with(b"\n") => {}
                None => damaged.push(*number),
            }
        }
        if !damaged.is_empty() {
            crate::note!(
                "warning: {}: dropped {} damaged line(s) (line {}); the other lines are kept",
                p.display(),
                damaged.len(),
                damaged
                    .iter()
                    .take(5)
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        io::write_atomic(&p, &kept)?;
        Ok(())
    }

    /// The metrics lines, parsed.
    pub fn metrics(&self) -> Result<Vec<serde_json::Value>> {
        let p = self.file("metrics.jsonl");
        let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| TrainError::snapshot(&p, format!("line {}: {e}", i + 1)))
            })
            .collect()
    }
}

/// Snapshots are always f32: resuming must be exact.
fn encode_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<Vec<u8>> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let bytes: Vec<u8> = t.contig().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::snapshot(path, format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| TrainError::snapshot(path, e.to_string()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let res = (|| {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    res.map_err(|e| TrainError::io(path, e))
}

/// A snapshot's `state.json` at `path`, parsed (not checked).
fn parse_state(path: &Path) -> Result<State> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::snapshot(path, format!("unreadable: {e}")))
}

/// `read`, tried up to five times 50 ms apart while it fails with an error `transient` accepts
/// (a file renamed away or replaced by a training run in between); the last result is returned.
fn retried<T>(transient: impl Fn(&TrainError) -> bool, read: impl Fn() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read() {
            Err(e) if attempt < 5 && transient(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// A snapshot's `state.json` at `path`, checked: this ferrolab's format version, and trained
/// with the vocabulary `tokenizer` (the run's `tokenizer.json`).
fn read_state(path: &Path, tokenizer: &str) -> Result<State> {
    let state = parse_state(path)?;
    if state.format_version != FORMAT_VERSION {
        return Err(TrainError::snapshot(
            path,
            format!(
                "format version {} but this ferrolab reads {FORMAT_VERSION}",
                state.format_version
            ),
        ));
    }
    if state.tokenizer != tokenizer {
        return Err(TrainError::snapshot(
            path,
            format!(
                "was trained with tokenizer `{}`, not the `{tokenizer}` in tokenizer.json",
                state.tokenizer
            ),
        ));
    }
    Ok(state)
}

/// Every parameter of `vars` is in `model` with its shape.
fn check_params(
    vars: &Vars,
    model: &std::collections::BTreeMap<String, ferrolab_tensor::Tensor>,
    path: &Path,
) -> Result<()> {
    for (name, p) in vars.all() {
        match model.get(&name) {
            None => {
                return Err(TrainError::snapshot(
                    path,
                    format!("tensor `{name}` is missing"),
                ))
            }
            Some(t) if t.shape() != p.shape() => {
                return Err(TrainError::snapshot(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, the model needs {:?}",
                        t.shape(),
                        p.shape()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn read_checked(path: &Path, sha: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let got = ferrolab_data::sha256_hex(&bytes);
    if got != sha {
        return Err(TrainError::snapshot(
            path,
            format!(
                "corrupt or truncated ({} bytes, sha256 {got}, state.json expects {sha})",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all(); // best effort: not every platform can fsync a folder
    }
}

/// Named tensors of a snapshot file, for inspection.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(io::load_safetensors(path)?)
}
