//! Frequent-word subsampling and the unigram^0.75 negative-sampling distribution.

use crate::rng::Lcg;

/// Probability of keeping one occurrence of a word with `count` occurrences, with word2vec.c /
/// gensim's formula `(sqrt(f / (sample*total)) + 1) * (sample*total) / f`, capped at 1.
/// `sample <= 0` disables subsampling (probability 1).
pub fn keep_probability(count: u64, sample: f64, total: u64) -> f64 {
    if sample <= 0.0 || count == 0 {
        return 1.0;
    }
    let threshold = sample * total as f64;
    let f = count as f64;
    ((f / threshold).sqrt() + 1.0) * threshold / f
}

/// Keep probabilities for every word of a vocabulary (`counts` aligned with it), capped at 1.
pub fn keep_probabilities(counts: &[u64], sample: f64) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| keep_probability(c, sample, total).min(1.0))
        .collect()
}

/// Resolution of the cumulative table (gensim's `cum_table` domain).
const DOMAIN: f64 = 2_147_483_647.0;

/// The negative-sampling distribution `count^0.75 / Σ count^0.75`.
///
/// Kept as a cumulative integer table (gensim's `cum_table`, for [`NegativeTable::probability`])
/// and sampled in O(1) with Walker's alias method: a binary search over the cumulative table
/// was 28% of skip-gram training time (unpredictable branches, a 64-bit division).
#[derive(Debug, Clone)]
pub struct NegativeTable {
    cum: Vec<u64>,
    /// Alias method: keep slot `i` when a uniform 32-bit draw is below `threshold[i]`,
    /// else take `alias[i]`.
    threshold: Vec<u64>,
    alias: Vec<u32>,
}

impl NegativeTable {
    /// Builds the table for `counts` raised to `power` (0.75 in word2vec).
    pub fn new(counts: &[u64], power: f64) -> Self {
        let weights: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cum = weights
            .iter()
            .map(|w| {
                acc += w;
                (acc / sum * DOMAIN).round() as u64
            })
            .collect();
        // Vose's alias construction over the same weights
        let n = weights.len();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|w| w * n as f64 / sum.max(f64::MIN_POSITIVE))
            .collect();
        let mut threshold = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s_i), Some(&l_i)) = (small.pop(), large.last()) {
            threshold[s_i] = (scaled[s_i] * (1u64 << 32) as f64) as u64;
            alias[s_i] = l_i as u32;
            scaled[l_i] -= 1.0 - scaled[s_i];
            if scaled[l_i] < 1.0 {
                large.pop();
                small.push(l_i);
            }
        }
        Self {
            cum,
            threshold,
            alias,
        }
    }

    /// Draws a word index.
    #[inline]
    pub fn sample(&self, rng: &mut Lcg) -> usize {
        let n = self.alias.len() as u64;
        if n == 0 {
            return 0;
        }
        // slot from the high 48 bits by multiply-shift (no division), coin from the next draw
        let slot = (((rng.next_u64() >> 16) as u128 * n as u128) >> 48) as usize;
        let coin = rng.next_u64() >> 32;
        if coin < self.threshold[slot] {
            slot
        } else {
            self.alias[slot] as usize
        }
    }

    /// The probability the table assigns to word `i`.
    pub fn probability(&self, i: usize) -> f64 {
        let lo = if i == 0 { 0 } else { self.cum[i - 1] };
        (self.cum[i] - lo) as f64 / *self.cum.last().unwrap_or(&1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_probability_matches_formula() {
        let total = 1_000_000u64;
        let sample = 1e-3;
        // threshold = 1000
        let cases = [
            (1000u64, (1.0f64 + 1.0) * 1.0),
            (4000, (2.0 + 1.0) * 0.25),
            (100_000, (10.0 + 1.0) * 0.01),
            (250_000, (250.0f64.sqrt() + 1.0) * 0.004),
        ];
        for (count, expected) in cases {
            let got = keep_probability(count, sample, total);
            assert!(
                (got - expected).abs() < 1e-12,
                "count {count}: {got} vs {expected}"
            );
        }
        let caps = keep_probabilities(&[500, 500, 999_000], 1e-3);
        assert_eq!(caps[0], 1.0);
        assert_eq!(caps[1], 1.0);
        let f: f64 = 999_000.0;
        assert!((caps[2] - ((f / 1000.0).sqrt() + 1.0) * 1000.0 / f).abs() < 1e-12);
        assert_eq!(keep_probability(5, 0.0, 10), 1.0);
    }

    #[test]
    fn negative_table_follows_unigram_power() {
        let counts = [100u64, 50, 10, 1];
        let table = NegativeTable::new(&counts, 0.75);
        let z: f64 = counts.iter().map(|&c| (c as f64).powf(0.75)).sum();
        let mut hits = [0usize; 4];
        let mut rng = Lcg::new(1);
        let n = 200_000;
        for _ in 0..n {
            hits[table.sample(&mut rng)] += 1;
        }
        for i in 0..4 {
            let p = (counts[i] as f64).powf(0.75) / z;
            assert!((table.probability(i) - p).abs() < 1e-8);
            let emp = hits[i] as f64 / n as f64;
            assert!((emp - p).abs() < 0.01, "word {i}: {emp} vs {p}");
        }
    }
}
