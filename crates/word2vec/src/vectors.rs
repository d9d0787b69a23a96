//! Word vectors keyed by word (the trained input embeddings).

use std::collections::HashMap;

use crate::error::{Result, Word2VecError};

/// Words and their `dim`-dimensional vectors (row-major), in vocabulary order (most frequent
/// first when produced by training or read from a gensim/word2vec file).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedVectors {
    words: Vec<String>,
    vectors: Vec<f32>,
    dim: usize,
    index: HashMap<String, usize>,
}

impl KeyedVectors {
    /// Builds from words and a row-major matrix; errors when the sizes disagree or a word is
    /// repeated.
    pub fn new(words: Vec<String>, vectors: Vec<f32>, dim: usize) -> Result<Self> {
        if vectors.len() != words.len() * dim {
            return Err(Word2VecError::Config(format!(
                "{} words x {} dims needs {} values, got {}",
                words.len(),
                dim,
                words.len() * dim,
                vectors.len()
            )));
        }
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if index.insert(w.clone(), i).is_some() {
                return Err(Word2VecError::Config(format!("duplicate word {w:?}")));
            }
        }
        Ok(Self {
            words,
            vectors,
            dim,
            index,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there is no word.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The words in order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The row-major matrix of vectors.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Index of `word`, if known.
    pub fn index(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// Vector of the word at `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Vector of `word`, or [`Word2VecError::UnknownWord`].
    pub fn vector(&self, word: &str) -> Result<&[f32]> {
        self.index(word)
            .map(|i| self.row(i))
            .ok_or_else(|| Word2VecError::UnknownWord(word.to_string()))
    }
}
