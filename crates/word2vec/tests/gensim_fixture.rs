//! Files written by gensim (`tests/fixtures/make_gensim_fixture.py write`) read by ferrolab,
//! checked against the exact float32 values gensim held, and written back byte for byte.

mod common;

use std::path::PathBuf;

use common::temp_path;
use ferrolab_word2vec::{read_binary, read_text, write_binary, Vocab, VocabConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The words and exact vectors gensim had in memory, from `gensim_tiny_bits.tsv`.
fn expected() -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(fixture("gensim_tiny_bits.tsv")).unwrap();
    text.lines()
        .map(|line| {
            let (word, bits) = line.split_once('\t').unwrap();
            let bits = bits
                .split(' ')
                .map(|h| u32::from_str_radix(h, 16).unwrap())
                .collect();
            (word.to_string(), bits)
        })
        .collect()
}

#[test]
fn gensim_binary_and_text_files_load_with_gensims_values() {
    let want = expected();
    assert_eq!(want.len(), 20);
    let bin = read_binary(&fixture("gensim_tiny.bin")).unwrap();
    let txt = read_text(&fixture("gensim_tiny.txt")).unwrap();
    for kv in [&bin, &txt] {
        assert_eq!(kv.len(), 20);
        assert_eq!(kv.dim(), 8);
        for (i, (word, bits)) in want.iter().enumerate() {
            assert_eq!(&kv.words()[i], word);
            let got: Vec<u32> = kv.row(i).iter().map(|x| x.to_bits()).collect();
            // binary: the raw float32s; text: gensim writes the shortest repr that round-trips
            assert_eq!(&got, bits, "{word}");
        }
    }
    // the corpus gensim trained on gives our vocabulary the same words, most frequent first
    let vocab = Vocab::build(
        &fixture("tiny_corpus.txt"),
        &VocabConfig {
            min_count: 1,
            max_vocab: None,
        },
    )
    .unwrap();
    let mut ours: Vec<&String> = vocab.words().iter().collect();
    let mut theirs: Vec<&String> = bin.words().iter().collect();
    assert_eq!(ours[0], theirs[0]);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn binary_written_by_ferrolab_is_byte_identical_to_gensims() {
    // gensim writes no newline after each vector: `write_binary(.., false)` is its layout
    let kv = read_binary(&fixture("gensim_tiny.bin")).unwrap();
    let out = temp_path("rewritten_gensim_tiny.bin");
    write_binary(&kv, &out, false).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fixture("gensim_tiny.bin")).unwrap()
    );
}
