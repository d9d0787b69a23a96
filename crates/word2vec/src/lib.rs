//! word2vec in plain Rust: vocabulary building, frequent-word subsampling, skip-gram and CBOW
//! with negative sampling or hierarchical softmax trained by lock-free (Hogwild) SGD with
//! hand-written kernels as in word2vec.c, the word2vec text/binary formats, similarity
//! queries, analogy / word-pair evaluation and a PCA scatter plot.

#![warn(missing_docs)]

pub mod corpus;
pub mod error;
pub mod eval;
pub mod huffman;
pub mod io;
mod kernels;
pub mod plot;
pub mod query;
pub mod rng;
pub mod sampling;
pub mod train;
pub mod vectors;
pub mod vocab;

pub use corpus::{for_each_sentence, Corpus, SentenceReader, MAX_SENTENCE_LEN};
pub use error::{Result, Word2VecError};
pub use eval::{
    average_ranks, evaluate_analogies, evaluate_similarity, spearman, AnalogyReport, SectionResult,
    SimilarityReport, DEFAULT_RESTRICT_VOCAB, DEFAULT_SIMILARITY_RESTRICT_VOCAB,
};
pub use huffman::Huffman;
pub use io::{read_binary, read_text, write_binary, write_text};
pub use plot::{pca_2d, plot_words, svg};
pub use query::{QueryIndex, COSMUL_EPSILON};
pub use rng::Lcg;
pub use sampling::{keep_probabilities, keep_probability, NegativeTable};
pub use train::{
    train, train_file, Architecture, CbowCombine, Loss, TrainConfig, TrainStats, MAX_DIM,
    MAX_NEGATIVE, MAX_THREADS,
};
pub use vectors::KeyedVectors;
pub use vocab::{Vocab, VocabConfig};
