//! Run-level behaviour: exact resume, crash-safe snapshots, clear errors on corrupt snapshots,
//! divergence handling, bad configs and corpora.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ferrolab_data::TempFolder;
use ferrolab_nn::Vars;
use ferrolab_train::{
    CrashPoint, RunConfig, TokenData, Tokenizer, TokenizerKind, TrainError, Trainer,
};

/// A path for a new run (nothing is there yet), removed with what is in it when the test
/// ends.
fn dir(name: &str) -> TempFolder {
    let d = TempFolder::new(&format!("run-{name}")).unwrap();
    std::fs::remove_dir(&d).unwrap();
    d
}

/// `preset` shrunk by `model` settings, with the run settings every test here shares: byte
/// tokens, 4 x 32-token batches, evaluation every 5 steps, a snapshot every 4.
fn small(preset: &str, model: &[&str], steps: usize) -> RunConfig {
    let run = [
        "batch_size=4",
        "seq_len=32",
        "eval_every=5",
        "eval_batches=2",
        "snapshot_every=4",
        "warmup_steps=2",
        "model.vocab_size=256",
    ];
    let mut c = model
        .iter()
        .chain(&run)
        .fold(RunConfig::preset(preset).unwrap(), |c, s| c.set(s).unwrap());
    c.steps = steps;
    // a 1-step run has its peak at once
    c.warmup_steps = c.warmup_steps.min(c.first_decay_step());
    c.tokenizer = TokenizerKind::Bytes;
    c
}

fn cfg(steps: usize) -> RunConfig {
    small(
        "llama-tiny",
        &[
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_hidden_layers=2",
            "model.num_attention_heads=2",
            "model.num_key_value_heads=1",
            "model.max_position_embeddings=32",
        ],
        steps,
    )
}

fn corpus_text() -> String {
    let words = [
        "the", "union", "is", "strong", "and", "we", "shall", "prosper", "together",
    ];
    (0..3000)
        .map(|i| words[(i * 7 + i / 5) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn corpus(c: &RunConfig) -> TokenData {
    let tok = Tokenizer::bytes();
    TokenData::from_text(&corpus_text(), &tok, c.val_fraction, c.seq_len, "synthetic").unwrap()
}

fn losses(run: &Path) -> Vec<(u64, u32)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let loss = v.get("loss")?.as_f64()? as f32;
            Some((v["step"].as_u64().unwrap(), loss.to_bits()))
        })
        .collect()
}

/// A new run of `c` (in [`dir`]`(name)`, byte tokens), trained to step `steps` with no
/// progress bar.
fn trained_to(name: &str, c: &RunConfig, steps: usize) -> (Trainer, TempFolder) {
    let a = dir(name);
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(c)).unwrap();
    t.progress = false;
    t.cfg.steps = steps;
    t.train(&AtomicBool::new(false)).unwrap();
    (t, a)
}

/// Sets the first element of the final norm's weight of `t`'s model (a damaged weight).
fn set_final_norm(t: &Trainer, v: f32) {
    let (_, norm) = t
        .vars
        .all()
        .into_iter()
        .find(|(n, _)| n == "model.norm.weight")
        .unwrap();
    norm.update_data(|w| w[0] = v).unwrap();
}

/// Resumes `run` on the text of `corpus`, read as `train --resume --corpus` does.
fn resume_on(run: &Path, corpus: &Path) -> ferrolab_train::Result<Trainer> {
    Trainer::resume(run, Trainer::corpus_for_run(run, Some(corpus))?)
}

fn params(t: &Trainer) -> Vec<u32> {
    t.vars
        .tensors()
        .iter()
        .flat_map(|p| p.to_vec())
        .map(f32::to_bits)
        .collect()
}

fn train(t: &mut Trainer) {
    t.progress = false;
    t.train(&AtomicBool::new(false)).unwrap();
}

#[test]
fn interrupted_and_resumed_run_equals_an_uninterrupted_one_bitwise() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(10);
    let a = dir("straight");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t);
    let want = params(&t);
    let want_losses = losses(&a);
    assert_eq!(want_losses.len(), 10);
    // the loss went down on this easy corpus
    assert!(want_losses[9].1 != want_losses[0].1);

    // stop at step 6 (Ctrl-C), snapshot, resume in a new trainer
    let b = dir("resumed");
    let mut t = Trainer::create(
        &b,
        RunConfig {
            steps: 10,
            ..c.clone()
        },
        Tokenizer::bytes(),
        corpus(&c),
    )
    .unwrap();
    t.progress = false;
    // run 6 steps by lowering the target, then resume to 10 from the step-4 snapshot + 2
    t.cfg.steps = 6;
    t.train(&AtomicBool::new(false)).unwrap(); // snapshots at 4 and at 6 (the end)
    drop(t);
    let mut t = Trainer::resume(&b, corpus(&c)).unwrap();
    assert_eq!(t.step(), 6);
    train(&mut t);
    assert_eq!(t.step(), 10);
    assert_eq!(losses(&b), want_losses, "losses after resume differ");
    assert_eq!(params(&t), want, "weights after resume differ");
}

/// Rewrites one top-level setting of a run's `train.json`, as a user editing it would.
fn edit_train_json(run: &Path, key: &str, value: serde_json::Value) {
    let p = run.join("train.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut slot = &mut v;
    for part in key.split('.') {
        slot = &mut slot[part];
    }
    *slot = value;
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn resume_refuses_an_edited_split_or_batch_shape_and_takes_more_steps() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(4);
    let a = dir("edited");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t); // snapshot at step 4
    drop(t);
    let original = std::fs::read(a.join("train.json")).unwrap();
    let text_file = dir("edited-text");
    std::fs::create_dir_all(&text_file).unwrap();
    let text_file = text_file.join("corpus.txt");
    std::fs::write(&text_file, corpus_text()).unwrap();
    for (key, value) in [
        ("val_fraction", serde_json::json!(0.2)),
        ("seq_len", serde_json::json!(16)),
        ("seed", serde_json::json!(7)),
        // these used to fail later, on the weights' shapes or the tokenizer, naming neither
        ("model.hidden_size", serde_json::json!(64)),
        ("model.num_hidden_layers", serde_json::json!(3)),
        ("tokenizer", serde_json::json!("bpe")),
        // only a label, but an edited one says the folder is taken for another run
        ("preset", serde_json::json!("small")),
    ] {
        edit_train_json(&a, key, value.clone());
        // the text is read as the CLI does (with the run's tokenizer and split), then resumed
        let e = Trainer::corpus_for_run(&a, Some(&text_file))
            .err()
            .unwrap_or_else(|| panic!("{key}: the text was read under a changed {key}"));
        let msg = e.to_string();
        assert!(
            msg.contains("train.json") && msg.contains(&format!("{key} ")),
            "{msg}"
        );
        // readers (generate, export, logits) refuse a model the weights were not trained as
        let read = ferrolab_train::load_model(&a);
        if key.starts_with("model.") || key == "tokenizer" {
            let msg = read
                .err()
                .expect("a reader took an edited model")
                .to_string();
            assert!(
                msg.contains(&format!("{key} ")) && msg.contains("weights"),
                "{msg}"
            );
        } else {
            assert!(read.is_ok(), "{key}: {:?}", read.err());
        }
        let edited: RunConfig =
            serde_json::from_str(&std::fs::read_to_string(a.join("train.json")).unwrap()).unwrap();
        match Trainer::resume(&a, corpus(&edited)) {
            Err(e @ TrainError::Config { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("train.json"), "{msg}");
                assert!(
                    msg.contains(&format!("{key} ")) && msg.contains(&format!("-> {value}")),
                    "{msg}"
                );
                assert!(msg.contains("step 4"), "{msg}");
            }
            Err(e) => panic!("{key}: wrong error {e}"),
            Ok(_) => panic!("{key}: a changed {key} was resumed"),
        }
        std::fs::write(a.join("train.json"), &original).unwrap();
    }
    // a model key train.json's reader does not know (a typo) is named, not dropped
    edit_train_json(&a, "model.rope_thetaa", serde_json::json!(5000));
    let msg = Trainer::resume(&a, corpus(&c)).err().unwrap().to_string();
    assert!(
        msg.contains("model.rope_thetaa is not a setting of a llama model"),
        "{msg}"
    );
    std::fs::write(a.join("train.json"), &original).unwrap();
    // a snapshot config that is not a config is a damaged state.json, not an edit
    let state_path = a.join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["config"] = serde_json::json!(5);
    std::fs::write(&state_path, v.to_string()).unwrap();
    let msg = Trainer::resume(&a, corpus(&c)).err().unwrap().to_string();
    assert!(
        msg.contains("state.json") && msg.contains("damaged"),
        "{msg}"
    );
    std::fs::write(&state_path, &state).unwrap();
    // a snapshot config written before a setting existed reads it with its default: not a
    // change (model.rope_theta has a serde default, and the run uses it)
    let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["config"]["model"]
        .as_object_mut()
        .unwrap()
        .remove("rope_theta")
        .unwrap();
    std::fs::write(&state_path, v.to_string()).unwrap();
    assert!(Trainer::resume(&a, corpus(&c)).is_ok());
    assert!(ferrolab_train::load_model(&a).is_ok());
    std::fs::write(&state_path, &state).unwrap();
    // a model setting that only steers training (recompute) is taken, and readers accept it
    edit_train_json(&a, "model.recompute", serde_json::json!(true));
    assert!(Trainer::resume(&a, corpus(&c)).is_ok());
    assert!(ferrolab_train::load_model(&a).is_ok());
    std::fs::write(a.join("train.json"), &original).unwrap();
    // a takeable setting edited to a bad value is refused by name, by both entry points
    edit_train_json(&a, "max_lr", serde_json::json!(-5.0));
    for e in [
        Trainer::resume(&a, corpus(&c)).err().unwrap(),
        Trainer::corpus_for_run(&a, Some(&text_file)).err().unwrap(),
    ] {
        assert!(e.to_string().contains("max_lr"), "{e}");
    }
    std::fs::write(a.join("train.json"), &original).unwrap();
    // more steps is a change a run can take: it continues from step 4 to 6
    edit_train_json(&a, "steps", serde_json::json!(6));
    let mut t = Trainer::resume(&a, corpus(&c)).unwrap();
    assert_eq!(t.step(), 4);
    train(&mut t);
    assert_eq!(t.step(), 6);
    assert_eq!(losses(&a).len(), 6);
}

/// Resuming removes the temporary files of a snapshot whose writer was killed (`kill -9`
/// leaves them; nothing else would), and only those: one whose process still runs stays.
#[test]
fn resume_removes_temporaries_that_killed_writers_left() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(2);
    let (t, a) = trained_to("stale-temps", &c, 2);
    drop(t);
    // a process that has ended: its id is free (and not reused this quickly)
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!(".model.safetensors.tmp-{dead}-0");
    let live = format!(".model.safetensors.tmp-{}-7", std::process::id());
    for n in [&stale, &live, &"notes.txt".to_string()] {
        std::fs::write(a.join(n), b"partial").unwrap();
    }
    let t = Trainer::resume(&a, corpus(&c)).unwrap();
    assert_eq!(t.step(), 2);
    if Path::new("/proc/self").is_dir() {
        assert!(!a.join(&stale).exists(), "{stale} was left");
    }
    assert!(
        a.join(&live).exists(),
        "a running process's file was removed"
    );
    assert!(a.join("notes.txt").exists());
}

#[test]
fn stop_flag_writes_a_snapshot_and_resume_continues() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(6);
    let a = dir("stop");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    t.progress = false;
    let out = t.train(&AtomicBool::new(true)).unwrap();
    assert!(out.interrupted);
    assert_eq!(out.step, 0);
    drop(t); // a run is trained by one trainer at a time
    let mut t = Trainer::resume(&a, corpus(&c)).unwrap();
    assert_eq!(t.step(), 0);
    train(&mut t);
    assert_eq!(t.step(), 6);
}

#[test]
fn a_crash_at_any_point_of_a_snapshot_leaves_a_loadable_one() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(4);
    for (i, crash) in [
        CrashPoint::BeforeCommit,
        CrashPoint::AfterCommit,
        CrashPoint::MidRename,
    ]
    .into_iter()
    .enumerate()
    {
        let a = dir(&format!("crash{i}"));
        let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
        train(&mut t); // snapshot at step 4
        let at4 = params(&t);
        // change the weights, then "crash" while writing the next snapshot
        for p in t.vars.tensors() {
            p.update_data(|w| w.iter_mut().for_each(|x| *x += 1.0))
                .unwrap();
        }
        let changed = params(&t);
        let state = ferrolab_train::State {
            format_version: ferrolab_train::run::FORMAT_VERSION,
            step: 5,
            rng_seed: 0,
            rng_offset: 0,
            tokenizer: "bytes-256".into(),
            tokens_seen: 0,
            model_sha256: String::new(),
            optimizer_sha256: String::new(),
            config: None,
        };
        let opt = ferrolab_train::GroupedAdamW::new(t.vars.all(), Default::default());
        t.run
            .save_snapshot(&t.vars, &opt, state, Some(crash))
            .unwrap();
        drop(t);
        let (want_step, want) = match crash {
            CrashPoint::BeforeCommit => (4, at4), // the old snapshot is intact
            _ => (5, changed),                    // committed: rolled forward
        };
        let (run, _) = ferrolab_train::RunDir::open(&a).unwrap();
        // a reader (generate, export) meanwhile gets the committed snapshot and changes
        // nothing: a run that is still training finishes its snapshot undisturbed
        let before: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(&a)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let vars = Vars::new();
        let _m = ferrolab_models::Model::new(&vars, &c.model).unwrap();
        let st = run.load_weights(&vars, "bytes-256").unwrap();
        assert_eq!(st.step, want_step, "{crash:?}");
        assert_eq!(
            vars.tensors()
                .iter()
                .flat_map(|p| p.to_vec())
                .map(f32::to_bits)
                .collect::<Vec<_>>(),
            want,
            "{crash:?}"
        );
        let after: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(&a)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(before, after, "{crash:?}: the reader changed the folder");
        run.recover().unwrap();
        ferrolab_train::load_model(&a).unwrap();
        let vars = Vars::new();
        let _m = ferrolab_models::Model::new(&vars, &c.model).unwrap();
        vars.load(&a.join("model.safetensors")).unwrap();
        let got: Vec<u32> = vars
            .tensors()
            .iter()
            .flat_map(|p| p.to_vec())
            .map(f32::to_bits)
            .collect();
        assert_eq!(got, want, "{crash:?}");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["step"], want_step, "{crash:?}");
        // no journal files are left behind
        for n in [
            "snapshot.commit",
            "model.safetensors.next",
            "state.json.next",
        ] {
            assert!(!a.join(n).exists(), "{crash:?}: {n} left");
        }
    }
}

#[test]
fn corrupt_or_truncated_snapshot_is_a_clear_error() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(4);
    let a = dir("corrupt");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t);
    let m = a.join("model.safetensors");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..bytes.len() / 2]).unwrap();
    drop(t); // a run is trained by one trainer at a time
    let e = Trainer::resume(&a, corpus(&c)).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // reading the weights alone (generate, export, logits) checks them too, even when the
    // damage leaves a parseable file: four bytes of one weight overwritten
    let mut damaged = bytes.clone();
    let n = damaged.len();
    damaged[n - 8..n - 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(&m, &damaged).unwrap();
    let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("corrupt"),
        "{e}"
    );
    std::fs::write(&m, &bytes).unwrap();
    ferrolab_train::load_model(&a).unwrap();
    // so does a vocabulary other than the one the run was trained with
    let other = Tokenizer::train_bpe(&"abc abd ".repeat(100), 280, false).unwrap();
    let kept = std::fs::read(a.join("train.json")).unwrap();
    let mut tj: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    tj["tokenizer"] = "bpe".into();
    tj["model"]["vocab_size"] = 300.into();
    std::fs::write(a.join("train.json"), tj.to_string()).unwrap();
    other.save(&a).unwrap();
    let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
    assert!(e.contains("tokenizer"), "{e}");
    std::fs::write(a.join("train.json"), &kept).unwrap();
    // one snapshot file lost: `check` sees the resume's error, then the file is put back
    let without = |file: &str, check: &dyn Fn(&str)| {
        let kept = std::fs::read(a.join(file)).unwrap();
        std::fs::remove_file(a.join(file)).unwrap();
        check(&Trainer::resume(&a, corpus(&c)).err().unwrap().to_string());
        std::fs::write(a.join(file), &kept).unwrap();
    };
    // state.json lost while the weights are there: damaged, not a fresh start over them
    without("state.json", &|e| {
        assert!(e.contains("is missing while model.safetensors"), "{e}");
        assert_eq!(std::fs::read(&m).unwrap(), bytes);
        let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
        assert!(
            e.contains("damaged") && !e.contains("no snapshot yet"),
            "{e}"
        );
    });
    // and the other way round: state.json there, a weights file gone
    without("optimizer.safetensors", &|e| {
        assert!(
            e.contains("optimizer.safetensors") && e.contains("is missing while state.json"),
            "{e}"
        );
    });
    without("model.safetensors", &|e| {
        assert!(e.contains("is missing while state.json"), "{e}");
        // the readers name it the same way
        let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("is missing while state.json"),
            "{e}"
        );
    });
    // a pipe or a folder in place of a run file: refused, not read (a pipe blocked forever)
    let metrics = a.join("metrics.jsonl");
    let kept = std::fs::read(&metrics).unwrap();
    std::fs::remove_file(&metrics).unwrap();
    let made_fifo = std::process::Command::new("mkfifo")
        .arg(&metrics)
        .status()
        .is_ok_and(|s| s.success());
    if !made_fifo {
        std::fs::create_dir(&metrics).unwrap();
    }
    let e = Trainer::resume(&a, corpus(&c)).err().unwrap().to_string();
    assert!(
        e.contains("metrics.jsonl") && e.contains("not a regular file"),
        "{e}"
    );
    let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let _ = std::fs::remove_file(&metrics).or_else(|_| std::fs::remove_dir(&metrics));
    std::fs::write(&metrics, kept).unwrap();
    std::fs::write(a.join("state.json"), "{ not json").unwrap();
    let e = Trainer::resume(&a, corpus(&c)).err().unwrap().to_string();
    assert!(e.contains("state.json") && e.contains("unreadable"), "{e}");
    let e = Trainer::resume(&dir("nothing-here"), corpus(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_new_run_refuses_an_existing_run_directory() {
    let c = cfg(1);
    let a = dir("twice");
    let t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    // while it is being trained, that is what is said; then, to resume it
    let e = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c))
        .err()
        .unwrap();
    assert!(matches!(e, TrainError::Busy { .. }), "{e}");
    drop(t);
    let e = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    // a folder holding anything else (an exported model, say) or a file is refused too, and
    // left as it was
    let other = dir("not-a-run");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("model.safetensors"), b"exported").unwrap();
    let e = Trainer::create(&other, c.clone(), Tokenizer::bytes(), corpus(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("is not empty") && e.contains("model.safetensors"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(other.join("model.safetensors")).unwrap(),
        b"exported"
    );
    assert!(!other.join("train.json").exists());
    let file = other.join("model.safetensors");
    let e = ferrolab_train::RunDir::check_new(&file)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is a file"), "{e}");
    // inside a file, or the file with a trailing slash, or a link to nothing
    for p in [
        file.join("sub"),
        PathBuf::from(format!("{}/", file.display())),
    ] {
        let e = ferrolab_train::RunDir::check_new(&p)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is a file"), "{}: {e}", p.display());
    }
    #[cfg(unix)]
    {
        let link = other.join("dangling");
        std::os::unix::fs::symlink(other.join("nowhere"), &link).unwrap();
        let e = ferrolab_train::RunDir::check_new(&link)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("link to nothing"), "{e}");
    }
    std::fs::remove_dir_all(&other).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    // an empty folder is fine, and so is one with what a kill during a run's set-up leaves
    ferrolab_train::RunDir::check_new(&other).unwrap();
    std::fs::write(other.join(".lock"), b"").unwrap();
    std::fs::write(other.join(".train.json.tmp-4242-0"), b"{").unwrap();
    ferrolab_train::RunDir::check_new(&other).unwrap();
    let mut t = Trainer::create(&other, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t);
    // the resolved config was written before step 0
    let back: RunConfig =
        serde_json::from_str(&std::fs::read_to_string(a.join("train.json")).unwrap()).unwrap();
    assert_eq!(back, c);
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["hidden_size"], 32);
    assert_eq!(hf["num_key_value_heads"], 1);
}

#[test]
fn a_run_is_trained_by_one_process_at_a_time() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(4);
    let (t, a) = trained_to("locked", &c, 2);
    // while this trainer lives, another (here: another open of the lock file, as another
    // process would make) is refused before it writes anything
    let before = std::fs::read(a.join("metrics.jsonl")).unwrap();
    let e = Trainer::resume(&a, corpus(&c)).err().unwrap();
    assert!(matches!(e, TrainError::Busy { .. }), "{e}");
    // and before its text is read again (which can take a while)
    let e = Trainer::corpus_for_run(&a, None).err().unwrap();
    assert!(matches!(e, TrainError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("another ferrolab process"), "{e}");
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), before);
    // once it is gone, the run resumes
    drop(t);
    let mut t = Trainer::resume(&a, corpus(&c)).unwrap();
    train(&mut t);
    assert_eq!(t.step(), 4);
}

#[test]
fn a_run_that_cannot_be_set_up_leaves_nothing_behind() {
    // the model's head (vocab_size) is smaller than the tokenizer: refused after the run
    // folder and its first files were made
    let mut c = cfg(1);
    c.tokenizer = TokenizerKind::Bpe;
    let c = c.set("model.vocab_size=257").unwrap();
    let tok = {
        let text = "the union is strong and we shall prosper together ".repeat(50);
        Tokenizer::train_bpe(&text, 300, false).unwrap()
    };
    assert!(tok.vocab_size() > 257);
    let data = TokenData::from_text(&corpus_text(), &tok, c.val_fraction, c.seq_len, "x").unwrap();
    let new = dir("setup-fails");
    let e = Trainer::create(&new, c.clone(), tok.clone(), data.clone())
        .err()
        .unwrap();
    assert!(e.to_string().contains("vocab_size"), "{e}");
    assert!(!new.exists(), "a new folder is removed");
    // an empty folder that was there stays, empty
    std::fs::create_dir_all(&new).unwrap();
    Trainer::create(&new, c, tok, data).err().unwrap();
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);
    std::fs::remove_dir_all(&new).unwrap();
}

#[test]
fn resume_keeps_the_metrics_around_a_damaged_line() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(6);
    let (t, a) = trained_to("damaged-metrics", &c, 4);
    drop(t);
    let want = losses(&a);
    assert_eq!(want.len(), 4);
    // a byte that is not UTF-8 in the middle, and a last line cut short (a kill)
    let p = a.join("metrics.jsonl");
    let text = std::fs::read(&p).unwrap();
    let mut bytes = text.clone();
    let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes.splice(second..second, b"{\"step\": 2, \xff}\n".iter().copied());
    bytes.extend_from_slice(b"{\"step\": 5, \"lo");
    std::fs::write(&p, &bytes).unwrap();
    let mut t = Trainer::resume(&a, corpus(&c)).unwrap();
    assert_eq!(t.step(), 4);
    let kept = std::fs::read(&p).unwrap();
    assert_eq!(kept, text, "only the damaged lines are dropped");
    train(&mut t);
    let got = losses(&a);
    assert_eq!(got.len(), 6);
    assert_eq!(got[..4], want[..]);
}

#[test]
fn diverging_run_skips_steps_then_stops_keeping_its_snapshot() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let mut c = cfg(30);
    c.max_bad_steps = 3;
    let (mut t, a) = trained_to("diverge", &c, 4); // snapshot at step 4
                                                   // a weight goes NaN (as after an overflow): every loss from now on is NaN
    set_final_norm(&t, f32::NAN);
    t.cfg.steps = 30;
    let e = t.train(&AtomicBool::new(false)).unwrap_err();
    let TrainError::Diverged {
        count,
        snapshot_step,
        step,
        ..
    } = &e
    else {
        panic!("expected Diverged, got {e}");
    };
    assert_eq!((*count, *step, *snapshot_step), (3, 7, 4));
    assert!(e.to_string().contains("non-finite"), "{e}");
    // skipped steps are logged as such
    let m = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert_eq!(m.matches("\"skipped\":true").count(), 3, "{m}");
    // the snapshot on disk is the last good one and loads
    drop(t); // a run is trained by one trainer at a time
    let r = Trainer::resume(&a, corpus(&c)).unwrap();
    assert_eq!(r.step(), 4);
    let finite = r
        .vars
        .tensors()
        .iter()
        .all(|p| p.to_vec().iter().all(|v| v.is_finite()));
    assert!(finite, "the kept snapshot holds finite weights");
    // the run's last steps skipped, fewer than max_bad_steps: not "done" with the snapshot
    // left behind; weights that are not finite are not saved (the error names the snapshot)
    let mut r = r;
    r.progress = false;
    r.cfg.steps = 6;
    set_final_norm(&r, f32::NAN);
    let e = r.train(&AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Diverged {
                count: 2,
                step: 6,
                snapshot_step: 4,
                ..
            }
        ),
        "{e}"
    );
    drop(r);
    assert_eq!(Trainer::resume(&a, corpus(&c)).unwrap().step(), 4);
}

/// Steps skipped for a bad batch at the end of a run, with the weights still finite: the
/// snapshot moves to the end (the run said "done" and was left at an earlier step).
#[test]
fn a_run_whose_last_steps_are_skipped_still_ends_with_a_snapshot() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let mut c = cfg(6);
    c.max_bad_steps = 3;
    let (mut t, a) = trained_to("skipped-end", &c, 4);
    // a huge (finite) weight makes the logits overflow: the steps are skipped, and the
    // weights are not touched
    t.cfg.steps = 6;
    set_final_norm(&t, 3e38);
    let before = params(&t);
    let out = t.train(&AtomicBool::new(false)).unwrap();
    assert_eq!((out.step, out.skipped_steps), (6, 2), "{out:?}");
    assert_eq!(params(&t), before);
    drop(t);
    assert_eq!(Trainer::resume(&a, corpus(&c)).unwrap().step(), 6);
}

#[test]
fn bad_configs_and_corpora_are_named() {
    let c = cfg(1);
    let bad = RunConfig {
        seq_len: 64,
        ..c.clone()
    };
    let e = Trainer::create(&dir("badcfg"), bad, Tokenizer::bytes(), corpus(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("seq_len") && e.contains("max_position_embeddings"),
        "{e}"
    );
    let mut bpe = c.clone();
    bpe.tokenizer = TokenizerKind::Bpe;
    let bpe = bpe.set("model.vocab_size=300").unwrap();
    let e = Trainer::create(&dir("mismatch"), bpe, Tokenizer::bytes(), corpus(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer"), "{e}");
    let tok = Tokenizer::bytes();
    let e = TokenData::from_text("", &tok, 0.1, 32, "empty.txt")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("empty.txt") && e.contains("too short"), "{e}");
    let e = Trainer::read_corpus(Some(Path::new("/nonexistent/corpus.txt")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/corpus.txt"), "{e}");
    #[cfg(unix)]
    {
        // a file name that is not UTF-8 cannot be recorded in corpus.json (it was recorded
        // with U+FFFD, and resume looked for a file that is not there); a link to it can
        use std::os::unix::ffi::OsStrExt;
        let d = dir("non-utf8-name");
        std::fs::create_dir_all(&d).unwrap();
        let odd = d.join(std::ffi::OsStr::from_bytes(b"corp\xff.txt"));
        std::fs::write(&odd, corpus_text()).unwrap();
        let e = Trainer::read_corpus(Some(&odd)).err().unwrap().to_string();
        assert!(e.contains("not valid UTF-8") && e.contains("link"), "{e}");
        let link = d.join("corpus.txt");
        std::os::unix::fs::symlink(&odd, &link).unwrap();
        let (text, origin) = Trainer::read_corpus(Some(&link)).unwrap();
        assert_eq!((text, origin), (corpus_text(), link.display().to_string()));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn bpe_run_stores_its_vocabulary_and_resumes_with_it() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let mut c = cfg(4);
    c.tokenizer = TokenizerKind::Bpe;
    let c = c.set("model.vocab_size=300").unwrap();
    let dir = self::dir("bpe");
    let files = TempFolder::new("run-bpe-corpus").unwrap();
    let text = "the union is strong and we shall prosper together ".repeat(400);
    let corpus = files.join("corpus.txt");
    std::fs::write(&corpus, &text).unwrap();
    let (tok, data) = Trainer::prepare(&c, Some(&corpus), false).unwrap();
    assert!(tok.vocab_size() > 256 && tok.vocab_size() <= 300);
    // merges compress the text
    assert!(
        data.train.len() * 2 < text.len() * 9 / 10,
        "{}",
        data.train.len()
    );
    assert_eq!(
        tok.decode(&tok.encode("we shall prosper").unwrap()),
        "we shall prosper"
    );
    let mut t = Trainer::create(&dir, c.clone(), tok.clone(), data).unwrap();
    train(&mut t);
    assert!(dir.join("tokenizer.json").exists());
    let (model, _, back) = ferrolab_train::load_model(&dir).unwrap();
    assert_eq!(back.id(), tok.id());
    assert_eq!(model.config().vocab_size(), 300);
    // resuming re-encodes with the stored vocabulary
    drop(t); // a run is trained by one trainer at a time
    let data = Trainer::corpus_for_run(&dir, Some(&corpus)).unwrap();
    let r = Trainer::resume(&dir, data).unwrap();
    assert_eq!(r.step(), 4);
    // a replaced vocabulary is refused
    let other = Tokenizer::train_bpe(&"abc abd ".repeat(100), 280, false).unwrap();
    other.save(&dir).unwrap();
    drop(r);
    let data = Trainer::corpus_for_run(&dir, Some(&corpus)).unwrap();
    let e = Trainer::resume(&dir, data).err().unwrap().to_string();
    assert!(e.contains("tokenizer"), "{e}");
}

/// A small DeepSeek-V3-style run: MLA, MoE (4 experts, top-2, aux-loss-free bias), one MTP
/// module.
fn v3_cfg(steps: usize) -> RunConfig {
    small(
        "tiny",
        &[
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.moe_intermediate_size=16",
            "model.num_hidden_layers=2",
            "model.num_attention_heads=2",
            "model.kv_lora_rank=16",
            "model.qk_nope_head_dim=8",
            "model.qk_rope_head_dim=8",
            "model.v_head_dim=8",
            "model.n_routed_experts=4",
            "model.num_experts_per_tok=2",
            "model.bias_update_speed=0.01",
            "model.max_position_embeddings=32",
        ],
        steps,
    )
}

#[test]
fn v3_run_resumes_bitwise_with_its_routing_bias_and_logs_balance() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = v3_cfg(10);
    let a = dir("v3-straight");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t);
    let want = params(&t);
    let want_losses = losses(&a);
    assert_eq!(want_losses.len(), 10);
    // the routing bias moved (it is a parameter tensor saved with the model)
    assert!(t.model.biases().iter().flatten().any(|&b| b != 0.0));
    // metrics: per-layer loads, MaxVio and bias on every step; MTP loss; global MaxVio
    let m = t.run.metrics().unwrap();
    let step1 = m.iter().find(|l| l.get("loss").is_some()).unwrap();
    let loads = step1["expert_load"].as_array().unwrap();
    assert_eq!(loads.len(), 2, "MoE layer 1 and the MTP module's MoE block");
    for l in loads {
        let total: u64 = l
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(
            total,
            (4 * 32 * 2) as u64,
            "every token goes to top-2 experts"
        );
    }
    // MaxVio of each MoE block is (max load - mean load) / mean load of its logged loads
    for (k, l) in loads.iter().enumerate() {
        let l: Vec<f64> = l
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let mean = l.iter().sum::<f64>() / l.len() as f64;
        let max = l.iter().cloned().fold(f64::MIN, f64::max);
        let got = step1["max_vio"][k].as_f64().unwrap();
        assert!((got - (max - mean) / mean).abs() < 1e-6, "block {k}: {got}");
    }
    assert_eq!(step1["mtp_loss"].as_array().unwrap().len(), 1);
    assert!(m.iter().any(|l| l.get("val_max_vio_global").is_some()));

    let (t, b) = trained_to("v3-resumed", &c, 6);
    drop(t);
    let mut t = Trainer::resume(&b, corpus(&c)).unwrap();
    assert_eq!(t.step(), 6);
    train(&mut t);
    assert_eq!(losses(&b), want_losses, "losses after resume differ");
    assert_eq!(params(&t), want, "weights and biases after resume differ");
}

#[test]
fn a_run_resumes_on_the_text_it_recorded_and_refuses_another() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let c = cfg(6);
    let run = dir("corpus-record");
    let work = dir("corpus-record-files");
    std::fs::create_dir_all(&work).unwrap();
    let text = "we hold these truths to be self evident and so on ".repeat(200);
    let file = work.join("mine.txt");
    std::fs::write(&file, &text).unwrap();
    let (tok, data) = Trainer::prepare(&c, Some(&file), false).unwrap();
    let mut t = Trainer::create(&run, c.clone(), tok, data.clone()).unwrap();
    t.cfg.steps = 4;
    train(&mut t);
    drop(t);

    // without --corpus, the recorded file is read again (not the State of the Union text)
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("corpus.json")).unwrap()).unwrap();
    assert_eq!(rec["bytes"].as_u64().unwrap() as usize, text.len());
    let again = Trainer::corpus_for_run(&run, None).unwrap();
    assert_eq!(again.train, data.train);
    assert_eq!(again.source, data.source);
    let r = Trainer::resume(&run, again).unwrap();
    assert_eq!(r.step(), 4);
    drop(r);

    // the same text at another path is accepted
    let copy = work.join("copy.txt");
    std::fs::write(&copy, &text).unwrap();
    let r = resume_on(&run, &copy).unwrap();
    assert_eq!(r.step(), 4);
    drop(r);

    // another text is refused, naming the recorded one
    let other = work.join("other.txt");
    std::fs::write(
        &other,
        "a different speech entirely, with other words ".repeat(200),
    )
    .unwrap();
    for e in [
        Trainer::corpus_for_run(&run, Some(&other)).err().unwrap(),
        // data the caller encoded itself
        Trainer::resume(
            &run,
            TokenData::from_text(
                &std::fs::read_to_string(&other).unwrap(),
                &Tokenizer::bytes(),
                c.val_fraction,
                c.seq_len,
                "other",
            )
            .unwrap(),
        )
        .err()
        .unwrap(),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, TrainError::Corpus { .. }), "{msg}");
        assert!(
            msg.contains("not the text this run was trained on") && msg.contains("mine.txt"),
            "{msg}"
        );
    }

    // the recorded file edited in place: the advice is to restore it, not to resume without
    // --corpus (which is what was done)
    std::fs::write(&file, text.replace("truths", "things")).unwrap();
    let msg = Trainer::corpus_for_run(&run, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("has changed since") && !msg.contains("resume without --corpus"),
        "{msg}"
    );
    std::fs::write(&file, &text).unwrap();

    // corpus.json lost: not the default corpus in its place, but the text asked for; given
    // with --corpus, it is recorded again (only once the snapshot loads: a failed resume
    // records nothing)
    // (a damaged corpus.json says how to get there)
    std::fs::write(run.join("corpus.json"), "{").unwrap();
    let msg = Trainer::corpus_for_run(&run, Some(&file))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("unreadable") && msg.contains("remove it"),
        "{msg}"
    );
    std::fs::remove_file(run.join("corpus.json")).unwrap();
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    std::fs::write(run.join("model.safetensors"), &model[..model.len() / 2]).unwrap();
    let data = Trainer::corpus_for_run(&run, Some(&other)).unwrap();
    assert!(Trainer::resume(&run, data).is_err());
    assert!(!run.join("corpus.json").exists());
    std::fs::write(run.join("model.safetensors"), &model).unwrap();
    let msg = Trainer::corpus_for_run(&run, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("corpus.json") && msg.contains("is missing") && msg.contains("--corpus"),
        "{msg}"
    );
    let r = resume_on(&run, &file).unwrap();
    assert_eq!(r.step(), 4);
    drop(r);
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("corpus.json")).unwrap()).unwrap();
    assert_eq!(again["sha256"], rec["sha256"]);

    // the recorded file moved, and the same text given at its new place: recorded there, so
    // the next resume needs no --corpus
    let moved = work.join("moved.txt");
    std::fs::rename(&file, &moved).unwrap();
    let r = resume_on(&run, &moved).unwrap();
    drop(r);
    Trainer::corpus_for_run(&run, None).unwrap();
    std::fs::rename(&moved, &file).unwrap();
    let r = resume_on(&run, &file).unwrap();
    drop(r);

    // the recorded file gone: an error that says so and how to go on
    std::fs::remove_file(&file).unwrap();
    let msg = Trainer::corpus_for_run(&run, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("mine.txt") && msg.contains("cannot be read") && msg.contains("--corpus"),
        "{msg}"
    );
}

#[test]
fn configs_that_cannot_fit_in_memory_or_exceed_the_size_limits_are_refused_up_front() {
    let c = cfg(1);
    // within every size limit, but hundreds of terabytes: more than any machine has
    let huge = c
        .clone()
        .set("model.hidden_size=65536")
        .unwrap()
        .set("model.num_hidden_layers=1024")
        .unwrap()
        .set("batch_size=16777216")
        .unwrap();
    huge.validate().unwrap();
    assert!(ferrolab_train::training_memory_lower_bound(&huge) > 1e14);
    if ferrolab_train::available_memory().is_some() {
        let e = ferrolab_train::check_memory(&huge).unwrap_err().to_string();
        assert!(e.contains("GiB") && e.contains("batch_size"), "{e}");
        // and a run is not even created
        let d = dir("too-big");
        let err = Trainer::create(&d, huge, Tokenizer::bytes(), corpus(&cfg(1)));
        let msg = err.err().unwrap().to_string();
        assert!(msg.contains("GiB"), "{msg}");
        assert!(!d.join("train.json").exists());
    }
    ferrolab_train::check_memory(&c).unwrap();
    for (set, field) in [
        ("model.vocab_size=100000000", "vocab_size"),
        ("model.hidden_size=1000000", "hidden_size"),
        ("eval_batches=9223372036854775808", "eval_batches"),
        ("grad_accum=18446744073709551615", "grad_accum"),
        ("model.initializer_range=1e10", "initializer_range"),
    ] {
        let e = c
            .clone()
            .set(set)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(field) && (e.contains("limit") || e.contains("(0, 1]")),
            "{set}: {e}"
        );
    }
}

#[test]
fn a_validation_that_costs_more_than_it_tells_is_warned_about() {
    use ferrolab_train::eval_cost_warning;
    // the presets on the State of the Union text (~300k held-out tokens): no warning
    for p in RunConfig::PRESETS {
        let c = RunConfig::preset(p).unwrap();
        assert_eq!(eval_cost_warning(&c, 300_000), None, "{p}");
    }
    let c = RunConfig::preset("tiny").unwrap();
    // the largest eval_batches re-reads the held-out text many times over
    let big = RunConfig {
        eval_batches: 65_536,
        ..c.clone()
    };
    let w = eval_cost_warning(&big, 300_000).unwrap();
    assert!(
        w.contains("eval_batches 65536") && w.contains("held-out"),
        "{w}"
    );
    assert!(w.contains("forward passes"), "{w}");
    // a validation after every step of 8 batches costs more than the step
    let often = RunConfig {
        eval_every: 1,
        ..c.clone()
    };
    let w = eval_cost_warning(&often, 300_000).unwrap();
    assert!(
        w.contains("8 forward passes") && !w.contains("held-out"),
        "{w}"
    );
    // a run too short for its validations to recur is not warned about (one at the end)
    for (steps, eval_every) in [(1, 100), (2, 0), (5, 5)] {
        let short = RunConfig {
            steps,
            eval_every,
            ..c.clone()
        };
        assert_eq!(
            eval_cost_warning(&short, 300_000),
            None,
            "{steps} {eval_every}"
        );
    }
    // a held-out part smaller than one validation's windows
    let w = eval_cost_warning(&c, 1_000).unwrap();
    assert!(
        w.contains("held-out") && !w.contains("forward passes"),
        "{w}"
    );
    // ... unless there is one batch: no smaller eval_batches can be advised
    let one = RunConfig {
        eval_batches: 1,
        eval_every: 0,
        ..c.clone()
    };
    assert_eq!(eval_cost_warning(&one, 10), None);
}

/// An experiment continued on another text than its arms were trained on says to rerun it with
/// the same --corpus (train's advice, "resume without --corpus", does not apply to it).
#[test]
fn an_experiment_on_another_text_names_the_arm_and_the_way_on() {
    let base = v3_cfg(2);
    let out = dir("exp-text");
    let (arm, cfg) = ferrolab_train::experiment::arms("mtp", &base)
        .unwrap()
        .remove(0);
    let tok = Tokenizer::bytes();
    let first = corpus(&base);
    Trainer::create(&out.join(&arm), cfg, tok.clone(), first).unwrap();
    let other = TokenData::from_text(
        &"another text altogether, with words of its own ".repeat(100),
        &tok,
        base.val_fraction,
        base.seq_len,
        "other.txt",
    )
    .unwrap();
    let e = ferrolab_train::experiment::run_experiment(
        "mtp",
        &base,
        &out,
        &tok,
        &other,
        &AtomicBool::new(false),
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains(&arm) && e.contains("--corpus it started with") && !e.contains("resume"),
        "{e}"
    );
}

/// A stop request in the middle of a step of many micro-batches drops that step (finishing
/// it took minutes with a large `grad_accum`): nothing of it is logged or saved, and the run
/// resumed from there equals an uninterrupted one bitwise.
#[test]
fn a_stop_between_micro_batches_drops_the_step_and_resumes_exactly() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    for mut c in [cfg(6), v3_cfg(6)] {
        c.grad_accum = 12;
        stop_inside_a_step(c);
    }
}

fn stop_inside_a_step(c: RunConfig) {
    let a = dir("accum-straight");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    t.progress = false;
    let step_time = t.train(&AtomicBool::new(false)).unwrap().seconds / 6.0;
    let (want, want_losses) = (params(&t), losses(&a));
    drop(t);
    let mut dropped = false;
    // the stop lands where it lands (other tests share the cores): tries at several points
    // into step 3 until one is inside it
    for attempt in 0..10 {
        let delay = std::time::Duration::from_secs_f64(step_time * (0.2 + 0.1 * attempt as f64));
        let b = dir("accum-stopped");
        let mut t = Trainer::create(&b, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
        t.progress = false;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // asks to stop a while after step 2 is logged: most of the time, inside step 3
        let watcher = {
            let (stop, metrics) = (stop.clone(), b.join("metrics.jsonl"));
            std::thread::spawn(move || loop {
                let lines = std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count());
                if lines >= 2 {
                    std::thread::sleep(delay);
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            })
        };
        let out = t.train(&stop).unwrap();
        watcher.join().unwrap();
        if !out.interrupted {
            // the run ended before the stop came (a faster phase of the machine)
            continue;
        }
        assert!(out.step < 6, "{out:?}");
        assert!(out.dropped_micro_batches < 12, "{out:?}");
        assert_eq!(losses(&b).len(), out.step, "{out:?}");
        drop(t);
        let mut t = Trainer::resume(&b, corpus(&c)).unwrap();
        assert_eq!(t.step(), out.step);
        train(&mut t);
        assert_eq!(params(&t), want, "{out:?}");
        assert_eq!(losses(&b), want_losses, "{out:?}");
        if out.dropped_micro_batches > 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "no stop request landed inside a step");
}

/// A run whose recorded config was edited to a model far larger than its weights (in
/// `train.json` and `state.json` alike) is refused before the model is built: `generate`
/// aborted the process allocating what the config described.
#[test]
fn a_run_config_far_larger_than_its_weights_is_refused_before_building() {
    let c = cfg(1);
    let a = dir("huge-config");
    let mut t = Trainer::create(&a, c.clone(), Tokenizer::bytes(), corpus(&c)).unwrap();
    train(&mut t);
    drop(t);
    let edit = |v: &mut serde_json::Value| {
        v["vocab_size"] = 4_194_304.into();
        v["hidden_size"] = 4096.into();
        v["num_attention_heads"] = 512.into();
        v["num_key_value_heads"] = 256.into();
    };
    let tj = a.join("train.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    edit(&mut v["model"]);
    std::fs::write(&tj, v.to_string()).unwrap();
    let sj = a.join("state.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sj).unwrap()).unwrap();
    edit(&mut s["config"]["model"]);
    std::fs::write(&sj, s.to_string()).unwrap();
    let e = ferrolab_train::load_model(&a).err().unwrap().to_string();
    assert!(e.contains("does not belong to these weights"), "{e}");
}
