//! Tokenizers by name (`cl100k_base`, `o200k_base`, `r50k_base`, `p50k_base`) and by path.
//!
//! The rank files of the named vocabularies are not copied into this repository: they come from
//! the `tiktoken-rs` crate, which ships them and compiles them into itself, so they are available
//! offline wherever this crate builds (feature `builtin`, on by default). `tiktoken-rs` keeps its
//! tables private, so the ranks are read back through its public `decode_bytes`, one id at a
//! time; that costs a few hundred milliseconds once per load.

use std::path::Path;

use crate::bpe::{Bpe, Rank};
use crate::error::{Result, TokenizerError};
use crate::files::{gpt2, hf, tiktoken};
use crate::pretokenize::{PreTokenizer, Preset};
use crate::tokenizer::Tokenizer;

/// A named vocabulary.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// The name (`cl100k_base`).
    pub name: &'static str,
    /// Its pre-tokenisation.
    pub preset: Preset,
    /// Its special tokens and their ids.
    pub specials: &'static [(&'static str, Rank)],
    /// One past its largest ordinary id. Ordinary ids may lie beyond a special one: p50k_base
    /// puts its 24 runs of 2-25 spaces (50257-50280) after `<|endoftext|>` (50256).
    pub ordinary_end: Rank,
}

/// The named vocabularies.
pub const BUILTIN: [Builtin; 4] = [
    Builtin {
        name: "cl100k_base",
        preset: Preset::Cl100k,
        specials: &[
            ("<|endoftext|>", 100257),
            ("<|fim_prefix|>", 100258),
            ("<|fim_middle|>", 100259),
            ("<|fim_suffix|>", 100260),
            ("<|endofprompt|>", 100276),
        ],
        ordinary_end: 100_256,
    },
    Builtin {
        name: "o200k_base",
        preset: Preset::O200k,
        specials: &[("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)],
        ordinary_end: 199_998,
    },
    Builtin {
        name: "r50k_base",
        preset: Preset::Gpt2,
        specials: &[("<|endoftext|>", 50256)],
        ordinary_end: 50_256,
    },
    Builtin {
        name: "p50k_base",
        preset: Preset::Gpt2,
        specials: &[("<|endoftext|>", 50256)],
        ordinary_end: 50_281,
    },
];

fn specials(list: &[(&str, Rank)]) -> Vec<(String, Rank)> {
    list.iter().map(|&(n, id)| (n.to_string(), id)).collect()
}

/// A named vocabulary.
#[cfg(feature = "builtin")]
pub fn builtin(name: &str) -> Result<Tokenizer> {
    let Some(&Builtin {
        preset,
        specials: sp,
        ordinary_end,
        ..
    }) = BUILTIN.iter().find(|b| b.name == name)
    else {
        return Err(TokenizerError::UnknownTokenizer(name.to_string()));
    };
    let load = match name {
        "cl100k_base" => tiktoken_rs::cl100k_base,
        "o200k_base" => tiktoken_rs::o200k_base,
        "r50k_base" => tiktoken_rs::r50k_base,
        _ => tiktoken_rs::p50k_base,
    };
    let core = load().map_err(|e| TokenizerError::BadVocab(format!("{name}: {e}")))?;
    // ordinary ranks are 0..ordinary_end but the special ids (which `decode_bytes` also
    // answers); ids without a token are skipped
    let ranks = (0..ordinary_end)
        .filter(|r| sp.iter().all(|&(_, id)| id != *r))
        .filter_map(|r| core.decode_bytes(&[r]).ok().map(|b| (b, r)));
    let bpe = Bpe::from_ranks(ranks)?;
    Tokenizer::new(bpe, PreTokenizer::preset(preset), specials(sp))
}

/// A named vocabulary (unavailable: built without the `builtin` feature).
#[cfg(not(feature = "builtin"))]
pub fn builtin(name: &str) -> Result<Tokenizer> {
    Err(TokenizerError::UnknownTokenizer(name.to_string()))
}

/// Whether the file's first non-blank byte is `{` (a JSON object; a `.tiktoken` line starts
/// with base64, which has no `{`).
fn starts_like_json(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 256];
    // (a pipe is not opened: it would block; reading it is refused by name later)
    let n = ferrolab_data::check_regular(path)
        .and_then(|()| std::fs::File::open(path))
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// A tokenizer by built-in name or by file:
/// - `*.json` (other than `encoder.json`), or any file whose text starts with `{`: HF
///   `tokenizer.json`;
/// - `encoder.json`: GPT-2 files, with `vocab.bpe` beside it;
/// - anything else: a `.tiktoken` rank file, pre-tokenised with `preset`, or when `None` the
///   preset its name suggests (`o200k`, `r50k`/`p50k`/`gpt2`), else cl100k; a file named after
///   a built-in vocabulary gets that vocabulary's special tokens.
pub fn load(name_or_path: &str, preset: Option<Preset>) -> Result<Tokenizer> {
    let path = Path::new(name_or_path);
    if !path.exists() {
        if BUILTIN.iter().any(|b| b.name == name_or_path) {
            let t = builtin(name_or_path)?;
            return Ok(match preset {
                Some(p) => t.with_pre_tokenizer(PreTokenizer::preset(p)),
                None => t,
            });
        }
        return Err(TokenizerError::UnknownTokenizer(name_or_path.to_string()));
    }
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let tok = if file_name == "encoder.json" {
        let merges = path.with_file_name("vocab.bpe");
        let (bpe, sp) = gpt2::read_gpt2(path, &merges)?;
        Tokenizer::new(bpe, PreTokenizer::preset(Preset::Gpt2), sp)?
    } else if file_name.ends_with(".json") || starts_like_json(path) {
        hf::read_hf(path)?
    } else {
        let bpe = tiktoken::read_tiktoken(path)?;
        let known = BUILTIN.iter().find(|b| file_name.starts_with(b.name));
        let guess = if file_name.contains("o200k") {
            Preset::O200k
        } else if ["r50k", "p50k", "gpt2"]
            .iter()
            .any(|k| file_name.contains(k))
        {
            Preset::Gpt2
        } else {
            Preset::Cl100k
        };
        let sp = known.map(|b| specials(b.specials)).unwrap_or_default();
        // specials only where their ids are free (a file can hold more ranks than the original)
        let sp = sp
            .into_iter()
            .filter(|(_, id)| bpe.token_bytes(*id).is_none())
            .collect();
        Tokenizer::new(bpe, PreTokenizer::preset(guess), sp)?
    };
    Ok(match preset {
        Some(p) => tok.with_pre_tokenizer(PreTokenizer::preset(p)),
        None => tok,
    })
}
