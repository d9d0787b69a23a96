//! The `ferrolab train / generate / plan` commands as a user runs them: a small corpus, a tiny
//! model, `kill -9` at arbitrary moments, `--resume`, generation from the run, the planner.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
}

/// A scratch folder, removed when the test ends.
fn scratch(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("cli-{name}")).unwrap()
}

fn corpus(dir: &Path) -> PathBuf {
    let words = [
        "fellow", "citizens", "of", "the", "senate", "and", "house", "we", "meet", "again",
    ];
    let text: String = (0..6000)
        .map(|i| words[(i * 3 + i / 7) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// A very small DeepSeek-V3-style model (the default preset's family): MLA, 4 experts of
/// which 2 per token, one MTP module.
const TINY: &[&str] = &[
    "--set",
    "model.hidden_size=32",
    "--set",
    "model.intermediate_size=64",
    "--set",
    "model.moe_intermediate_size=16",
    "--set",
    "model.num_hidden_layers=2",
    "--set",
    "model.num_attention_heads=2",
    "--set",
    "model.kv_lora_rank=16",
    "--set",
    "model.qk_nope_head_dim=8",
    "--set",
    "model.qk_rope_head_dim=8",
    "--set",
    "model.v_head_dim=8",
    "--set",
    "model.n_routed_experts=4",
    "--set",
    "model.max_position_embeddings=64",
    "--set",
    "batch_size=4",
    "--set",
    "seq_len=64",
    "--set",
    "eval_batches=2",
    "--set",
    "warmup_steps=2",
];

/// `ferrolab generate --run RUN ARGS...`, ready to run.
fn generate(run: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(["generate", "--run"]).arg(run).args(args);
    c
}

/// `ferrolab train` of the TINY model on `corpus` into `run`, printing `samples` samples
/// (one thread).
fn train_cmd(corpus: &Path, run: &Path, samples: &str) -> Command {
    let mut c = bin();
    c.args(["train", "--threads", "1", "--samples", samples, "--corpus"])
        .arg(corpus)
        .arg("--run")
        .arg(run)
        .args(TINY);
    c
}

/// Sends `signal` (`-TERM`, `-INT`) to `child` with `kill`.
fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    o + &e
}

#[test]
fn train_generate_and_resume_from_the_command_line() {
    let d = scratch("train");
    let c = corpus(&d);
    let run = d.join("run");
    let out = run_ok(
        train_cmd(&c, &run, "1")
            .args(["--set", "steps=6", "--set", "eval_every=3"])
            .env("FERROLAB_PROGRESS_SECS", "0"),
    );
    assert!(
        out.contains("val loss") && out.contains("--- sample 1 ---"),
        "{out}"
    );
    // stderr is not a terminal here: plain progress lines stand in for the bar
    assert!(
        out.contains("step 1/6  loss") && out.contains("s left"),
        "{out}"
    );
    for f in [
        "config.json",
        "train.json",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "metrics.jsonl",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|v| v.get("loss").is_some()).count(), 6);
    assert_eq!(
        lines.iter().filter(|v| v.get("val_bpb").is_some()).count(),
        2
    );
    for k in ["loss", "lr", "grad_norm", "tokens_per_s"] {
        assert!(lines[0].get(k).is_some(), "metrics lack {k}: {}", lines[0]);
    }

    let g = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "20", "--greedy"],
    ));
    assert!(g.starts_with("fellow "), "{g}");
    assert!(g.contains("KV cache"), "{g}");
    // greedy is deterministic
    let g2 = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "20", "--greedy"],
    ));
    assert_eq!(g.lines().next(), g2.lines().next());
    assert!(!g.contains("note:"), "{g}");
    // plan reads a run's train.json, as every other command does: config.json (a copy for HF)
    // can go
    let planned = run_ok(bin().args(["plan", "--model"]).arg(&run));
    let cj_copy = std::fs::read(run.join("config.json")).unwrap();
    std::fs::remove_file(run.join("config.json")).unwrap();
    assert_eq!(run_ok(bin().args(["plan", "--model"]).arg(&run)), planned);
    std::fs::write(run.join("config.json"), cj_copy).unwrap();
    // a top-k that keeps the whole vocabulary is said to
    let k = run_ok(&mut generate(
        &run,
        &[
            "--prompt",
            "fellow ",
            "--max-tokens",
            "3",
            "--top-k",
            "100000",
        ],
    ));
    assert!(k.contains("note: --top-k 100000 is not below"), "{k}");
    // a prompt longer than the context (64) is continued from its end, and that is said
    let long = "fellow citizens ".repeat(40);
    let g4 = run_ok(&mut generate(
        &run,
        &["--prompt", &long, "--max-tokens", "5", "--greedy"],
    ));
    assert!(
        g4.contains("note: the prompt is") && g4.contains("context 64") && g4.contains("last 63"),
        "{g4}"
    );
    // an edited config.json is named (ferrolab reads train.json): same tokens, and a note
    let cj = run.join("config.json");
    let original = std::fs::read_to_string(&cj).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["rope_theta"] = 123456.0.into();
    std::fs::write(&cj, v.to_string()).unwrap();
    let g3 = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "20", "--greedy"],
    ));
    assert_eq!(g.lines().next(), g3.lines().next());
    assert!(
        g3.contains("config.json differs") && g3.contains("rope_theta"),
        "{g3}"
    );
    std::fs::write(&cj, original).unwrap();

    // a finished run resumes as a no-op, and says so; a bad --set is named
    let done = run_ok(
        bin()
            .args(["train", "--threads", "1", "--samples", "0", "--resume"])
            .arg(&run),
    );
    assert!(done.contains("nothing is left to train"), "{done}");
    // more steps (as that message says): the summary counts the steps of this session
    let tj = run.join("train.json");
    let text = std::fs::read_to_string(&tj).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["steps"] = 8.into();
    std::fs::write(&tj, v.to_string()).unwrap();
    let more = run_ok(
        bin()
            .args(["train", "--threads", "1", "--samples", "0", "--resume"])
            .arg(&run)
            .env("FERROLAB_PROGRESS_SECS", "soon"),
    );
    assert!(more.contains("done: steps 6 to 8 (2 this time)"), "{more}");
    // a progress interval that is not a number is named, once
    assert_eq!(
        more.matches("FERROLAB_PROGRESS_SECS=\"soon\"").count(),
        1,
        "{more}"
    );
    // a folder that is not a run and not empty is refused before any work, and kept
    let e = bin()
        .args(["train", "--corpus"])
        .arg(&c)
        .arg("--run")
        .arg(&d)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("is not empty"), "{msg}");
    assert!(!msg.contains("BPE"), "{msg}");
    assert!(!d.join("train.json").exists());
    let e = bin()
        .args(["train", "--corpus"])
        .arg(&c)
        .arg("--run")
        .arg(d.join("bad"))
        .args(["--set", "model.hidden_sise=3"])
        .output()
        .unwrap();
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("model.hidden_sise"), "{msg}");
}

#[test]
fn kill_9_at_any_moment_leaves_a_resumable_run() {
    let d = scratch("kill");
    let c = corpus(&d);
    let run = d.join("run");
    let mut first = true;
    // kill at assorted moments; each time the run must resume from a good snapshot
    for (i, ms) in [150u64, 40, 260, 90, 10, 200].iter().enumerate() {
        let mut cmd = bin();
        if first {
            cmd.args(["train", "--threads", "1", "--samples", "0", "--corpus"])
                .arg(&c)
                .arg("--run")
                .arg(&run)
                .args(TINY)
                .args([
                    "--set",
                    "steps=100000",
                    "--set",
                    "snapshot_every=1",
                    "--set",
                    "eval_every=0",
                ]);
        } else {
            cmd.args(["train", "--threads", "1", "--samples", "0", "--corpus"])
                .arg(&c)
                .arg("--resume")
                .arg(&run);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*ms));
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("error"), "round {i}: {err}");
        if run.join("train.json").exists() {
            first = false;
        }
    }
    // the run's snapshot loads and it got somewhere
    let (_, cfg) = ferrolab_train::RunDir::open(&run).unwrap();
    assert_eq!(cfg.steps, 100000);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() > 0, "{state}");
    let out = generate(&run, &["--prompt", "the ", "--max-tokens", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plan_reproduces_deepseek_llm_7b() {
    // 7B: M = 4.23e10, 2T tokens
    let out = run_ok(bin().args(["plan", "--compute", "8.46e22", "--seq-len", "4096"]));
    let num = |key: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!((num("eta_opt") / 4.25e-4 - 1.0).abs() < 5e-3, "{out}");
    assert!((num("B_opt") / 9.22e6 - 1.0).abs() < 5e-3, "{out}");
    assert!(out.contains("2252 sequences of 4096"), "{out}");
    let d = scratch("plan");
    let cfg = d.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "llama", "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 4096}"#,
    )
    .unwrap();
    let out = run_ok(bin().args(["plan", "--model"]).arg(&cfg));
    assert!(out.contains("non-embedding"), "{out}");
    // M at the model's own context (4096 here): DeepSeek LLM's 4.23e10 for 7B (72 n d^2 + 12 n d l;
    // ours counts the SwiGLU's 3 x 11008 wide matrices, 0.4% more)
    let m_at = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with("M ")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!((m_at(&out) / 4.23e10 - 1.0).abs() < 1e-2, "{out}");
    assert!(
        out.contains("at sequence 4096 (max_position_embeddings"),
        "{out}"
    );
    // a shorter --seq-len shrinks only the attention term; a longer one than the context is refused
    let short = run_ok(
        bin()
            .args(["plan", "--seq-len", "2048", "--model"])
            .arg(&cfg),
    );
    assert!(short.contains("at sequence 2048 (--seq-len"), "{short}");
    let attn_4096 = 6.0 * 30.0 * 4096.0 * 32.0 * 256.0;
    assert!(
        ((m_at(&out) - m_at(&short)) / (attn_4096 / 2.0) - 1.0).abs() < 1e-3,
        "{short}"
    );
    let long = bin()
        .args(["plan", "--seq-len", "8192", "--model"])
        .arg(&cfg)
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&long.stderr);
    assert!(
        !long.status.success() && se.contains("max_position_embeddings 4096"),
        "{se}"
    );
    let e = bin().args(["plan"]).output().unwrap();
    assert!(!e.status.success());
}

/// `ferrolab logits --model MODEL --ids IDS --out OUT`.
fn logits_cmd(model: &Path, ids: &str, out: &Path) -> Command {
    let mut c = bin();
    c.args(["logits", "--model"])
        .arg(model)
        .args(["--ids", ids, "--out"])
        .arg(out);
    c
}

/// The stderr of a `logits` run that must fail.
fn logits_failure(model: &Path, ids: &str, out: &Path) -> String {
    let e = logits_cmd(model, ids, out).output().unwrap();
    assert!(!e.status.success());
    String::from_utf8_lossy(&e.stderr).to_string()
}

fn logits_of(model: &Path, ids: &str, out: &Path) -> Vec<f32> {
    run_ok(&mut logits_cmd(model, ids, out));
    let t = ferrolab_tensor::io::load_safetensors(out).unwrap();
    t["logits"].to_vec()
}

#[test]
fn v3_run_exports_to_hf_gives_logits_and_decodes_speculatively() {
    let d = scratch("v3");
    let c = corpus(&d);
    let run = d.join("run");
    run_ok(
        train_cmd(&c, &run, "0")
            .args(["--set", "steps=4", "--set", "eval_every=0"])
            // the vocabulary this small text gives (256 bytes + 42 merges), so that the
            // greedy decoders below, which take the argmax over the whole head, only meet ids
            // that have text
            .args(["--set", "model.vocab_size=298"]),
    );
    // export, then the same logits from the run and from the HF directory
    let hf = d.join("hf");
    run_ok(
        bin()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&hf),
    );
    let cfg = std::fs::read_to_string(hf.join("config.json")).unwrap();
    assert!(cfg.contains("\"model_type\": \"deepseek_v3\""), "{cfg}");
    // f32 settings as written, not widened to f64 digits
    assert!(
        cfg.contains("\"aux_loss_alpha\": 0.0001") && !cfg.contains("0.0000999"),
        "{cfg}"
    );
    // --out naming a file is refused by name
    let e = bin()
        .args(["export", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(hf.join("config.json"))
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && se.contains("config.json") && se.contains("is a file"),
        "{se}"
    );
    let a = logits_of(&run, "1 5 42 7", &d.join("a.safetensors"));
    let b = logits_of(&hf, "1,5,42,7", &d.join("b.safetensors"));
    assert_eq!(a, b);
    assert_eq!(a.len() % 4, 0);
    // the run's vocabulary comes along, and the MTP module sits where DeepSeek puts it
    assert_eq!(
        std::fs::read(hf.join("tokenizer.json")).unwrap(),
        std::fs::read(run.join("tokenizer.json")).unwrap()
    );
    let hf_cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let layers = hf_cfg["num_hidden_layers"].as_u64().unwrap();
    let mtp_prefix = format!("model.layers.{layers}.");
    let names = |dir: &Path| -> Vec<String> {
        ferrolab_tensor::io::load_safetensors(&dir.join("model.safetensors"))
            .unwrap()
            .into_keys()
            .collect()
    };
    assert!(names(&hf).iter().any(|n| n.starts_with(&mtp_prefix)));
    // --no-mtp, over the earlier export (its files are replaced): no MTP tensor, a config
    // that says so, the same logits
    let export = |out: &Path, extra: &[&str]| {
        bin()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    // (a temporary file that a killed export left is removed, with a note; a link in the
    // folder is replaced, not written through)
    let left = hf.join(".model.safetensors.tmp-999999-0");
    std::fs::write(&left, b"half").unwrap();
    #[cfg(unix)]
    {
        std::fs::rename(hf.join("config.json"), d.join("elsewhere.json")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere.json"), hf.join("config.json")).unwrap();
    }
    let e = export(&hf, &["--no-mtp"]);
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(e.status.success(), "{se}");
    assert!(!left.exists() && se.contains("interrupted export"), "{se}");
    #[cfg(unix)]
    {
        assert!(!hf.join("config.json").is_symlink());
        let kept = std::fs::read_to_string(d.join("elsewhere.json")).unwrap();
        assert!(kept.contains("\"num_nextn_predict_layers\": 1"), "{kept}");
    }
    assert!(names(&hf).iter().all(|n| !n.starts_with(&mtp_prefix)));
    let no_mtp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(no_mtp["num_nextn_predict_layers"], 0);
    assert_eq!(logits_of(&hf, "1 5 42 7", &d.join("c.safetensors")), a);
    // a folder holding anything else, or the run itself, is refused and left as it was
    let other = d.join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    for (out, want) in [(&other, "notes.txt"), (&run, "run folder")] {
        let e = export(out, &[]);
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && se.contains(want), "{se}");
    }
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    // a NaN in the weights gives logits that are not finite: an error, not a success
    let nan = d.join("hf-nan");
    std::fs::create_dir_all(&nan).unwrap();
    std::fs::copy(hf.join("config.json"), nan.join("config.json")).unwrap();
    let tensors = ferrolab_tensor::io::load_safetensors(&hf.join("model.safetensors")).unwrap();
    let tensors: Vec<(String, ferrolab_tensor::Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            if name == "model.norm.weight" {
                let mut v = t.to_vec();
                v[0] = f32::NAN;
                (
                    name,
                    ferrolab_tensor::Tensor::from_vec(v, t.shape()).unwrap(),
                )
            } else {
                (name, t)
            }
        })
        .collect();
    ferrolab_tensor::io::save_safetensors(
        &nan.join("model.safetensors"),
        &tensors,
        ferrolab_tensor::DType::F32,
        None,
    )
    .unwrap();
    let se = logits_failure(&nan, "1 5", &d.join("nan.safetensors"));
    assert!(se.contains("not finite"), "{se}");
    // folders that are neither a run nor an HF model are named as such
    let se = logits_failure(&d.join("no-such"), "1", &d.join("x.safetensors"));
    assert!(se.contains("no such folder"), "{se}");
    let empty = d.join("empty-folder");
    std::fs::create_dir_all(&empty).unwrap();
    let se = logits_failure(&empty, "1", &d.join("x.safetensors"));
    assert!(
        se.contains("no train.json") && se.contains("no config.json"),
        "{se}"
    );
    // --greedy with a sampling option is refused, not silently greedy
    let e = generate(&run, &["--prompt", "a", "--greedy", "--temperature", "0.5"])
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && se.contains("--temperature"), "{se}");
    // so is --temperature 0 (greedy) with one
    let e = generate(
        &run,
        &["--prompt", "a", "--temperature", "0", "--top-k", "5"],
    )
    .output()
    .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && e.stdout.is_empty() && se.contains("greedy"),
        "{se}"
    );
    // an HF fixture written by transformers: its logits
    let fx = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/v3/qlora0_dense_first");
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("ids.json")).unwrap()).unwrap();
    let ids: Vec<String> = ids["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let got = logits_of(&fx, &ids.join(" "), &d.join("c.safetensors"));
    let want = ferrolab_tensor::io::load_safetensors(&fx.join("expected.safetensors")).unwrap()
        ["logits"]
        .to_vec();
    assert_eq!(got.len(), want.len());
    for (x, y) in got.iter().zip(&want) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    // bad ids are named
    let e = bin()
        .args(["logits", "--model"])
        .arg(&run)
        .args(["--ids", "1 x", "--out"])
        .arg(d.join("e.safetensors"))
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("`x`"));
    // --out naming the model's own weights is refused, and they stay as they were
    for dir in [&run, &hf] {
        let weights = dir.join("model.safetensors");
        let before = std::fs::read(&weights).unwrap();
        let e = bin()
            .args(["logits", "--model"])
            .arg(dir)
            .args(["--ids", "1 2", "--out"])
            .arg(&weights)
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && se.contains("model directory"),
            "{se}"
        );
        assert!(std::fs::read(&weights).unwrap() == before);
    }
    // self-speculative decoding: same tokens as greedy, with a report
    let s = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "30", "--speculative"],
    ));
    assert!(
        s.contains("accepted") && s.contains("same tokens as greedy"),
        "{s}"
    );
    let n = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "30", "--naive-cache"],
    ));
    assert!(n.contains("naive per-head"), "{n}");
    // the naive and absorbed caches decode the same text
    assert_eq!(s.lines().next(), n.lines().next());
    // greedy within one context: as many tokens as fit are decoded, one more is refused
    // before decoding
    let e = generate(
        &run,
        &[
            "--prompt",
            "fellow ",
            "--speculative",
            "--max-tokens",
            "100000",
        ],
    )
    .output()
    .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    let fit: usize = se
        .split("lower --max-tokens to ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{se}"));
    let number_after = |key: &str| -> usize {
        se.split(key)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after `{key}`: {se}"))
    };
    let (ctx, prompt) = (
        number_after("one context of "),
        number_after("the prompt's "),
    );
    // the last new token is not fed back: p + n - 1 positions
    assert_eq!(prompt + fit - 1, ctx, "{se}");
    for flag in ["--speculative", "--naive-cache"] {
        let s = run_ok(&mut generate(
            &run,
            &[
                "--prompt",
                "fellow ",
                "--max-tokens",
                &fit.to_string(),
                flag,
            ],
        ));
        assert!(s.contains(&format!("{fit} tokens")), "{flag}: {s}");
        let e = generate(&run, &["--prompt", "fellow ", flag, "--max-tokens"])
            .arg((fit + 1).to_string())
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && se.contains("do not fit"),
            "{flag}: {se}"
        );
    }
    // nothing to decode is said, with no speed figures
    let z = run_ok(&mut generate(
        &run,
        &["--prompt", "fellow ", "--max-tokens", "0", "--speculative"],
    ));
    assert!(
        z.contains("nothing to decode") && !z.contains("tokens/s"),
        "{z}"
    );
    // more tokens than fit are refused before decoding, and sampling options are refused
    // rather than ignored
    for (extra, want) in [
        (&["--max-tokens", "100000"][..], "lower --max-tokens"),
        (&["--temperature", "0.5"][..], "--temperature"),
    ] {
        let e = generate(&run, &["--prompt", "fellow ", "--speculative"])
            .args(extra)
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && se.contains(want), "{extra:?}: {se}");
    }
    // bad sampling options are refused before anything is printed
    for bad in ["--temperature=-1", "--temperature=inf", "--top-p=0"] {
        let e = generate(&run, &["--prompt", "fellow ", bad])
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && e.stdout.is_empty(), "{bad}: {se}");
        assert!(
            se.contains("finite number >= 0") || se.contains("(0, 1]"),
            "{bad}: {se}"
        );
    }
    // a negative value in its own argument is read as the value, not as a flag
    let e = generate(&run, &["--prompt", "fellow ", "--temperature", "-1"])
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(se.contains("finite number >= 0"), "{se}");
    // numbers past a 32-bit float's range are named as given (they were read as inf or 0)
    for (flag, v) in [
        ("--temperature", "1e300"),
        ("--temperature", "1e-320"),
        ("--top-p", "1e-46"),
    ] {
        let e = generate(&run, &["--prompt", "fellow ", flag, v])
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && se.contains(&format!("{v} is beyond the range")),
            "{flag} {v}: {se}"
        );
    }
    // a train.json edited after training (same shapes, other maths): export and generate
    // refuse it rather than write or decode a model the weights were not trained as
    let tj = run.join("train.json");
    let original = std::fs::read_to_string(&tj).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["model"]["rope_theta"] = serde_json::json!(500.0);
    std::fs::write(&tj, v.to_string()).unwrap();
    for args in [
        vec!["export", "--out", d.join("hf2").to_str().unwrap()],
        vec!["generate", "--prompt", "fellow "],
    ] {
        let e = bin()
            .args(&args[..1])
            .arg("--run")
            .arg(&run)
            .args(&args[1..])
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && se.contains("model.rope_theta") && se.contains("weights"),
            "{args:?}: {se}"
        );
    }
    assert!(!d.join("hf2").exists());
    std::fs::write(&tj, original).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn ctrl_c_or_sigterm_writes_a_snapshot_and_exits_130() {
    let d = scratch("signals");
    let c = corpus(&d);
    // `timeout` sends SIGTERM to the process and then to its group: two at once are one
    // request (it took the second as "Ctrl-C again" and quit without a snapshot)
    for (i, sig) in ["-INT", "-TERM", "twice"].iter().enumerate() {
        let run = d.join(format!("run{i}"));
        let child = train_cmd(&c, &run, "0")
            .args(["--set", "steps=100000", "--set", "snapshot_every=100000"])
            .args(["--set", "eval_every=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // wait until it trains (the run directory and its first metrics line exist)
        let t0 = std::time::Instant::now();
        while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |m| m.is_empty()) {
            assert!(t0.elapsed() < Duration::from_secs(120), "never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        if *sig == "twice" {
            let pid = child.id();
            let both = format!("kill -TERM {pid}; kill -TERM {pid}");
            assert!(Command::new("sh")
                .args(["-c", &both])
                .status()
                .unwrap()
                .success());
        } else {
            signal(&child, sig);
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{sig}: {err}");
        // this small text gives fewer tokens than the model's 2048 ids, and train says so
        assert!(err.contains("fewer than the model's 2048"), "{err}");
        assert!(err.contains("--resume"), "{sig}: {err}");
        // the snapshot was written although snapshot_every never came
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap())
                .unwrap();
        assert!(state["step"].as_u64().unwrap() >= 1, "{sig}: {state}");
    }
    // before training begins (the text being read: here a pipe nobody writes to, which
    // blocked for ever) a stop request ends the command at once, and no run is left
    #[cfg(unix)]
    stop_while_reading_a_pipe(&d, |fifo, run| train_cmd(fifo, run, "0"));
    // a log pipe that has gone away (`2>&1 | head -3`) neither ends the run nor panics: it
    // trains to the end and saves
    let run = d.join("run-closed-stderr");
    let mut child = train_cmd(&c, &run, "2")
        .args(["--set", "steps=4", "--set", "eval_every=1"])
        .env("FERROLAB_PROGRESS_SECS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4);
    // a stop request while the samples print ends them (the run is saved): exit 0, at once
    let run = d.join("run-samples");
    let mut child = train_cmd(&c, &run, "100000")
        .args([
            "--set",
            "steps=1",
            "--set",
            "warmup_steps=1",
            "--set",
            "eval_every=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(lines.any(|l| l.unwrap().starts_with("--- sample 2 ---")));
    signal(&child, "-TERM");
    let rest = lines.count();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no more samples"), "{err}");
    assert!(rest < 100 * 20, "{rest} more lines of samples");
    // these runs' vocabulary (298 ids from this small text) is smaller than the model's head
    // (2048): the greedy decoders that take the argmax over the whole head refuse, and plain
    // generation masks the ids that have no text
    let run = d.join("run0");
    let e = generate(
        &run,
        &["--prompt", "the ", "--max-tokens", "5", "--speculative"],
    )
    .output()
    .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && se.contains("whole head"), "{se}");
    let ok = generate(&run, &["--prompt", "the ", "--max-tokens", "5"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // the largest --max-tokens starts generating (it used to reserve room for all of them
    // up front and panic on the capacity); stopped after a moment
    let mut long = generate(
        &run,
        &["--prompt", "the ", "--max-tokens", "18446744073709551615"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(long.try_wait().unwrap().is_none(), "exited at once");
    long.kill().unwrap();
    let out = long.wait_with_output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(!se.contains("panicked"), "{se}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Starts `cmd(corpus, out)` on a corpus that is a pipe nobody writes to (reading it blocks
/// for ever), asks it to stop once it reads, and checks that it ends at once (130), saying so,
/// with nothing at `out`.
#[cfg(unix)]
fn stop_while_reading_a_pipe(d: &Path, cmd: impl Fn(&Path, &Path) -> Command) {
    let fifo = d.join("corpus.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return;
    }
    let run = d.join("run-fifo");
    let mut child = cmd(&fifo, &run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // once it has the pipe open for reading (its handler is installed before that), keep a
    // writer on it that writes nothing, and ask it to stop
    let t0 = std::time::Instant::now();
    let _writer = loop {
        use std::os::unix::fs::OpenOptionsExt;
        let w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        if let Ok(w) = w {
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never opened the pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    signal(&child, "-TERM");
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("still blocked after a stop request");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("before training began"), "{err}");
    assert!(!run.exists());
}

/// `experiment` quits at once too when asked to stop while it reads its text (it went on to
/// set up its first arm, and stopped only after that arm's first step).
#[cfg(unix)]
#[test]
fn an_experiment_stopped_while_reading_its_text_quits_at_once() {
    let d = scratch("exp-stop");
    stop_while_reading_a_pipe(&d, |fifo, out| {
        let mut c = bin();
        c.args([
            "experiment",
            "mtp",
            "--threads",
            "1",
            "--steps",
            "2",
            "--corpus",
        ])
        .arg(fifo)
        .arg("--out")
        .arg(out);
        c
    });
}

/// A run whose losses explode without becoming NaN (too high a rate) ends with a warning that
/// it diverged; a sound run has none.
#[test]
fn a_run_that_ends_worse_than_a_uniform_guess_is_said_to_have_diverged() {
    let d = scratch("high-rate");
    let c = corpus(&d);
    let run = |name: &str, lr: &str| {
        run_ok(train_cmd(&c, &d.join(name), "0").args([
            "--set",
            "steps=8",
            "--set",
            "warmup_steps=0",
            "--set",
            &format!("max_lr={lr}"),
        ]))
    };
    let bad = run("hot", "9.9");
    assert!(
        bad.contains("training diverged") && bad.contains("max_lr (this run: 9.9)"),
        "{bad}"
    );
    let fine = run("sound", "0.003");
    assert!(
        !fine.contains("training diverged") && !fine.contains("learned nothing"),
        "{fine}"
    );
    // a rate that cannot move the weights leaves the loss at a uniform guess: said too
    let frozen = run("frozen", "1e-30");
    assert!(
        frozen.contains("learned nothing") && frozen.contains("max_lr 0.000000"),
        "{frozen}"
    );
}

/// A DeepSeek-V3-style run whose dense layers cover every layer has no routed experts: said.
#[test]
fn a_moe_run_without_an_moe_layer_is_noted() {
    let d = scratch("no-moe");
    let c = corpus(&d);
    let note = "no layer has routed experts";
    let out = run_ok(train_cmd(&c, &d.join("all-dense"), "0").args([
        "--set",
        "steps=2",
        "--set",
        "model.first_k_dense_replace=2",
    ]));
    assert!(out.contains(note), "{out}");
    let out = run_ok(train_cmd(&c, &d.join("one-moe"), "0").args([
        "--set",
        "steps=2",
        "--set",
        "model.first_k_dense_replace=1",
    ]));
    assert!(!out.contains(note), "{out}");
}

/// A byte-token run exports no `tokenizer.json`, even when one lies in its folder (it was
/// copied out as the model's vocabulary).
#[test]
fn a_byte_token_run_exports_no_stray_tokenizer() {
    let d = scratch("byte-export");
    let c = corpus(&d);
    let run = d.join("bytes");
    run_ok(train_cmd(&c, &run, "0").args([
        "--set",
        "steps=2",
        "--set",
        "tokenizer=bytes",
        "--set",
        "model.vocab_size=256",
    ]));
    assert!(!run.join("tokenizer.json").exists());
    std::fs::write(run.join("tokenizer.json"), b"{\"model\": {}}").unwrap();
    let out = d.join("hf");
    let said = run_ok(
        bin()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&out),
    );
    assert!(!out.join("tokenizer.json").exists(), "{said}");
    assert!(
        said.contains("not this byte-token run's vocabulary"),
        "{said}"
    );
    assert!(out.join("model.safetensors").is_file());
    // weights that are not finite (a damaged run whose hashes were made to match) are not
    // exported
    let mp = run.join("model.safetensors");
    let all: Vec<(String, ferrolab_tensor::Tensor)> = ferrolab_tensor::io::load_safetensors(&mp)
        .unwrap()
        .into_iter()
        .collect();
    all[0].1.update_data(|w| w[0] = f32::NAN).unwrap();
    ferrolab_tensor::io::save_safetensors(&mp, &all, ferrolab_tensor::DType::F32, None).unwrap();
    let sp = run.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sp).unwrap()).unwrap();
    state["model_sha256"] = ferrolab_data::sha256_hex(&std::fs::read(&mp).unwrap()).into();
    std::fs::write(&sp, state.to_string()).unwrap();
    let nan_out = d.join("hf-nan");
    let e = bin()
        .args(["export", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&nan_out)
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && se.contains("not finite") && se.contains(&all[0].0),
        "{se}"
    );
    assert!(!nan_out.join("model.safetensors").exists());
}
