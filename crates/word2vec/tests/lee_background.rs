//! gensim's own sanity check on a small real corpus, `lee_background.cor` (shipped inside
//! gensim's package under `gensim/test/test_data/`, not in this repository): after training,
//! "bombings" ranks among the 50 words most similar to "attacks".
//!
//! The file is looked up in `$FERROLAB_LEE_BACKGROUND`, then in ferrolab's data cache (the
//! `word-eval` data set: `ferrolab data fetch word-eval`); without it the test prints why and
//! passes (CI has no data and no network is assumed).

mod common;

use std::path::PathBuf;

use common::temp_path;
use ferrolab_word2vec::{
    train_file, Architecture, Loss, QueryIndex, TrainConfig, Vocab, VocabConfig,
};

fn find_corpus() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERROLAB_LEE_BACKGROUND") {
        return Some(PathBuf::from(p));
    }
    // the `word-eval` data set of ferrolab's cache (`ferrolab data fetch word-eval`)
    let ds = ferrolab_data::dataset("word-eval").ok()?;
    let p = ferrolab_data::dataset_dir(&ferrolab_data::cache_root().ok()?, ds)
        .join("lee_background.cor");
    p.exists().then_some(p)
}

/// gensim's `simple_preprocess`, closely enough: lowercase runs of letters, 2 to 15 long.
fn preprocess(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| (2..=15).contains(&w.chars().count()))
            .map(str::to_lowercase)
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn related_words_rank_close_on_lee_background() {
    let Some(source) = find_corpus() else {
        eprintln!("lee_background.cor not found (run `ferrolab data fetch word-eval` or set FERROLAB_LEE_BACKGROUND): skipped");
        return;
    };
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("{}: {e} (check FERROLAB_LEE_BACKGROUND)", source.display()));
    let path = temp_path("lee_background.txt");
    std::fs::write(&path, preprocess(&text)).unwrap();
    let vocab = Vocab::build(&path, &VocabConfig::default()).unwrap();
    // gensim's test_sg_neg, test_sg_hs and test_cbow_neg settings (one thread: reproducible)
    let settings = [
        (
            "sg+ns",
            Architecture::SkipGram,
            Loss::NegativeSampling(15),
            4,
            None,
            1e-3,
        ),
        (
            "sg+hs",
            Architecture::SkipGram,
            Loss::HierarchicalSoftmax,
            4,
            None,
            1e-3,
        ),
        (
            "cbow+ns",
            Architecture::Cbow,
            Loss::NegativeSampling(15),
            5,
            Some(0.05),
            0.0,
        ),
    ];
    for (label, architecture, loss, window, alpha, sample) in settings {
        let config = TrainConfig {
            architecture,
            loss,
            window,
            alpha,
            sample,
            epochs: 10,
            threads: 1,
            seed: 1,
            ..TrainConfig::default()
        };
        let (kv, _) = train_file(&path, &vocab, &config).unwrap();
        let q = QueryIndex::new(&kv);
        let sims = q.most_similar("attacks", kv.len()).unwrap();
        let rank = sims.iter().position(|(w, _)| w == "bombings").unwrap();
        eprintln!("{label}: rank of 'bombings' among the neighbours of 'attacks': {rank}");
        assert!(rank < 50, "{label}: rank {rank}");
    }
}
