//! Token data: a corpus encoded once, split into a training part and a held-out tail, and
//! the batches drawn from them.
//!
//! Batch `k` of step `s` is a pure function of `(seed, s, k)`: each row starts at an offset
//! hashed from those numbers. So the data position of a run is just its step, a resumed run
//! sees exactly the batches it would have seen, and no state needs saving beyond the step.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use ferrolab_tensor::rng::Rng;

use crate::config::TokenizerKind;
use crate::error::{Result, TrainError};

/// A run's text encoder/decoder: byte tokens, or a byte-level BPE vocabulary trained on the
/// run's training text and stored in the run as `tokenizer.json` (HF format).
#[derive(Clone)]
pub struct Tokenizer {
    bpe: Option<Arc<ferrolab_tokenizer::Tokenizer>>,
    id: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.id)
    }
}

/// File name of a run's BPE vocabulary.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

impl Tokenizer {
    /// One token per UTF-8 byte.
    pub fn bytes() -> Tokenizer {
        Tokenizer {
            bpe: None,
            id: "bytes-256".into(),
        }
    }

    /// Trains a byte-level BPE vocabulary of `vocab_size` tokens on `text` with DeepSeek's
    /// pre-tokenisation (digits one by one, no merges across letters, numbers, punctuation).
    pub fn train_bpe(text: &str, vocab_size: usize, progress: bool) -> Result<Tokenizer> {
        let cfg = ferrolab_tokenizer::TrainConfig {
            vocab_size,
            min_frequency: 2,
            special_tokens: Vec::new(),
            preset: ferrolab_tokenizer::Preset::DeepSeek,
            show_progress: progress,
        };
        let tok =
            ferrolab_tokenizer::train_texts([text], &cfg).map_err(|e| TrainError::Config {
                key: "tokenizer".into(),
                msg: format!("training the BPE vocabulary: {e}"),
            })?;
        Tokenizer::from_bpe(tok)
    }

    fn from_bpe(tok: ferrolab_tokenizer::Tokenizer) -> Result<Tokenizer> {
        let json = ferrolab_tokenizer::hf_string(&tok).map_err(|e| TrainError::Config {
            key: "tokenizer".into(),
            msg: e.to_string(),
        })?;
        let id = format!("bpe-{}", &ferrolab_data::sha256_hex(json.as_bytes())[..16]);
        Ok(Tokenizer {
            bpe: Some(Arc::new(tok)),
            id,
        })
    }

    /// The tokenizer of a run directory: `tokenizer.json` when `kind` is BPE.
    pub fn load(dir: &Path, kind: TokenizerKind) -> Result<Tokenizer> {
        match kind {
            TokenizerKind::Bytes => Ok(Tokenizer::bytes()),
            TokenizerKind::Bpe => {
                let p = dir.join(TOKENIZER_FILE);
                if !p.exists() {
                    return Err(TrainError::snapshot(
                        &p,
                        "is missing (a BPE run keeps its vocabulary there)",
                    ));
                }
                // the tokenizer's error names the file itself
                let tok = ferrolab_tokenizer::read_hf(&p).map_err(|e| TrainError::Snapshot {
                    path: dir.display().to_string(),
                    msg: e.to_string(),
                })?;
                Tokenizer::from_bpe(tok)
            }
        }
    }

    /// Writes `tokenizer.json` into `dir` (nothing for byte tokens).
    pub fn save(&self, dir: &Path) -> Result<()> {
        if let Some(tok) = &self.bpe {
            let p = dir.join(TOKENIZER_FILE);
            let json = ferrolab_tokenizer::hf_string(tok).map_err(|e| TrainError::Snapshot {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?;
            ferrolab_tensor::io::write_atomic(&p, json.as_bytes())?;
        }
        Ok(())
    }

    /// Which kind of tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        if self.bpe.is_some() {
            TokenizerKind::Bpe
        } else {
            TokenizerKind::Bytes
        }
    }

    /// Ids the vocabulary can produce (the model's `vocab_size` must be at least this).
    pub fn vocab_size(&self) -> usize {
        self.bpe.as_ref().map_or(256, |t| t.vocab_end())
    }

    /// Token ids of `text` (special-token text is encoded as ordinary text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.bpe {
            None => Ok(text.bytes().map(u32::from).collect()),
            Some(t) => t
                .encode_ordinary_parallel(text)
                .map_err(|e| TrainError::Corpus {
                    path: "text".into(),
                    msg: e.to_string(),
                }),
        }
    }

    /// Bytes of `ids` (ids outside the vocabulary are skipped).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        match &self.bpe {
            None => ids.iter().map(|&i| i.min(255) as u8).collect(),
            Some(t) => ids
                .iter()
                .flat_map(|&i| t.token_bytes(i).unwrap_or(&[]).to_vec())
                .collect(),
        }
    }

    /// Text of `ids`; bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// An identifier of the vocabulary, stored in snapshots so a run is never resumed with
    /// another one (`bytes-256`, or `bpe-` and a hash of `tokenizer.json`).
    pub fn id(&self) -> String {
        self.id.clone()
    }
}

/// Which text a run was trained on: stored in the run as `corpus.json`, so that `--resume`
/// reads the same text again and refuses a different one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSource {
    /// `sotu` (the State of the Union speeches) or the file's absolute path.
    pub origin: String,
    /// sha256 of the text (hex).
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: usize,
}

impl CorpusSource {
    /// The record of `text` read from `origin`.
    pub fn of(text: &str, origin: &str) -> CorpusSource {
        CorpusSource {
            origin: origin.into(),
            sha256: ferrolab_data::sha256_hex(text.as_bytes()),
            bytes: text.len(),
        }
    }
}

/// The `origin` of the State of the Union corpus.
pub const SOTU_ORIGIN: &str = "sotu";

/// An encoded corpus split into training tokens and held-out tokens.
#[derive(Clone)]
pub struct TokenData {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out tokens (the corpus's tail).
    pub val: Vec<u32>,
    /// UTF-8 bytes of the held-out text (for bits per byte).
    pub val_bytes: usize,
    /// The text these tokens came from.
    pub source: CorpusSource,
}

impl TokenData {
    /// Encodes `text` and holds out its last `val_fraction` (cut at a character boundary).
    /// `origin` names the corpus in errors and in [`TokenData::source`].
    pub fn from_text(
        text: &str,
        tok: &Tokenizer,
        val_fraction: f32,
        min_len: usize,
        origin: &str,
    ) -> Result<TokenData> {
        let source = CorpusSource::of(text, origin);
        TokenData::from_source(text, tok, val_fraction, min_len, source)
    }

    /// [`TokenData::from_text`] with the text's record already made.
    pub fn from_source(
        text: &str,
        tok: &Tokenizer,
        val_fraction: f32,
        min_len: usize,
        source: CorpusSource,
    ) -> Result<TokenData> {
        let origin = source.origin.clone();
        let (a, b) = text.split_at(TokenData::split_point(text, val_fraction));
        let data = TokenData {
            train: tok.encode(a)?,
            val: tok.encode(b)?,
            val_bytes: b.len(),
            source,
        };
        if data.train.len() <= min_len || data.val.len() <= min_len {
            return Err(TrainError::Corpus {
                path: origin,
                msg: format!(
                    "too short: {} training and {} held-out tokens, each part needs more than one sequence ({min_len} + 1)",
                    data.train.len(),
                    data.val.len()
                ),
            });
        }
        Ok(data)
    }

    /// Byte offset where the held-out tail of `text` starts (a character boundary).
    pub fn split_point(text: &str, val_fraction: f32) -> usize {
        let mut cut = ((text.len() as f64) * (1.0 - val_fraction as f64)).round() as usize;
        while cut < text.len() && !text.is_char_boundary(cut) {
            cut += 1;
        }
        cut
    }

    /// Reads a UTF-8 text file (an error names the first invalid byte).
    pub fn read_text(path: &Path) -> Result<String> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        String::from_utf8(bytes).map_err(|e| TrainError::Corpus {
            path: path.display().to_string(),
            msg: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })
    }

    /// Training micro-batch `micro` of step `step`: inputs and next-token targets, each
    /// `(B, T)` row-major.
    pub fn train_batch(
        &self,
        seed: u64,
        step: usize,
        micro: usize,
        b: usize,
        t: usize,
    ) -> (Vec<u32>, Vec<i64>) {
        let mut rng = Rng::new(seed ^ 0x5eed_ba7c_u64.wrapping_mul(step as u64 + 1));
        // skip to this micro-batch's numbers without drawing the earlier ones
        let mut rng = Rng::from_state(ferrolab_tensor::rng::RngState {
            seed: rng.next_u64(),
            offset: (micro * b) as u64,
        });
        let span = self.train.len() - t; // valid starts: 0..span (targets need t + 1 tokens)
        let starts: Vec<usize> = (0..b).map(|_| rng.below(span)).collect();
        window_batch(&self.train, &starts, t)
    }

    /// Held-out micro-batch `k` of `n`: fixed windows spread evenly over the held-out part.
    pub fn val_batch(&self, k: usize, n: usize, b: usize, t: usize) -> (Vec<u32>, Vec<i64>) {
        let span = self.val.len() - t;
        let rows = n * b;
        let starts: Vec<usize> = (0..b).map(|r| (k * b + r) * span / rows).collect();
        window_batch(&self.val, &starts, t)
    }

    /// Cross-entropy (nats per token) of the held-out tokens under the training tokens'
    /// unigram distribution (add-one smoothed): the loss of a model that learned only token
    /// frequencies.
    pub fn unigram_baseline(&self, vocab: usize) -> f64 {
        let mut counts = vec![1f64; vocab];
        for &t in &self.train {
            counts[t as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        let nll: f64 = self
            .val
            .iter()
            .map(|&t| -(counts[t as usize] / total).ln())
            .sum();
        nll / self.val.len() as f64
    }
}

fn window_batch(tokens: &[u32], starts: &[usize], t: usize) -> (Vec<u32>, Vec<i64>) {
    let mut ids = Vec::with_capacity(starts.len() * t);
    let mut tg = Vec::with_capacity(starts.len() * t);
    for &s in starts {
        ids.extend_from_slice(&tokens[s..s + t]);
        tg.extend(tokens[s + 1..s + t + 1].iter().map(|&x| x as i64));
    }
    (ids, tg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TokenData {
        let text: String = (0..2000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        TokenData::from_text(&text, &Tokenizer::bytes(), 0.1, 16, "test").unwrap()
    }

    #[test]
    fn batches_are_windows_with_shifted_targets_and_depend_only_on_step() {
        let d = data();
        let (ids, tg) = d.train_batch(7, 3, 1, 4, 16);
        assert_eq!((ids.len(), tg.len()), (64, 64));
        for r in 0..4 {
            for j in 0..15 {
                assert_eq!(tg[r * 16 + j], ids[r * 16 + j + 1] as i64);
            }
        }
        assert_eq!(d.train_batch(7, 3, 1, 4, 16), (ids.clone(), tg));
        assert_ne!(d.train_batch(7, 4, 1, 4, 16).0, ids);
        assert_ne!(d.train_batch(7, 3, 0, 4, 16).0, ids);
        assert_eq!((d.train.len(), d.val.len(), d.val_bytes), (1800, 200, 200));
    }

    #[test]
    fn too_short_and_non_utf8_corpora_are_errors() {
        let tok = Tokenizer::bytes();
        let e = TokenData::from_text("", &tok, 0.1, 16, "empty.txt")
            .err()
            .unwrap();
        assert!(e.to_string().contains("empty.txt") && e.to_string().contains("too short"));
        let dir = ferrolab_data::TempFolder::new("data").unwrap();
        let p = dir.join("latin1.txt");
        std::fs::write(&p, b"caf\xe9 au lait").unwrap();
        let e = TokenData::read_text(&p).unwrap_err().to_string();
        assert!(e.contains("latin1.txt") && e.contains("offset 3"), "{e}");
    }

    #[test]
    fn unigram_baseline_of_uniform_letters_is_log_26() {
        let b = data().unigram_baseline(256);
        // add-one smoothing over 256 symbols moves it slightly above ln 26
        assert!((b - 26f64.ln()).abs() < 0.15, "{b}");
    }
}
