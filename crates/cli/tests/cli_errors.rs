//! Inputs that used to be accepted with a wrong or empty result now stop with an error that
//! names the problem (found by trying to break the CLI from outside).

use std::path::Path;
use std::process::{Command, Output};

fn ferrolab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(args)
        .env_remove("FERROLAB_PYTHON")
        .output()
        .unwrap()
}

/// A scratch folder, removed when the test ends.
fn dir(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("cli-err-{name}")).unwrap()
}

/// `ferrolab word2vec train --input INPUT --output OUTPUT EXTRA...`.
fn w2v_train<'a>(input: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["word2vec", "train", "--input", input, "--output", output];
    all.extend_from_slice(extra);
    all
}

/// The stderr of a run that must have failed with exit status 1 (not a panic's 101).
fn failure(args: &[&str]) -> String {
    let out = ferrolab(args);
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {se}");
    assert!(!se.contains("panicked"), "{args:?}: {se}");
    se
}

#[test]
fn word2vec_evaluations_with_nothing_to_evaluate_are_errors() {
    let d = dir("w2v");
    let vectors = d.join("v.txt");
    std::fs::write(&vectors, "3 2\nking 1 0\nqueen 0.9 0.1\nman 0.2 0.8\n").unwrap();
    let v = vectors.to_str().unwrap();
    // `word2vec eval --vectors V ARGS...`, which must fail
    let eval = |args: &[&str]| -> String {
        let mut all = vec!["word2vec", "eval", "--vectors", v];
        all.extend_from_slice(args);
        failure(&all)
    };
    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let oov = d.join("oov.txt");
    std::fs::write(&oov, ": capitals\nparis france rome italy\n").unwrap();
    for f in [&empty, &oov] {
        let se = eval(&["--analogies", f.to_str().unwrap()]);
        assert!(se.contains("no analogy question"), "{se}");
    }
    let one_pair = d.join("pairs.txt");
    std::fs::write(&one_pair, "king queen 9.0\n").unwrap();
    let se = eval(&["--similarity", one_pair.to_str().unwrap()]);
    assert!(se.contains("undefined"), "{se}");
    // words cut off by --restrict-vocab are reported as such, not as out of the vocabulary
    let known = d.join("known.txt");
    std::fs::write(&known, ": royals\nking queen man queen\n").unwrap();
    let se = eval(&[
        "--analogies",
        known.to_str().unwrap(),
        "--restrict-vocab",
        "2",
    ]);
    assert!(
        se.contains("the 2 most frequent of the vectors' 3 words (--restrict-vocab)"),
        "{se}"
    );
    for flag in ["--restrict-vocab", "--similarity-restrict-vocab"] {
        let se = eval(&["--analogies", known.to_str().unwrap(), flag, "0"]);
        assert!(se.contains(&format!("{flag} 0 leaves no word")), "{se}");
    }
    // a vocabulary cut to no word is refused as such, before the corpus is counted
    let corpus = d.join("corpus.txt");
    std::fs::write(&corpus, "king queen ".repeat(100)).unwrap();
    let out = d.join("out.txt");
    let se = failure(&w2v_train(
        corpus.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--max-vocab", "0"],
    ));
    assert!(se.contains("--max-vocab 0 keeps no word"), "{se}");
    // a bad setting is named, and a bad --output is refused, before any training (a corpus
    // that does not exist shows that nothing was read)
    let train = |extra: &[&str], output: &str| -> String {
        failure(&w2v_train("/nonexistent/corpus.txt", output, extra))
    };
    for flag in ["--dim", "--window", "--epochs", "--threads"] {
        let se = train(&[flag, "0"], out.to_str().unwrap());
        let name = flag.trim_start_matches("--");
        assert!(se.contains(&format!("{name} must be at least 1")), "{se}");
    }
    let se = train(&[], d.to_str().unwrap());
    assert!(se.contains("is a folder"), "{se}");
    let se = train(&[], d.join("no/such/out.txt").to_str().unwrap());
    assert!(
        se.contains("does not exist") && se.contains("no/such"),
        "{se}"
    );
    let se = train(&[], &format!("{}/new-folder/", d.display()));
    assert!(se.contains("is a folder"), "{se}");
    let se = train(&[], vectors.join("x.txt").to_str().unwrap());
    assert!(se.contains("is a file, not a folder"), "{se}");
    // the corpus itself as the output
    let se = failure(&w2v_train(
        corpus.to_str().unwrap(),
        corpus.to_str().unwrap(),
        &[],
    ));
    assert!(se.contains("would overwrite it"), "{se}");
    assert_eq!(
        std::fs::read_to_string(&corpus).unwrap(),
        "king queen ".repeat(100)
    );
    // settings that do nothing with the chosen model are named (the training still runs)
    let corpus_ok = d.join("ok.txt");
    std::fs::write(&corpus_ok, "king queen man woman ".repeat(50)).unwrap();
    let v2 = d.join("v2.txt");
    let out = ferrolab(&w2v_train(
        corpus_ok.to_str().unwrap(),
        v2.to_str().unwrap(),
        &[
            "--loss",
            "hs",
            "--negative",
            "3",
            "--cbow-sum",
            "--min-count",
            "1",
            "--epochs",
            "1",
            "--dim",
            "4",
            "--threads",
            "1",
        ],
    ));
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{se}");
    assert!(
        se.contains("--negative does nothing") && se.contains("--cbow-sum does nothing"),
        "{se}"
    );
    // a binary vectors file read as text suggests --binary
    let bin_vectors = d.join("vectors.vec");
    std::fs::write(&bin_vectors, b"1 2\nab \x00\x00\x80\x3f\xff\xff\xff\xff\n").unwrap();
    let se = failure(&[
        "word2vec",
        "similar",
        "--vectors",
        bin_vectors.to_str().unwrap(),
        "ab",
    ]);
    assert!(se.contains("pass --binary"), "{se}");
    // no neighbours asked for printed nothing, with exit 0
    for q in [&["similar", "ab"][..], &["analogy", "ab", "ab", "ab"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .arg("word2vec")
            .args(&q[..1])
            .args(["--vectors", "x.txt", "-n", "0"])
            .args(&q[1..])
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{q:?}: {se}");
        assert!(
            se.contains("-n") && se.contains("at least 1"),
            "{q:?}: {se}"
        );
    }
    // a gold score that is not a finite number names its line
    let nan = d.join("nan.txt");
    std::fs::write(&nan, "king queen 9.0\nking man NaN\nqueen man 2.0\n").unwrap();
    let se = eval(&["--similarity", nan.to_str().unwrap()]);
    assert!(
        se.contains(":2") && se.contains("not a finite number"),
        "{se}"
    );
    // a section with no answered question has no accuracy, not 0
    let sections = d.join("sections.txt");
    std::fs::write(
        &sections,
        ": royals\nking queen man queen\n: empty\n: unknown\nparis france rome italy\n",
    )
    .unwrap();
    let out = ferrolab(
        &["word2vec", "eval", "--vectors", v, "--analogies"]
            .iter()
            .copied()
            .chain([sections.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}");
    assert!(
        so.contains("section empty: accuracy=n/a correct=0 incorrect=0 skipped=0"),
        "{so}"
    );
    assert!(
        so.contains("section unknown: accuracy=n/a correct=0 incorrect=0 skipped=1"),
        "{so}"
    );
    assert!(
        so.contains("section royals: accuracy=0.0000 correct=0 incorrect=1"),
        "{so}"
    );
}

/// DeepSeek-V3's own `config.json` (its sizes, YaRN RoPE scaling, one MTP module): counted,
/// the main model apart from the MTP module (the paper's 671B), with a note on the scaling.
#[test]
fn plan_counts_deepseek_v3s_own_config() {
    let d = dir("plan-v3");
    let cfg = d.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type":"deepseek_v3","vocab_size":129280,"hidden_size":7168,
            "intermediate_size":18432,"moe_intermediate_size":2048,"num_hidden_layers":61,
            "num_attention_heads":128,"num_key_value_heads":128,"q_lora_rank":1536,
            "kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,
            "n_routed_experts":256,"n_shared_experts":1,"num_experts_per_tok":8,"n_group":8,
            "topk_group":4,"routed_scaling_factor":2.5,"first_k_dense_replace":3,
            "norm_topk_prob":true,"scoring_func":"sigmoid","topk_method":"noaux_tc",
            "num_nextn_predict_layers":1,"max_position_embeddings":163840,"rms_norm_eps":1e-6,
            "rope_theta":10000,"rope_parameters":{"rope_type":"yarn","factor":40},
            "rope_scaling":{"type":"yarn","factor":40,"beta_fast":32,
            "beta_slow":1,"mscale":1.0,"mscale_all_dim":1.0,
            "original_max_position_embeddings":4096},"tie_word_embeddings":false,
            "quantization_config":{"quant_method":"fp8","fmt":"e4m3",
            "weight_block_size":[128,128],"activation_scheme":"dynamic"}}"#,
    )
    .unwrap();
    let out = ferrolab(&[
        "plan",
        "--model",
        cfg.to_str().unwrap(),
        "--seq-len",
        "4096",
    ]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: f64 = so
        .lines()
        .find_map(|l| l.strip_prefix("parameters"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{so}"));
    assert!((total / 671e9 - 1.0).abs() < 0.005, "{so}");
    assert!(
        so.contains("main model") && so.contains("in 1 module(s)"),
        "{so}"
    );
    assert!(so.contains("RoPE scaling"), "{so}");
}

#[test]
fn plan_refuses_model_types_it_does_not_count() {
    let d = dir("plan");
    let cfg = d.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "gpt2", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": false, "initializer_range": 0.02}"#,
    )
    .unwrap();
    let se = failure(&["plan", "--model", cfg.to_str().unwrap()]);
    assert!(se.contains("gpt2"), "{se}");
    // so is one without model_type (it was counted as a llama)
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(r#""model_type": "gpt2", "#, "")).unwrap();
    let se = failure(&["plan", "--model", cfg.to_str().unwrap()]);
    assert!(se.contains("no model_type"), "{se}");
    std::fs::write(&cfg, text).unwrap();
    // the same config as a llama is counted
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("gpt2", "llama");
    std::fs::write(&cfg, text).unwrap();
    let out = ferrolab(&["plan", "--model", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the folder that holds it gives the same
    let by_dir = ferrolab(&["plan", "--model", d.to_str().unwrap()]);
    assert_eq!(by_dir.stdout, out.stdout);
    // a config naming every size gets no note; one leaving hidden_size out is counted with
    // transformers' default, and says so
    assert!(!String::from_utf8_lossy(&out.stdout).contains("leaves out"));
    let full = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, full.replace(r#""hidden_size": 64, "#, "")).unwrap();
    let out = ferrolab(&["plan", "--model", cfg.to_str().unwrap()]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && so.contains("leaves out hidden_size = 4096"),
        "{so}"
    );
    std::fs::write(&cfg, full).unwrap();
    // a llama config that does not validate is named by its file
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 3");
    std::fs::write(&cfg, text).unwrap();
    let se = failure(&["plan", "--model", cfg.to_str().unwrap()]);
    assert!(
        se.contains("config.json") && se.contains("num_attention_heads"),
        "{se}"
    );
    // settings that would change the counts but that ferrolab does not model are refused
    let good = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"num_attention_heads\": 3", "\"num_attention_heads\": 4");
    for (extra, key) in [
        ("\"head_dim\": 32", "head_dim"),
        ("\"attention_bias\": true", "attention_bias"),
        ("\"mlp_bias\": true", "mlp_bias"),
    ] {
        std::fs::write(&cfg, good.replacen('{', &format!("{{{extra}, "), 1)).unwrap();
        let se = failure(&["plan", "--model", cfg.to_str().unwrap()]);
        assert!(se.contains(key) && se.contains("config.json"), "{se}");
    }
    // budgets outside the laws' fit (1e17-2e19) are flagged; absurd ones print a sane ratio
    let plan_out = |c: &str| -> String {
        let out = ferrolab(&["plan", "--compute", c]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(!plan_out("1e18").contains("extrapolated"));
    let se = failure(&["plan", "--compute", "-1e18"]);
    assert!(se.contains("positive number of FLOPs"), "{se}");
    assert!(plan_out("1e22").contains("extrapolated"));
    let tiny = plan_out("5e-324");
    assert!(
        tiny.contains("extrapolated") && tiny.contains("e176 x M_opt"),
        "{tiny}"
    );
    // a budget too small for one sequence prints a fraction, not 0
    let out = ferrolab(&["plan", "--compute", "1"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        so.contains("= 0.0") && !so.contains("= 0 sequences"),
        "{so}"
    );
}

#[test]
fn zero_rounds_are_refused() {
    for args in [
        &["bench", "lm", "--rounds", "0"][..],
        &["bench", "train-step", "--peer", "--rounds", "0"][..],
    ] {
        let out = ferrolab(args);
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && se.contains("--rounds"),
            "{args:?}: {se}"
        );
    }
}

/// A reader that closes the pipe early (`| head -1`) ends the process by SIGPIPE, as it does
/// other tools: no panic, no exit status 101.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_process_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // more output than a pipe buffers (64 KB), so a write meets the closed pipe whenever the
    // reader goes away
    let text = "hello ".repeat(15_000); // 90 KB: under the 128 KB limit of one argument
    let d = dir("pipe");
    let file = d.join("text.txt");
    std::fs::write(&file, &text).unwrap();
    for args in [
        vec![
            "tokenizer",
            "inspect",
            "--tokenizer",
            "r50k_base",
            text.as_str(),
        ],
        vec![
            "tokenizer",
            "encode",
            "--tokenizer",
            "r50k_base",
            file.to_str().unwrap(),
        ],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(!se.contains("panicked"), "{}: {se}", args[1]);
        // 13: SIGPIPE on Linux and the BSDs
        assert_eq!(
            out.status.signal(),
            Some(13),
            "{}: {:?} {se}",
            args[1],
            out.status
        );
    }
}

/// A data cache path that is a file is refused by `data list` and `data fetch` alike (`list`
/// printed it as an empty cache).
#[test]
fn a_data_cache_that_is_a_file_is_named() {
    // ferrolab with FERROLAB_DATA at `cache`
    let data = |cache: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .args(args)
            .env("FERROLAB_DATA", cache)
            .output()
            .unwrap()
    };
    let d = dir("data-file");
    let file = d.join("cache.txt");
    std::fs::write(&file, "not a folder").unwrap();
    for args in [&["data", "list"][..], &["data", "fetch", "mnist"][..]] {
        let out = data(&file, args);
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {se}");
        assert!(
            se.contains("cache.txt") && se.contains("not a folder"),
            "{se}"
        );
        assert!(!se.contains("fetching"), "{se}");
    }
    // a cache path inside a file is named too (it was listed as an empty cache)
    let inside = file.join("sub");
    let out = data(&inside, &["data", "list"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(
        se.contains("inside") && se.contains("which is a file"),
        "{se}"
    );
    // a file where a data set's folder goes: listed as damaged, and fetch says what to remove
    let root = dir("data-file-set");
    std::fs::write(root.join("mnist"), "not a folder").unwrap();
    let list = String::from_utf8_lossy(&data(&root, &["data", "list"]).stdout).to_string();
    assert!(
        list.lines()
            .any(|l| l.starts_with("mnist") && l.contains("damaged")),
        "{list}"
    );
    let out = data(&root, &["data", "fetch", "mnist"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("not a folder") && se.contains("remove"), "{se}");
    assert!(!se.contains("fetching"), "{se}");
}

/// `experiment --set` of a setting its arms set themselves (or of `steps`, which `--steps`
/// gives) is refused before any work: it was overridden without a word.
#[test]
fn experiment_refuses_settings_its_arms_override() {
    for (args, want) in [
        (&["mtp", "--set", "steps=7"][..], "--steps"),
        (
            &["mtp", "--set", "model.num_nextn_predict_layers=0"][..],
            "mtp-on",
        ),
        (
            &["balance", "--set", "model.moe_balance=none"][..],
            "cannot be set",
        ),
        // the value one arm has: the other arms would all become that arm
        (
            &["balance", "--set", "model.bias_update_speed=0.01"][..],
            "aux-free-g0.01",
        ),
    ] {
        let mut all = vec!["experiment"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--steps", "1", "--corpus", "/nonexistent/text.txt"]);
        let se = failure(&all);
        assert!(
            se.contains(want) && !se.contains("nonexistent"),
            "{args:?}: {se}"
        );
    }
    // a setting every arm shares passes that check (and fails later, on the missing corpus)
    let se = failure(&[
        "experiment",
        "mtp",
        "--set",
        "model.hidden_size=64",
        "--steps",
        "1",
        "--corpus",
        "/nonexistent/text.txt",
    ]);
    assert!(se.contains("nonexistent"), "{se}");
    // --steps 0 is named as the option given (it was a config key)
    let out = ferrolab(&["experiment", "mtp", "--steps", "0"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("--steps") && se.contains("at least 1"), "{se}");
}

/// `logits --model` that is a file, or a config without a model type, is named as such.
#[test]
fn logits_names_what_its_model_folder_lacks() {
    let d = dir("logits");
    let cfg = d.join("config.json");
    std::fs::write(&cfg, r#"{"hidden_size": 8}"#).unwrap();
    let args = |model: &str| {
        failure(&[
            "logits",
            "--model",
            model,
            "--ids",
            "1",
            "--out",
            d.join("out.safetensors").to_str().unwrap(),
        ])
    };
    let se = args(cfg.to_str().unwrap());
    assert!(se.contains("is a file"), "{se}");
    let se = args(d.to_str().unwrap());
    assert!(se.contains("no model_type"), "{se}");
    // files that are devices or pipes are not read (/dev/zero filled the memory, a pipe
    // blocked for ever): a config.json, a model.safetensors, a tokenizer
    #[cfg(unix)]
    {
        let m = dir("logits-devices");
        std::os::unix::fs::symlink("/dev/zero", m.join("config.json")).unwrap();
        let se = args(m.to_str().unwrap());
        assert!(se.contains("not a regular file"), "{se}");
        std::fs::remove_file(m.join("config.json")).unwrap();
        std::fs::write(
            m.join("config.json"),
            r#"{"model_type": "llama", "vocab_size": 8, "hidden_size": 8,
                "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}"#,
        )
        .unwrap();
        let made = Command::new("mkfifo")
            .arg(m.join("model.safetensors"))
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let se = args(m.to_str().unwrap());
            assert!(se.contains("not a regular file"), "{se}");
        }
        let se = failure(&["tokenizer", "encode", "--tokenizer", "/dev/zero"]);
        assert!(se.contains("not a regular file"), "{se}");
    }
}
