//! `ferrolab tokenizer`: encode, decode, train and inspect byte-level BPE tokenizers.
//!
//! `--tokenizer` takes a built-in name (`cl100k_base`, `o200k_base`, `r50k_base`, `p50k_base`)
//! or a file: HF `tokenizer.json`, GPT-2 `encoder.json` (with `vocab.bpe` beside it), or a
//! `.tiktoken` rank file.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use ferrolab_tokenizer::{load, train_files, write_hf, Preset, Rank, SpecialSet, TrainConfig};

/// Arguments of `ferrolab tokenizer`.
#[derive(Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Print the token ids of a text (file or stdin), space-separated, then a newline.
    Encode(EncodeArgs),
    /// Print the text of token ids (file or stdin, separated by white space).
    Decode(DecodeArgs),
    /// Train a byte-level BPE and write it as HF tokenizer.json.
    Train(TrainArgs),
    /// Show the pieces, tokens and ids of a text.
    Inspect(InspectArgs),
}

/// tiktoken's special-token choices.
#[derive(Clone, Copy, ValueEnum)]
enum SpecialArg {
    /// Special-token strings become their ids.
    All,
    /// A special-token string in the text is an error (tiktoken's default).
    None,
    /// Special-token strings are ordinary text (tiktoken's `encode_ordinary`).
    Ordinary,
}

#[derive(Args)]
struct EncodeArgs {
    /// Built-in name or tokenizer file.
    #[arg(long)]
    tokenizer: String,
    /// Override the pre-tokenisation preset (gpt2, cl100k, o200k, deepseek).
    #[arg(long)]
    preset: Option<String>,
    /// Special tokens: all, none (error if present), ordinary.
    #[arg(long, value_enum, default_value = "none")]
    special: SpecialArg,
    /// Accept input that is not UTF-8: invalid bytes are encoded as bytes.
    #[arg(long)]
    bytes: bool,
    /// Add what a `tokenizer.json`'s post-processor puts around a text (a BOS, `<s> ... </s>`),
    /// as HF's `encode` does by default; without it the ids are HF's with
    /// `add_special_tokens=False`.
    #[arg(long)]
    add_special_tokens: bool,
    /// Input file (default: stdin).
    file: Option<PathBuf>,
}

#[derive(Args)]
struct DecodeArgs {
    /// Built-in name or tokenizer file.
    #[arg(long)]
    tokenizer: String,
    /// Write the raw bytes even when they are not UTF-8.
    #[arg(long)]
    bytes: bool,
    /// Input file of ids (default: stdin).
    file: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// Training text files (each one document).
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Vocabulary size: 256 bytes + merges + special tokens.
    #[arg(long)]
    vocab_size: usize,
    /// Pre-tokenisation preset: gpt2, cl100k, o200k, deepseek.
    #[arg(long, default_value = "cl100k")]
    preset: String,
    /// Minimum pair frequency for a merge.
    #[arg(long, default_value_t = 0)]
    min_frequency: u64,
    /// Special tokens (ids after the merged tokens).
    #[arg(long = "special-token")]
    special_tokens: Vec<String>,
    /// Output tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Built-in name or tokenizer file.
    #[arg(long)]
    tokenizer: String,
    /// Override the pre-tokenisation preset (gpt2, cl100k, o200k, deepseek), as for `encode`.
    #[arg(long)]
    preset: Option<String>,
    /// Special tokens, as for `encode`: all, none (error if present), ordinary.
    #[arg(long, value_enum, default_value = "none")]
    special: SpecialArg,
    /// The text.
    text: String,
}

/// Runs `ferrolab tokenizer`.
pub fn run(args: TokenizerArgs) -> Result<()> {
    match args.what {
        What::Encode(a) => encode(a),
        What::Decode(a) => decode(a),
        What::Train(a) => train(a),
        What::Inspect(a) => inspect(a),
    }
}

fn read_input(file: &Option<PathBuf>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file {
        Some(p) => buf = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
        }
    }
    Ok(buf)
}

fn load_tokenizer(name: &str, preset: Option<&str>) -> Result<ferrolab_tokenizer::Tokenizer> {
    let preset = preset.map(Preset::from_name).transpose()?;
    Ok(load(name, preset)?)
}

fn encode(a: EncodeArgs) -> Result<()> {
    let tok = load_tokenizer(&a.tokenizer, a.preset.as_deref())?;
    let input = read_input(&a.file)?;
    let allowed = match a.special {
        SpecialArg::All => SpecialSet::All,
        SpecialArg::None => SpecialSet::None,
        // no special is allowed, and none is looked for
        SpecialArg::Ordinary => SpecialSet::Some(HashSet::new()),
    };
    let ids = match (std::str::from_utf8(&input), a.special) {
        (Ok(text), SpecialArg::Ordinary) => tok.encode_ordinary(text)?,
        (Ok(text), _) => tok.encode(text, &allowed).map_err(special_hint)?,
        (Err(_), _) if a.bytes => {
            if matches!(a.special, SpecialArg::Ordinary) {
                let mut out = Vec::new();
                for chunk in input.utf8_chunks() {
                    out.extend(tok.encode_ordinary(chunk.valid())?);
                    out.extend(tok.encode_bytes(chunk.invalid(), &SpecialSet::None)?);
                }
                out
            } else {
                tok.encode_bytes(&input, &allowed).map_err(special_hint)?
            }
        }
        (Err(e), _) => bail!(
            "the input is not UTF-8 (byte {}); pass --bytes to encode it as bytes",
            e.valid_up_to()
        ),
    };
    let ids = if a.add_special_tokens {
        if tok
            .post_processor()
            .is_none_or(|p| p.prefix().is_empty() && p.suffix().is_empty())
        {
            eprintln!(
                "note: {} has no post-processor that adds tokens: --add-special-tokens adds nothing",
                a.tokenizer
            );
        }
        tok.add_special_tokens(&ids)
    } else {
        ids
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = String::with_capacity(ids.len() * 6);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&id.to_string());
    }
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn decode(a: DecodeArgs) -> Result<()> {
    let tok = load_tokenizer(&a.tokenizer, None)?;
    let input = read_input(&a.file)?;
    let text = std::str::from_utf8(&input).context("the ids are not text")?;
    let ids = text
        .split_whitespace()
        .map(|w| {
            w.parse::<Rank>()
                .with_context(|| format!("{w:?} is not a token id"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = if a.bytes {
        tok.decode_bytes(&ids)?
    } else {
        match tok.decode(&ids) {
            Ok(text) => text.into_bytes(),
            Err(e @ ferrolab_tokenizer::TokenizerError::InvalidUtf8 { .. }) => {
                anyhow::bail!("{e} (--bytes writes them as they are)")
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let cfg = TrainConfig {
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
        special_tokens: a.special_tokens,
        preset: Preset::from_name(&a.preset)?,
        show_progress: !a.quiet,
    };
    let t = std::time::Instant::now();
    let tok = train_files(&a.input, &cfg)?;
    if tok.bpe().len() == 256 && a.vocab_size > tok.vocab_end() {
        if a.min_frequency > 1 {
            bail!(
                "no merge learned: no pair of adjacent bytes occurs --min-frequency {} times",
                a.min_frequency
            );
        }
        bail!("no merge learned: the input has no pair of adjacent bytes (is it empty?)");
    }
    write_hf(&tok, &a.out)?;
    if !a.quiet {
        if tok.vocab_end() < a.vocab_size {
            eprintln!(
                "note: {} tokens, not the {} asked for: the input has no more pairs to merge \
                 (at --min-frequency {})",
                tok.vocab_end(),
                a.vocab_size,
                a.min_frequency
            );
        }
        eprintln!(
            "trained {} tokens in {:.2} s -> {}",
            tok.vocab_end(),
            t.elapsed().as_secs_f64(),
            a.out.display()
        );
    }
    Ok(())
}

/// A special token in a text encoded with `--special none`: the error, with the flags that
/// accept it.
fn special_hint(e: ferrolab_tokenizer::TokenizerError) -> anyhow::Error {
    match e {
        e @ ferrolab_tokenizer::TokenizerError::DisallowedSpecial { .. } => {
            anyhow::anyhow!("{e} (--special all or --special ordinary)")
        }
        e => e.into(),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let tok = load_tokenizer(&a.tokenizer, a.preset.as_deref())?;
    let text = &a.text;
    let pre = tok.pre_tokenizer();
    let kind = pre.preset_kind().map_or("custom regex", |p| p.name());
    // the same tokens as `encode --special` gives
    let enc = match a.special {
        SpecialArg::All => tok.encode_with_offsets(text, &SpecialSet::All)?,
        SpecialArg::None => tok
            .encode_with_offsets(text, &SpecialSet::None)
            .map_err(special_hint)?,
        SpecialArg::Ordinary => tok.encode_ordinary_with_offsets(text)?,
    };
    // special tokens (and plain added tokens, HF's `"special": false`) are matched before
    // pre-tokenisation: the text between them is split. Such a token is an id of one whose text
    // it covers (some vocabularies give a special's id to an ordinary token too); as ordinary
    // text only the plain added tokens are matched
    let specials: std::collections::HashMap<u32, &str> = tok
        .special_tokens()
        .filter(|&(_, id)| !matches!(a.special, SpecialArg::Ordinary) || tok.is_plain_token(id))
        .map(|(name, id)| (id, name))
        .collect();
    let mut shown = Vec::new();
    let mut at = 0;
    let split = |from: usize, to: usize, shown: &mut Vec<String>| -> Result<()> {
        for (s, e) in pre.split(&text[from..to])? {
            shown.push(format!("{:?}", &text[from + s..from + e]));
        }
        Ok(())
    };
    for (&id, &(s, e)) in enc.ids.iter().zip(&enc.offsets) {
        if specials
            .get(&id)
            .is_some_and(|name| text.get(s..e) == Some(*name))
        {
            split(at, s, &mut shown)?;
            let what = if tok.is_plain_token(id) {
                "added"
            } else {
                "special"
            };
            shown.push(format!("[{what} {:?}]", &text[s..e]));
            at = e;
        }
    }
    split(at, text.len(), &mut shown)?;
    println!("pre-tokenizer {kind}: {} pieces", shown.len());
    println!("  {}", shown.join(" | "));
    println!("{} tokens, {} bytes:", enc.ids.len(), text.len());
    for (&id, &(s, e)) in enc.ids.iter().zip(&enc.offsets) {
        let bytes = tok.token_bytes(id).unwrap_or_default();
        let shown = match std::str::from_utf8(bytes) {
            Ok(t) => format!("{t:?}"),
            Err(_) => format!("{bytes:02x?} (part of a character)"),
        };
        println!("  {id:>8}  {shown}  bytes {s}..{e}");
    }
    Ok(())
}
