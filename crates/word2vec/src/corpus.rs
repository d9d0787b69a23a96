//! Streaming a whitespace-tokenised corpus (one sentence per line) and holding it in memory
//! as word indices for training.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{io_err, Result};
use crate::vocab::Vocab;

/// Longest sentence handed to the trainer; longer lines are split into chunks of this many
/// tokens, as gensim's `LineSentence` does.
pub const MAX_SENTENCE_LEN: usize = 10_000;

/// Calls `f` on every sentence of the corpus at `path`, streaming it line by line.
///
/// Tokens are separated by any Unicode whitespace; empty lines are skipped; a line longer than
/// [`MAX_SENTENCE_LEN`] tokens is delivered as several sentences of at most that length.
pub fn for_each_sentence<F: FnMut(&[&str])>(path: &Path, mut f: F) -> Result<()> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for chunk in tokens.chunks(MAX_SENTENCE_LEN) {
            f(chunk);
        }
    }
    Ok(())
}

/// A corpus in memory: every sentence as indices into a [`Vocab`], out-of-vocabulary words
/// dropped (before subsampling, as in gensim).
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    sentences: Vec<Vec<u32>>,
    words: u64,
}

impl Corpus {
    /// Reads the corpus at `path`, keeping only the words of `vocab`.
    pub fn load(path: &Path, vocab: &Vocab) -> Result<Self> {
        let mut corpus = Corpus::default();
        for_each_sentence(path, |sentence| {
            corpus.push_tokens(vocab, sentence.iter().copied())
        })?;
        Ok(corpus)
    }

    /// Builds a corpus from in-memory tokenised sentences (each sentence is split at
    /// [`MAX_SENTENCE_LEN`] tokens, out-of-vocabulary words are dropped).
    pub fn from_sentences<'a, S, I>(vocab: &Vocab, sentences: S) -> Self
    where
        S: IntoIterator<Item = I>,
        I: IntoIterator<Item = &'a str>,
    {
        let mut corpus = Corpus::default();
        for sentence in sentences {
            let tokens: Vec<&str> = sentence.into_iter().collect();
            for chunk in tokens.chunks(MAX_SENTENCE_LEN) {
                corpus.push_tokens(vocab, chunk.iter().copied());
            }
        }
        corpus
    }

    fn push_tokens<'a>(&mut self, vocab: &Vocab, tokens: impl Iterator<Item = &'a str>) {
        let ids: Vec<u32> = tokens.filter_map(|t| vocab.index(t)).collect();
        if !ids.is_empty() {
            self.words += ids.len() as u64;
            self.sentences.push(ids);
        }
    }

    /// The sentences as vocabulary indices.
    pub fn sentences(&self) -> &[Vec<u32>] {
        &self.sentences
    }

    /// Number of in-vocabulary words in the corpus (one epoch, before subsampling).
    pub fn word_count(&self) -> u64 {
        self.words
    }
}
