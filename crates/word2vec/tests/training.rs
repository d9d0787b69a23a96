//! End-to-end training on a synthetic two-topic corpus.

mod common;

use common::{temp_path, TempPath};

use ferrolab_word2vec::{
    keep_probabilities, train, train_file, Architecture, CbowCombine, Corpus, KeyedVectors, Lcg,
    Loss, QueryIndex, TrainConfig, TrainStats, Vocab, VocabConfig, Word2VecError,
};

const PETS: [&str; 10] = [
    "cat", "dog", "pet", "fur", "paw", "kitten", "puppy", "leash", "bark", "meow",
];
const CARS: [&str; 10] = [
    "car", "road", "wheel", "engine", "tire", "brake", "gear", "fuel", "driver", "highway",
];

/// Writes `n` sentences of 8 words, each drawn from one topic, and returns vocab + corpus.
fn synthetic(n: usize, name: &str) -> (Vocab, Corpus) {
    let (vocab, corpus, _) = synthetic_file(n, name);
    (vocab, corpus)
}

/// [`synthetic`], also returning the file it wrote.
fn synthetic_file(n: usize, name: &str) -> (Vocab, Corpus, TempPath) {
    let mut rng = Lcg::new(2024);
    let mut text = String::new();
    for _ in 0..n {
        let topic = if rng.below(2) == 0 { &PETS } else { &CARS };
        let words: Vec<&str> = (0..8).map(|_| topic[rng.below(10) as usize]).collect();
        text.push_str(&words.join(" "));
        text.push('\n');
    }
    let path = temp_path(name);
    std::fs::write(&path, text).unwrap();
    let vocab = Vocab::build(&path, &VocabConfig::default()).unwrap();
    let corpus = Corpus::load(&path, &vocab).unwrap();
    (vocab, corpus, path)
}

fn bits(k: &KeyedVectors) -> Vec<u32> {
    k.vectors().iter().map(|x| x.to_bits()).collect()
}

fn config(architecture: Architecture, loss: Loss, threads: usize) -> TrainConfig {
    TrainConfig {
        architecture,
        loss,
        dim: 24,
        window: 4,
        sample: 0.0,
        epochs: 5,
        threads,
        seed: 7,
        compute_loss: true,
        ..TrainConfig::default()
    }
}

/// Fraction of same-topic words among each word's 5 nearest neighbours.
fn topic_purity(kv: &KeyedVectors) -> f64 {
    let q = QueryIndex::new(kv);
    let topic = |w: &str| PETS.contains(&w);
    let mut same = 0;
    let mut total = 0;
    for w in PETS.iter().chain(CARS.iter()) {
        for (n, _) in q.most_similar(w, 5).unwrap() {
            total += 1;
            if topic(&n) == topic(w) {
                same += 1;
            }
        }
    }
    same as f64 / total as f64
}

fn mean_within_minus_across(kv: &KeyedVectors) -> f64 {
    let q = QueryIndex::new(kv);
    let (mut within, mut across) = (0.0, 0.0);
    for a in PETS {
        for b in PETS {
            if a != b {
                within += q.similarity(a, b).unwrap() as f64 / 90.0;
            }
        }
        for b in CARS {
            across += q.similarity(a, b).unwrap() as f64 / 100.0;
        }
    }
    within - across
}

fn check(kv: &KeyedVectors, stats: &TrainStats, label: &str) {
    let purity = topic_purity(kv);
    let gap = mean_within_minus_across(kv);
    eprintln!(
        "{label}: purity {purity:.3} gap {gap:.3} {:.0} words/s ({} words, {:.3}s, loglik {:?})",
        stats.words_per_sec, stats.words, stats.seconds, stats.last_epoch_loglik
    );
    let ll = stats.last_epoch_loglik.expect("compute_loss is on");
    // mean ln p per target group is negative and far better than chance
    assert!(ll < 0.0 && ll > -5.0, "{label}: loglik {ll}");
    assert!(purity >= 0.95, "{label}: purity {purity}");
    assert!(gap > 0.3, "{label}: gap {gap}");
}

#[test]
fn skipgram_negative_sampling_separates_topics() {
    let (vocab, corpus) = synthetic(3000, "sg.txt");
    assert_eq!(vocab.len(), 20);
    let (kv, stats) = train(
        &corpus,
        &vocab,
        &config(Architecture::SkipGram, Loss::NegativeSampling(5), 1),
    )
    .unwrap();
    assert_eq!(stats.words, 3000 * 8 * 5);
    assert_eq!(stats.effective_words, stats.words); // sample = 0
    check(&kv, &stats, "sg+ns t1");
    let (kv2, stats2) = train(
        &corpus,
        &vocab,
        &config(Architecture::SkipGram, Loss::NegativeSampling(5), 2),
    )
    .unwrap();
    check(&kv2, &stats2, "sg+ns t2");
}

#[test]
fn cbow_hierarchical_softmax_separates_topics() {
    let (vocab, corpus) = synthetic(3000, "cbow.txt");
    let (kv, stats) = train(
        &corpus,
        &vocab,
        &config(Architecture::Cbow, Loss::HierarchicalSoftmax, 1),
    )
    .unwrap();
    check(&kv, &stats, "cbow+hs t1");
    let (kv2, stats2) = train(
        &corpus,
        &vocab,
        &config(Architecture::Cbow, Loss::HierarchicalSoftmax, 2),
    )
    .unwrap();
    check(&kv2, &stats2, "cbow+hs t2");
    let mut sum = config(Architecture::Cbow, Loss::NegativeSampling(5), 1);
    sum.cbow_combine = CbowCombine::Sum;
    // the summed input is up to 8 vectors long: it needs a far smaller rate than the mean
    sum.alpha = Some(0.001);
    let (kv3, stats3) = train(&corpus, &vocab, &sum).unwrap();
    check(&kv3, &stats3, "cbow(sum)+ns t1");
}

#[test]
fn single_thread_with_seed_is_bitwise_deterministic() {
    let (vocab, corpus) = synthetic(500, "det.txt");
    for (arch, loss) in [
        (Architecture::SkipGram, Loss::NegativeSampling(5)),
        (Architecture::Cbow, Loss::HierarchicalSoftmax),
    ] {
        let mut cfg = config(arch, loss, 1);
        cfg.sample = 1e-3;
        let (a, _) = train(&corpus, &vocab, &cfg).unwrap();
        let (b, _) = train(&corpus, &vocab, &cfg).unwrap();
        assert_eq!(bits(&a), bits(&b));
        cfg.seed = 8;
        let (c, _) = train(&corpus, &vocab, &cfg).unwrap();
        assert_ne!(bits(&a), bits(&c), "the seed must matter");
    }
}

#[test]
fn subsampling_drops_frequent_words_and_init_is_in_range() {
    let (vocab, corpus) = synthetic(500, "sub.txt");
    let mut cfg = config(Architecture::SkipGram, Loss::NegativeSampling(5), 1);
    cfg.sample = 1e-3;
    let (_, stats) = train(&corpus, &vocab, &cfg).unwrap();
    // every word has ~200 of 4000 occurrences: keep p = (sqrt(f/4)+1)*4/f ≈ 0.16
    let keep = keep_probabilities(vocab.counts(), 1e-3);
    let expected: f64 = vocab
        .counts()
        .iter()
        .zip(&keep)
        .map(|(&c, p)| c as f64 * p)
        .sum::<f64>()
        / vocab.total() as f64;
    assert!((0.14..0.18).contains(&expected), "{expected}");
    let ratio = stats.effective_words as f64 / stats.words as f64;
    assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");

    cfg.epochs = 1;
    cfg.alpha = Some(0.0);
    cfg.min_alpha = 0.0;
    let (kv, _) = train(&corpus, &vocab, &cfg).unwrap();
    let bound = 0.5 / cfg.dim as f32;
    assert!(kv.vectors().iter().all(|x| x.abs() <= bound));
    assert!(kv.vectors().iter().any(|x| x.abs() > 0.8 * bound));
}

#[test]
fn streaming_from_file_matches_in_memory_training() {
    let (vocab, corpus, path) = synthetic_file(600, "stream.txt");
    for (arch, loss) in [
        (Architecture::SkipGram, Loss::NegativeSampling(5)),
        (Architecture::Cbow, Loss::HierarchicalSoftmax),
    ] {
        let mut cfg = config(arch, loss, 1);
        cfg.sample = 1e-3;
        cfg.epochs = 2;
        let (a, sa) = train(&corpus, &vocab, &cfg).unwrap();
        let (b, sb) = train_file(&path, &vocab, &cfg).unwrap();
        assert_eq!(bits(&a), bits(&b), "{arch:?} {loss:?}");
        assert_eq!(sa.words, sb.words);
        assert_eq!(sa.words, 600 * 8 * 2);
        assert_eq!(sa.effective_words, sb.effective_words);
        assert_eq!(sa.last_epoch_loglik, sb.last_epoch_loglik);
        // two threads over the stream: every word is read exactly once per epoch
        cfg.threads = 2;
        let (_, s2) = train_file(&path, &vocab, &cfg).unwrap();
        assert_eq!(s2.words, sa.words);
    }
}

/// A text in which no word has a neighbour (one word per line, or subsampling that keeps one
/// word of each sentence) trains nothing: an error, not vectors that are their random start.
#[test]
fn a_text_that_gives_no_training_pair_is_refused() {
    let vocab_cfg = VocabConfig {
        min_count: 1,
        ..VocabConfig::default()
    };
    for (text, sample) in [("hello\n", 0.0), ("a\nb\na\n", 1e-3), ("a b\n", 0.0)] {
        let path = temp_path("lonely.txt");
        std::fs::write(&path, text).unwrap();
        let vocab = Vocab::build(&path, &vocab_cfg).unwrap();
        let corpus = Corpus::load(&path, &vocab).unwrap();
        for arch in [Architecture::SkipGram, Architecture::Cbow] {
            let mut cfg = config(arch, Loss::NegativeSampling(2), 1);
            cfg.sample = sample;
            let r = train(&corpus, &vocab, &cfg);
            if text == "a b\n" {
                // one pair: trained
                let (k, _) = r.unwrap();
                assert!(k.vectors().iter().all(|x| x.is_finite()));
            } else {
                let e = r.err().unwrap().to_string();
                assert!(
                    e.contains("nothing was trained") && e.contains("min_count"),
                    "{e}"
                );
                // sample 0 is not advised when it is already 0
                assert_eq!(e.contains("sample 0"), sample > 0.0, "{e}");
            }
        }
    }
}

#[test]
fn streaming_splits_long_lines_and_reports_file_errors() {
    // one 25,000-token line: trained as sentences of 10,000, 10,000 and 5,000 words, so the
    // window never spans a split (checked through the effective count only: all words kept)
    let path = temp_path("long_train.txt");
    let line: Vec<&str> = (0..25_000).map(|i| PETS[i % 10]).collect();
    std::fs::write(&path, format!("{}\n", line.join(" "))).unwrap();
    let vocab = Vocab::build(&path, &VocabConfig::default()).unwrap();
    let corpus = Corpus::load(&path, &vocab).unwrap();
    let lens: Vec<usize> = corpus.sentences().iter().map(Vec::len).collect();
    assert_eq!(lens, vec![10_000, 10_000, 5_000]);
    let mut cfg = config(Architecture::SkipGram, Loss::NegativeSampling(2), 1);
    cfg.epochs = 1;
    cfg.dim = 8;
    let (a, stats) = train_file(&path, &vocab, &cfg).unwrap();
    assert_eq!(stats.words, 25_000);
    assert_eq!(stats.effective_words, 25_000);
    let (b, _) = train(&corpus, &vocab, &cfg).unwrap();
    assert_eq!(bits(&a), bits(&b));

    std::fs::remove_file(&path).unwrap();
    match train_file(&path, &vocab, &cfg) {
        Err(Word2VecError::Io { path: p, .. }) => assert_eq!(p, *path),
        other => panic!("expected an I/O error, got {:?}", other.map(|r| r.1)),
    }
    let mut zero = cfg.clone();
    zero.loss = Loss::NegativeSampling(0);
    assert!(matches!(
        train(&corpus, &vocab, &zero),
        Err(Word2VecError::Config(_))
    ));
}

#[test]
fn learning_rates_that_cannot_train_are_errors() {
    let (vocab, corpus) = synthetic(200, "alpha");
    for (alpha, min_alpha, want) in [
        (f32::NAN, 1e-4, "alpha"),
        (f32::INFINITY, 1e-4, "alpha"),
        (-1.0, 1e-4, "alpha"),
        (0.025, 0.5, "min_alpha"),
        (0.025, f32::NAN, "min_alpha"),
        // a finite rate so large that the vectors blow up
        (1e30, 1e-4, "diverged"),
    ] {
        let config = TrainConfig {
            alpha: Some(alpha),
            min_alpha,
            threads: 1,
            epochs: 1,
            ..TrainConfig::default()
        };
        let e = train(&corpus, &vocab, &config).err();
        assert!(
            matches!(&e, Some(Word2VecError::Config(m)) if m.contains(want)),
            "alpha {alpha}, min_alpha {min_alpha}: {e:?}"
        );
    }
}

#[test]
fn sizes_thread_counts_and_subsampling_out_of_range_are_errors() {
    let (vocab, corpus) = synthetic(100, "limits");
    for (config, want) in [
        (
            TrainConfig {
                dim: 100_000_000_000,
                ..TrainConfig::default()
            },
            "dim",
        ),
        (
            TrainConfig {
                threads: 100_000,
                ..TrainConfig::default()
            },
            "threads",
        ),
        (
            TrainConfig {
                sample: -1.0,
                ..TrainConfig::default()
            },
            "sample",
        ),
        (
            TrainConfig {
                sample: f64::NAN,
                ..TrainConfig::default()
            },
            "sample",
        ),
    ] {
        let e = train(&corpus, &vocab, &config).err();
        assert!(
            matches!(&e, Some(Word2VecError::Config(m)) if m.contains(want)),
            "{want}: {e:?}"
        );
    }
}
