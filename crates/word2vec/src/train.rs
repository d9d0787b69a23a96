//! Skip-gram / CBOW training with negative sampling or hierarchical softmax, Hogwild SGD over
//! std threads.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::Corpus;
use crate::error::{Result, Word2VecError};
use crate::huffman::Huffman;
use crate::kernels::{hs_targets, ns_targets, targets_step};
use crate::rng::Lcg;
use crate::sampling::{keep_probabilities, NegativeTable};
use crate::vectors::KeyedVectors;
use crate::vocab::Vocab;

/// The architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Predict the centre word from each context word separately.
    SkipGram,
    /// Predict the centre word from the combined context.
    Cbow,
}

/// The output layer / objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Negative sampling with this many negatives per positive.
    NegativeSampling(usize),
    /// Hierarchical softmax over a Huffman tree.
    HierarchicalSoftmax,
}

/// How CBOW combines the context vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CbowCombine {
    /// Mean of the context vectors (the gradient is scaled by `1/count`, as gensim does).
    Mean,
    /// Sum of the context vectors.
    Sum,
}

/// Training hyper-parameters (defaults follow gensim).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Skip-gram or CBOW.
    pub architecture: Architecture,
    /// Negative sampling (default, 5 negatives) or hierarchical softmax.
    pub loss: Loss,
    /// CBOW context combination (default mean).
    pub cbow_combine: CbowCombine,
    /// Vector dimension (default 100).
    pub dim: usize,
    /// Maximum window (default 5); the effective window is `window - b`, `b` uniform in
    /// `[0, window)`.
    pub window: usize,
    /// Subsampling threshold (default 1e-3; `0` disables).
    pub sample: f64,
    /// Initial learning rate; `None` means 0.025 for skip-gram, 0.05 for CBOW.
    pub alpha: Option<f32>,
    /// Final learning rate (default 1e-4), reached linearly over all epochs.
    pub min_alpha: f32,
    /// Passes over the corpus (default 5).
    pub epochs: usize,
    /// Worker threads (default: available parallelism).
    pub threads: usize,
    /// Seed of the weight initialisation and of each thread's generator.
    pub seed: u64,
    /// Show an indicatif progress bar on stderr.
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::SkipGram,
            loss: Loss::NegativeSampling(5),
            cbow_combine: CbowCombine::Mean,
            dim: 100,
            window: 5,
            sample: 1e-3,
            alpha: None,
            min_alpha: 1e-4,
            epochs: 5,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 1,
            progress: false,
        }
    }
}

impl TrainConfig {
    /// The starting learning rate (explicit or the architecture's default).
    pub fn start_alpha(&self) -> f32 {
        self.alpha.unwrap_or(match self.architecture {
            Architecture::SkipGram => 0.025,
            Architecture::Cbow => 0.05,
        })
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainStats {
    /// Corpus words read over all epochs (before subsampling).
    pub words: u64,
    /// Words actually trained on (after subsampling).
    pub effective_words: u64,
    /// Mean log-likelihood per (input, target) group over the last epoch.
    pub last_epoch_loglik: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `words / seconds`.
    pub words_per_sec: f64,
}

/// A matrix shared by all Hogwild workers; the lifetime ties it to the borrowed Vec so the
/// Vec cannot be moved or freed while workers may use it.
struct Shared<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: Hogwild SGD deliberately lets threads read and write the same f32 weights without
// synchronisation (Recht et al. 2011; word2vec.c and gensim do the same). The pointer comes
// from a Vec that outlives every worker (they run inside `std::thread::scope`) and is never
// reallocated meanwhile; races can only lose or mix individual f32 updates, which the
// algorithm tolerates. f32 has no invalid bit patterns.
unsafe impl Sync for Shared<'_> {}
// SAFETY: see the Sync impl; the pointer is only dereferenced inside the scope of its Vec.
unsafe impl Send for Shared<'_> {}

impl<'a> Shared<'a> {
    fn new(v: &'a mut [f32]) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            _borrow: PhantomData,
        }
    }

    /// The whole matrix as a mutable slice.
    ///
    /// # Safety
    /// The backing Vec must outlive the slice; other threads may write concurrently (Hogwild).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self) -> &mut [f32] {
        // SAFETY: ptr/len come from a live Vec (see the Sync impl for the aliasing argument).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Everything a worker needs, read-only.
struct Job<'a> {
    config: &'a TrainConfig,
    keep: Vec<f64>,
    table: Option<NegativeTable>,
    huffman: Option<Huffman>,
    total_words: u64,
    start_alpha: f32,
    processed: AtomicU64,
}

impl Job<'_> {
    fn alpha(&self, processed: u64) -> f32 {
        let progress = processed as f64 / self.total_words.max(1) as f64;
        let a = self.start_alpha as f64
            - (self.start_alpha - self.config.min_alpha) as f64 * progress.min(1.0);
        (a as f32).max(self.config.min_alpha)
    }

    fn fill_targets(&self, word: usize, rng: &mut Lcg, targets: &mut Vec<(usize, f32)>) {
        match (&self.table, &self.huffman) {
            (Some(table), _) => {
                let negative = match self.config.loss {
                    Loss::NegativeSampling(k) => k,
                    Loss::HierarchicalSoftmax => 0,
                };
                ns_targets(word, negative, table, rng, targets)
            }
            (None, Some(h)) => hs_targets(word, h, targets),
            (None, None) => targets.clear(),
        }
    }
}

/// Per-worker result of one epoch.
#[derive(Default)]
struct WorkerStats {
    effective: u64,
    loglik: f64,
    groups: u64,
}

/// Trains word vectors on `corpus` (indices into `vocab`).
///
/// Each epoch, thread `i` of `n` trains on the contiguous share
/// `sentences[i*S/n .. (i+1)*S/n]`, updating the shared weights without locks (Hogwild).
/// With `threads = 1` the result depends only on the seed (bitwise reproducible).
pub fn train(
    corpus: &Corpus,
    vocab: &Vocab,
    config: &TrainConfig,
) -> Result<(KeyedVectors, TrainStats)> {
    if config.dim == 0 || config.window == 0 || config.epochs == 0 || config.threads == 0 {
        return Err(Word2VecError::Config(
            "dim, window, epochs and threads must be positive".into(),
        ));
    }
    if corpus.word_count() == 0 {
        return Err(Word2VecError::Config(
            "the corpus has no in-vocabulary word".into(),
        ));
    }
    let v = vocab.len();
    let dim = config.dim;
    let mut rng = Lcg::new(config.seed);
    let mut syn0: Vec<f32> = (0..v * dim)
        .map(|_| ((rng.uniform() - 0.5) / dim as f64) as f32)
        .collect();
    let mut syn1 = vec![0.0f32; v * dim];
    let (table, huffman) = match config.loss {
        Loss::NegativeSampling(_) => (Some(NegativeTable::new(vocab.counts(), 0.75)), None),
        Loss::HierarchicalSoftmax => (None, Some(Huffman::new(vocab.counts()))),
    };
    let job = Job {
        config,
        keep: keep_probabilities(vocab.counts(), config.sample),
        table,
        huffman,
        total_words: corpus.word_count() * config.epochs as u64,
        start_alpha: config.start_alpha(),
        processed: AtomicU64::new(0),
    };
    let bar = if config.progress {
        let bar = ProgressBar::new(job.total_words);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} words {per_sec} [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let shared0 = Shared::new(&mut syn0);
    let shared1 = Shared::new(&mut syn1);
    let sentences = corpus.sentences();
    let n = config.threads.min(sentences.len()).max(1);
    let mut effective = 0u64;
    let mut last = WorkerStats::default();
    for epoch in 0..config.epochs {
        let results: Vec<WorkerStats> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|t| {
                    // sentences dealt round-robin, so that every thread moves through the corpus
                    // in order, as gensim's job queue does (rather than each training one
                    // contiguous part of it)
                    let share: Vec<&[u32]> = sentences
                        .iter()
                        .skip(t)
                        .step_by(n)
                        .map(|s| s.as_slice())
                        .collect();
                    let (job, s0, s1, bar) = (&job, &shared0, &shared1, &bar);
                    let seed = config
                        .seed
                        .wrapping_add((epoch * n + t) as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(1);
                    s.spawn(move || {
                        // SAFETY: syn0/syn1 outlive this scope; Hogwild aliasing is intended.
                        let (w0, w1) = unsafe { (s0.slice(), s1.slice()) };
                        // the log-likelihood costs two transcendental calls per target: only the
                        // last epoch's, which is the one reported, is computed
                        let with_loss = epoch + 1 == config.epochs;
                        run_worker(job, &share, w0, w1, seed, dim, bar, with_loss)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        last = WorkerStats::default();
        for r in results {
            effective += r.effective;
            last.loglik += r.loglik;
            last.groups += r.groups;
        }
        let elapsed = start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "epoch {} {:.0} words/s",
            epoch + 1,
            job.processed.load(Ordering::Relaxed) as f64 / elapsed
        ));
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let words = job.total_words;
    let stats = TrainStats {
        words,
        effective_words: effective,
        last_epoch_loglik: last.loglik / last.groups.max(1) as f64,
        seconds,
        words_per_sec: words as f64 / seconds.max(1e-9),
    };
    let kv = KeyedVectors::new(vocab.words().to_vec(), syn0, dim)?;
    Ok((kv, stats))
}

/// Words between two updates of the shared progress counter / learning rate.
const PROGRESS_CHUNK: u64 = 10_000;

#[allow(clippy::too_many_arguments)]
fn run_worker(
    job: &Job<'_>,
    sentences: &[&[u32]],
    syn0: &mut [f32],
    syn1: &mut [f32],
    seed: u64,
    dim: usize,
    bar: &ProgressBar,
    with_loss: bool,
) -> WorkerStats {
    let config = job.config;
    let mut rng = Lcg::new(seed);
    let mut stats = WorkerStats::default();
    let mut neu1 = vec![0.0f32; dim];
    let mut neu1e = vec![0.0f32; dim];
    let mut targets: Vec<(usize, f32)> = Vec::new();
    let mut kept: Vec<usize> = Vec::new();
    let mut pending = 0u64;
    let mut alpha = job.alpha(job.processed.load(Ordering::Relaxed));
    for sentence in sentences {
        kept.clear();
        for &w in sentence.iter() {
            let w = w as usize;
            let p = job.keep[w];
            if p >= 1.0 || rng.uniform() < p {
                kept.push(w);
            }
        }
        stats.effective += kept.len() as u64;
        for (pos, &word) in kept.iter().enumerate() {
            let b = rng.below(config.window as u64) as usize;
            let reach = config.window - b;
            let lo = pos.saturating_sub(reach);
            let hi = (pos + reach + 1).min(kept.len());
            match config.architecture {
                Architecture::SkipGram => {
                    for (c, &ctx) in kept.iter().enumerate().take(hi).skip(lo) {
                        if c == pos {
                            continue;
                        }
                        job.fill_targets(word, &mut rng, &mut targets);
                        neu1e.fill(0.0);
                        let h = &syn0[ctx * dim..(ctx + 1) * dim];
                        stats.loglik +=
                            targets_step(h, &mut neu1e, syn1, &targets, alpha, with_loss);
                        stats.groups += 1;
                        for (x, e) in syn0[ctx * dim..(ctx + 1) * dim].iter_mut().zip(&neu1e) {
                            *x += e;
                        }
                    }
                }
                Architecture::Cbow => {
                    neu1.fill(0.0);
                    let mut count = 0usize;
                    for (c, &ctx) in kept.iter().enumerate().take(hi).skip(lo) {
                        if c == pos {
                            continue;
                        }
                        for (a, x) in neu1.iter_mut().zip(&syn0[ctx * dim..(ctx + 1) * dim]) {
                            *a += x;
                        }
                        count += 1;
                    }
                    if count == 0 {
                        continue;
                    }
                    let scale = match config.cbow_combine {
                        CbowCombine::Mean => 1.0 / count as f32,
                        CbowCombine::Sum => 1.0,
                    };
                    if scale != 1.0 {
                        neu1.iter_mut().for_each(|a| *a *= scale);
                    }
                    job.fill_targets(word, &mut rng, &mut targets);
                    neu1e.fill(0.0);
                    stats.loglik +=
                        targets_step(&neu1, &mut neu1e, syn1, &targets, alpha, with_loss);
                    stats.groups += 1;
                    if scale != 1.0 {
                        neu1e.iter_mut().for_each(|e| *e *= scale);
                    }
                    for (c, &ctx) in kept.iter().enumerate().take(hi).skip(lo) {
                        if c == pos {
                            continue;
                        }
                        for (x, e) in syn0[ctx * dim..(ctx + 1) * dim].iter_mut().zip(&neu1e) {
                            *x += e;
                        }
                    }
                }
            }
        }
        pending += sentence.len() as u64;
        if pending >= PROGRESS_CHUNK {
            let done = job.processed.fetch_add(pending, Ordering::Relaxed) + pending;
            bar.inc(pending);
            pending = 0;
            alpha = job.alpha(done);
        }
    }
    job.processed.fetch_add(pending, Ordering::Relaxed);
    bar.inc(pending);
    stats
}
