//! Byte-level BPE tokenizers: training, encoding and decoding, exact on the tiktoken
//! vocabularies (cl100k_base, o200k_base, r50k_base, p50k_base), with tiktoken rank files,
//! GPT-2 `encoder.json` + `vocab.bpe` and HF `tokenizer.json`.
//!
//! The pipeline: special tokens are matched first ([`Tokenizer::encode`]), the rest of the text
//! is split into pieces ([`PreTokenizer`], hand-written for the presets with a regex reference
//! path), and each piece is encoded by rank-ordered merges ([`Bpe`]). Every byte string
//! encodes, and decoding gives the bytes back.
//!
//! Why it is fast, and what was tried: `PERFORMANCE.md` beside this crate's manifest.

#![warn(missing_docs)]

pub mod bpe;
pub mod builtin;
pub mod error;
pub mod files;
pub mod pretokenize;
pub mod tokenizer;
pub mod train;
mod unicode;

pub use bpe::{Bpe, MergeRule, MergeWork, Rank, MAX_ID};
pub use builtin::{builtin, load, Builtin, BUILTIN};
pub use error::{Result, TokenizerError};
pub use files::gpt2::{bytes_to_text, read_gpt2, text_to_bytes, write_gpt2};
pub use files::hf::{hf_string, parse_hf_str, read_hf, write_hf};
pub use files::tiktoken::{parse_tiktoken_str, read_tiktoken, tiktoken_string, write_tiktoken};
pub use pretokenize::{
    is_safe_cut, PreTokenizer, Preset, CL100K_PATTERN, DEEPSEEK_PATTERN, GPT2_PATTERN,
    O200K_PATTERN,
};
pub use tokenizer::{Encoding, PostProcessor, SpecialSet, Tokenizer};
pub use train::{train, train_files, train_texts, TrainConfig, WordCounts};
