//! `.tiktoken` rank files: one token per line, `base64(bytes) rank`.

use std::path::Path;

use rustc_hash::FxHashMap;

use crate::bpe::{Bpe, MergeRule, Rank, MAX_ID};
use crate::error::{Result, TokenizerError};
use crate::files::{base64, memory, read_to_string, write};

/// Parses the text of a rank file; `path` is only for error messages. A bad token, rank, or
/// a rank or token given twice is reported with its line (and the earlier one's).
pub fn parse_tiktoken(text: &str, path: &Path) -> Result<Bpe> {
    let mut ranks = Vec::new();
    // first line of each rank and of each token's bytes, for duplicates
    let mut rank_line: FxHashMap<Rank, usize> = FxHashMap::default();
    let mut bytes_line: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
    for (i, line) in text.lines().enumerate() {
        let bad = |message: String| TokenizerError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        // tiktoken splits a line on any white space
        let mut it = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected `base64 rank`".into()));
        };
        let bytes = base64::decode(tok).ok_or_else(|| bad(format!("bad base64 {tok:?}")))?;
        let limit = || {
            bad(format!(
                "rank {rank} is above the limit of {MAX_ID} (vocabularies have at most a few \
                 hundred thousand tokens)"
            ))
        };
        let rank: Rank = match rank.parse() {
            Ok(r) => r,
            // digits too many for 32 bits
            Err(_) if rank.bytes().all(|b| b.is_ascii_digit()) => return Err(limit()),
            Err(_) => return Err(bad(format!("bad rank {rank:?}"))),
        };
        if bytes.is_empty() {
            return Err(bad(format!("rank {rank} is the empty string")));
        }
        if rank > MAX_ID {
            return Err(limit());
        }
        if let Some(first) = rank_line.insert(rank, i + 1) {
            return Err(bad(format!(
                "rank {rank} appears twice (first on line {first})"
            )));
        }
        if let Some(first) = bytes_line.insert(bytes.clone(), i + 1) {
            let shown = match std::str::from_utf8(&bytes) {
                Ok(t) => format!("{t:?} ({tok})"),
                Err(_) => format!("{tok} (base64; not UTF-8)"),
            };
            return Err(bad(format!(
                "token {shown} appears twice (first on line {first})"
            )));
        }
        ranks.push((bytes, rank));
    }
    // what is left is about the whole file (a byte with no token)
    Bpe::from_ranks(ranks).map_err(|e| match e {
        TokenizerError::BadVocab(m) => TokenizerError::BadVocab(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// Reads a rank file.
pub fn read_tiktoken(path: &Path) -> Result<Bpe> {
    parse_tiktoken(&read_to_string(path)?, path)
}

/// Parses rank-file text held in memory.
pub fn parse_tiktoken_str(text: &str) -> Result<Bpe> {
    parse_tiktoken(text, &memory())
}

/// The rank file text of a vocabulary (by id). Only tiktoken-rule vocabularies have ranks that
/// mean the same thing in a rank file; writing a merge-list vocabulary would change its
/// encodings, so that is an error.
pub fn tiktoken_string(bpe: &Bpe) -> Result<String> {
    if *bpe.rule() != MergeRule::ByteRanks {
        return Err(TokenizerError::BadVocab(
            "a merge-list vocabulary cannot be written as ranks without changing its encodings; write tokenizer.json".into(),
        ));
    }
    let mut s = String::new();
    for (bytes, id) in bpe.vocab() {
        s.push_str(&base64::encode(bytes));
        s.push(' ');
        s.push_str(&id.to_string());
        s.push('\n');
    }
    Ok(s)
}

/// Writes a rank file.
pub fn write_tiktoken(bpe: &Bpe, path: &Path) -> Result<()> {
    write(path, tiktoken_string(bpe)?.as_bytes())
}
