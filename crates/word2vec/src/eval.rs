//! Intrinsic evaluation: word analogies (questions-words.txt format) and word-pair similarity
//! (Spearman rank correlation), following gensim's `evaluate_word_analogies` /
//! `evaluate_word_pairs` semantics (case-insensitive, restricted vocabulary).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{io_err, Result, Word2VecError};
use crate::query::QueryIndex;

/// gensim's default `restrict_vocab` for analogies.
pub const DEFAULT_RESTRICT_VOCAB: usize = 30_000;

/// gensim's default `restrict_vocab` for word-pair similarity.
pub const DEFAULT_SIMILARITY_RESTRICT_VOCAB: usize = 300_000;

/// Result of one analogy section.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionResult {
    /// Section name (text after `": "`).
    pub name: String,
    /// Correctly answered questions.
    pub correct: usize,
    /// Wrongly answered questions.
    pub incorrect: usize,
    /// Questions skipped because a word is outside the restricted vocabulary.
    pub skipped: usize,
}

impl SectionResult {
    /// `correct / (correct + incorrect)`, or 0 when nothing was answered.
    pub fn accuracy(&self) -> f64 {
        let n = self.correct + self.incorrect;
        if n == 0 {
            0.0
        } else {
            self.correct as f64 / n as f64
        }
    }
}

/// Result of an analogy evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalogyReport {
    /// Per-section results, in file order.
    pub sections: Vec<SectionResult>,
    /// All sections together (`name` is `"total"`).
    pub total: SectionResult,
}

/// Result of a word-pair similarity evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityReport {
    /// Spearman rank correlation between gold scores and cosines (NaN with fewer than two
    /// pairs or a constant ranking).
    pub spearman: f64,
    /// Pairs with both words known.
    pub pairs: usize,
    /// Pairs skipped because a word is unknown.
    pub oov_pairs: usize,
}

fn parse_err(path: &Path, line: usize, problem: String) -> Word2VecError {
    Word2VecError::Parse {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

/// Lowercased word -> index among the first `restrict` words; the most frequent (lowest index)
/// wins when several words fold to the same lowercase form.
fn folded_vocab(index: &QueryIndex<'_>, restrict: usize) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, w) in index.vectors().words().iter().take(restrict).enumerate() {
        map.entry(w.to_lowercase()).or_insert(i);
    }
    map
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).map_err(io_err(path))?;
    BufReader::new(file)
        .lines()
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_err(path))
}

/// Evaluates analogies from a questions-words.txt style file (`": section"` lines followed
/// by `a b c d` lines).
///
/// Words are lowercased and looked up among the `restrict_vocab` most frequent words; a
/// question with a word outside them is skipped. The answer is the 3CosAdd best word among
/// those words, excluding `a`, `b` and `c`.
pub fn evaluate_analogies(
    index: &QueryIndex<'_>,
    path: &Path,
    restrict_vocab: usize,
) -> Result<AnalogyReport> {
    let vocab = folded_vocab(index, restrict_vocab);
    let words = index.vectors().words();
    let limit = restrict_vocab.min(words.len());
    let mut sections: Vec<SectionResult> = Vec::new();
    for (n, line) in read_lines(path)?.iter().enumerate() {
        let lineno = n + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            sections.push(SectionResult {
                name: name.trim().to_string(),
                correct: 0,
                incorrect: 0,
                skipped: 0,
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(parse_err(
                path,
                lineno,
                "question before any \": section\" line".into(),
            ));
        };
        let q: Vec<String> = line.split_whitespace().map(str::to_lowercase).collect();
        if q.len() != 4 {
            return Err(parse_err(
                path,
                lineno,
                format!("expected 4 words \"a b c d\", got {}", q.len()),
            ));
        }
        let ids: Option<Vec<usize>> = q.iter().map(|w| vocab.get(w).copied()).collect();
        let Some(ids) = ids else {
            section.skipped += 1;
            continue;
        };
        let ranked = index.cos_add_indices(ids[0], ids[1], ids[2], limit, Some(limit));
        let predicted = ranked
            .iter()
            .map(|&(i, _)| words[i].to_lowercase())
            .find(|w| w != &q[0] && w != &q[1] && w != &q[2]);
        if predicted.as_deref() == Some(q[3].as_str()) {
            section.correct += 1;
        } else {
            section.incorrect += 1;
        }
    }
    let mut total = SectionResult {
        name: "total".into(),
        correct: 0,
        incorrect: 0,
        skipped: 0,
    };
    for s in &sections {
        total.correct += s.correct;
        total.incorrect += s.incorrect;
        total.skipped += s.skipped;
    }
    Ok(AnalogyReport { sections, total })
}

/// Average ranks (1-based), ties sharing the mean of their positions.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman rank correlation (Pearson correlation of average ranks); NaN for fewer than two
/// values or a constant input.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 2 || x.len() != y.len() {
        return f64::NAN;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Evaluates word-pair similarities from a file of `word1 word2 score` lines (tab- or
/// space-separated; empty lines and lines starting with `#` ignored). Words are lowercased
/// and looked up among the `restrict_vocab` most frequent words.
pub fn evaluate_similarity(
    index: &QueryIndex<'_>,
    path: &Path,
    restrict_vocab: usize,
) -> Result<SimilarityReport> {
    let vocab = folded_vocab(index, restrict_vocab);
    let mut gold = Vec::new();
    let mut model = Vec::new();
    let mut oov = 0;
    for (n, line) in read_lines(path)?.iter().enumerate() {
        let lineno = n + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = if t.contains('\t') {
            t.split('\t').map(str::trim).collect()
        } else {
            t.split_whitespace().collect()
        };
        if parts.len() != 3 {
            return Err(parse_err(
                path,
                lineno,
                format!("expected \"word1 word2 score\", got {} fields", parts.len()),
            ));
        }
        let score: f64 = parts[2]
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| {
                parse_err(
                    path,
                    lineno,
                    format!("score {:?} is not a finite number", parts[2]),
                )
            })?;
        let (a, b) = (parts[0].to_lowercase(), parts[1].to_lowercase());
        match (vocab.get(&a), vocab.get(&b)) {
            (Some(&ia), Some(&ib)) => {
                gold.push(score);
                let cos: f32 = index
                    .unit(ia)
                    .iter()
                    .zip(index.unit(ib))
                    .map(|(x, y)| x * y)
                    .sum();
                model.push(cos as f64);
            }
            _ => oov += 1,
        }
    }
    Ok(SimilarityReport {
        spearman: spearman(&gold, &model),
        pairs: gold.len(),
        oov_pairs: oov,
    })
}
