//! Skip-gram / CBOW training with negative sampling or hierarchical softmax, Hogwild SGD over
//! std threads.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::{Batch, BatchSource, Corpus, FileSource, MemorySource};
use crate::error::{Result, Word2VecError};
use crate::huffman::Huffman;
use crate::kernels::{hs_targets, ns_targets, targets_step, SigmoidTable};
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
    /// Mean of the context vectors; as in word2vec.c and gensim (`cbow_mean=1`) the error is
    /// then added unscaled to every context vector (not the exact gradient, which would divide
    /// it by the context size and train the input vectors markedly worse).
    Mean,
    /// Sum of the context vectors; as in gensim (`cbow_mean=0`) the error is divided by the
    /// context size before it is added to each context vector.
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
    /// Compute the mean log-likelihood of the last epoch ([`TrainStats::last_epoch_loglik`]);
    /// off by default, as in gensim (`compute_loss=False`): two `f64` transcendental calls per
    /// target took a quarter of a hierarchical-softmax epoch.
    pub compute_loss: bool,
}

impl TrainConfig {
    /// Checks the settings before any work: each bad one is named.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("dim", self.dim),
            ("window", self.window),
            ("epochs", self.epochs),
            ("threads", self.threads),
        ] {
            if v == 0 {
                return Err(Word2VecError::Config(format!(
                    "{name} must be at least 1, got 0"
                )));
            }
        }
        if self.dim > MAX_DIM || self.threads > MAX_THREADS {
            return Err(Word2VecError::Config(format!(
                "dim {} and threads {} must be at most {MAX_DIM} and {MAX_THREADS}",
                self.dim, self.threads
            )));
        }
        if !(self.sample.is_finite() && self.sample >= 0.0) {
            return Err(Word2VecError::Config(format!(
                "sample (the subsampling threshold) must be a finite number >= 0, got {}",
                self.sample
            )));
        }
        let alpha = self.start_alpha();
        if !(alpha.is_finite() && alpha >= 0.0) {
            // (0 keeps every vector at its random start, with min_alpha 0 too)
            return Err(Word2VecError::Config(format!(
                "the learning rate alpha must be a finite number >= 0, got {alpha}"
            )));
        }
        if !(self.min_alpha.is_finite() && self.min_alpha >= 0.0) {
            return Err(Word2VecError::Config(format!(
                "min_alpha (the final learning rate) must be a finite number >= 0, got {}",
                self.min_alpha
            )));
        }
        if self.min_alpha > alpha {
            return Err(Word2VecError::Config(format!(
                "min_alpha (the final learning rate) {} is above alpha (the first) {alpha}: give \
                 a min_alpha of at most {alpha}, or a larger alpha",
                self.min_alpha
            )));
        }
        if let Loss::NegativeSampling(0) = self.loss {
            return Err(Word2VecError::Config(
                "negative sampling needs at least one negative".into(),
            ));
        }
        if let Loss::NegativeSampling(k) = self.loss {
            if k > MAX_NEGATIVE {
                // each negative is a dot product and an update per (word, context) pair: a
                // billion of them ran with a progress bar and no end in sight
                return Err(Word2VecError::Config(format!(
                    "negative {k} is above the {MAX_NEGATIVE} negatives per positive ferrolab \
                     accepts (word2vec uses 5-20; 2-5 for large corpora)"
                )));
            }
        }
        Ok(())
    }
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
            compute_loss: false,
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
    /// Mean log-likelihood per (input, target group) over the last epoch, when
    /// [`TrainConfig::compute_loss`] was set.
    pub last_epoch_loglik: Option<f64>,
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
    sigmoid: SigmoidTable,
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

/// Largest vector size accepted (word2vec models use 50-1000).
pub const MAX_DIM: usize = 1 << 16;

/// Most worker threads accepted.
pub const MAX_THREADS: usize = 1024;

/// Most negatives per positive accepted (word2vec's paper uses 5-20 for small corpora, 2-5 for
/// large ones).
pub const MAX_NEGATIVE: usize = 1000;

/// Trains word vectors on an in-memory `corpus` (indices into `vocab`).
///
/// Same algorithm and batching as [`train_file`]: with `threads = 1` both give bitwise the
/// same vectors for the same sentences and seed.
pub fn train(
    corpus: &Corpus,
    vocab: &Vocab,
    config: &TrainConfig,
) -> Result<(KeyedVectors, TrainStats)> {
    if corpus.word_count() == 0 {
        return Err(Word2VecError::Config(
            "the corpus has no in-vocabulary word".into(),
        ));
    }
    train_source(
        MemorySource::new(corpus),
        corpus.word_count(),
        vocab,
        config,
    )
}

/// Trains word vectors on the corpus file at `path` (the file `vocab` was built from with
/// [`Vocab::build`]), streaming it once per epoch: memory is the two `vocab.len() x dim`
/// matrices plus one batch per thread, whatever the corpus size.
///
/// The epoch's word count (for the learning-rate schedule and the progress bar) is
/// `vocab.total()`, the in-vocabulary words of the file.
pub fn train_file(
    path: &Path,
    vocab: &Vocab,
    config: &TrainConfig,
) -> Result<(KeyedVectors, TrainStats)> {
    train_source(FileSource::new(path, vocab), vocab.total(), vocab, config)
}

/// The shared corpus cursor and the first error a worker met reading it.
struct Feed<S> {
    source: S,
    error: Option<Word2VecError>,
}

/// Trains on `source`, which yields `epoch_words` in-vocabulary words per pass.
///
/// Each epoch, the workers take batches of whole sentences (about 10,000 words, gensim's job
/// size) from the shared source in corpus order, as gensim's job queue hands them out, and
/// update the shared weights without locks (Hogwild). With `threads = 1` the result depends
/// only on the seed (bitwise reproducible).
fn train_source<S: BatchSource>(
    source: S,
    epoch_words: u64,
    vocab: &Vocab,
    config: &TrainConfig,
) -> Result<(KeyedVectors, TrainStats)> {
    config.validate()?;
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
        sigmoid: SigmoidTable::new(),
        total_words: epoch_words * config.epochs as u64,
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
    let feed = Mutex::new(Feed {
        source,
        error: None,
    });
    let n = config.threads;
    let mut effective = 0u64;
    // (input, target) updates over all epochs
    let mut trained = 0u64;
    let mut last = WorkerStats::default();
    for epoch in 0..config.epochs {
        {
            let mut f = lock(&feed);
            f.source.rewind()?;
        }
        let results: Vec<Option<WorkerStats>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|t| {
                    let (job, s0, s1, bar, feed) = (&job, &shared0, &shared1, &bar, &feed);
                    let seed = config
                        .seed
                        .wrapping_add((epoch * n + t) as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(1);
                    s.spawn(move || {
                        // SAFETY: syn0/syn1 outlive this scope; Hogwild aliasing is intended.
                        let (w0, w1) = unsafe { (s0.slice(), s1.slice()) };
                        let with_loss = config.compute_loss && epoch + 1 == config.epochs;
                        run_worker(job, feed, w0, w1, seed, dim, bar, with_loss)
                    })
                })
                .collect();
            // a worker that panicked is an error, not an epoch with nothing trained
            handles
                .into_iter()
                .map(|h| h.join().ok())
                .collect::<Vec<_>>()
        });
        if results.iter().any(Option::is_none) {
            bar.abandon();
            return Err(Word2VecError::Config(
                "a training thread failed (panicked); the vectors are not written".into(),
            ));
        }
        let results = results.into_iter().flatten();
        if let Some(e) = lock(&feed).error.take() {
            bar.abandon();
            return Err(e);
        }
        last = WorkerStats::default();
        for r in results {
            effective += r.effective;
            trained += r.groups;
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
    if trained == 0 {
        return Err(Word2VecError::Config(format!(
            "nothing was trained: no word kept had another kept word in its sentence ({effective} \
             words kept of {} read, after min_count and sample), so every vector would be its \
             random start; give a longer text or a lower min_count{}",
            job.processed.load(Ordering::Relaxed),
            if config.sample > 0.0 {
                ", or sample 0 (no subsampling)"
            } else {
                ""
            }
        )));
    }
    let seconds = start.elapsed().as_secs_f64();
    let words = job.processed.load(Ordering::Relaxed);
    let stats = TrainStats {
        words,
        effective_words: effective,
        last_epoch_loglik: config
            .compute_loss
            .then(|| last.loglik / last.groups.max(1) as f64),
        seconds,
        words_per_sec: words as f64 / seconds.max(1e-9),
    };
    if let Some(i) = syn0.iter().position(|x| !x.is_finite()) {
        return Err(Word2VecError::Config(format!(
            "training diverged: the vector of `{}` is not finite; lower alpha (it was {})",
            vocab.words()[i / dim],
            config.start_alpha()
        )));
    }
    let kv = KeyedVectors::new(vocab.words().to_vec(), syn0, dim)?;
    Ok((kv, stats))
}

/// Locks the feed; a worker that panicked while holding it leaves the cursor usable (the
/// data is a file position and an error slot), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reusable per-worker buffers.
struct Scratch {
    neu1: Vec<f32>,
    neu1e: Vec<f32>,
    targets: Vec<(usize, f32)>,
    kept: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
fn run_worker<S: BatchSource>(
    job: &Job<'_>,
    feed: &Mutex<Feed<S>>,
    syn0: &mut [f32],
    syn1: &mut [f32],
    seed: u64,
    dim: usize,
    bar: &ProgressBar,
    with_loss: bool,
) -> WorkerStats {
    let mut rng = Lcg::new(seed);
    let mut stats = WorkerStats::default();
    let mut scratch = Scratch {
        neu1: vec![0.0f32; dim],
        neu1e: vec![0.0f32; dim],
        targets: Vec::new(),
        kept: Vec::new(),
    };
    let mut batch = Batch::default();
    loop {
        {
            let mut f = lock(feed);
            if f.error.is_some() {
                break;
            }
            match f.source.next_batch(&mut batch) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    f.error = Some(e);
                    break;
                }
            }
        }
        // the learning rate of a batch follows the words all workers have finished
        let alpha = job.alpha(job.processed.load(Ordering::Relaxed));
        for sentence in batch.sentences() {
            train_sentence(
                job,
                sentence,
                syn0,
                syn1,
                &mut rng,
                alpha,
                with_loss,
                &mut scratch,
                &mut stats,
            );
        }
        let words = batch.ids.len() as u64;
        job.processed.fetch_add(words, Ordering::Relaxed);
        bar.inc(words);
    }
    stats
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn train_sentence(
    job: &Job<'_>,
    sentence: &[u32],
    syn0: &mut [f32],
    syn1: &mut [f32],
    rng: &mut Lcg,
    alpha: f32,
    with_loss: bool,
    scratch: &mut Scratch,
    stats: &mut WorkerStats,
) {
    let config = job.config;
    let dim = config.dim;
    let Scratch {
        neu1,
        neu1e,
        targets,
        kept,
    } = scratch;
    kept.clear();
    for &w in sentence {
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
                // the Huffman path of the centre word is the same for every context word;
                // negatives are drawn afresh for each (word, context) pair
                let fresh_negatives = job.table.is_some();
                if !fresh_negatives {
                    job.fill_targets(word, rng, targets);
                }
                for (c, &ctx) in kept.iter().enumerate().take(hi).skip(lo) {
                    if c == pos {
                        continue;
                    }
                    if fresh_negatives {
                        job.fill_targets(word, rng, targets);
                    }
                    neu1e.fill(0.0);
                    let h = &syn0[ctx * dim..(ctx + 1) * dim];
                    stats.loglik +=
                        targets_step(&job.sigmoid, h, neu1e, syn1, targets, alpha, with_loss);
                    stats.groups += 1;
                    for (x, e) in syn0[ctx * dim..(ctx + 1) * dim].iter_mut().zip(&*neu1e) {
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
                let inv = 1.0 / count as f32;
                if config.cbow_combine == CbowCombine::Mean {
                    neu1.iter_mut().for_each(|a| *a *= inv);
                }
                job.fill_targets(word, rng, targets);
                neu1e.fill(0.0);
                stats.loglik +=
                    targets_step(&job.sigmoid, neu1, neu1e, syn1, targets, alpha, with_loss);
                stats.groups += 1;
                // gensim's convention (see CbowCombine): only the sum divides the error
                if config.cbow_combine == CbowCombine::Sum {
                    neu1e.iter_mut().for_each(|e| *e *= inv);
                }
                for (c, &ctx) in kept.iter().enumerate().take(hi).skip(lo) {
                    if c == pos {
                        continue;
                    }
                    for (x, e) in syn0[ctx * dim..(ctx + 1) * dim].iter_mut().zip(&*neu1e) {
                        *x += e;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bad setting is named by its own rule.
    #[test]
    fn validate_names_each_bad_setting() {
        TrainConfig::default().validate().unwrap();
        let err = |c: TrainConfig| c.validate().unwrap_err().to_string();
        let e = err(TrainConfig {
            alpha: Some(-1.0),
            ..TrainConfig::default()
        });
        assert!(e.contains("alpha must be a finite number >= 0"), "{e}");
        // alpha 0 under the default min_alpha: both are named, and what to change (it blamed
        // min_alpha alone)
        let e = err(TrainConfig {
            alpha: Some(0.0),
            ..TrainConfig::default()
        });
        assert!(
            e.contains("is above alpha (the first) 0") && e.contains("or a larger alpha"),
            "{e}"
        );
        let e = err(TrainConfig {
            sample: f64::INFINITY,
            ..TrainConfig::default()
        });
        assert!(e.contains("sample") && e.contains("finite"), "{e}");
        let e = err(TrainConfig {
            window: 0,
            ..TrainConfig::default()
        });
        assert!(e.contains("window must be at least 1"), "{e}");
        let e = err(TrainConfig {
            loss: Loss::NegativeSampling(1_000_000_000),
            ..TrainConfig::default()
        });
        assert!(e.contains("negative 1000000000 is above the 1000"), "{e}");
        TrainConfig {
            loss: Loss::NegativeSampling(MAX_NEGATIVE),
            ..TrainConfig::default()
        }
        .validate()
        .unwrap();
        let e = err(TrainConfig {
            min_alpha: 1.0,
            ..TrainConfig::default()
        });
        assert!(
            e.contains("min_alpha") && e.contains("is above alpha"),
            "{e}"
        );
    }
}
