//! decode(encode(s)) == s, token offsets, the merge fast paths against the reference merge, and
//! linear work on long pieces with no split points.

mod common;

use std::sync::OnceLock;

use common::{random_scalars, random_text, Rng};
use ferrolab_tokenizer::{builtin, read_hf, SpecialSet, Tokenizer};

fn cl100k() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| builtin("cl100k_base").unwrap())
}

fn trained() -> Tokenizer {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_cl100k.json");
    read_hf(&p).unwrap()
}

#[test]
fn decode_inverts_encode() {
    let mut rng = Rng(21);
    let toks = [cl100k().clone(), builtin("r50k_base").unwrap(), trained()];
    for tok in &toks {
        for _ in 0..300 {
            let t = if rng.below(2) == 0 {
                random_text(&mut rng, 30)
            } else {
                random_scalars(&mut rng, 30)
            };
            let ids = tok.encode(&t, &SpecialSet::All).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), t);
        }
    }
}

#[test]
fn arbitrary_bytes_round_trip() {
    let mut rng = Rng(22);
    for tok in [cl100k().clone(), trained()] {
        for _ in 0..300 {
            let b: Vec<u8> = (0..rng.below(60)).map(|_| rng.next() as u8).collect();
            let ids = tok.encode_bytes(&b, &SpecialSet::None).unwrap();
            assert_eq!(tok.decode_bytes(&ids).unwrap(), b);
        }
    }
}

#[test]
fn decode_reports_split_characters_and_unknown_ids() {
    let tok = cl100k();
    let ids = tok.encode_ordinary("😀").unwrap();
    assert!(ids.len() > 1, "emoji is several byte tokens in cl100k");
    let part = tok.decode_bytes(&ids[..1]).unwrap();
    assert_eq!(part, &"😀".as_bytes()[..part.len()]);
    assert!(tok
        .decode(&ids[..1])
        .unwrap_err()
        .to_string()
        .contains("UTF-8"));
    assert!(tok
        .decode(&[4_000_000])
        .unwrap_err()
        .to_string()
        .contains("4000000"));
}

#[test]
fn offsets_cover_the_text() {
    let mut rng = Rng(23);
    let tok = cl100k();
    for _ in 0..200 {
        let t = random_text(&mut rng, 30) + "<|endoftext|>" + &random_text(&mut rng, 5);
        let enc = tok.encode_with_offsets(&t, &SpecialSet::All).unwrap();
        assert_eq!(enc.ids, tok.encode(&t, &SpecialSet::All).unwrap());
        let mut at = 0;
        for (&id, &(s, e)) in enc.ids.iter().zip(&enc.offsets) {
            assert_eq!(s, at);
            assert_eq!(tok.token_bytes(id).unwrap(), &t.as_bytes()[s..e]);
            at = e;
        }
        assert_eq!(at, t.len());
    }
}

/// Pieces long enough for the heap path, over small alphabets so that many merges apply, agree
/// with the quadratic reference merge, for both merge rules.
#[test]
fn heap_and_scan_merges_agree_with_reference() {
    let mut rng = Rng(24);
    for tok in [cl100k().clone(), trained()] {
        for len in [2usize, 5, 50, 127, 128, 129, 300, 700] {
            for _ in 0..6 {
                let alphabet: &[u8] =
                    [&b"ab"[..], b"the ", b"aaab", b"0123456789", b"e\xcc\x81"][rng.below(5)];
                let piece: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                let (ids, _) = tok.bpe().merge_work(&piece);
                assert_eq!(ids, tok.bpe().encode_piece_reference(&piece), "len {len}");
            }
        }
    }
}

/// A piece with no split points: merge work (heap pushes and pops) grows linearly, 4x the
/// length gives about 4x the work, where tiktoken's scan would give 16x.
#[test]
fn long_piece_work_is_linear() {
    let mut rng = Rng(25);
    let letters: Vec<u8> = (0..1 << 20)
        .map(|_| b"abcdefghijklmnopqrstuvwxyz"[rng.below(26)])
        .collect();
    let random: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    for tok in [cl100k().clone(), trained()] {
        for big in [&letters, &random] {
            let (_, small) = tok.bpe().merge_work(&big[..1 << 18]);
            let (ids, large) = tok.bpe().merge_work(big);
            let ratio = large.steps as f64 / small.steps as f64;
            assert!((3.5..4.5).contains(&ratio), "work ratio {ratio}");
            assert_eq!(tok.bpe().bytes_len(&ids), big.len());
        }
    }
    // and through the whole pipeline: one 1 MB letter run is one piece
    let s = String::from_utf8(letters).unwrap();
    assert_eq!(cl100k().pre_tokenizer().split(&s).unwrap().len(), 1);
    let ids = cl100k().encode_ordinary(&s).unwrap();
    assert_eq!(cl100k().decode(&ids).unwrap(), s);
}
