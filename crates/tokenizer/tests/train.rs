//! BPE training: the vocabulary it promises, the most frequent pair first, streaming equal to
//! whole-text counting, agreement with HF's trainer on the same corpus.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{random_text, Rng};
use ferrolab_tokenizer::{
    read_hf, train_files, train_texts, PreTokenizer, Preset, SpecialSet, TrainConfig, WordCounts,
};

fn corpus() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.txt"))
        .unwrap()
}

fn cfg(vocab_size: usize, preset: Preset) -> TrainConfig {
    TrainConfig {
        vocab_size,
        preset,
        ..TrainConfig::default()
    }
}

#[test]
fn vocabulary_size_specials_and_round_trip() {
    let text = corpus();
    for preset in Preset::ALL {
        let mut c = cfg(400, preset);
        c.special_tokens = vec!["<|endoftext|>".into(), "<|pad|>".into()];
        let tok = train_texts([&text], &c).unwrap();
        assert_eq!(tok.vocab_end(), 400, "{preset}");
        assert_eq!(tok.special_id("<|endoftext|>"), Some(398));
        assert_eq!(tok.special_id("<|pad|>"), Some(399));
        let ids = tok.encode(&text, &SpecialSet::All).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // merges compress the training text
        assert!(
            ids.len() * 3 < text.len() * 2,
            "{preset}: {} tokens",
            ids.len()
        );
    }
}

#[test]
fn first_merge_is_the_most_frequent_pair() {
    let text = corpus();
    let tok = train_texts([&text], &cfg(257, Preset::Gpt2)).unwrap();
    // count adjacent byte pairs inside GPT-2 pieces, by brute force
    let mut counts: HashMap<(u8, u8), usize> = HashMap::new();
    for (s, e) in PreTokenizer::reference(Preset::Gpt2).split(&text).unwrap() {
        for w in text.as_bytes()[s..e].windows(2) {
            *counts.entry((w[0], w[1])).or_default() += 1;
        }
    }
    let best = counts.values().max().copied().unwrap();
    let merged = tok.bpe().token_bytes(256).unwrap();
    assert_eq!(
        counts[&(merged[0], merged[1])],
        best,
        "{:?}",
        String::from_utf8_lossy(merged)
    );
}

#[test]
fn min_frequency_stops_early() {
    let text = corpus();
    let mut c = cfg(5000, Preset::Gpt2);
    c.min_frequency = 5;
    let tok = train_texts([&text], &c).unwrap();
    assert!(tok.vocab_end() < 5000 && tok.vocab_end() > 256);
    // every merged token occurs at least 5 times in the pieces of the text
    let last = tok
        .bpe()
        .token_bytes(tok.vocab_end() as u32 - 1)
        .unwrap()
        .to_vec();
    let n = text
        .as_bytes()
        .windows(last.len())
        .filter(|w| *w == last.as_slice())
        .count();
    assert!(n >= 5, "{n}");
    // a minimum above every count learns nothing, up to the largest one can give (those at
    // 2^63 and above were taken as no minimum)
    for min in [1u64 << 40, 1 << 63, u64::MAX] {
        c.min_frequency = min;
        match train_texts([&text], &c) {
            Ok(t) => assert_eq!(t.vocab_end(), 256, "{min}"),
            Err(e) => assert!(e.to_string().contains("no merge"), "{min}: {e}"),
        }
    }
}

#[test]
fn streamed_file_counts_equal_whole_text_counts() {
    // > 2 blocks of 1 MB, with line starts between letters and long runs without them
    let mut rng = Rng(31);
    let mut text = String::new();
    while text.len() < 2_500_000 {
        text.push_str(&random_text(&mut rng, 40));
        text.push_str(["\n", "x\nY", "  \n\n", "a\nb"][rng.below(4)]);
    }
    let scratch = ferrolab_data::TempFolder::new("tok-train").unwrap();
    let path = scratch.join("text.txt");
    std::fs::write(&path, &text).unwrap();
    for preset in [Preset::Cl100k, Preset::Gpt2, Preset::O200k] {
        let mut whole = WordCounts::new(preset);
        whole.add_text(&text).unwrap();
        let mut streamed = WordCounts::new(preset);
        streamed.add_file(&path).unwrap();
        assert_eq!(whole.len(), streamed.len(), "{preset}");
        for (w, c) in whole.iter() {
            assert_eq!(streamed.count(w), c, "{preset}: {w:?}");
        }
    }
    let a = train_files(&[&path], &cfg(600, Preset::Cl100k)).unwrap();
    let b = train_texts([&text], &cfg(600, Preset::Cl100k)).unwrap();
    assert_eq!(a.bpe().merges().unwrap(), b.bpe().merges().unwrap());
}

/// Same corpus, same size, same pre-tokenizer: the vocabulary learnt here and HF's overlap
/// almost entirely (they differ only in how ties between equally frequent pairs are broken).
#[test]
fn vocabulary_agrees_with_hf_trainer() {
    let hf = read_hf(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2.json"))
        .unwrap();
    let mut c = cfg(400, Preset::Gpt2);
    c.special_tokens = vec!["<|endoftext|>".into()];
    let ours = train_texts([corpus()], &c).unwrap();
    let theirs: std::collections::HashSet<&[u8]> = hf.bpe().vocab().map(|(b, _)| b).collect();
    let shared = ours
        .bpe()
        .vocab()
        .filter(|(b, _)| theirs.contains(b))
        .count();
    assert!(
        shared as f64 >= 0.9 * theirs.len() as f64,
        "{shared} of {}",
        theirs.len()
    );
}

#[test]
fn bad_configs_are_refused() {
    assert!(train_texts(["x"], &cfg(100, Preset::Gpt2))
        .unwrap_err()
        .to_string()
        .contains("vocab_size"));
    let mut c = cfg(300, Preset::Gpt2);
    c.special_tokens = vec!["a".into(), "a".into()];
    assert!(train_texts(["x"], &c)
        .unwrap_err()
        .to_string()
        .contains("special_tokens"));
}

#[test]
fn a_vocabulary_size_above_the_id_limit_is_refused() {
    let cfg = TrainConfig {
        vocab_size: u32::MAX as usize,
        ..TrainConfig::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("vocab_size") && e.contains("limit"), "{e}");
}

/// A special token named like a token the merges would make ("the") is never made as an
/// ordinary token, so that `tokenizer.json`, where a name maps to one id, holds every token
/// (the merge's entry was overwritten by the special token's, leaving an id without a name).
/// One named like a byte token is refused; a tokenizer that has such a pair anyway cannot be
/// written as `tokenizer.json`.
#[test]
fn special_tokens_named_like_ordinary_tokens() {
    let text = "the cat sat on the mat with the hat and the bat\n".repeat(50);
    let plain = train_texts([&text], &cfg(300, Preset::Cl100k)).unwrap();
    assert!(
        plain.bpe().token_id(b"the").is_some(),
        "the test needs the merge"
    );
    let mut c = cfg(300, Preset::Cl100k);
    c.special_tokens = vec!["the".into(), "<|end|>".into()];
    let tok = train_texts([&text], &c).unwrap();
    assert_eq!(tok.bpe().token_id(b"the"), None);
    assert_eq!(tok.vocab_end(), tok.bpe().len() + 2);
    let json = ferrolab_tokenizer::hf_string(&tok).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut ids: Vec<u64> = v["model"]["vocab"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..tok.vocab_end() as u64).collect::<Vec<_>>());
    let back = ferrolab_tokenizer::parse_hf_str(&json).unwrap();
    for t in ["the cat", "bathe them", "<|end|>the"] {
        assert_eq!(
            back.encode(t, &SpecialSet::All).unwrap(),
            tok.encode(t, &SpecialSet::All).unwrap(),
            "{t}"
        );
    }
    assert_eq!(
        tok.encode("the", &SpecialSet::All).unwrap(),
        [tok.special_id("the").unwrap()]
    );
    // the names of byte tokens: a letter, and the space's "Ġ"
    for name in ["a", "\u{120}"] {
        let mut c = cfg(300, Preset::Cl100k);
        c.special_tokens = vec![name.into()];
        let e = train_texts([&text], &c).unwrap_err().to_string();
        assert!(
            e.contains("special_tokens") && e.contains("byte token"),
            "{e}"
        );
    }
    // a special token "the" added to a vocabulary that has "the"
    let pair = ferrolab_tokenizer::Tokenizer::new(
        plain.bpe().clone(),
        plain.pre_tokenizer().clone(),
        vec![("the".to_string(), plain.vocab_end() as u32)],
    )
    .unwrap();
    let e = ferrolab_tokenizer::hf_string(&pair)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"the\"") && e.contains("ordinary token") && e.contains("another name"),
        "{e}"
    );
}
