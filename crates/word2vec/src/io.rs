//! Reading and writing the word2vec text and binary formats (gensim-compatible).
//!
//! Text: a `"V D"` header line, then `word v1 ... vD` per line. Binary: the same header line,
//! then per word `word`, one space, `D` little-endian `f32`, and (when written by word2vec.c
//! or by [`write_binary`] with `newline = true`) a `\n`; the reader skips leading newlines
//! before each word, so files with or without them (gensim writes none) are accepted.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use ferrolab_data::{AtomicFile, Links};

use crate::error::{io_err, Result, Word2VecError};
use crate::vectors::KeyedVectors;

fn parse_err(path: &Path, line: usize, problem: String) -> Word2VecError {
    Word2VecError::Parse {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

fn parse_header(path: &Path, header: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = header.split_whitespace().collect();
    let bad = || {
        parse_err(
            path,
            1,
            format!(
                "bad header {:?}: expected \"<vocab size> <dimension>\"",
                header.trim_end()
            ),
        )
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let v = parts[0].parse::<usize>().map_err(|_| bad())?;
    let d = parts[1].parse::<usize>().map_err(|_| bad())?;
    if d == 0 {
        return Err(parse_err(
            path,
            1,
            format!(
                "bad header {:?}: the dimension must be at least 1",
                header.trim_end()
            ),
        ));
    }
    Ok((v, d))
}

/// Writes `kv` in the word2vec text format (atomically: a failed write leaves the file that
/// was there).
pub fn write_text(kv: &KeyedVectors, path: &Path) -> Result<()> {
    let mut w = AtomicFile::create_with(path, Links::Follow).map_err(io_err(path))?;
    let mut go = || -> std::io::Result<()> {
        writeln!(w, "{} {}", kv.len(), kv.dim())?;
        for (i, word) in kv.words().iter().enumerate() {
            w.write_all(word.as_bytes())?;
            for x in kv.row(i) {
                // `{}` prints the shortest representation that parses back to the same f32.
                write!(w, " {x}")?;
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    };
    go().map_err(io_err(path))?;
    w.commit().map_err(io_err(path))
}

/// Reads a word2vec text file.
///
/// Errors name the line: bad header, wrong number of values, unparsable value, fewer or more
/// lines than announced, duplicate word.
pub fn read_text(path: &Path) -> Result<KeyedVectors> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io_err(path))?;
    let (v, d) = parse_header(path, &line)?;
    // the header's numbers are only trusted as far as the file can hold them: every number
    // takes at least two bytes (a digit and a separator)
    let size = std::fs::metadata(path).map_err(io_err(path))?.len() as usize;
    let mut words = Vec::with_capacity(v.min(size / 2));
    let mut vectors = Vec::with_capacity(v.saturating_mul(d).min(size / 2));
    let mut seen = std::collections::HashSet::with_capacity(v.min(size / 2));
    let mut lineno = 1;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io_err(path))? == 0 {
            break;
        }
        lineno += 1;
        if line.trim().is_empty() {
            continue;
        }
        if words.len() == v {
            return Err(parse_err(
                path,
                lineno,
                format!("more than the {v} vectors announced in the header"),
            ));
        }
        let mut parts = line.split_whitespace();
        let word = parts.next().unwrap_or_default();
        let start = vectors.len();
        for tok in parts {
            let x: f32 = tok
                .parse()
                .map_err(|_| parse_err(path, lineno, format!("value {tok:?} is not a number")))?;
            if !x.is_finite() {
                return Err(parse_err(
                    path,
                    lineno,
                    format!("value {tok:?} of word {word:?} is not finite"),
                ));
            }
            vectors.push(x);
        }
        let got = vectors.len() - start;
        if got != d {
            return Err(parse_err(
                path,
                lineno,
                format!("word {word:?} has {got} values, expected {d}"),
            ));
        }
        if !seen.insert(word.to_string()) {
            return Err(parse_err(path, lineno, format!("duplicate word {word:?}")));
        }
        words.push(word.to_string());
    }
    if words.len() != v {
        return Err(parse_err(
            path,
            lineno,
            format!(
                "file ends after {} vectors, header announced {v}",
                words.len()
            ),
        ));
    }
    KeyedVectors::new(words, vectors, d).map_err(|e| parse_err(path, lineno, e.to_string()))
}

/// Writes `kv` in the word2vec binary format; `newline` appends `\n` after each vector
/// (word2vec.c does, gensim does not; both read either).
pub fn write_binary(kv: &KeyedVectors, path: &Path, newline: bool) -> Result<()> {
    let mut w = AtomicFile::create_with(path, Links::Follow).map_err(io_err(path))?;
    let mut go = || -> std::io::Result<()> {
        writeln!(w, "{} {}", kv.len(), kv.dim())?;
        for (i, word) in kv.words().iter().enumerate() {
            w.write_all(word.as_bytes())?;
            w.write_all(b" ")?;
            for x in kv.row(i) {
                w.write_all(&x.to_le_bytes())?;
            }
            if newline {
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    };
    go().map_err(io_err(path))?;
    w.commit().map_err(io_err(path))
}

/// Reads a word2vec binary file. A truncated file or a bad header is reported with the byte
/// offset.
pub fn read_binary(path: &Path) -> Result<KeyedVectors> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io_err(path))?
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    let bin_err = |offset: usize, problem: String| Word2VecError::Binary {
        path: path.to_path_buf(),
        offset: offset as u64,
        problem,
    };
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bin_err(0, "no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..header_end])
        .map_err(|_| bin_err(0, "header is not UTF-8".into()))?;
    let (v, d) = parse_header(path, header)?;
    let mut pos = header_end + 1;
    // a text-format file (a word and d decimal numbers per line) read as binary
    let first = bytes[pos..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    if let Ok(line) = std::str::from_utf8(first) {
        let mut parts = line.split_whitespace();
        let word = parts.next();
        let numbers: Vec<&str> = parts.collect();
        if word.is_some() && numbers.len() == d && numbers.iter().all(|x| x.parse::<f32>().is_ok())
        {
            return Err(bin_err(
                pos,
                "this is the word2vec text format (the first vector is a line of numbers); \
                 read it as text (name it .txt, or leave out --binary)"
                    .into(),
            ));
        }
    }
    // each vector is a word of at least one byte, a space and 4 d bytes
    let need = (v as u128) * (4 * d as u128 + 2);
    if need > (bytes.len() - pos) as u128 {
        return Err(bin_err(
            0,
            format!(
                "the header announces {v} vectors of {d} values, which need at least {need} \
                 bytes; {} follow the header",
                bytes.len() - pos
            ),
        ));
    }
    let mut words = Vec::with_capacity(v);
    let mut vectors = Vec::with_capacity(v * d);
    for i in 0..v {
        while pos < bytes.len() && (bytes[pos] == b'\n' || bytes[pos] == b'\r') {
            pos += 1;
        }
        let start = pos;
        let space = bytes[pos..]
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| {
                bin_err(
                    start,
                    format!("truncated: word {} of {v} has no terminating space", i + 1),
                )
            })?;
        let word = std::str::from_utf8(&bytes[start..start + space])
            .map_err(|_| bin_err(start, format!("word {} is not UTF-8", i + 1)))?;
        if word.is_empty() {
            return Err(bin_err(start, format!("word {} is empty", i + 1)));
        }
        pos = start + space + 1;
        if bytes.len() < pos + 4 * d {
            return Err(bin_err(
                pos,
                format!(
                    "truncated: vector of {word:?} needs {} bytes, {} left",
                    4 * d,
                    bytes.len() - pos
                ),
            ));
        }
        for chunk in bytes[pos..pos + 4 * d].chunks_exact(4) {
            let x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if !x.is_finite() {
                return Err(bin_err(
                    pos,
                    format!("a value of {word:?} is {x}, not finite"),
                ));
            }
            vectors.push(x);
        }
        words.push(word.to_string());
        pos += 4 * d;
    }
    let rest = bytes[pos..]
        .iter()
        .filter(|&&b| !b.is_ascii_whitespace())
        .count();
    if rest > 0 {
        return Err(bin_err(
            pos,
            format!(
                "{rest} more bytes after the {v} vectors the header announces: not a binary \
                 file (a text-format file named .bin?)"
            ),
        ));
    }
    KeyedVectors::new(words, vectors, d).map_err(|e| bin_err(pos, e.to_string()))
}
