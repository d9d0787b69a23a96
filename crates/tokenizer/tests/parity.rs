//! Exact parity with tiktoken (the `tiktoken-rs` crate as oracle) on cl100k_base and
//! o200k_base, over English, code, CJK, emoji, mixed scripts, white-space runs, digit runs and
//! arbitrary valid UTF-8.

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;

use common::{random_scalars, random_text, Rng};
use ferrolab_tokenizer::{builtin, PreTokenizer, Preset, SpecialSet, Tokenizer};
use tiktoken_rs::CoreBPE;

fn ours(name: &str) -> &'static Tokenizer {
    static CL: OnceLock<Tokenizer> = OnceLock::new();
    static O: OnceLock<Tokenizer> = OnceLock::new();
    let cell = if name == "cl100k_base" { &CL } else { &O };
    cell.get_or_init(|| builtin(name).unwrap())
}

fn theirs(name: &str) -> &'static CoreBPE {
    if name == "cl100k_base" {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

const NAMES: [&str; 2] = ["cl100k_base", "o200k_base"];

fn check(name: &str, text: &str) {
    let got = ours(name).encode_ordinary(text).unwrap();
    let want = theirs(name).encode_ordinary(text);
    assert_eq!(got, want, "{name}: {text:?}");
    assert_eq!(ours(name).decode(&got).unwrap(), text);
}

#[test]
fn builtin_vocabularies_have_their_sizes() {
    // ordinary tokens: 100256 in cl100k, 199998 in o200k
    assert_eq!(ours("cl100k_base").bpe().len(), 100_256);
    assert_eq!(ours("o200k_base").bpe().len(), 199_998);
    assert_eq!(
        ours("cl100k_base").special_id("<|endoftext|>"),
        Some(100_257)
    );
}

/// p50k_base is r50k_base plus 24 tokens of 2-25 spaces (ids 50257-50280, after the special
/// 50256): runs of spaces in code must come out as those ids.
#[test]
fn p50k_has_its_space_run_tokens() {
    let ours = builtin("p50k_base").unwrap();
    let theirs = tiktoken_rs::p50k_base_singleton();
    assert_eq!(ours.bpe().len(), 50_280);
    assert_eq!(ours.special_id("<|endoftext|>"), Some(50_256));
    let mut texts: Vec<String> = (1..=60).map(|n| " ".repeat(n) + "x").collect();
    texts.push("def f():\n        return 1\n\tif x:\n            y = 2".into());
    texts.push(" ".repeat(10_000));
    let mut rng = Rng(50);
    texts.extend((0..200).map(|_| random_text(&mut rng, 40)));
    let mut saw_space_run = false;
    for t in &texts {
        let got = ours.encode_ordinary(t).unwrap();
        assert_eq!(got, theirs.encode_ordinary(t), "{t:?}");
        assert_eq!(ours.decode(&got).unwrap(), *t);
        saw_space_run |= got.iter().any(|&i| (50_257..=50_280).contains(&i));
    }
    assert!(saw_space_run);
}

#[test]
fn fixed_texts_match() {
    let texts = [
        "Hello, world!",
        "The State of the Union is strong. We're here; they'll come, I'M sure.",
        "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
        "def f(x):\n\treturn x ** 2  # square\r\n",
        "中文测试，日本語のテキスト、한국어 텍스트。",
        "😀 👨‍👩‍👧‍👦 🇺🇸 ❤️ emoji",
        "Привет мир! Ελληνικά; العربية; हिन्दी",
        "                                                   spaces",
        "\n\n\n\n\t\t\t   \r\n\r\n",
        "1234567890 3.14159 1,000,000 2024-12-31",
        "'s 'S 'll 'LL don't DON'T 'ſ",
    ];
    for name in NAMES {
        for t in texts {
            check(name, t);
        }
    }
}

#[test]
fn random_mixed_text_matches() {
    let mut rng = Rng(0x1234_5678);
    for name in NAMES {
        for _ in 0..400 {
            check(name, &random_text(&mut rng, 40));
        }
    }
}

#[test]
fn arbitrary_utf8_matches() {
    let mut rng = Rng(0xfeed);
    for name in NAMES {
        for _ in 0..300 {
            check(name, &random_scalars(&mut rng, 40));
        }
    }
}

#[test]
fn long_runs_match() {
    // long pieces go through the heap merge; long white-space runs through the tail rules
    let texts = [
        "a".repeat(3000),
        "ab".repeat(1500),
        " ".repeat(2000) + "x",
        "\n".repeat(500) + " end",
        "7".repeat(1000),
        "!?".repeat(700),
        "é".repeat(800),
        "中".repeat(600),
        "😀".repeat(300),
    ];
    for name in NAMES {
        for t in &texts {
            check(name, t);
        }
    }
}

#[test]
fn reference_pre_tokenizer_gives_the_same_tokens() {
    let mut rng = Rng(99);
    for (name, preset) in [
        ("cl100k_base", Preset::Cl100k),
        ("o200k_base", Preset::O200k),
    ] {
        let slow = ours(name)
            .clone()
            .with_pre_tokenizer(PreTokenizer::reference(preset));
        for _ in 0..100 {
            let t = random_text(&mut rng, 30);
            assert_eq!(
                slow.encode_ordinary(&t).unwrap(),
                ours(name).encode_ordinary(&t).unwrap()
            );
        }
    }
}

#[test]
fn special_tokens_follow_tiktoken() {
    let t = "hello <|endoftext|> world<|fim_prefix|>x";
    for name in NAMES {
        let tok = ours(name);
        // allowed: all -> the special ids, exactly as tiktoken
        let all: HashSet<&str> = theirs(name).special_tokens();
        let want = theirs(name).encode(t, &all).unwrap().0;
        assert_eq!(tok.encode(t, &SpecialSet::All).unwrap(), want, "{name}");
        // ordinary: the strings are text
        assert_eq!(
            tok.encode_ordinary(t).unwrap(),
            theirs(name).encode_ordinary(t)
        );
        // not allowed: an error naming the token
        let err = tok.encode(t, &SpecialSet::None).unwrap_err().to_string();
        assert!(err.contains("<|endoftext|>"), "{err}");
        // allowed set
        let only: HashSet<String> = ["<|endoftext|>".to_string()].into();
        let r = tok
            .encode("a<|endoftext|>b", &SpecialSet::Some(only))
            .unwrap();
        assert!(r.contains(&tok.special_id("<|endoftext|>").unwrap()));
    }
}

#[test]
fn batch_and_parallel_equal_sequential() {
    let mut rng = Rng(5);
    let tok = ours("cl100k_base");
    let texts: Vec<String> = (0..64).map(|_| random_text(&mut rng, 50)).collect();
    let batch = tok.encode_batch(&texts).unwrap();
    for (t, ids) in texts.iter().zip(&batch) {
        assert_eq!(ids, &tok.encode_ordinary(t).unwrap());
    }
    // one long text with many line starts: the parallel cut must not change anything
    let long: String = (0..3000)
        .map(|i| format!("Line {i} says hello\nand goes on, {i}!\n"))
        .collect();
    assert_eq!(
        tok.encode_ordinary_parallel(&long).unwrap(),
        theirs("cl100k_base").encode_ordinary(&long)
    );
}

#[test]
fn special_tokens_neither_allowed_nor_disallowed_are_text() {
    // tiktoken: encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    let tok = ours("cl100k_base");
    let t = "a<|endoftext|>b<|fim_prefix|>c";
    let only: HashSet<String> = ["<|endoftext|>".to_string()].into();
    let got = tok
        .encode_with_special(t, &SpecialSet::Some(only), &SpecialSet::None)
        .unwrap();
    let allowed: HashSet<&str> = ["<|endoftext|>"].into();
    assert_eq!(got, theirs("cl100k_base").encode(t, &allowed).unwrap().0);
    // the default (disallow all) refuses the one that is not allowed
    let only: HashSet<String> = ["<|endoftext|>".to_string()].into();
    let e = tok
        .encode(t, &SpecialSet::Some(only))
        .unwrap_err()
        .to_string();
    assert!(e.contains("<|fim_prefix|>"), "{e}");
}
