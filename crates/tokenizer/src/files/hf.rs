//! HF `tokenizers` `tokenizer.json` for byte-level BPE.
//!
//! Supported: model `BPE` (vocab, merges as `"a b"` strings or `["a", "b"]` pairs, the last
//! copy of a merge listed twice winning as in HF, `ignore_merges`), pre-tokenizer `ByteLevel`
//! (GPT-2 regex) or `Sequence[Split(Regex, Isolated)..., ByteLevel(use_regex=false)]` (each
//! Split splitting the pieces of the one before, as in DeepSeek-V3's file; each pattern read as
//! Oniguruma reads it: `X{n,m}+`, line anchors, `\w`), decoder `ByteLevel`, no normalizer (or
//! an empty `Sequence`), no truncation or padding, and added tokens as HF reads them: special ones
//! matched only when allowed, `"special": false` ones in every text; `"normalized": false`
//! ones first, `"normalized": true` ones in the text left; ids as HF gives them (a vocab
//! entry's own, else the next past the vocab, whatever the file says); decoded through the
//! byte-level map; without `lstrip` / `rstrip` / `single_word`.
//! Anything else is refused with the key that holds it, rather than loaded and encoded wrongly.
//! The `post_processor` (`ByteLevel`, `TemplateProcessing`, `RobertaProcessing`,
//! `BertProcessing`, a `Sequence` of them) is read as the ids it adds around one text, which
//! [`Tokenizer::add_special_tokens`] puts in (HF's `add_special_tokens=True`); plain encodings
//! are HF's with `add_special_tokens=False`.

use std::path::Path;

use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use crate::bpe::{MergeRule, Rank};
use crate::error::{Result, TokenizerError};
use crate::files::gpt2::{bytes_to_text, text_to_bytes};
use crate::files::{memory, read_to_string, write};
use crate::pretokenize::{PreTokenizer, Preset};
use crate::tokenizer::{PostProcessor, Tokenizer};
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
    // as HF: the one format version, and no key it does not know
    const KEYS: [&str; 9] = [
        "version",
        "truncation",
        "padding",
        "added_tokens",
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
        "model",
    ];
    if let Some(o) = root.as_object() {
        if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(k, "is not a tokenizer.json key".into()));
        }
    }
    match root.get("version") {
        None => {}
        Some(Value::String(v)) if v == "1.0" => {}
        Some(v) => return Err(bad("version", format!("{v} is not 1.0"))),
    }
    let model = root
        .get("model")
        .ok_or_else(|| bad("model", "missing".into()))?;
    match model.get("type") {
        None => {}
        Some(Value::String(t)) if t == "BPE" => {}
        Some(t) => return Err(bad("model.type", format!("{t} is not BPE"))),
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
    let ignore_merges = match model.get("ignore_merges") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(
                "model.ignore_merges",
                format!("{v} is not true or false"),
            ))
        }
    };
    match root.get("normalizer") {
        None | Some(Value::Null) => {}
        // DeepSeek's files carry an empty one: nothing to do
        Some(v)
            if v.get("type").and_then(Value::as_str) == Some("Sequence")
                && v.get("normalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|l| l.is_empty()) => {}
        Some(v) => return Err(bad("normalizer", format!("{v} is not supported"))),
    }
    // these change what HF's encode gives (cut or padded ids) or decode reads; ferrolab
    // implements neither, so a file with them would encode or decode otherwise than HF
    for key in ["truncation", "padding"] {
        match root.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => return Err(bad(key, format!("{v} is not supported"))),
        }
    }
    match root.get("decoder") {
        Some(d) if d.get("type").and_then(Value::as_str) == Some("ByteLevel") => {}
        None | Some(Value::Null) => {
            return Err(bad(
                "decoder",
                "missing: a byte-level BPE needs a ByteLevel decoder".into(),
            ))
        }
        Some(d) => {
            return Err(bad(
                "decoder",
                format!("{d} is not supported (ByteLevel is)"),
            ))
        }
    }

    let vocab_v = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab", "missing or not an object".into()))?;
    // added tokens in list order: (content, special, normalized); their ids are assigned
    // below as HF assigns them (the ids in the file are not read back by HF either)
    let mut added_list: Vec<(&str, bool, bool)> = Vec::new();
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
            if content.is_empty() {
                return Err(bad(&format!("{key}.content"), "is empty".into()));
            }
            // HF requires an id (and then gives the token its own, see below)
            t.get("id")
                .and_then(Value::as_u64)
                .and_then(|x| Rank::try_from(x).ok())
                .ok_or_else(|| bad(&format!("{key}.id"), "missing or not an id".into()))?;
            // these change how the token is matched; matching it plainly would encode text
            // around it differently from HF, so refuse rather than be silently wrong
            for flag in ["lstrip", "rstrip", "single_word"] {
                match t.get(flag).and_then(Value::as_bool) {
                    Some(false) => {}
                    Some(true) => {
                        return Err(bad(
                            &format!("{key}.{flag}"),
                            "true is not supported".into(),
                        ))
                    }
                    // HF refuses the file without it
                    None => {
                        return Err(bad(
                            &format!("{key}.{flag}"),
                            "missing or not true/false".into(),
                        ))
                    }
                }
            }
            // HF requires both (and refuses the file without them)
            let flag = |name: &str| -> Result<bool> {
                t.get(name).and_then(Value::as_bool).ok_or_else(|| {
                    bad(&format!("{key}.{name}"), "missing or not true/false".into())
                })
            };
            added_list.push((content, flag("special")?, flag("normalized")?));
        }
    }
    let added: FxHashMap<&str, ()> = added_list.iter().map(|&(c, _, _)| (c, ())).collect();
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
    // an added token is often also a vocab entry with the same id (HF's `add_tokens` of a
    // word the vocab has; GPT-2's `<|endoftext|>`). HF's BPE keeps every vocab entry, so BPE
    // can still make it (with `ignore_merges`, a whole piece that is one) and it decodes to
    // its bytes; only an entry with a character outside the byte-level map, which BPE can
    // never make, is left out
    let mut vocab = Vec::with_capacity(vocab_v.len());
    let mut by_text: FxHashMap<&str, Rank> = FxHashMap::default();
    for (k, v) in vocab_v {
        let key = format!("model.vocab.{k}");
        let id = v
            .as_u64()
            .and_then(|x| Rank::try_from(x).ok())
            .ok_or_else(|| bad(&key, format!("{v} is not a token id")))?;
        by_text.insert(k, id);
        let bytes = match text_to_bytes(k) {
            Some(b) => b,
            None if added.contains_key(k.as_str()) => continue,
            None => {
                return Err(bad(
                    &key,
                    "has a character outside the byte-level map".into(),
                ))
            }
        };
        vocab.push((bytes, id));
    }
    // HF's ids for the added tokens: a vocab entry's own id; otherwise the next one, counted
    // from the number of vocab entries (or after the largest id added so far, once that is
    // past it)
    let vocab_len = vocab_v.len() as u64;
    let mut specials: Vec<(String, Rank)> = Vec::new();
    let (mut plain, mut normalized) = (Vec::new(), Vec::new());
    let mut assigned: FxHashMap<&str, Rank> = FxHashMap::default();
    let mut max_added: Option<u64> = None;
    let vocab_ids: rustc_hash::FxHashSet<Rank> = by_text.values().copied().collect();
    for (i, &(content, special, norm)) in added_list.iter().enumerate() {
        let id = if let Some(&id) = by_text.get(content).or_else(|| assigned.get(content)) {
            id // (not counted in the largest added id: HF counts only the ids it adds)
        } else {
            let next = match max_added {
                Some(m) if m >= vocab_len => m + 1,
                _ => vocab_len,
            };
            let id = Rank::try_from(next)
                .map_err(|_| bad(&format!("added_tokens[{i}]"), "too many tokens".into()))?;
            if vocab_ids.contains(&id) {
                return Err(bad(
                    &format!("added_tokens[{i}]"),
                    format!("HF gives it id {id}, which a vocab entry already has"),
                ));
            }
            max_added = Some(max_added.map_or(id as u64, |m| m.max(id as u64)));
            id
        };
        if assigned.insert(content, id).is_some() {
            continue; // listed twice: one token
        }
        specials.push((content.to_string(), id));
        // `"special": false` (HF's default for `add_tokens`): matched in every text
        if !special {
            plain.push(id);
        }
        if norm {
            normalized.push(id);
        }
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
    let tok = Tokenizer::new_sharing_ids(bpe, pre, specials)?
        .with_plain_tokens(&plain)?
        .with_hf_added_tokens(&normalized)?;
    match parse_post_processor(root.get("post_processor"), &bad)? {
        None => Ok(tok),
        Some(post) => tok.with_post_processor(post).map_err(|e| match e {
            TokenizerError::BadVocab(m) => bad("post_processor", m),
            e => e,
        }),
    }
}

/// A `post_processor` as the ids it adds around one text: `ByteLevel` adds none (it only
/// trims offsets), `TemplateProcessing` its `single` template, `RobertaProcessing` and
/// `BertProcessing` `cls` and `sep`, `Sequence` each in turn. Anything else is refused by key.
fn parse_post_processor(
    v: Option<&Value>,
    bad: &dyn Fn(&str, String) -> TokenizerError,
) -> Result<Option<PostProcessor>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut post = PostProcessor {
        json: v.to_string(),
        ..Default::default()
    };
    add_post_processor(v, "post_processor", &mut post, bad)?;
    Ok(Some(post))
}

/// Wraps `post`'s prefix and suffix in what the processor `v` (at `key`) adds.
fn add_post_processor(
    v: &Value,
    key: &str,
    post: &mut PostProcessor,
    bad: &dyn Fn(&str, String) -> TokenizerError,
) -> Result<()> {
    let id_of = |v: Option<&Value>, key: &str| -> Result<Rank> {
        v.and_then(Value::as_u64)
            .and_then(|x| Rank::try_from(x).ok())
            .ok_or_else(|| bad(key, "missing or not a token id".into()))
    };
    let (mut before, mut after) = (Vec::new(), Vec::new());
    match v.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => return Ok(()),
        Some("Sequence") => {
            let list = v
                .get("processors")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("{key}.processors"), "missing".into()))?;
            // HF hands a processor after a template one encoding per template piece, which
            // a second processor that adds tokens wraps piece by piece: only one is read
            let mut adding = 0;
            for (i, p) in list.iter().enumerate() {
                let pkey = format!("{key}.processors[{i}]");
                if p.get("type").and_then(Value::as_str) != Some("ByteLevel") {
                    adding += 1;
                    if adding > 1 {
                        return Err(bad(
                            &pkey,
                            "a second processor that adds tokens is not supported".into(),
                        ));
                    }
                }
                add_post_processor(p, &pkey, post, bad)?;
            }
            return Ok(());
        }
        Some("RobertaProcessing" | "BertProcessing") => {
            // [token, id] pairs: cls A sep
            before.push(id_of(
                v.get("cls").and_then(|p| p.get(1)),
                &format!("{key}.cls"),
            )?);
            after.push(id_of(
                v.get("sep").and_then(|p| p.get(1)),
                &format!("{key}.sep"),
            )?);
        }
        Some("TemplateProcessing") => {
            let single = v
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("{key}.single"), "missing or not a list".into()))?;
            let specials = v.get("special_tokens");
            let mut seen_a = false;
            for (i, piece) in single.iter().enumerate() {
                let pkey = format!("{key}.single[{i}]");
                if let Some(seq) = piece.get("Sequence") {
                    if seq.get("id").and_then(Value::as_str) != Some("A") || seen_a {
                        return Err(bad(&pkey, "a single template takes sequence A once".into()));
                    }
                    seen_a = true;
                } else if let Some(sp) = piece.get("SpecialToken") {
                    let name = sp
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&format!("{pkey}.SpecialToken.id"), "missing".into()))?;
                    // the ids HF puts in are those of the template's own table
                    let skey = format!("{key}.special_tokens.{name}");
                    let ids = specials
                        .and_then(|t| t.get(name))
                        .and_then(|t| t.get("ids"))
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad(&skey, "missing: the template uses it".into()))?;
                    let side = if seen_a { &mut after } else { &mut before };
                    for (j, id) in ids.iter().enumerate() {
                        side.push(id_of(Some(id), &format!("{skey}.ids[{j}]"))?);
                    }
                } else {
                    return Err(bad(&pkey, format!("{piece} is not a template piece")));
                }
            }
            if !seen_a {
                return Err(bad(&format!("{key}.single"), "has no sequence A".into()));
            }
        }
        _ => return Err(bad(key, format!("{v} is not supported"))),
    }
    before.append(&mut post.prefix);
    post.prefix = before;
    post.suffix.append(&mut after);
    Ok(())
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
            let is = |v: &Value, t: &str| v.get("type").and_then(Value::as_str) == Some(t);
            match &list[..] {
                // one Split or several (each splitting the pieces of the one before: DeepSeek's
                // digits, CJK and word splits), then ByteLevel without its own regex
                [splits @ .., bl] if !splits.is_empty() && is(bl, "ByteLevel") => {
                    let last = splits.len();
                    if byte_level(bl, &format!("{key}.pretokenizers[{last}]"))? {
                        return Err(bad(
                            &format!("{key}.pretokenizers[{last}].use_regex"),
                            "a Split before a ByteLevel with its own regex is not supported".into(),
                        ));
                    }
                    let mut chain: Option<PreTokenizer> = None;
                    for (i, split) in splits.iter().enumerate() {
                        let k = format!("{key}.pretokenizers[{i}]");
                        if !is(split, "Split") {
                            return Err(bad(
                                &format!("{k}.type"),
                                "only Split pre-tokenizers may come before ByteLevel".into(),
                            ));
                        }
                        let p = parse_split(split, &k, bad)?;
                        chain = Some(match chain {
                            None => p,
                            Some(c) => c.followed_by(p),
                        });
                    }
                    chain.ok_or_else(|| bad(key, "no Split".into()))
                }
                [bl] if bl.get("type").and_then(Value::as_str) == Some("ByteLevel") => {
                    parse_pre_tokenizer(Some(bl), bad)
                }
                _ => Err(bad(
                    key,
                    "only [Split(Regex), ..., ByteLevel] sequences are supported".into(),
                )),
            }
        }
        other => Err(bad(
            &format!("{key}.type"),
            format!("{other:?} is not supported"),
        )),
    }
}

/// One `Split(Regex, Isolated)` pre-tokenizer (`key` names it in errors).
fn parse_split(
    split: &Value,
    k0: &str,
    bad: &dyn Fn(&str, String) -> TokenizerError,
) -> Result<PreTokenizer> {
    let pattern = split
        .get("pattern")
        .and_then(|p| p.get("Regex"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{k0}.pattern"), "not a Regex pattern".into()))?;
    match split.get("behavior").and_then(Value::as_str) {
        Some("Isolated") => {}
        None => {
            return Err(bad(
                &format!("{k0}.behavior"),
                "missing (Isolated is supported)".into(),
            ))
        }
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
    let fancy = onig_to_fancy(pattern);
    let fancy = if Preset::from_pattern(&fancy).is_some() {
        fancy
    } else {
        onig_classes(&fancy).map_err(|m| bad(&format!("{k0}.pattern"), m))?
    };
    Ok(PreTokenizer::from_pattern(&fancy)?.with_hf_pattern(pattern))
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
        // one name, one id: a special token named like an ordinary token with another id
        // (a special "the") would overwrite that token's entry, and HF would give the
        // special token the ordinary token's id
        if let Some(other) = vocab.get(*name).and_then(Value::as_u64) {
            if other != u64::from(*id) {
                return Err(TokenizerError::BadVocab(format!(
                    "the special token {name:?} (id {id}) has the name of the ordinary token \
                     {other} in tokenizer.json, which can hold only one of them; give the \
                     special token another name"
                )));
            }
        }
        vocab.insert(name.to_string(), (*id).into());
    }
    let added: Vec<Value> = added
        .iter()
        .map(|(name, id)| {
            json!({"id": id, "content": name, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": tok.is_normalized_token(*id),
                   "special": !tok.is_plain_token(*id)})
        })
        .collect();
    let pre = if tok.pre_tokenizer().preset_kind() == Some(Preset::Gpt2) {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
    } else {
        // each Split of the chain, then ByteLevel
        let mut list: Vec<Value> = tok
            .pre_tokenizer()
            .chain()
            .iter()
            .map(|p| {
                json!({"type": "Split", "pattern": {"Regex": p.hf_pattern()},
                       "behavior": "Isolated", "invert": false})
            })
            .collect();
        list.push(
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}),
        );
        json!({"type": "Sequence", "pretokenizers": list})
    };
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!([text(a), text(b)]))
        .collect();
    // (an empty one, `PostProcessor::default()`, adds nothing: no post-processor)
    let post: Value = match tok.post_processor() {
        Some(p) if !p.json().is_empty() => {
            serde_json::from_str(p.json()).map_err(|e| TokenizerError::BadJson {
                path: memory(),
                key: "post_processor".into(),
                message: e.to_string(),
            })?
        }
        _ => Value::Null,
    };
    let root = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
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

/// Oniguruma's `\w` and `\p{Word}` as HF's build reads them, as a class body fancy-regex
/// reads the same way: alphabetic, marks, decimal digits, connector punctuation, and the
/// Latin-1 `²³¹¼½¾` (but not inside a bracket class); fancy-regex's own `\w` also takes the
/// two join controls and not those six (found by comparing HF's pieces at every code point).
const ONIG_WORD: &str = r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE}";

/// Oniguruma's `\w` inside a bracket class (`[\w]`), which leaves the six Latin-1 ones out.
const ONIG_WORD_IN_CLASS: &str = r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}";

/// Rewrites what Oniguruma (HF's engine, Ruby syntax) reads otherwise than fancy-regex in a
/// custom pattern: `^` and `$` are line anchors in Ruby (a leading `(?m)` makes them so in
/// fancy-regex, where `(?m)` means only that); `\w`, `\W`, `\p{Word}`, `\b` and `\B` are given
/// by Oniguruma's word characters. POSIX
/// bracket classes (`[[:space:]]`, Unicode in Oniguruma, ASCII in fancy-regex) and `\W`
/// inside a class are refused.
pub fn onig_classes(pattern: &str) -> std::result::Result<String, String> {
    let mut out = String::from("(?m)");
    let mut depth = 0usize; // nesting of [...] classes
    let mut class_start = false; // just after `[` or `[^`: a `]` there is literal
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                let Some(e) = it.next() else {
                    out.push('\\');
                    break;
                };
                // `\p{Word}` / `\P{Word}`: the same class as `\w` / `\W`
                let e = if matches!(e, 'p' | 'P') && it.clone().take(6).eq("{Word}".chars()) {
                    for _ in 0..6 {
                        it.next();
                    }
                    if e == 'p' {
                        'w'
                    } else {
                        'W'
                    }
                } else {
                    e
                };
                let w = format!("[{ONIG_WORD}]");
                match (e, depth > 0) {
                    ('w', false) => out.push_str(&w),
                    ('W', false) => out.push_str(&format!("[^{ONIG_WORD}]")),
                    ('w', true) => out.push_str(ONIG_WORD_IN_CLASS),
                    ('W', true) => {
                        return Err(r"`\W` inside a character class is not supported".into())
                    }
                    // word boundaries by the same word characters
                    ('b', false) => out.push_str(&format!("(?:(?<={w})(?!{w})|(?<!{w})(?={w}))")),
                    ('B', false) => out.push_str(&format!("(?:(?<={w})(?={w})|(?<!{w})(?!{w}))")),
                    _ => {
                        out.push('\\');
                        out.push(e);
                    }
                }
                class_start = false;
            }
            '[' => {
                // `[:alpha:]`, `[:^space:]` (inside a class in Oniguruma's syntax)
                let ahead: String = it.clone().take(16).collect();
                let posix = ahead
                    .strip_prefix(':')
                    .and_then(|r| r.split_once(":]"))
                    .is_some_and(|(name, _)| {
                        !name.is_empty()
                            && name
                                .trim_start_matches('^')
                                .chars()
                                .all(|c| c.is_ascii_lowercase())
                    });
                if posix {
                    return Err(
                        "POSIX bracket classes ([[:space:]] and the like) are not supported".into(),
                    );
                }
                depth += 1;
                out.push('[');
                if it.peek() == Some(&'^') {
                    out.push('^');
                    it.next();
                }
                class_start = true;
            }
            ']' if depth > 0 && !class_start => {
                depth -= 1;
                out.push(']');
            }
            _ => {
                out.push(c);
                class_start = false;
            }
        }
    }
    Ok(out)
}
