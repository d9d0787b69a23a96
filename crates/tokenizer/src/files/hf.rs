//! HF `tokenizers` `tokenizer.json` for byte-level BPE.
//!
//! Supported: model `BPE` (vocab, merges as `"a b"` strings or `["a", "b"]` pairs,
//! `ignore_merges`), pre-tokenizer `ByteLevel` (GPT-2 regex) or `Sequence[Split(Regex,
//! Isolated), ByteLevel(use_regex=false)]`, added tokens (special ones as special tokens,
//! `"special": false` ones as plain tokens matched in every text; without `lstrip` / `rstrip`
//! / `single_word`), no normalizer.
//! Anything else is refused with the key that holds it, rather than loaded and encoded wrongly.

use std::path::Path;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{json, Value};

use crate::bpe::{MergeRule, Rank};
use crate::error::{Result, TokenizerError};
use crate::files::gpt2::{bytes_to_text, text_to_bytes};
use crate::files::{memory, read_to_string, write};
use crate::pretokenize::{PreTokenizer, Preset};
use crate::tokenizer::Tokenizer;
use crate::Bpe;

/// Reads a `tokenizer.json`.
pub fn read_hf(path: &Path) -> Result<Tokenizer> {
    parse_hf(&read_to_string(path)?, path)
}

/// Parses `tokenizer.json` text held in memory.
pub fn parse_hf_str(text: &str) -> Result<Tokenizer> {
    parse_hf(text, &memory())
}

/// Parses `tokenizer.json` text; `path` is for error messages.
pub fn parse_hf(text: &str, path: &Path) -> Result<Tokenizer> {
    let bad = |key: &str, message: String| TokenizerError::BadJson {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| bad("", format!("not JSON: {e}")))?;
    let model = root
        .get("model")
        .ok_or_else(|| bad("model", "missing".into()))?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(t) => return Err(bad("model.type", format!("{t:?} is not BPE"))),
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix", "dropout"] {
        match model.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => {
                return Err(bad(
                    &format!("model.{key}"),
                    format!("{v} is not supported"),
                ))
            }
        }
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "model.byte_fallback",
            "not supported (byte-level BPE needs none)".into(),
        ));
    }
    let ignore_merges = model
        .get("ignore_merges")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match root.get("normalizer") {
        None | Some(Value::Null) => {}
        Some(v) => return Err(bad("normalizer", format!("{v} is not supported"))),
    }

    let vocab_v = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab", "missing or not an object".into()))?;
    let mut added: FxHashMap<&str, Rank> = FxHashMap::default();
    let mut specials = Vec::new();
    let mut plain = Vec::new();
    if let Some(list) = root.get("added_tokens") {
        let list = list
            .as_array()
            .ok_or_else(|| bad("added_tokens", "not an array".into()))?;
        for (i, t) in list.iter().enumerate() {
            let key = format!("added_tokens[{i}]");
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{key}.content"), "missing".into()))?;
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|x| Rank::try_from(x).ok())
                .ok_or_else(|| bad(&format!("{key}.id"), "missing or not an id".into()))?;
            // these change how the token is matched; matching it plainly would encode text
            // around it differently from HF, so refuse rather than be silently wrong
            for flag in ["lstrip", "rstrip", "single_word"] {
                if t.get(flag).and_then(Value::as_bool) == Some(true) {
                    return Err(bad(
                        &format!("{key}.{flag}"),
                        "true is not supported".into(),
                    ));
                }
            }
            added.insert(content, id);
            specials.push((content.to_string(), id));
            // `"special": false` (HF's default for `add_tokens`): matched in every text
            if t.get("special").and_then(Value::as_bool) == Some(false) {
                plain.push(id);
            }
        }
    }
    let merges_v = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("model.merges", "missing or not an array".into()))?;
    let mut merge_texts = Vec::with_capacity(merges_v.len());
    for (i, m) in merges_v.iter().enumerate() {
        let key = format!("model.merges[{i}]");
        let (a, b) = match m {
            Value::String(s) => {
                let mut it = s.split(' ');
                match (it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), None) => (a, b),
                    _ => return Err(bad(&key, format!("{s:?} is not `left right`"))),
                }
            }
            Value::Array(p) => match (
                p.first().and_then(Value::as_str),
                p.get(1).and_then(Value::as_str),
                p.len(),
            ) {
                (Some(a), Some(b), 2) => (a, b),
                _ => return Err(bad(&key, "is not a pair of strings".into())),
            },
            _ => return Err(bad(&key, "is not a merge".into())),
        };
        merge_texts.push((key, a, b));
    }
    // an added token is often also a vocab entry with the same id. A special one stays out
    // of the BPE (it is matched by its text only), unless BPE needs it: a single byte, or
    // what a merge makes; a plain one (`"special": false`, HF's `add_tokens` of a word the
    // vocab has) stays in, so that BPE still makes it and it decodes to its bytes, as in HF.
    let merge_made: FxHashSet<String> = merge_texts
        .iter()
        .map(|(_, a, b)| format!("{a}{b}"))
        .collect();
    let plain_ids: FxHashSet<Rank> = plain.iter().copied().collect();
    let mut vocab = Vec::with_capacity(vocab_v.len());
    let mut by_text: FxHashMap<&str, Rank> = FxHashMap::default();
    for (k, v) in vocab_v {
        let key = format!("model.vocab.{k}");
        let id = v
            .as_u64()
            .and_then(|x| Rank::try_from(x).ok())
            .ok_or_else(|| bad(&key, format!("{v} is not a token id")))?;
        by_text.insert(k, id);
        let bytes = text_to_bytes(k);
        if added.get(k.as_str()) == Some(&id) {
            let needed = plain_ids.contains(&id)
                || bytes.as_ref().is_some_and(|b| b.len() == 1)
                || merge_made.contains(k.as_str());
            if !needed || bytes.is_none() {
                continue;
            }
        }
        let bytes =
            bytes.ok_or_else(|| bad(&key, "has a character outside the byte-level map".into()))?;
        vocab.push((bytes, id));
    }
    let mut merges = Vec::with_capacity(merge_texts.len());
    for (key, a, b) in &merge_texts {
        let id = |s: &str| {
            by_text
                .get(s)
                .copied()
                .ok_or_else(|| bad(key, format!("{s:?} is not in model.vocab")))
        };
        merges.push((id(a)?, id(b)?));
    }
    let bpe = Bpe::from_merges(vocab, merges, ignore_merges).map_err(|e| match e {
        TokenizerError::BadVocab(m) => bad("model", m),
        e => e,
    })?;
    let pre = parse_pre_tokenizer(root.get("pre_tokenizer"), &bad)?;
    Tokenizer::new_sharing_ids(bpe, pre, specials)?.with_plain_tokens(&plain)
}

fn parse_pre_tokenizer(
    v: Option<&Value>,
    bad: &dyn Fn(&str, String) -> TokenizerError,
) -> Result<PreTokenizer> {
    let key = "pre_tokenizer";
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Err(bad(
            key,
            "missing: a byte-level BPE needs a ByteLevel pre-tokenizer".into(),
        ));
    };
    let byte_level = |v: &Value, key: &str| -> Result<bool> {
        if v.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                &format!("{key}.add_prefix_space"),
                "true is not supported".into(),
            ));
        }
        Ok(v.get("use_regex").and_then(Value::as_bool).unwrap_or(true))
    };
    match v.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => {
            if byte_level(v, key)? {
                Ok(PreTokenizer::preset(Preset::Gpt2))
            } else {
                Err(bad(
                    key,
                    "ByteLevel without its regex does not split words".into(),
                ))
            }
        }
        Some("Sequence") => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("{key}.pretokenizers"), "missing".into()))?;
            match &list[..] {
                [split, bl]
                    if split.get("type").and_then(Value::as_str) == Some("Split")
                        && bl.get("type").and_then(Value::as_str) == Some("ByteLevel") =>
                {
                    let k0 = format!("{key}.pretokenizers[0]");
                    if byte_level(bl, &format!("{key}.pretokenizers[1]"))? {
                        return Err(bad(
                            &format!("{key}.pretokenizers[1].use_regex"),
                            "a Split before a ByteLevel with its own regex is not supported".into(),
                        ));
                    }
                    let pattern = split
                        .get("pattern")
                        .and_then(|p| p.get("Regex"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            bad(&format!("{k0}.pattern"), "not a Regex pattern".into())
                        })?;
                    match split.get("behavior").and_then(Value::as_str) {
                        Some("Isolated") | None => {}
                        Some(b) => {
                            return Err(bad(
                                &format!("{k0}.behavior"),
                                format!("{b:?} is not supported (Isolated is)"),
                            ))
                        }
                    }
                    if split.get("invert").and_then(Value::as_bool) == Some(true) {
                        return Err(bad(&format!("{k0}.invert"), "true is not supported".into()));
                    }
                    PreTokenizer::from_pattern(&onig_to_fancy(pattern))
                }
                [bl] if bl.get("type").and_then(Value::as_str) == Some("ByteLevel") => {
                    parse_pre_tokenizer(Some(bl), bad)
                }
                _ => Err(bad(
                    key,
                    "only [Split(Regex), ByteLevel] sequences are supported".into(),
                )),
            }
        }
        other => Err(bad(
            &format!("{key}.type"),
            format!("{other:?} is not supported"),
        )),
    }
}

/// Rewrites the one Oniguruma reading that differs from fancy-regex in the patterns HF files
/// carry: `X{n,m}+` is `(?:X{n,m})+` in Oniguruma's Ruby syntax (HF's engine), possessive in
/// fancy-regex. Handled for `X` a `\p{..}` class, an escape like `\d`, or a bracket class
/// without nested brackets, which covers the patterns seen in the wild (cl100k's
/// `\p{N}{1,3}+`).
pub fn onig_to_fancy(pattern: &str) -> String {
    const QUANT: &str = r"(\\p\{[^}]*\}|\\[a-zA-Z]|\[[^\[\]]*\])(\{\d+(?:,\d*)?\})\+";
    match fancy_regex::Regex::new(QUANT) {
        Ok(re) => re.replace_all(pattern, "(?:$1$2)+").into_owned(),
        // a constant pattern: cannot fail; if it did, reading the pattern as written is the
        // best remaining choice
        Err(_) => pattern.to_string(),
    }
}

/// The `tokenizer.json` text of a tokenizer. A tiktoken-rule vocabulary is written with derived
/// merges and `ignore_merges: true`, which HF encodes the same way.
pub fn hf_string(tok: &Tokenizer) -> Result<String> {
    let bpe = tok.bpe();
    let ignore_merges = match bpe.rule() {
        MergeRule::ByteRanks => true,
        MergeRule::Pairs { ignore_merges } => *ignore_merges,
    };
    let merges = bpe.merges()?;
    let text = |id: Rank| bytes_to_text(bpe.token_bytes(id).unwrap_or_default());
    let mut vocab = serde_json::Map::new();
    for (bytes, id) in bpe.vocab() {
        vocab.insert(bytes_to_text(bytes), id.into());
    }
    let mut added: Vec<(&str, Rank)> = tok.special_tokens().collect();
    added.sort_by_key(|&(_, id)| id);
    for (name, id) in &added {
        vocab.insert(name.to_string(), (*id).into());
    }
    let added: Vec<Value> = added
        .iter()
        .map(|(name, id)| {
            json!({"id": id, "content": name, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": !tok.is_plain_token(*id)})
        })
        .collect();
    let hf_pattern = match tok.pre_tokenizer().preset_kind() {
        Some(p) => p.hf_pattern(),
        None => tok.pre_tokenizer().pattern().to_string(),
    };
    let pre = if tok.pre_tokenizer().preset_kind() == Some(Preset::Gpt2) {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
    } else {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": hf_pattern},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]})
    };
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!([text(a), text(b)]))
        .collect();
    let root = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges
        }
    });
    serde_json::to_string_pretty(&root).map_err(|e| TokenizerError::BadJson {
        path: memory(),
        key: String::new(),
        message: e.to_string(),
    })
}

/// Writes a `tokenizer.json`.
pub fn write_hf(tok: &Tokenizer, path: &Path) -> Result<()> {
    write(path, hf_string(tok)?.as_bytes())
}
