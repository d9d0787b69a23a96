//! BPE training: count pre-tokenised words, then merge the most frequent adjacent pair until the
//! vocabulary is full.
//!
//! Memory is bounded by the distinct words, never the corpus: files are streamed in blocks cut
//! where the pre-tokenizer is known to end a piece ([`WordCounts::add_file`]), and the merge
//! phase works on one entry per distinct word with its count. Pair counts are updated
//! incrementally, only for the words that hold the merged pair (found through a per-pair list of
//! word indices); the best pair comes from a max-heap whose stale entries are re-pushed with their
//! current count when popped (counts only fall between pushes, except for pairs with the new
//! token, which are pushed fresh after each merge).

use std::collections::BinaryHeap;
use std::io::Read;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::bpe::{Bpe, Rank};
use crate::error::{Result, TokenizerError};
use crate::pretokenize::{is_safe_cut, PreTokenizer, Preset};
use crate::tokenizer::Tokenizer;

/// Training options.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Final vocabulary size: 256 byte tokens + merges + special tokens.
    pub vocab_size: usize,
    /// Stop when the best pair occurs fewer times than this (0 or 1: never stop early; HF's
    /// default is 0).
    pub min_frequency: u64,
    /// Special tokens, given the ids after the merged tokens, in this order.
    pub special_tokens: Vec<String>,
    /// How text is split into words.
    pub preset: Preset,
    /// Show an indicatif progress bar on stderr.
    pub show_progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            // 32k: the size the benchmarks compare at
            vocab_size: 32_000,
            min_frequency: 0,
            special_tokens: Vec::new(),
            preset: Preset::Cl100k,
            show_progress: false,
        }
    }
}

impl TrainConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 256 + self.special_tokens.len() {
            return Err(TokenizerError::BadTrainConfig {
                field: "vocab_size",
                message: format!(
                    "{} is below 256 byte tokens + {} special tokens",
                    self.vocab_size,
                    self.special_tokens.len()
                ),
            });
        }
        if self.vocab_size > crate::bpe::MAX_ID as usize + 1 {
            return Err(TokenizerError::BadTrainConfig {
                field: "vocab_size",
                message: format!(
                    "{} is above the limit of {}",
                    self.vocab_size,
                    crate::bpe::MAX_ID as usize + 1
                ),
            });
        }
        let mut seen = FxHashSet::default();
        for s in &self.special_tokens {
            if s.is_empty() || !seen.insert(s) {
                return Err(TokenizerError::BadTrainConfig {
                    field: "special_tokens",
                    message: format!("{s:?} is empty or repeated"),
                });
            }
            // a byte token's own name in tokenizer.json: "a", or "Ġ" for a space
            if let Some(b) = crate::files::gpt2::text_to_bytes(s).filter(|b| b.len() == 1) {
                return Err(TokenizerError::BadTrainConfig {
                    field: "special_tokens",
                    message: format!(
                        "{s:?} is the name of the byte token {} in tokenizer.json; a special \
                         token needs a name no ordinary token has, such as \"<|{s}|>\"",
                        b[0]
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Pre-tokenised words and how often each occurs.
#[derive(Debug)]
pub struct WordCounts {
    pre: PreTokenizer,
    counts: FxHashMap<String, u64>,
}

/// Bytes read from a file at a time.
const BLOCK: usize = 1 << 20;

impl WordCounts {
    /// Empty counts for a preset.
    pub fn new(preset: Preset) -> WordCounts {
        WordCounts {
            pre: PreTokenizer::preset(preset),
            counts: FxHashMap::default(),
        }
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no word was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Every word with its count, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(w, &c)| (w.as_str(), c))
    }

    /// The count of one word.
    pub fn count(&self, word: &str) -> u64 {
        self.counts.get(word).copied().unwrap_or(0)
    }

    /// Counts the words of one text (a document: pieces never span two texts).
    pub fn add_text(&mut self, text: &str) -> Result<()> {
        let counts = &mut self.counts;
        self.pre.for_each_piece(text, |s, e| {
            let w = &text[s..e];
            match counts.get_mut(w) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(w.to_owned(), 1);
                }
            }
        })
    }

    /// Counts the words of a UTF-8 file as one text, reading it in blocks. A block is cut where
    /// [`is_safe_cut`] holds (every preset ends a piece there whatever follows), so the counts
    /// equal those of the whole file read at once. Text with no such place (no ASCII letter,
    /// space, ASCII letter anywhere, as in Chinese without spaces) is held until one comes or
    /// the file ends.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        self.add_file_with_progress(path, &mut |_| {})
    }

    /// [`WordCounts::add_file`], calling `progress(bytes)` after each block is counted.
    pub fn add_file_with_progress(
        &mut self,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let io = |source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut buf: Vec<u8> = Vec::with_capacity(2 * BLOCK);
        let mut done = 0usize; // bytes of the file already counted
        loop {
            let old = buf.len();
            buf.resize(old + BLOCK, 0);
            let n = f.read(&mut buf[old..]).map_err(io)?;
            buf.truncate(old + n);
            let eof = n == 0;
            let cut = if eof { buf.len() } else { last_cut(&buf) };
            if cut > 0 {
                let text = std::str::from_utf8(&buf[..cut]).map_err(|e| {
                    io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not UTF-8 at byte {}", done + e.valid_up_to()),
                    ))
                })?;
                self.add_text(text)?;
                buf.drain(..cut);
                done += cut;
                progress(cut as u64);
            }
            if eof {
                return Ok(());
            }
        }
    }
}

/// The last place in `b` where [`is_safe_cut`] holds, or 0.
fn last_cut(b: &[u8]) -> usize {
    (1..b.len()).rev().find(|&p| is_safe_cut(b, p)).unwrap_or(0)
}

/// Trains on files (each one text).
pub fn train_files(paths: &[impl AsRef<Path>], cfg: &TrainConfig) -> Result<Tokenizer> {
    cfg.validate()?;
    let mut wc = WordCounts::new(cfg.preset);
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p.as_ref()).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(
        cfg.show_progress,
        total,
        "words {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    for p in paths {
        wc.add_file_with_progress(p.as_ref(), &mut |n| bar.inc(n))?;
    }
    bar.finish_and_clear();
    train(&wc, cfg)
}

/// A progress bar on stderr, or a hidden one.
fn progress_bar(show: bool, len: u64, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    // the templates are constants of this file; a bad one only loses the styling
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style);
    }
    b
}

/// Trains on texts from an iterator (each one text).
pub fn train_texts<S: AsRef<str>>(
    texts: impl IntoIterator<Item = S>,
    cfg: &TrainConfig,
) -> Result<Tokenizer> {
    cfg.validate()?;
    let mut wc = WordCounts::new(cfg.preset);
    for t in texts {
        wc.add_text(t.as_ref())?;
    }
    train(&wc, cfg)
}

#[inline(always)]
fn pack(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Learns merges from word counts.
pub fn train(words: &WordCounts, cfg: &TrainConfig) -> Result<Tokenizer> {
    cfg.validate()?;
    let n_merges = cfg.vocab_size - 256 - cfg.special_tokens.len();
    // sorted words: the result must not depend on hash-map iteration order
    let mut list: Vec<(&String, u64)> = words.counts.iter().map(|(w, &c)| (w, c)).collect();
    list.sort_unstable();
    let mut syms: Vec<Vec<u32>> = list
        .iter()
        .map(|(w, _)| w.bytes().map(u32::from).collect())
        .collect();
    let counts: Vec<i64> = list.iter().map(|&(_, c)| c as i64).collect();
    drop(list);

    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut ids: FxHashMap<Vec<u8>, u32> = tokens.iter().cloned().zip(0..).collect();
    let mut merges: Vec<(Rank, Rank)> = Vec::with_capacity(n_merges);

    let mut pair_count: FxHashMap<u64, i64> = FxHashMap::default();
    let mut where_: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    for (w, s) in syms.iter().enumerate() {
        for p in s.windows(2) {
            let k = pack(p[0], p[1]);
            *pair_count.entry(k).or_insert(0) += counts[w];
            let list = where_.entry(k).or_default();
            // consecutive duplicates only: a word is pushed once per pair here
            if list.last() != Some(&(w as u32)) {
                list.push(w as u32);
            }
        }
    }
    // max count first; among equal counts the smallest pair, for determinism
    let mut heap: BinaryHeap<(i64, std::cmp::Reverse<u64>)> = pair_count
        .iter()
        .map(|(&k, &c)| (c, std::cmp::Reverse(k)))
        .collect();

    let bar = progress_bar(
        cfg.show_progress,
        n_merges as u64,
        "merges {bar:40} {pos}/{len} {per_sec} eta {eta}",
    );
    // a merge whose token would have a special token's name in tokenizer.json (a special
    // "the"): never made, so that each name there is one token
    let reserved: FxHashSet<&str> = cfg.special_tokens.iter().map(String::as_str).collect();
    let mut blocked: FxHashSet<u64> = FxHashSet::default();
    let mut stamp = vec![u32::MAX; syms.len()];
    let mut touched: FxHashSet<u64> = FxHashSet::default();
    let min_freq = i64::try_from(cfg.min_frequency.max(1)).unwrap_or(i64::MAX);
    let mut n_tokens = 256usize;
    while n_tokens < 256 + n_merges {
        let Some((c, std::cmp::Reverse(k))) = heap.pop() else {
            break;
        };
        let cur = pair_count.get(&k).copied().unwrap_or(0);
        if cur != c {
            if cur > 0 {
                heap.push((cur, std::cmp::Reverse(k)));
            }
            continue;
        }
        if c < min_freq {
            break;
        }
        if blocked.contains(&k) {
            continue;
        }
        let (a, b) = ((k >> 32) as u32, k as u32);
        let mut joined = tokens[a as usize].clone();
        joined.extend_from_slice(&tokens[b as usize]);
        if !reserved.is_empty()
            && reserved.contains(crate::files::gpt2::bytes_to_text(&joined).as_str())
        {
            blocked.insert(k);
            continue;
        }
        // two different pairs can make the same bytes (a+bc, ab+c): they share one token
        let new = match ids.get(&joined) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                ids.insert(joined.clone(), id);
                tokens.push(joined);
                n_tokens += 1;
                bar.inc(1);
                id
            }
        };
        let m = merges.len() as u32;
        merges.push((a, b));
        touched.clear();
        let list = where_.remove(&k).unwrap_or_default();
        for &w in &list {
            let wi = w as usize;
            if stamp[wi] == m {
                continue;
            }
            stamp[wi] = m;
            let s = &mut syms[wi];
            if !s.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let c = counts[wi];
            for p in s.windows(2) {
                *pair_count.entry(pack(p[0], p[1])).or_insert(0) -= c;
            }
            let mut out = Vec::with_capacity(s.len());
            let mut i = 0;
            while i < s.len() {
                if i + 1 < s.len() && s[i] == a && s[i + 1] == b {
                    out.push(new);
                    i += 2;
                } else {
                    out.push(s[i]);
                    i += 1;
                }
            }
            for p in out.windows(2) {
                let pk = pack(p[0], p[1]);
                *pair_count.entry(pk).or_insert(0) += c;
                if p[0] == new || p[1] == new {
                    let l = where_.entry(pk).or_default();
                    if l.last() != Some(&w) {
                        l.push(w);
                    }
                    touched.insert(pk);
                }
            }
            *s = out;
        }
        pair_count.remove(&k);
        for &pk in &touched {
            if let Some(&c) = pair_count.get(&pk) {
                if c > 0 {
                    heap.push((c, std::cmp::Reverse(pk)));
                }
            }
        }
    }
    bar.finish_and_clear();
    let vocab: Vec<(Vec<u8>, Rank)> = tokens.into_iter().zip(0..).collect();
    let first_special = vocab.len() as Rank;
    let bpe = Bpe::from_merges(vocab, merges, false)?;
    let specials = cfg
        .special_tokens
        .iter()
        .cloned()
        .zip(first_special..)
        .collect();
    Tokenizer::new(bpe, PreTokenizer::preset(cfg.preset), specials)
}
