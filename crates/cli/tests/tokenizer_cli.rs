//! `ferrolab tokenizer`: the command-line contract of issue 4, run as a process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferrolab_tokenizer::{load, SpecialSet};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenizer/tests/fixtures")
        .join(name)
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .arg("tokenizer")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the command may exit (on an error) before reading its input: a broken pipe is fine
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn encode_prints_ids_and_decode_reverses_it() {
    let tok = fixture("hf_cl100k.json");
    let tok = tok.to_str().unwrap();
    let text = "The lab keeps notes, 2026 <|endoftext|> 東京 🙂\n";
    let out = run(
        &["encode", "--tokenizer", tok, "--special", "all"],
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.ends_with('\n') && !printed.ends_with(" \n"));
    let want = load(tok, None)
        .unwrap()
        .encode(text, &SpecialSet::All)
        .unwrap();
    let got: Vec<u32> = printed
        .split(' ')
        .map(|w| w.trim().parse().unwrap())
        .collect();
    assert_eq!(got, want);
    let back = run(&["decode", "--tokenizer", tok], printed.as_bytes());
    assert_eq!(String::from_utf8(back.stdout).unwrap(), text);
    // `none` (tiktoken's default) refuses the special token; `ordinary` encodes it as text
    let out = run(
        &["encode", "--tokenizer", tok, "--special", "none"],
        text.as_bytes(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<|endoftext|>"));
    let out = run(
        &["encode", "--tokenizer", tok, "--special", "ordinary"],
        text.as_bytes(),
    );
    assert!(out.status.success());
}

#[test]
fn invalid_utf8_is_an_error_unless_bytes() {
    let tok = fixture("hf_gpt2.json");
    let tok = tok.to_str().unwrap();
    let input = b"ab\xffcd";
    let out = run(&["encode", "--tokenizer", tok], input);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bytes"));
    let out = run(&["encode", "--tokenizer", tok, "--bytes"], input);
    assert!(out.status.success());
    let back = run(&["decode", "--tokenizer", tok, "--bytes"], &out.stdout);
    assert_eq!(back.stdout, input);
    // decoding them as text is refused, and the option that writes them is named
    let text = run(&["decode", "--tokenizer", tok], &out.stdout);
    let se = String::from_utf8_lossy(&text.stderr);
    assert!(
        !text.status.success() && se.contains("not valid UTF-8") && se.contains("--bytes"),
        "{se}"
    );
}

#[test]
fn train_writes_a_loadable_tokenizer_and_inspect_shows_it() {
    let scratch = ferrolab_data::TempFolder::new("tok-cli").unwrap();
    let out_path = scratch.join("tokenizer.json");
    let corpus = fixture("corpus.txt");
    let out = run(
        &[
            "train",
            "--input",
            corpus.to_str().unwrap(),
            "--vocab-size",
            "320",
            "--preset",
            "o200k",
            "--special-token",
            "<|endoftext|>",
            "--out",
            out_path.to_str().unwrap(),
            "--quiet",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = load(out_path.to_str().unwrap(), None).unwrap();
    assert_eq!(tok.vocab_end(), 320);
    let out = run(
        &[
            "inspect",
            "--tokenizer",
            out_path.to_str().unwrap(),
            "the lab notes",
        ],
        b"",
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("\" lab\"") && shown.contains("tokens"),
        "{shown}"
    );
    std::fs::remove_file(&out_path).unwrap();
    // nothing to merge is an error, not a 256-token "success"; fewer merges than asked, a note
    let dir = out_path.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let (empty, short) = (dir.join("empty.txt"), dir.join("short.txt"));
    std::fs::write(&empty, "").unwrap();
    std::fs::write(&short, "hello hello world").unwrap();
    let train_on = |input: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--input",
            input.to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            out_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, b"")
    };
    let out = train_on(&empty, &[]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && se.contains("no merge learned"),
        "{se}"
    );
    let out = train_on(&short, &["--min-frequency", "1000"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && se.contains("--min-frequency 1000"),
        "{se}"
    );
    assert!(!out_path.exists());
    let out = train_on(&short, &[]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && se.contains("not the 300 asked for"),
        "{se}"
    );
    std::fs::remove_file(&out_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_shows_the_tokens_encode_gives_for_each_special_choice() {
    let tok = fixture("hf_cl100k.json");
    let tok = tok.to_str().unwrap();
    let text = "hi <|endoftext|> there";
    for special in ["all", "none", "ordinary"] {
        let enc = run(
            &["encode", "--tokenizer", tok, "--special", special],
            text.as_bytes(),
        );
        let ins = run(
            &["inspect", "--tokenizer", tok, "--special", special, text],
            b"",
        );
        assert_eq!(enc.status.success(), ins.status.success(), "{special}");
        if !enc.status.success() {
            // none: the special token is an error in both, and inspect names the way on
            let se = String::from_utf8_lossy(&ins.stderr);
            assert!(
                se.contains("<|endoftext|>") && se.contains("--special all"),
                "{se}"
            );
            continue;
        }
        let want: Vec<u32> = String::from_utf8(enc.stdout)
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        let shown = String::from_utf8(ins.stdout).unwrap();
        // token lines: "  <id>  <text>  bytes a..b"
        let got: Vec<u32> = shown
            .lines()
            .filter(|l| l.contains("  bytes "))
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(got, want, "{special}: {shown}");
        // the pieces: the special token is one piece of its own only when it is special
        assert_eq!(
            shown.contains("[special \"<|endoftext|>\"]"),
            special == "all",
            "{special}: {shown}"
        );
    }
    // inspect's default is encode's: a special token in the text is an error
    let ins = run(&["inspect", "--tokenizer", tok, text], b"");
    assert!(!ins.status.success());
}

#[test]
fn unknown_tokenizer_is_a_clear_error() {
    let out = run(&["encode", "--tokenizer", "no_such_vocab"], b"x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cl100k_base"));
}

/// Plain added tokens (HF `"special": false`) are shown as `[added ..]` and split out in every
/// mode, ordinary text included; special ones only where allowed.
#[test]
fn inspect_shows_plain_added_tokens_in_every_mode() {
    let tok = fixture("hf_added.json");
    let tok = tok.to_str().unwrap();
    let text = "the lab<x>notes in<|pad|>x";
    let shown = |special: &str| {
        let out = run(
            &["inspect", "--tokenizer", tok, "--special", special, text],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ordinary = shown("ordinary");
    assert!(
        ordinary.contains(r#"[added "<x>"] | [added "notes in"] | "<|""#),
        "{ordinary}"
    );
    let all = shown("all");
    assert!(
        all.contains(r#"[added "notes in"] | [special "<|pad|>"]"#),
        "{all}"
    );
}

/// `--add-special-tokens` puts in what the file's post-processor adds (HF's default encode):
/// the ids of `<s>` and `</s>` around the text with hf_template.json (HF's own ids for the
/// text, from the fixture); a file without a post-processor gets a note and plain ids.
#[test]
fn encode_adds_the_post_processors_tokens_when_asked() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("hf_expected.json")).unwrap())
            .unwrap();
    let case = &expected["cases"]["hf_template.json"];
    let text = case["probes"][0].as_str().unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let printed = |out: Output| -> Vec<u32> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect()
    };
    let tok = fixture("hf_template.json");
    let tok = tok.to_str().unwrap();
    let with = run(
        &["encode", "--tokenizer", tok, "--add-special-tokens"],
        text.as_bytes(),
    );
    assert_eq!(printed(with), ids(&case["with_specials"][0]));
    let without = run(&["encode", "--tokenizer", tok], text.as_bytes());
    assert_eq!(printed(without), ids(&case["all"][0]));
    let plain = fixture("hf_gpt2.json");
    let out = run(
        &[
            "encode",
            "--tokenizer",
            plain.to_str().unwrap(),
            "--add-special-tokens",
        ],
        text.as_bytes(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no post-processor"));
    assert!(!printed(out).is_empty());
}
