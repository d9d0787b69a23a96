//! Vocabulary files: HF tokenizer.json against fixtures made by HF `tokenizers`, round trips of
//! all formats, and errors that name the line or key.

mod common;

use std::path::{Path, PathBuf};

use common::{random_text, Rng};
use ferrolab_tokenizer::{
    builtin, hf_string, parse_hf_str, parse_tiktoken_str, read_gpt2, read_hf, tiktoken_string,
    write_gpt2, MergeRule, SpecialSet, Tokenizer, TokenizerError,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A scratch folder, removed when the test ends.
fn scratch() -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new("tok").unwrap()
}

/// HF's ids and texts for the fixtures (`make_hf_fixture.py`).
fn hf_expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("hf_expected.json")).unwrap()).unwrap()
}

/// A JSON array of token ids.
fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn hf_fixtures_encode_like_hf() {
    let expected = hf_expected();
    let probes: Vec<&str> = expected["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ids = expected["ids"].as_object().unwrap();
    // made by HF (GPT-2 ByteLevel; Split(cl100k)+ByteLevel) and by ferrolab's trainer, encoded by HF
    for name in ["hf_gpt2.json", "hf_cl100k.json", "ours_trained.json"] {
        let tok = read_hf(&fixture(name)).unwrap();
        assert!(matches!(tok.bpe().rule(), MergeRule::Pairs { .. }));
        for (k, p) in probes.iter().enumerate() {
            let want = ids_of(&ids[name][k]);
            let got = tok.encode(p, &SpecialSet::All).unwrap();
            assert_eq!(got, want, "{name}: {p:?}");
            assert_eq!(tok.decode(&got).unwrap(), *p);
        }
    }
}

/// Added tokens with `"special": false` (HF's `add_tokens`) are matched in every text, as HF
/// does: never refused as a disallowed special, and split out by `encode_ordinary` too.
#[test]
fn hf_plain_added_tokens_encode_like_hf() {
    let expected = hf_expected();
    let tok = read_hf(&fixture("hf_added.json")).unwrap();
    assert!(tok.is_plain_token(400) && tok.is_plain_token(401));
    assert!(!tok.is_plain_token(402) && !tok.is_plain_token(0));
    let probes = expected["added_probes"].as_array().unwrap();
    let ids = expected["added_ids"].as_array().unwrap();
    let mut saw_plain = 0;
    for (p, want) in probes.iter().zip(ids) {
        let p = p.as_str().unwrap();
        let want = ids_of(want);
        assert_eq!(tok.encode(p, &SpecialSet::All).unwrap(), want, "{p:?}");
        assert_eq!(tok.decode(&want).unwrap(), p);
        saw_plain += want.iter().filter(|&&i| i == 400 || i == 401).count();
        let has_special = p.contains("<|pad|>") || p.contains("<|endoftext|>");
        if !has_special {
            // no special token in it: the default (specials refused) and ordinary encodings
            // give HF's ids too, plain tokens included
            assert_eq!(tok.encode(p, &SpecialSet::None).unwrap(), want, "{p:?}");
            assert_eq!(tok.encode_ordinary(p).unwrap(), want, "{p:?}");
            let enc = tok.encode_ordinary_with_offsets(p).unwrap();
            assert_eq!(enc.ids, want, "{p:?}");
        } else {
            // a special one is still refused by default, and text to encode_ordinary
            assert!(tok.encode(p, &SpecialSet::None).is_err(), "{p:?}");
            let ordinary = tok.encode_ordinary(p).unwrap();
            assert!(!ordinary.contains(&402) && !ordinary.contains(&0), "{p:?}");
            assert_eq!(tok.decode(&ordinary).unwrap(), p);
        }
    }
    assert!(saw_plain >= 8, "{saw_plain}");
    // written back, the flags survive
    let back = parse_hf_str(&hf_string(&tok).unwrap()).unwrap();
    assert!(back.is_plain_token(400) && back.is_plain_token(401) && !back.is_plain_token(402));
    // a long text with plain tokens in it: the parallel encoder, which cuts the text, gives the
    // same ids (a plain token must not be cut in two)
    let long = "the lab<x>notes in plain text, ".repeat(4000);
    assert_eq!(
        tok.encode_ordinary_parallel(&long).unwrap(),
        tok.encode_ordinary(&long).unwrap()
    );
}

/// Added tokens that are vocabulary entries too, with the same id (HF's `add_tokens` of a word
/// the vocabulary has): two plain ones and a special one, all made by merges. HF keeps them in
/// the BPE (so ` lab` still becomes `Ġlab`), matches their text first, and decodes them
/// through the byte-level decoder (`Ġlab` gives ` lab`).
#[test]
fn hf_added_tokens_that_are_vocab_entries_encode_like_hf() {
    let expected = hf_expected();
    let tok = read_hf(&fixture("hf_added_vocab.json")).unwrap();
    let (the, ing, lab) = (299, 307, 331);
    assert!(tok.is_plain_token(the) && tok.is_plain_token(lab) && !tok.is_plain_token(ing));
    assert_eq!(tok.bpe().token_bytes(lab), Some(&b" lab"[..]));
    let probes = expected["added_probes"].as_array().unwrap();
    let wants = expected["added_vocab_ids"].as_array().unwrap();
    let decoded = expected["added_vocab_decoded"].as_array().unwrap();
    let back = parse_hf_str(&hf_string(&tok).unwrap()).unwrap();
    let mut seen = [0; 3];
    for ((p, want), dec) in probes.iter().zip(wants).zip(decoded) {
        let (p, want) = (p.as_str().unwrap(), ids_of(want));
        assert_eq!(tok.encode(p, &SpecialSet::All).unwrap(), want, "{p:?}");
        assert_eq!(back.encode(p, &SpecialSet::All).unwrap(), want, "{p:?}");
        assert_eq!(tok.decode(&want).unwrap(), dec.as_str().unwrap(), "{p:?}");
        for (k, id) in [the, ing, lab].into_iter().enumerate() {
            seen[k] += want.iter().filter(|&&i| i == id).count();
        }
    }
    assert!(seen.iter().all(|&n| n >= 2), "{seen:?}");
    // the special one is refused by default; where it is absent, the default gives HF's ids
    assert!(tok.encode("singing", &SpecialSet::None).is_err());
    for (p, want) in probes.iter().zip(wants) {
        let p = p.as_str().unwrap();
        if !p.contains("ing") && !p.contains("<|") {
            assert_eq!(
                tok.encode(p, &SpecialSet::None).unwrap(),
                ids_of(want),
                "{p:?}"
            );
        }
    }
    assert!(back.is_plain_token(the) && !back.is_plain_token(ing));
}

/// Files that HF reads its own way (`make_hf_fixture.py` CASES): added tokens in two passes,
/// ids HF assigns itself, a merge listed twice, a Split pattern that Oniguruma reads otherwise
/// than fancy-regex, added tokens decoded through the byte-level map, DeepSeek-V3's layout of
/// three Splits in a row and an empty normalizer, post-processors (a template, a Sequence with
/// one, Roberta's). HF's ids with special tokens split out and as text
/// (`encode_special_tokens`), with the post-processor's additions (`add_special_tokens=True`),
/// and HF's decoded text; the same after a write and a read.
#[test]
fn files_hf_reads_its_own_way_encode_and_decode_like_hf() {
    let expected = hf_expected();
    let cases = expected["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 8);
    for (name, case) in cases {
        let tok = read_hf(&fixture(name)).unwrap();
        let back = parse_hf_str(&hf_string(&tok).unwrap()).unwrap();
        let probes = case["probes"].as_array().unwrap();
        for (k, p) in probes.iter().enumerate() {
            let p = p.as_str().unwrap();
            let all = ids_of(&case["all"][k]);
            let ordinary = ids_of(&case["ordinary"][k]);
            // the pre-tokenizer alone (a piece boundary changes ids only where a merge
            // would cross it)
            let pieces: Vec<&str> = tok
                .pre_tokenizer()
                .split(p)
                .unwrap()
                .into_iter()
                .map(|(a, b)| &p[a..b])
                .collect();
            let want: Vec<&str> = case["pieces"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(pieces, want, "{name}: {p:?}");
            let with_specials = ids_of(&case["with_specials"][k]);
            for t in [&tok, &back] {
                assert_eq!(t.encode(p, &SpecialSet::All).unwrap(), all, "{name}: {p:?}");
                assert_eq!(
                    t.add_special_tokens(&all),
                    with_specials,
                    "{name}: {p:?} with special tokens added"
                );
                assert_eq!(t.encode_ordinary(p).unwrap(), ordinary, "{name}: {p:?}");
                let bytes = t.decode_bytes(&all).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&bytes),
                    case["decoded"][k].as_str().unwrap(),
                    "{name}: {p:?}"
                );
            }
        }
    }
    // the ids HF gives, whatever the file says (it lists 1000, 1007, ...)
    let tok = read_hf(&fixture("hf_added_ids.json")).unwrap();
    let mut added: Vec<u32> = tok.special_tokens().map(|(_, id)| id).collect();
    added.sort_unstable();
    // (`b` and `x` are vocab entries: their vocab ids)
    assert_eq!(added, [0, 66, 88, 400, 401, 402, 403, 404, 405]);
    // post-processors that ferrolab does not read, or templates it cannot apply to one text,
    // are refused by key
    let tpl = std::fs::read_to_string(fixture("hf_template.json")).unwrap();
    let mut v: Value = serde_json::from_str(&tpl).unwrap();
    v["post_processor"]["single"][1]["Sequence"]["id"] = "B".into();
    let e = err_text(parse_hf_str(&v.to_string()));
    assert!(
        e.contains("post_processor.single[1]") && e.contains("sequence A"),
        "{e}"
    );
    let mut v: Value = serde_json::from_str(&tpl).unwrap();
    v["post_processor"]["special_tokens"]["<s>"]["ids"] = serde_json::json!([999]);
    let e = err_text(parse_hf_str(&v.to_string()));
    assert!(e.contains("post_processor") && e.contains("999"), "{e}");
    let mut v: Value = serde_json::from_str(&tpl).unwrap();
    let template = v["post_processor"].clone();
    v["post_processor"] = serde_json::json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        template,
        {"type": "RobertaProcessing", "sep": ["</s>", 401], "cls": ["<s>", 400],
         "trim_offsets": true, "add_prefix_space": false}]});
    let e = err_text(parse_hf_str(&v.to_string()));
    assert!(
        e.contains("post_processor.processors[2]") && e.contains("second"),
        "{e}"
    );
    let mut v: Value = serde_json::from_str(&tpl).unwrap();
    v["post_processor"] = serde_json::json!({"type": "Template"});
    let e = err_text(parse_hf_str(&v.to_string()));
    assert!(
        e.contains("post_processor") && e.contains("not supported"),
        "{e}"
    );
    // a custom pattern HF's engine reads in ways fancy-regex cannot be made to: refused by key
    let onig = std::fs::read_to_string(fixture("hf_onig.json")).unwrap();
    let posix = onig.replacen(r"\\w+|", "[[:alpha:]]+|", 1);
    assert_ne!(posix, onig);
    let e = err_text(parse_hf_str(&posix));
    assert!(
        e.contains("pre_tokenizer.pretokenizers[0].pattern") && e.contains("POSIX"),
        "{e}"
    );
}

#[test]
fn hf_write_read_round_trip() {
    let mut rng = Rng(11);
    for name in ["hf_gpt2.json", "hf_cl100k.json"] {
        let a = read_hf(&fixture(name)).unwrap();
        let b = parse_hf_str(&hf_string(&a).unwrap()).unwrap();
        assert_eq!(a.bpe().len(), b.bpe().len());
        assert_eq!(a.pre_tokenizer().pattern(), b.pre_tokenizer().pattern());
        assert_eq!(a.special_id("<|endoftext|>"), b.special_id("<|endoftext|>"));
        for _ in 0..100 {
            let t = random_text(&mut rng, 20);
            assert_eq!(
                a.encode_ordinary(&t).unwrap(),
                b.encode_ordinary(&t).unwrap()
            );
        }
    }
}

/// A tiktoken vocabulary written as tokenizer.json (derived merges, ignore_merges) and as GPT-2
/// files (derived merges, pair rule) still encodes exactly like tiktoken.
#[test]
fn derived_merges_reproduce_tiktoken() {
    let r50k = builtin("r50k_base").unwrap();
    let oracle = tiktoken_rs::r50k_base_singleton();
    let d = scratch();
    let (enc, bpe) = (d.join("encoder.json"), d.join("vocab.bpe"));
    let specials: Vec<(String, u32)> = r50k
        .special_tokens()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
    write_gpt2(r50k.bpe(), &specials, &enc, &bpe).unwrap();
    let (model, sp) = read_gpt2(&enc, &bpe).unwrap();
    assert_eq!(sp, specials);
    let gpt2 = Tokenizer::new(model, r50k.pre_tokenizer().clone(), sp).unwrap();
    let via_hf = parse_hf_str(&hf_string(&r50k).unwrap()).unwrap();
    let mut rng = Rng(3);
    for _ in 0..300 {
        let t = random_text(&mut rng, 30);
        let want = oracle.encode_ordinary(&t);
        assert_eq!(gpt2.encode_ordinary(&t).unwrap(), want, "{t:?}");
        assert_eq!(via_hf.encode_ordinary(&t).unwrap(), want, "{t:?}");
    }
}

#[test]
fn tiktoken_file_round_trip() {
    let cl = builtin("cl100k_base").unwrap();
    let text = tiktoken_string(cl.bpe()).unwrap();
    // the same file as tiktoken-rs ships: 100256 lines
    assert_eq!(text.lines().count(), 100_256);
    let back = parse_tiktoken_str(&text).unwrap();
    assert_eq!(back.len(), cl.bpe().len());
    for (bytes, id) in cl.bpe().vocab().step_by(97) {
        assert_eq!(back.token_id(bytes), Some(id));
    }
}

/// A `tokenizer.json` saved under another name is still read as one (by its first byte, `{`),
/// not as a `.tiktoken` file.
#[test]
fn a_tokenizer_json_under_another_name_is_read_as_one() {
    let d = scratch();
    let renamed = d.join("my-tokenizer");
    std::fs::copy(fixture("hf_added.json"), &renamed).unwrap();
    let by_name = ferrolab_tokenizer::load(renamed.to_str().unwrap(), None).unwrap();
    let direct = read_hf(&fixture("hf_added.json")).unwrap();
    let text = "the lab<x>notes in plain text";
    assert_eq!(
        by_name.encode(text, &SpecialSet::None).unwrap(),
        direct.encode(text, &SpecialSet::None).unwrap()
    );
    // a rank file under a name without extension is still read as one
    let ranks = d.join("ranks");
    let r50k = builtin("r50k_base").unwrap();
    std::fs::write(&ranks, tiktoken_string(r50k.bpe()).unwrap()).unwrap();
    let t = ferrolab_tokenizer::load(ranks.to_str().unwrap(), None).unwrap();
    assert_eq!(t.bpe().len(), r50k.bpe().len());
}

fn err_text<T>(r: Result<T, TokenizerError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_rank_files_name_the_line() {
    let good: String = (0..=255u8)
        .map(|b| format!("{} {b}\n", ferrolab_tokenizer::files::base64::encode(&[b])))
        .collect();
    assert!(parse_tiktoken_str(&good).is_ok());
    let e = err_text(parse_tiktoken_str(&good.replacen("AA== 0", "A#== 0", 1)));
    assert!(e.contains(":1:") && e.contains("base64"), "{e}");
    let e = err_text(parse_tiktoken_str(&good.replacen("AQ== 1", "AQ== x", 1)));
    assert!(e.contains(":2:") && e.contains("rank"), "{e}");
    let e = err_text(parse_tiktoken_str(&good.replacen("Ag== 2", "Ag==", 1)));
    assert!(e.contains(":3:"), "{e}");
    // a rank or a token given twice: both lines are named
    let e = err_text(parse_tiktoken_str(&format!("{good}YWI= 5\n")));
    assert!(
        e.contains(":257:") && e.contains("rank 5 appears twice (first on line 6)"),
        "{e}"
    );
    let e = err_text(parse_tiktoken_str(&format!("{good}YWI= 300\nYWI= 301\n")));
    assert!(
        e.contains(":258:") && e.contains("\"ab\" (YWI=) appears twice (first on line 257)"),
        "{e}"
    );
    let e = err_text(parse_tiktoken_str(&format!("{good}//4= 300\n//4= 301\n")));
    assert!(
        e.contains(":258:")
            && e.contains("//4= (base64; not UTF-8) appears twice (first on line 257)"),
        "{e}"
    );
    // a line without a token
    let e = err_text(parse_tiktoken_str(&format!("{good} 300\n")));
    assert!(
        e.contains(":257:") && e.contains("expected `base64 rank`"),
        "{e}"
    );
    // lines split on any white space, as tiktoken's loader does; ranks past 32 bits are
    // reported against the limit
    assert!(parse_tiktoken_str(&good.replace(' ', "\t")).is_ok());
    let e = err_text(parse_tiktoken_str(&format!("{good}YWI= 99999999999\n")));
    assert!(e.contains(":257:") && e.contains("limit"), "{e}");
    // a byte without a token is about the whole file, which is named
    let e = err_text(parse_tiktoken_str("YQ== 0\n"));
    assert!(
        e.contains("<memory>") && e.contains("0x00") && e.contains("256"),
        "{e}"
    );
    // a rank that would size a table of billions: refused, not allocated
    let mut big: String = (0..=255u8)
        .map(|b| format!("{} {b}\n", ferrolab_tokenizer::files::base64::encode(&[b])))
        .collect();
    big.push_str("YWI= 4000000000\n");
    let e = err_text(parse_tiktoken_str(&big));
    assert!(
        e.contains(":257:") && e.contains("4000000000") && e.contains("limit"),
        "{e}"
    );
}

#[test]
fn malformed_tokenizer_json_names_the_key() {
    let good = std::fs::read_to_string(fixture("hf_gpt2.json")).unwrap();
    let mut v: Value = serde_json::from_str(&good).unwrap();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["model"]["merges"][3] = Value::from("one two three")),
            "model.merges[3]",
        ),
        (
            Box::new(|v| v["model"]["merges"][4] = serde_json::json!(["Ġ", "nope"])),
            "model.merges[4]",
        ),
        (
            Box::new(|v| v["model"]["vocab"]["Ġt"] = Value::from("x")),
            "model.vocab.Ġt",
        ),
        (
            Box::new(|v| v["model"]["type"] = Value::from("WordPiece")),
            "model.type",
        ),
        (
            Box::new(|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})),
            "pre_tokenizer.type",
        ),
        (
            Box::new(|v| v["normalizer"] = serde_json::json!({"type": "NFC"})),
            "normalizer",
        ),
        (
            Box::new(|v| v["added_tokens"][0]["id"] = Value::from(-1)),
            "added_tokens[0].id",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("model");
            }),
            "model",
        ),
    ];
    for (edit, key) in cases {
        let mut w = v.clone();
        edit(&mut w);
        let e = err_text(parse_hf_str(&w.to_string()));
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    v["model"]["vocab"].as_object_mut().unwrap().remove("!");
    let e = err_text(parse_hf_str(&v.to_string()));
    assert!(e.contains("model"), "{e}");
    let e = err_text(parse_hf_str("{not json"));
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn malformed_gpt2_files_name_the_line() {
    let d = scratch();
    let (enc, bpe) = (d.join("e2.json"), d.join("v2.bpe"));
    let tok = read_hf(&fixture("hf_gpt2.json")).unwrap();
    write_gpt2(tok.bpe(), &[], &enc, &bpe).unwrap();
    assert!(read_gpt2(&enc, &bpe).is_ok());
    let text = std::fs::read_to_string(&bpe).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "Ġ"; // line 3: one field
    std::fs::write(&bpe, lines.join("\n")).unwrap();
    let e = err_text(read_gpt2(&enc, &bpe));
    assert!(e.contains("v2.bpe:3:"), "{e}");
    std::fs::write(&enc, "[1, 2]").unwrap();
    let e = err_text(read_gpt2(&enc, &bpe));
    assert!(e.contains("e2.json"), "{e}");
}

/// The fuzz targets' property in the normal test suite: corrupted files never panic.
#[test]
fn randomly_corrupted_files_never_panic() {
    let hf = std::fs::read(fixture("hf_gpt2.json")).unwrap();
    let tk: Vec<u8> = (0..=255u8)
        .map(|b| format!("{} {b}\n", ferrolab_tokenizer::files::base64::encode(&[b])))
        .collect::<String>()
        .into_bytes();
    let mut rng = Rng(0xbad);
    for round in 0..300 {
        for base in [&hf, &tk] {
            let mut d = base.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(d.len());
                match rng.below(3) {
                    0 => d[i] = rng.next() as u8,
                    1 => d.truncate(i.max(1)),
                    _ => d.insert(i, b"{}[]\",: 0a=\n"[rng.below(12)]),
                }
            }
            let s = String::from_utf8_lossy(&d);
            if let Ok(t) = parse_hf_str(&s) {
                let _ = t.encode(&random_text(&mut rng, 10), &SpecialSet::All);
            }
            if let Ok(b) = parse_tiktoken_str(&s) {
                assert!(b.len() >= 256, "round {round}");
            }
        }
    }
}

/// HF runs `Split` patterns with Oniguruma, which reads `\p{N}{1,3}+` as `(?:\p{N}{1,3})+`: a
/// file HF wrote with tiktoken's cl100k pattern keeps digit runs whole, and so does this crate
/// when it reads that file. cl100k written by this crate uses `\p{N}{1,3}`, which both engines
/// read as tiktoken does, and it encodes exactly like tiktoken after the round trip.
#[test]
fn oniguruma_quantifiers_and_cl100k_as_tokenizer_json() {
    let hf = read_hf(&fixture("hf_cl100k.json")).unwrap();
    assert_eq!(hf.pre_tokenizer().split("17912026").unwrap(), [(0, 8)]);
    assert!(!hf.pre_tokenizer().is_fast());

    let cl = builtin("cl100k_base").unwrap();
    let json = hf_string(&cl).unwrap();
    assert!(json.contains(r#"\\p{N}{1,3}|"#) && !json.contains(r#"\\p{N}{1,3}+"#));
    let back = parse_hf_str(&json).unwrap();
    assert!(back.pre_tokenizer().is_fast());
    assert_eq!(back.pre_tokenizer().split("17912026").unwrap().len(), 3);
    let oracle = tiktoken_rs::cl100k_base_singleton();
    let mut rng = Rng(41);
    for _ in 0..300 {
        let t = random_text(&mut rng, 30);
        assert_eq!(
            back.encode_ordinary(&t).unwrap(),
            oracle.encode_ordinary(&t),
            "{t:?}"
        );
    }
}

/// An empty post-processor (the only one a library user can build) adds nothing and is
/// written as none.
#[test]
fn an_empty_post_processor_adds_nothing_and_writes_as_none() {
    let tok = read_hf(&fixture("hf_gpt2.json"))
        .unwrap()
        .with_post_processor(ferrolab_tokenizer::PostProcessor::default())
        .unwrap();
    assert_eq!(tok.add_special_tokens(&[5, 6]), [5, 6]);
    let back = parse_hf_str(&hf_string(&tok).unwrap()).unwrap();
    assert!(back.post_processor().is_none());
}
