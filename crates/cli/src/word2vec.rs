//! `ferrolab word2vec`: train word vectors, evaluate them, query neighbours and analogies,
//! plot a PCA projection.
//!
//! Vector files are read as binary when `--binary` is given or the name ends in `.bin`,
//! otherwise as text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use ferrolab_word2vec::{
    evaluate_analogies, evaluate_similarity, plot_words, read_binary, read_text, train_file,
    write_binary, write_text, Architecture, CbowCombine, KeyedVectors, Loss, QueryIndex,
    TrainConfig, Vocab, VocabConfig, DEFAULT_RESTRICT_VOCAB, DEFAULT_SIMILARITY_RESTRICT_VOCAB,
};

/// Arguments of `ferrolab word2vec`.
#[derive(Args)]
pub struct Word2VecArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Train vectors on a whitespace-tokenised corpus (one sentence per line).
    Train(TrainArgs),
    /// Analogy accuracy and/or word-pair Spearman correlation.
    Eval(EvalArgs),
    /// Nearest neighbours of a word by cosine.
    Similar(SimilarArgs),
    /// Analogy A : B :: C : ?
    Analogy(AnalogyArgs),
    /// 2-D PCA scatter plot of chosen words, as SVG.
    Plot(PlotArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    /// Skip-gram.
    Sg,
    /// Continuous bag of words.
    Cbow,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    /// Negative sampling.
    Ns,
    /// Hierarchical softmax.
    Hs,
}

#[derive(Args)]
struct TrainArgs {
    /// Corpus file.
    #[arg(long)]
    input: PathBuf,
    /// Output vectors file.
    #[arg(long)]
    output: PathBuf,
    /// Write the word2vec binary format instead of text.
    #[arg(long)]
    binary: bool,
    /// Architecture.
    #[arg(long, value_enum, default_value = "sg")]
    model: ModelArg,
    /// Output layer.
    #[arg(long, value_enum, default_value = "ns")]
    loss: LossArg,
    /// Negatives per positive (with --loss ns) [default: 5].
    #[arg(long)]
    negative: Option<usize>,
    /// Maximum context window.
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 100)]
    dim: usize,
    /// Minimum word count.
    #[arg(long, default_value_t = 5)]
    min_count: u64,
    /// Keep at most this many most frequent words.
    #[arg(long)]
    max_vocab: Option<usize>,
    /// Subsampling threshold (0 disables).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    sample: f64,
    /// Initial learning rate (default 0.025 for sg, 0.05 for cbow).
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f32>,
    /// Final learning rate.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    min_alpha: f32,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CBOW: sum the context vectors instead of averaging them.
    #[arg(long)]
    cbow_sum: bool,
}

#[derive(Args)]
struct VectorsArg {
    /// Vectors file (word2vec text, or binary with --binary or a .bin name).
    #[arg(long)]
    vectors: PathBuf,
    /// Read the vectors as word2vec binary.
    #[arg(long)]
    binary: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    vectors: VectorsArg,
    /// Analogy questions (questions-words.txt format).
    #[arg(long)]
    analogies: Option<PathBuf>,
    /// Word pairs with gold similarity scores.
    #[arg(long)]
    similarity: Option<PathBuf>,
    /// Only this many most frequent words take part in the analogies (gensim's default).
    #[arg(long, default_value_t = DEFAULT_RESTRICT_VOCAB)]
    restrict_vocab: usize,
    /// Only this many most frequent words take part in the word pairs (gensim's default).
    #[arg(long, default_value_t = DEFAULT_SIMILARITY_RESTRICT_VOCAB)]
    similarity_restrict_vocab: usize,
}

#[derive(Args)]
struct SimilarArgs {
    #[command(flatten)]
    vectors: VectorsArg,
    /// The query word.
    word: String,
    /// How many neighbours.
    #[arg(short, default_value_t = 10, value_parser = crate::bench::at_least_one)]
    n: usize,
}

#[derive(Args)]
struct AnalogyArgs {
    #[command(flatten)]
    vectors: VectorsArg,
    /// A in A : B :: C : ?
    a: String,
    /// B in A : B :: C : ?
    b: String,
    /// C in A : B :: C : ?
    c: String,
    /// How many answers.
    #[arg(short, default_value_t = 5, value_parser = crate::bench::at_least_one)]
    n: usize,
    /// Use 3CosMul instead of 3CosAdd.
    #[arg(long)]
    mul: bool,
}

#[derive(Args)]
struct PlotArgs {
    #[command(flatten)]
    vectors: VectorsArg,
    /// Comma-separated words to plot.
    #[arg(long, value_delimiter = ',', required = true)]
    words: Vec<String>,
    /// Output SVG file.
    #[arg(long)]
    out: PathBuf,
}

/// Runs one `ferrolab word2vec` subcommand.
pub fn run(a: Word2VecArgs) -> Result<()> {
    match a.what {
        What::Train(t) => train_cmd(&t),
        What::Eval(e) => eval_cmd(&e),
        What::Similar(s) => {
            let kv = load(&s.vectors)?;
            let q = QueryIndex::new(&kv);
            for (w, score) in q.most_similar(&s.word, s.n)? {
                println!("{w}\t{score:.4}");
            }
            Ok(())
        }
        What::Analogy(x) => {
            let kv = load(&x.vectors)?;
            let q = QueryIndex::new(&kv);
            let answers = if x.mul {
                q.analogy_cos_mul(&x.a, &x.b, &x.c, x.n)?
            } else {
                q.analogy_cos_add(&x.a, &x.b, &x.c, x.n)?
            };
            for (w, score) in answers {
                println!("{w}\t{score:.4}");
            }
            Ok(())
        }
        What::Plot(p) => {
            let kv = load(&p.vectors)?;
            if p.words.is_empty() {
                bail!("--words needs at least one word");
            }
            plot_words(&kv, &p.words, &p.out)?;
            println!("wrote {}", p.out.display());
            Ok(())
        }
    }
}

fn load(v: &VectorsArg) -> Result<KeyedVectors> {
    let binary = v.binary || v.vectors.extension().is_some_and(|e| e == "bin");
    let kv = if binary {
        read_binary(&v.vectors)?
    } else {
        read_text(&v.vectors).map_err(|e| match &e {
            // not UTF-8 text
            ferrolab_word2vec::Word2VecError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                anyhow::anyhow!("{e} (if it is a word2vec binary file, pass --binary)")
            }
            _ => e.into(),
        })?
    };
    Ok(kv)
}

fn train_cmd(t: &TrainArgs) -> Result<()> {
    if t.max_vocab == Some(0) {
        bail!("--max-vocab 0 keeps no word; give at least 1");
    }
    // where the vectors go is checked before the training, not after it
    if t.output.is_dir() || t.output.to_string_lossy().ends_with('/') {
        bail!(
            "--output {} is a folder; give a file name",
            t.output.display()
        );
    }
    if let Some(parent) = t.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.is_file() {
            bail!(
                "--output {}: {} is a file, not a folder",
                t.output.display(),
                parent.display()
            );
        }
        if !parent.is_dir() {
            bail!(
                "--output {}: the folder {} does not exist",
                t.output.display(),
                parent.display()
            );
        }
    }
    if let (Ok(a), Ok(b)) = (
        std::fs::canonicalize(&t.input),
        std::fs::canonicalize(&t.output),
    ) {
        if a == b {
            bail!(
                "--output {} is the --input corpus: the vectors would overwrite it",
                t.output.display()
            );
        }
    }
    let mut config = TrainConfig {
        architecture: match t.model {
            ModelArg::Sg => Architecture::SkipGram,
            ModelArg::Cbow => Architecture::Cbow,
        },
        loss: match t.loss {
            // the library's default (5 negatives) unless --negative
            LossArg::Ns => t
                .negative
                .map_or(TrainConfig::default().loss, Loss::NegativeSampling),
            LossArg::Hs => Loss::HierarchicalSoftmax,
        },
        cbow_combine: if t.cbow_sum {
            CbowCombine::Sum
        } else {
            CbowCombine::Mean
        },
        dim: t.dim,
        window: t.window,
        sample: t.sample,
        alpha: t.alpha,
        min_alpha: t.min_alpha,
        epochs: t.epochs,
        seed: t.seed,
        progress: true,
        ..TrainConfig::default()
    };
    if let Some(n) = t.threads {
        config.threads = n;
    }
    config.validate()?;
    if t.negative.is_some() && matches!(t.loss, LossArg::Hs) {
        eprintln!("warning: --negative does nothing with --loss hs (hierarchical softmax)");
    }
    if t.cbow_sum && matches!(t.model, ModelArg::Sg) {
        eprintln!("warning: --cbow-sum does nothing with --model sg (skip-gram)");
    }
    let vocab = Vocab::build(
        &t.input,
        &VocabConfig {
            min_count: t.min_count,
            max_vocab: t.max_vocab,
        },
    )?;
    // the corpus is streamed from disk each epoch, never held in memory
    eprintln!("vocab={} corpus_words={}", vocab.len(), vocab.total());
    let (kv, stats) = train_file(&t.input, &vocab, &config)?;
    save(&kv, &t.output, t.binary)?;
    println!(
        "words={} effective_words={} seconds={:.3} words_per_sec={:.0} threads={}",
        stats.words, stats.effective_words, stats.seconds, stats.words_per_sec, config.threads
    );
    Ok(())
}

fn save(kv: &KeyedVectors, path: &Path, binary: bool) -> Result<()> {
    if binary {
        write_binary(kv, path, false)?;
    } else {
        write_text(kv, path)?;
    }
    Ok(())
}

/// The words an evaluation looks among, for its errors: the whole vocabulary, or the first
/// `restrict` of its `vocab` words when the flag cuts it.
fn searched_words(vocab: usize, restrict: usize, flag: &str) -> String {
    if restrict < vocab {
        format!("the {restrict} most frequent of the vectors' {vocab} words ({flag})")
    } else {
        "the vectors' vocabulary".to_string()
    }
}

fn eval_cmd(e: &EvalArgs) -> Result<()> {
    if e.analogies.is_none() && e.similarity.is_none() {
        bail!("give --analogies FILE and/or --similarity FILE");
    }
    for (flag, n) in [
        ("--restrict-vocab", e.restrict_vocab),
        ("--similarity-restrict-vocab", e.similarity_restrict_vocab),
    ] {
        if n == 0 {
            bail!("{flag} 0 leaves no word to evaluate; give at least 1");
        }
    }
    let kv = load(&e.vectors)?;
    let q = QueryIndex::new(&kv);
    let mut summary = Vec::new();
    if let Some(path) = &e.analogies {
        let r = evaluate_analogies(&q, path, e.restrict_vocab)
            .with_context(|| format!("evaluating analogies from {}", path.display()))?;
        if r.total.skipped == 0 && r.total.correct + r.total.incorrect == 0 {
            bail!(
                "{}: the file holds no analogy question (lines `a b c d` under `: section` \
                 lines); an accuracy of nothing is not reported",
                path.display()
            );
        }
        if r.total.correct + r.total.incorrect == 0 {
            bail!(
                "{}: no analogy question could be answered ({} skipped: a word outside {}); an \
                 accuracy of nothing is not reported",
                path.display(),
                r.total.skipped,
                searched_words(kv.len(), e.restrict_vocab, "--restrict-vocab")
            );
        }
        for s in &r.sections {
            // a section with no answered question has no accuracy (not 0)
            let accuracy = if s.correct + s.incorrect == 0 {
                "n/a".to_string()
            } else {
                format!("{:.4}", s.accuracy())
            };
            println!(
                "section {}: accuracy={accuracy} correct={} incorrect={} skipped={}",
                s.name, s.correct, s.incorrect, s.skipped
            );
        }
        summary.push(format!(
            "analogy_accuracy={:.4} analogy_correct={} analogy_answered={} analogy_skipped={}",
            r.total.accuracy(),
            r.total.correct,
            r.total.correct + r.total.incorrect,
            r.total.skipped
        ));
    }
    if let Some(path) = &e.similarity {
        let r = evaluate_similarity(&q, path, e.similarity_restrict_vocab)
            .with_context(|| format!("evaluating similarity from {}", path.display()))?;
        if !r.spearman.is_finite() {
            let skipped = if r.oov_pairs == 0 {
                String::new()
            } else {
                format!(
                    "; {} more skipped: a word outside {}",
                    r.oov_pairs,
                    searched_words(
                        kv.len(),
                        e.similarity_restrict_vocab,
                        "--similarity-restrict-vocab"
                    )
                )
            };
            bail!(
                "{}: Spearman's rho is undefined on {} pair(s){skipped}: at least two pairs with \
                 differing scores are needed",
                path.display(),
                r.pairs,
            );
        }
        summary.push(format!(
            "spearman={:.4} similarity_pairs={} similarity_oov_pairs={}",
            r.spearman, r.pairs, r.oov_pairs
        ));
    }
    println!("{}", summary.join(" "));
    Ok(())
}
