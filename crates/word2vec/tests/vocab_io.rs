//! Vocabulary building and vector file I/O.

mod common;

use common::temp_path;
use std::io::Read;
use std::path::Path;

use ferrolab_word2vec::{
    for_each_sentence, read_binary, read_text, write_binary, write_text, Corpus, KeyedVectors,
    SentenceReader, Vocab, VocabConfig, Word2VecError, MAX_SENTENCE_LEN,
};

/// A reader that hands out at most `step` bytes per call, so that tokens and multi-byte
/// characters straddle the streaming reader's buffer refills.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn stream(data: &[u8], step: usize) -> Result<Vec<Vec<String>>, Word2VecError> {
    let mut reader = SentenceReader::new(Trickle { data, step }, Path::new("mem.txt"));
    let mut out = Vec::new();
    while reader.next_sentence()? {
        assert_eq!(reader.token_count(), reader.tokens().count());
        out.push(reader.tokens().map(str::to_string).collect());
    }
    Ok(out)
}

/// The reference tokenisation: `\n`-separated lines, Unicode whitespace, chunks of 10,000.
fn reference(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let tokens: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        for chunk in tokens.chunks(MAX_SENTENCE_LEN) {
            out.push(chunk.to_vec());
        }
    }
    out
}

#[test]
fn streaming_reader_matches_reference_tokenisation() {
    let mut text = String::from(
        "  the cat\tsat\r\non  the mat \n\n\n über\u{a0}straße\u{2003}naïve 日本語 \u{1F600}x\n\
         a\u{2028}b\x0bc\x0cd\u{85}e\n   \nlast line without newline",
    );
    text.push('\n');
    let long: Vec<String> = (0..MAX_SENTENCE_LEN * 2 + 7)
        .map(|i| format!("é{i}"))
        .collect();
    text.push_str(&long.join(" "));
    let expected = reference(&text);
    assert!(expected.iter().any(|s| s.contains(&"straße".to_string())));
    for step in [1, 2, 3, 5, 4096, usize::MAX] {
        let got = stream(text.as_bytes(), step).unwrap();
        assert_eq!(got, expected, "step {step}");
    }
    let lens: Vec<usize> = stream(text.as_bytes(), 7)
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(
        lens[lens.len() - 3..],
        [MAX_SENTENCE_LEN, MAX_SENTENCE_LEN, 7]
    );
}

#[test]
fn invalid_utf8_is_a_parse_error_naming_the_line() {
    for bad in [
        &b"ok line\nbad \xff byte\n"[..],
        b"ok\ntruncated \xc3",
        b"ok\n\xe2\x28\xa1 x",
    ] {
        for step in [1, 4096] {
            match stream(bad, step) {
                Err(Word2VecError::Parse { line, problem, .. }) => {
                    assert_eq!(line, 2, "{bad:?}");
                    assert!(problem.contains("UTF-8"));
                }
                other => panic!("{bad:?}: expected a parse error, got {other:?}"),
            }
        }
    }
    let path = temp_path("bad_utf8.txt");
    std::fs::write(&path, b"fine words\nnot \xfe fine\n").unwrap();
    let err = Vocab::build(&path, &VocabConfig::default()).unwrap_err();
    assert!(err.to_string().contains("bad_utf8.txt:2"), "{err}");
}

#[test]
fn vocab_min_count_ordering_and_max_vocab() {
    let path = temp_path("vocab.txt");
    std::fs::write(&path, "b a c a b a\n\n  d d\td e \n").unwrap();
    let cfg = VocabConfig {
        min_count: 2,
        max_vocab: None,
    };
    let v = Vocab::build(&path, &cfg).unwrap();
    assert_eq!(v.words(), &["a", "d", "b"]);
    assert_eq!(v.counts(), &[3, 3, 2]);
    assert_eq!(v.total(), 8);
    assert_eq!(v.index("b"), Some(2));
    assert_eq!(v.index("c"), None);
    let v2 = Vocab::build(
        &path,
        &VocabConfig {
            min_count: 1,
            max_vocab: Some(2),
        },
    )
    .unwrap();
    assert_eq!(v2.words(), &["a", "d"]);
    // default min_count is 5
    assert_eq!(VocabConfig::default().min_count, 5);
    let err = Vocab::build(&path, &VocabConfig::default()).unwrap_err();
    assert!(matches!(err, Word2VecError::NoWordAboveMinCount { .. }));
    assert!(err.to_string().contains("vocab.txt"), "{err}");

    let corpus = Corpus::load(&path, &v).unwrap();
    assert_eq!(corpus.sentences(), &[vec![2, 0, 0, 2, 0], vec![1, 1, 1]]);
    assert_eq!(corpus.word_count(), 8);
}

#[test]
fn empty_corpus_is_an_error_naming_the_file() {
    let path = temp_path("empty_corpus.txt");
    std::fs::write(&path, "\n   \n\n").unwrap();
    let err = Vocab::build(&path, &VocabConfig::default()).unwrap_err();
    assert!(matches!(err, Word2VecError::EmptyCorpus { .. }));
    assert!(err.to_string().contains("empty_corpus.txt"), "{err}");
    let missing = Vocab::build(&temp_path("does_not_exist.txt"), &VocabConfig::default());
    assert!(matches!(missing, Err(Word2VecError::Io { .. })));
}

#[test]
fn long_lines_are_split_at_10000_tokens() {
    let path = temp_path("long.txt");
    let line: Vec<String> = (0..25_000).map(|i| format!("w{}", i % 3)).collect();
    std::fs::write(&path, format!("{}\nx y\n", line.join(" "))).unwrap();
    let mut lens = Vec::new();
    for_each_sentence(&path, |s| lens.push(s.len())).unwrap();
    assert_eq!(MAX_SENTENCE_LEN, 10_000);
    assert_eq!(lens, vec![10_000, 10_000, 5_000, 2]);
    let v = Vocab::build(
        &path,
        &VocabConfig {
            min_count: 1,
            max_vocab: None,
        },
    )
    .unwrap();
    let corpus = Corpus::load(&path, &v).unwrap();
    let clens: Vec<usize> = corpus.sentences().iter().map(Vec::len).collect();
    assert_eq!(clens, vec![10_000, 10_000, 5_000, 2]);
}

fn sample_vectors() -> KeyedVectors {
    let words = vec!["the".to_string(), "über".into(), "x".into()];
    let vectors = vec![
        0.1,
        -2.5e-7,
        3.0,
        1.0 / 3.0,
        f32::MIN_POSITIVE,
        -0.0,
        123456.78,
        1e30,
        -1e-30,
    ];
    KeyedVectors::new(words, vectors, 3).unwrap()
}

#[test]
fn text_round_trip() {
    let kv = sample_vectors();
    let path = temp_path("vec.txt");
    write_text(&kv, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("3 3\nthe "));
    let back = read_text(&path).unwrap();
    assert_eq!(back.words(), kv.words());
    let bits = |k: &KeyedVectors| k.vectors().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&kv));
}

#[test]
fn binary_round_trip_with_and_without_newlines() {
    let kv = sample_vectors();
    for newline in [true, false] {
        let path = temp_path(&format!("vec_{newline}.bin"));
        write_binary(&kv, &path, newline).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let expected_len = 4
            + kv.words().iter().map(|w| w.len() + 1 + 12).sum::<usize>()
            + if newline { 3 } else { 0 };
        assert_eq!(bytes.len(), expected_len);
        let back = read_binary(&path).unwrap();
        assert_eq!(back.words(), kv.words());
        let bits = |k: &KeyedVectors| k.vectors().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&kv));
    }
}

#[test]
fn malformed_text_files_name_the_line() {
    let cases = [
        ("bad_header.txt", "3 x\na 1 2\n", ":1:"),
        ("no_dim.txt", "1 0\na\n", "dimension must be at least 1"),
        ("short_line.txt", "2 3\na 1 2 3\nb 1 2\n", ":3:"),
        ("bad_value.txt", "2 2\na 1 2\nb 1 zz\n", ":3:"),
        ("too_few.txt", "3 2\na 1 2\nb 1 2\n", "header announced 3"),
        ("dup.txt", "2 1\na 1\na 2\n", ":3:"),
    ];
    for (name, content, needle) in cases {
        let path = temp_path(name);
        std::fs::write(&path, content).unwrap();
        let err = read_text(&path).unwrap_err();
        assert!(matches!(err, Word2VecError::Parse { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(needle) && msg.contains(name), "{name}: {msg}");
    }
}

#[test]
fn truncated_binary_reports_offset() {
    let kv = sample_vectors();
    let path = temp_path("trunc.bin");
    write_binary(&kv, &path, true).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 6]).unwrap();
    let err = read_binary(&path).unwrap_err();
    match &err {
        Word2VecError::Binary {
            offset, problem, ..
        } => {
            // the last vector starts after "x "
            assert_eq!(*offset as usize, bytes.len() - 1 - 12);
            assert!(problem.contains("truncated"), "{problem}");
        }
        other => panic!("unexpected {other}"),
    }
    std::fs::write(&path, b"3 3").unwrap();
    assert!(matches!(
        read_binary(&path),
        Err(Word2VecError::Binary { offset: 0, .. })
    ));
    std::fs::write(&path, b"three 3\n").unwrap();
    assert!(matches!(
        read_binary(&path),
        Err(Word2VecError::Parse { line: 1, .. })
    ));
}

#[test]
fn in_memory_corpus_drops_oov_and_splits() {
    let v = Vocab::from_counts(
        [
            ("a".to_string(), 5),
            ("b".to_string(), 7),
            ("c".to_string(), 1),
        ],
        &VocabConfig::default(),
    )
    .unwrap();
    assert_eq!(v.words(), &["b", "a"]);
    let long: Vec<&str> = std::iter::repeat_n("a", MAX_SENTENCE_LEN + 1).collect();
    let corpus = Corpus::from_sentences(&v, vec![vec!["a", "c", "b"], vec!["c"], long]);
    assert_eq!(corpus.sentences()[0], vec![1, 0]);
    let lens: Vec<usize> = corpus.sentences().iter().map(Vec::len).collect();
    assert_eq!(lens, vec![2, MAX_SENTENCE_LEN, 1]);
    assert_eq!(corpus.word_count(), 2 + MAX_SENTENCE_LEN as u64 + 1);
}

#[test]
fn headers_announcing_more_than_the_file_holds_and_text_read_as_binary_are_errors() {
    let kv = KeyedVectors::new(
        vec!["one".into(), "two".into()],
        vec![0.5, -0.25, 1.0, 2.0, 0.125, -3.0],
        3,
    )
    .unwrap();
    let path = temp_path("text-as-bin.bin");
    write_text(&kv, &path).unwrap();
    let e = read_binary(&path).unwrap_err().to_string();
    assert!(e.contains("text format"), "{e}");
    // the right reader still reads it
    assert_eq!(read_text(&path).unwrap().len(), 2);

    // headers that would need terabytes: an error, not an allocation failure
    let text_line = "one 1 2 3\n";
    let binary_ish = "one \x01\x02\x03 2 3\n";
    for (header, body, reader, want) in [
        (
            "99999999999 99999999999\n",
            text_line,
            read_text as fn(&Path) -> _,
            "has 3 values",
        ),
        (
            "99999999999 3\n",
            text_line,
            read_text,
            "header announced 99999999999",
        ),
        ("1000000 1000000\n", binary_ish, read_binary, "announces"),
        ("99999999999 3\n", binary_ish, read_binary, "announces"),
    ] {
        std::fs::write(&path, format!("{header}{body}")).unwrap();
        let e = reader(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{header}: {e}");
    }
    // binary vectors followed by more than the header announced
    write_binary(&kv, &path, true).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"three 1 2 3\n");
    std::fs::write(&path, &bytes).unwrap();
    let e = read_binary(&path).unwrap_err().to_string();
    assert!(e.contains("more bytes after the 2 vectors"), "{e}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn non_finite_values_in_vector_files_are_errors() {
    let path = temp_path("nan.txt");
    std::fs::write(&path, "2 2\na 1 2\nb nan 3\n").unwrap();
    let e = read_text(&path).unwrap_err().to_string();
    assert!(e.contains(":3:") && e.contains("not finite"), "{e}");
    let kv = KeyedVectors::new(vec!["a".into(), "b".into()], vec![1.0, 2.0, 3.0, 4.0], 2).unwrap();
    let bin = temp_path("inf.bin");
    write_binary(&kv, &bin, false).unwrap();
    let mut bytes = std::fs::read(&bin).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&bin, &bytes).unwrap();
    let e = read_binary(&bin).unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&bin);
}
