//! The whole training loop against PyTorch's, step by step: the same initial weights and
//! batches through `transformers`' `LlamaForCausalLM` with `torch.optim.AdamW` (decay on
//! matrices only), `clip_grad_norm_`, gradient accumulation and DeepSeek LLM's multi-step
//! schedule give the losses, rates and gradient norms in `fixtures/trajectory.json`, made by
//! `fixtures/make_trajectory_golden.py` (no PyTorch is needed here).
//!
//! To remake the fixture (only when the initial weights, the batches or these cases change):
//!
//! ```text
//! FERROLAB_TRAJECTORY_OUT=/tmp/traj cargo test --release -p ferrolab-train --test trajectory \
//!     -- --ignored
//! python crates/train/tests/fixtures/make_trajectory_golden.py /tmp/traj \
//!     > crates/train/tests/fixtures/trajectory.json
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ferrolab_tensor::{io, DType};
use ferrolab_train::{RunConfig, TokenData, Tokenizer, Trainer};

/// The cases: `llama-tiny` shrunk by these settings (each one's warm-up ends and both of
/// its decays fall inside the run; the first is clipped at every step, the second at some, the
/// third never: `grad_clip = 0`).
const CASES: [(&str, &[&str]); 3] = [
    (
        "gqa_accum",
        &[
            "model.num_attention_heads=4",
            "model.num_key_value_heads=2",
            "grad_accum=2",
            "steps=20",
            "warmup_steps=3",
            "max_lr=3e-3",
            "grad_clip=0.5",
        ],
    ),
    (
        "tied",
        &[
            "model.num_attention_heads=4",
            "model.num_key_value_heads=4",
            "model.tie_word_embeddings=true",
            "model.rope_theta=500",
            "model.rms_norm_eps=1e-5",
            "steps=15",
            "warmup_steps=2",
            "max_lr=2e-3",
            "beta1=0.85",
            "beta2=0.98",
            "weight_decay=0.2",
            "grad_clip=1.7",
        ],
    ),
    (
        "no_clip",
        &[
            "model.num_attention_heads=2",
            "model.num_key_value_heads=1",
            "steps=12",
            "warmup_steps=1",
            "max_lr=4e-3",
            "grad_clip=0",
        ],
    ),
];

fn config(sets: &[&str]) -> RunConfig {
    let shared = [
        "tokenizer=bytes",
        "model.vocab_size=256",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_hidden_layers=2",
        "model.max_position_embeddings=32",
        "batch_size=4",
        "seq_len=32",
        "eval_every=0",
        "snapshot_every=0",
        "seed=1234",
    ];
    shared
        .iter()
        .chain(sets)
        .fold(RunConfig::preset("llama-tiny").unwrap(), |c, s| {
            c.set(s).unwrap()
        })
}

/// A few thousand bytes of repeated words (the script needs none of it: it gets the batches).
fn corpus(c: &RunConfig) -> TokenData {
    let words = [
        "the", "union", "is", "strong", "and", "we", "shall", "prosper",
    ];
    let text = (0..2000)
        .map(|i| words[(i * 5 + i / 7) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    TokenData::from_text(
        &text,
        &Tokenizer::bytes(),
        c.val_fraction,
        c.seq_len,
        "words",
    )
    .unwrap()
}

/// A trainer of `c` in a new run folder, removed when the returned folder is dropped.
fn trainer(name: &str, c: &RunConfig) -> (Trainer, ferrolab_data::TempFolder) {
    let d = ferrolab_data::TempFolder::new(&format!("traj-{name}")).unwrap();
    let mut t = Trainer::create(&d, c.clone(), Tokenizer::bytes(), corpus(c)).unwrap();
    t.progress = false;
    (t, d)
}

fn sha_of_weights(t: &Trainer) -> String {
    let bytes: Vec<u8> = t
        .vars
        .all()
        .iter()
        .flat_map(|(name, p)| {
            let mut b = name.as_bytes().to_vec();
            b.extend(p.to_vec().iter().flat_map(|x| x.to_le_bytes()));
            b
        })
        .collect();
    ferrolab_data::sha256_hex(&bytes)
}

/// Every micro-batch of the run, `[step][micro] = (ids, targets)`, as the trainer draws them.
fn batches(t: &Trainer, c: &RunConfig) -> Vec<Vec<(Vec<u32>, Vec<i64>)>> {
    (0..c.steps)
        .map(|s| {
            (0..c.grad_accum)
                .map(|m| t.data().train_batch(c.seed, s, m, c.batch_size, c.seq_len))
                .collect()
        })
        .collect()
}

fn sha_of_batches(b: &[Vec<(Vec<u32>, Vec<i64>)>]) -> String {
    ferrolab_data::sha256_hex(serde_json::to_string(b).unwrap().as_bytes())
}

/// `(loss, lr, grad_norm)` of each step in `metrics.jsonl`.
fn metrics(run: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((
                v.get("loss")?.as_f64()?,
                v["lr"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            ))
        })
        .collect()
}

#[test]
fn training_follows_pytorch_step_by_step() {
    ferrolab_tensor::set_num_threads(1).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trajectory.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (mut clipped, mut unclipped) = (0, 0);
    for (name, sets) in CASES {
        let c = config(sets);
        let want = &fixture[name];
        let (mut t, dir) = trainer(name, &c);
        let regen = "changed since tests/fixtures/trajectory.json was made: remake it (see the \
                     top of tests/trajectory.rs)";
        assert_eq!(
            sha_of_weights(&t),
            want["weights_sha256"].as_str().unwrap(),
            "{name}: the initial weights {regen}"
        );
        assert_eq!(
            sha_of_batches(&batches(&t, &c)),
            want["batches_sha256"].as_str().unwrap(),
            "{name}: the batches {regen}"
        );
        t.train(&AtomicBool::new(false)).unwrap();
        let got = metrics(&dir);
        let steps = want["steps"].as_array().unwrap();
        assert_eq!(got.len(), steps.len(), "{name}: steps");
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        for (i, ((loss, lr, gnorm), w)) in got.iter().zip(steps).enumerate() {
            let (wl, wr, wg) = (
                w["loss"].as_f64().unwrap(),
                w["lr"].as_f64().unwrap(),
                w["grad_norm"].as_f64().unwrap(),
            );
            // float32 on both sides: ~1e-7 at the start, a few 1e-6 after 20 steps
            assert!(
                rel(*loss, wl) < 2e-5,
                "{name} step {}: loss {loss} vs PyTorch {wl}",
                i + 1
            );
            assert!(
                rel(*lr, wr) < 1e-6,
                "{name} step {}: lr {lr} vs {wr}",
                i + 1
            );
            assert!(
                rel(*gnorm, wg) < 5e-4,
                "{name} step {}: gradient norm {gnorm} vs PyTorch {wg}",
                i + 1
            );
            if c.grad_clip > 0.0 && wg > c.grad_clip as f64 {
                clipped += 1;
            } else {
                unclipped += 1;
            }
        }
        assert!(got.last().unwrap().0 < 0.8 * got[0].0, "{name}: {got:?}");
    }
    // steps with and without clipping
    assert!(clipped > 0 && unclipped > 0, "{clipped} {unclipped}");
}

/// Writes each case's inputs for `make_trajectory_golden.py`: the HF config and initial
/// weights, the batches, the run settings and the hashes the fixture records.
#[test]
#[ignore = "writes the inputs of fixtures/make_trajectory_golden.py"]
fn write_inputs_for_the_fixture_script() {
    let out = PathBuf::from(
        std::env::var("FERROLAB_TRAJECTORY_OUT").expect("set FERROLAB_TRAJECTORY_OUT to a folder"),
    );
    for (name, sets) in CASES {
        let c = config(sets);
        let (t, _dir) = trainer(name, &c);
        let d = out.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut hf = ferrolab_models::json_value(&c.model).unwrap();
        hf["model_type"] = "llama".into();
        std::fs::write(d.join("config.json"), hf.to_string()).unwrap();
        io::save_safetensors(
            &d.join("model.safetensors"),
            &t.vars.all(),
            DType::F32,
            None,
        )
        .unwrap();
        let b = batches(&t, &c);
        let run = serde_json::json!({
            "batch_size": c.batch_size, "seq_len": c.seq_len,
            "steps": c.steps, "warmup_steps": c.warmup_steps, "grad_accum": c.grad_accum,
            "max_lr": c.max_lr, "beta1": c.beta1, "beta2": c.beta2,
            "weight_decay": c.weight_decay, "grad_clip": c.grad_clip,
            "weights_sha256": sha_of_weights(&t), "batches_sha256": sha_of_batches(&b),
            "batches": b,
        });
        std::fs::write(d.join("run.json"), run.to_string()).unwrap();
    }
}
