//! Similarity queries on unit-normalised vectors: nearest neighbours, analogies
//! (3CosAdd and 3CosMul), odd-one-out.

use crate::error::{Result, Word2VecError};
use crate::vectors::KeyedVectors;

/// Levy & Goldberg's epsilon in 3CosMul.
pub const COSMUL_EPSILON: f32 = 0.001;

/// Unit-normalised copy of a [`KeyedVectors`] answering similarity queries.
#[derive(Debug, Clone)]
pub struct QueryIndex<'a> {
    kv: &'a KeyedVectors,
    unit: Vec<f32>,
}

/// Normalises `v` in place (a zero vector stays zero).
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl<'a> QueryIndex<'a> {
    /// Normalises every vector of `kv`.
    pub fn new(kv: &'a KeyedVectors) -> Self {
        let mut unit = kv.vectors().to_vec();
        let d = kv.dim().max(1);
        unit.chunks_mut(d).for_each(normalise);
        Self { kv, unit }
    }

    /// The underlying vectors.
    pub fn vectors(&self) -> &KeyedVectors {
        self.kv
    }

    /// Unit vector of the word at index `i`.
    pub fn unit(&self, i: usize) -> &[f32] {
        let d = self.kv.dim();
        &self.unit[i * d..(i + 1) * d]
    }

    fn idx(&self, word: &str) -> Result<usize> {
        self.kv
            .index(word)
            .ok_or_else(|| Word2VecError::UnknownWord(word.to_string()))
    }

    /// Cosine similarity of two words.
    pub fn similarity(&self, a: &str, b: &str) -> Result<f32> {
        Ok(dot(self.unit(self.idx(a)?), self.unit(self.idx(b)?)))
    }

    /// Cosines of `query` against the first `limit` words (all when `None`).
    fn cosines(&self, query: &[f32], limit: Option<usize>) -> Vec<f32> {
        let n = limit.map_or(self.kv.len(), |l| l.min(self.kv.len()));
        (0..n).map(|i| dot(self.unit(i), query)).collect()
    }

    /// The `n` best-scoring indices (descending score, ties by index), skipping `exclude`.
    fn top(scores: &[f32], n: usize, exclude: &[usize]) -> Vec<(usize, f32)> {
        let mut order: Vec<usize> = (0..scores.len()).filter(|i| !exclude.contains(i)).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order.truncate(n);
        order.into_iter().map(|i| (i, scores[i])).collect()
    }

    fn named(&self, top: Vec<(usize, f32)>) -> Vec<(String, f32)> {
        top.into_iter()
            .map(|(i, s)| (self.kv.words()[i].clone(), s))
            .collect()
    }

    /// The `n` words most cosine-similar to `word`, excluding `word` itself.
    pub fn most_similar(&self, word: &str, n: usize) -> Result<Vec<(String, f32)>> {
        let i = self.idx(word)?;
        let scores = self.cosines(self.unit(i), None);
        Ok(self.named(Self::top(&scores, n, &[i])))
    }

    /// 3CosAdd scores of every candidate (among the first `limit` words) for `a : b :: c : ?`:
    /// `cos(d, b) - cos(d, a) + cos(d, c)`.
    pub(crate) fn cos_add_indices(
        &self,
        a: usize,
        b: usize,
        c: usize,
        n: usize,
        limit: Option<usize>,
    ) -> Vec<(usize, f32)> {
        let sa = self.cosines(self.unit(a), limit);
        let sb = self.cosines(self.unit(b), limit);
        let sc = self.cosines(self.unit(c), limit);
        let scores: Vec<f32> = (0..sa.len()).map(|i| sb[i] - sa[i] + sc[i]).collect();
        Self::top(&scores, n, &[a, b, c])
    }

    /// Analogy `a : b :: c : ?` with 3CosAdd (`argmax cos(d,b) - cos(d,a) + cos(d,c)`),
    /// excluding `a`, `b`, `c`; the `n` best answers.
    pub fn analogy_cos_add(
        &self,
        a: &str,
        b: &str,
        c: &str,
        n: usize,
    ) -> Result<Vec<(String, f32)>> {
        let (ia, ib, ic) = (self.idx(a)?, self.idx(b)?, self.idx(c)?);
        Ok(self.named(self.cos_add_indices(ia, ib, ic, n, None)))
    }

    /// Analogy `a : b :: c : ?` with 3CosMul (Levy & Goldberg 2014): with cosines shifted to
    /// `[0, 1]` by `(cos + 1) / 2`, `argmax cos(d,b) * cos(d,c) / (cos(d,a) + 0.001)`, excluding
    /// `a`, `b`, `c`.
    pub fn analogy_cos_mul(
        &self,
        a: &str,
        b: &str,
        c: &str,
        n: usize,
    ) -> Result<Vec<(String, f32)>> {
        let (ia, ib, ic) = (self.idx(a)?, self.idx(b)?, self.idx(c)?);
        let shift = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| (x + 1.0) / 2.0).collect() };
        let sa = shift(self.cosines(self.unit(ia), None));
        let sb = shift(self.cosines(self.unit(ib), None));
        let sc = shift(self.cosines(self.unit(ic), None));
        let scores: Vec<f32> = (0..sa.len())
            .map(|i| sb[i] * sc[i] / (sa[i] + COSMUL_EPSILON))
            .collect();
        Ok(self.named(Self::top(&scores, n, &[ia, ib, ic])))
    }

    /// The word that fits least: the one whose unit vector has the lowest cosine with the mean
    /// of the unit vectors of `words` (gensim's `doesnt_match`).
    pub fn doesnt_match(&self, words: &[&str]) -> Result<String> {
        if words.is_empty() {
            return Err(Word2VecError::Config(
                "doesnt_match needs at least one word".into(),
            ));
        }
        let ids = words
            .iter()
            .map(|w| self.idx(w))
            .collect::<Result<Vec<_>>>()?;
        let d = self.kv.dim();
        let mut mean = vec![0.0f32; d];
        for &i in &ids {
            mean.iter_mut().zip(self.unit(i)).for_each(|(m, x)| *m += x);
        }
        normalise(&mut mean);
        let mut worst = 0;
        let mut worst_score = f32::INFINITY;
        for (k, &i) in ids.iter().enumerate() {
            let s = dot(self.unit(i), &mean);
            if s < worst_score {
                worst_score = s;
                worst = k;
            }
        }
        Ok(words[worst].to_string())
    }
}
