//! GPT-2's byte-to-unicode map and its `encoder.json` + `vocab.bpe` files.
//!
//! GPT-2 (and HF `tokenizer.json`) store tokens as text: each byte is mapped to a printable
//! character: the 188 printable bytes to themselves, the other 68 to U+0100 onwards in order.

use std::path::Path;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use crate::bpe::{Bpe, Rank};
use crate::error::{Result, TokenizerError};
use crate::files::{read_to_string, write};

/// byte -> char, and char -> byte.
struct ByteMap {
    to_char: [char; 256],
    to_byte: FxHashMap<char, u8>,
}

fn byte_map() -> &'static ByteMap {
    static M: OnceLock<ByteMap> = OnceLock::new();
    M.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut to_char = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u8 {
            to_char[b as usize] = if printable(b) {
                b as char
            } else {
                next += 1;
                // 256..=323: all valid chars
                char::from_u32(next - 1).unwrap_or('\0')
            };
        }
        let to_byte = to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        ByteMap { to_char, to_byte }
    })
}

/// The GPT-2 text form of a byte string.
pub fn bytes_to_text(bytes: &[u8]) -> String {
    let m = byte_map();
    bytes.iter().map(|&b| m.to_char[b as usize]).collect()
}

/// How HF's byte-level decoder reads a token's text: the bytes of its GPT-2 text form when
/// every character is in the map, else the text's own UTF-8.
pub(crate) fn byte_level_decode(text: &str) -> Vec<u8> {
    text_to_bytes(text).unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The bytes of a GPT-2 text form; `None` if a character is outside the map.
pub fn text_to_bytes(text: &str) -> Option<Vec<u8>> {
    let m = byte_map();
    text.chars().map(|c| m.to_byte.get(&c).copied()).collect()
}

/// Whether a vocabulary string looks like a special token (`<|endoftext|>`), which GPT-2's
/// `encoder.json` lists among ordinary tokens.
pub(crate) fn looks_special(s: &str) -> bool {
    s.len() > 4 && s.starts_with("<|") && s.ends_with("|>")
}

/// Reads GPT-2 `encoder.json` and `vocab.bpe`. Returns the model and the special tokens found in
/// `encoder.json`.
pub fn read_gpt2(encoder_json: &Path, vocab_bpe: &Path) -> Result<(Bpe, Vec<(String, Rank)>)> {
    parse_gpt2(
        &read_to_string(encoder_json)?,
        encoder_json,
        &read_to_string(vocab_bpe)?,
        vocab_bpe,
    )
}

/// Parses the two files' text; the paths are for error messages.
pub fn parse_gpt2(
    encoder: &str,
    encoder_path: &Path,
    merges: &str,
    merges_path: &Path,
) -> Result<(Bpe, Vec<(String, Rank)>)> {
    let bad_json = |key: String, message: String| TokenizerError::BadJson {
        path: encoder_path.to_path_buf(),
        key,
        message,
    };
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(encoder)
        .map_err(|e| bad_json(String::new(), format!("not a JSON object of ids: {e}")))?;
    let mut vocab = Vec::with_capacity(map.len());
    let mut specials = Vec::new();
    let mut by_text: FxHashMap<&str, Rank> = FxHashMap::default();
    for (k, v) in &map {
        let id = v
            .as_u64()
            .and_then(|x| Rank::try_from(x).ok())
            .ok_or_else(|| bad_json(k.clone(), format!("id {v} is not a token id")))?;
        by_text.insert(k, id);
        if looks_special(k) {
            specials.push((k.clone(), id));
            continue;
        }
        let bytes = text_to_bytes(k).ok_or_else(|| {
            bad_json(k.clone(), "has a character outside GPT-2's byte map".into())
        })?;
        vocab.push((bytes, id));
    }
    let list = parse_merge_lines(merges, merges_path, &by_text)?;
    let bpe = Bpe::from_merges(vocab, list, false)?;
    Ok((bpe, specials))
}

/// `vocab.bpe` lines (`#version` header allowed) to id pairs.
fn parse_merge_lines(
    text: &str,
    path: &Path,
    ids: &FxHashMap<&str, Rank>,
) -> Result<Vec<(Rank, Rank)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let bad = |message: String| TokenizerError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let mut it = line.split(' ');
        let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected `left right`".into()));
        };
        let id = |s: &str| {
            ids.get(s)
                .copied()
                .ok_or_else(|| bad(format!("{s:?} is not in encoder.json")))
        };
        out.push((id(a)?, id(b)?));
    }
    Ok(out)
}

/// Writes `encoder.json` and `vocab.bpe` (merges derived for tiktoken vocabularies).
pub fn write_gpt2(
    bpe: &Bpe,
    specials: &[(String, Rank)],
    encoder_json: &Path,
    vocab_bpe: &Path,
) -> Result<()> {
    let mut enc = serde_json::Map::new();
    for (bytes, id) in bpe.vocab() {
        enc.insert(bytes_to_text(bytes), id.into());
    }
    for (name, id) in specials {
        enc.insert(name.clone(), (*id).into());
    }
    let json = serde_json::to_string(&enc).map_err(|e| TokenizerError::BadJson {
        path: encoder_json.to_path_buf(),
        key: String::new(),
        message: e.to_string(),
    })?;
    write(encoder_json, json.as_bytes())?;
    let mut s = String::from("#version: 0.2\n");
    let text = |id: Rank| bytes_to_text(bpe.token_bytes(id).unwrap_or_default());
    for (a, b) in bpe.merges()? {
        s.push_str(&text(a));
        s.push(' ');
        s.push_str(&text(b));
        s.push('\n');
    }
    write(vocab_bpe, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2s() {
        // printable ASCII maps to itself, space (0x20) is the 33rd unprintable byte -> U+0120 'Ġ',
        // newline (0x0a) the 11th -> U+010A 'Ċ': the characters seen in every GPT-2 vocabulary
        assert_eq!(bytes_to_text(b"a!~"), "a!~");
        assert_eq!(bytes_to_text(b" "), "\u{120}");
        assert_eq!(bytes_to_text(b"\n"), "\u{10a}");
        assert_eq!(bytes_to_text(&[0xad]), "\u{143}");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(text_to_bytes(&bytes_to_text(&all)), Some(all));
        assert_eq!(text_to_bytes(" "), None);
    }
}
