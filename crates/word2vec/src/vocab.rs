//! Vocabulary: word counts, `min_count`, `max_vocab`, frequency ordering.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use crate::corpus::SentenceReader;
use crate::error::{Result, Word2VecError};

/// rustc's FxHash: the vocabulary is looked up once per corpus token and epoch while training
/// streams the file; std's default SipHash is built to resist hash flooding, which a local
/// corpus does not need, and is slower on short keys.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Hash maps keyed by words.
type WordMap<V> = HashMap<String, V, BuildHasherDefault<FxHasher>>;

/// How the vocabulary is built.
#[derive(Debug, Clone)]
pub struct VocabConfig {
    /// Words occurring fewer times are dropped (default 5).
    pub min_count: u64,
    /// If set, keep only this many most frequent words (after `min_count`).
    pub max_vocab: Option<usize>,
}

impl Default for VocabConfig {
    fn default() -> Self {
        Self {
            min_count: 5,
            max_vocab: None,
        }
    }
}

/// A vocabulary sorted by descending count (ties broken by the word, ascending).
#[derive(Debug, Clone)]
pub struct Vocab {
    words: Vec<String>,
    counts: Vec<u64>,
    index: WordMap<u32>,
    total: u64,
}

impl Vocab {
    /// Counts the words of the corpus at `path` (streamed, see [`SentenceReader`]) and applies
    /// `config`. Memory grows with the number of distinct words, not with the corpus.
    ///
    /// Errors: [`Word2VecError::EmptyCorpus`] when the file has no token,
    /// [`Word2VecError::NoWordAboveMinCount`] when no word reaches `min_count`,
    /// [`Word2VecError::Config`] for a `max_vocab` of 0 (before the file is read).
    pub fn build(path: &Path, config: &VocabConfig) -> Result<Self> {
        if config.max_vocab == Some(0) {
            return Err(Word2VecError::Config(
                "max_vocab 0 keeps no word; give at least 1".into(),
            ));
        }
        let mut counts: WordMap<u64> = WordMap::default();
        let mut reader = SentenceReader::open(path)?;
        while reader.next_sentence()? {
            for w in reader.tokens() {
                if let Some(c) = counts.get_mut(w) {
                    *c += 1;
                } else {
                    counts.insert(w.to_string(), 1);
                }
            }
        }
        if counts.is_empty() {
            return Err(Word2VecError::EmptyCorpus {
                path: path.to_path_buf(),
            });
        }
        let distinct = counts.len();
        Self::from_counts(counts, config).ok_or_else(|| Word2VecError::NoWordAboveMinCount {
            path: path.to_path_buf(),
            min_count: config.min_count,
            distinct,
        })
    }

    /// Builds a vocabulary from `(word, count)` pairs; `None` when no word survives `config`.
    pub fn from_counts<I: IntoIterator<Item = (String, u64)>>(
        counts: I,
        config: &VocabConfig,
    ) -> Option<Self> {
        let mut entries: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= config.min_count.max(1))
            .collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(max) = config.max_vocab {
            entries.truncate(max);
        }
        if entries.is_empty() {
            return None;
        }
        let total = entries.iter().map(|e| e.1).sum();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.0.clone(), i as u32))
            .collect();
        let (words, counts) = entries.into_iter().unzip();
        Some(Self {
            words,
            counts,
            index,
            total,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Always false (a vocabulary has at least one word); present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Index of `word`, if present.
    pub fn index(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The words, most frequent first.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The counts, aligned with [`Vocab::words`].
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Sum of the counts of the retained words.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn fx(s: &str) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(s)
    }

    #[test]
    fn fx_hashed_vocabulary_finds_every_word() {
        // words of every length around the 8-byte chunk size, including ones that differ only
        // by trailing zero bytes, which the length tag keeps apart
        let mut words: Vec<String> = (0..20_000).map(|i| format!("w{i}")).collect();
        words.extend(["", "a", "a\0", "a\0\0", "abcdefgh", "abcdefgh\0", "ü"].map(String::from));
        let counts = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), 1 + i as u64));
        let vocab = Vocab::from_counts(
            counts,
            &VocabConfig {
                min_count: 1,
                max_vocab: None,
            },
        )
        .expect("non-empty");
        assert_eq!(vocab.len(), words.len());
        for (i, w) in vocab.words().iter().enumerate() {
            assert_eq!(vocab.index(w), Some(i as u32));
        }
        assert_eq!(vocab.index("w20000"), None);
        assert_ne!(fx("a"), fx("a\0"));
        assert_ne!(fx("abcdefgh"), fx("abcdefgh\0"));
        let distinct: std::collections::HashSet<u64> = words.iter().map(|w| fx(w)).collect();
        assert_eq!(distinct.len(), words.len());
    }
}
