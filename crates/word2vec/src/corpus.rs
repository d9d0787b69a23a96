//! Reading a whitespace-tokenised corpus (one sentence per line): a streaming
//! [`SentenceReader`] whose memory does not grow with the file (nor with a line's length), the
//! training batches it feeds, and [`Corpus`], the same sentences held in memory as word indices.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, Word2VecError};
use crate::vocab::Vocab;

/// Longest sentence handed to the trainer; longer lines are split into chunks of this many
/// tokens, as gensim's `LineSentence` does.
pub const MAX_SENTENCE_LEN: usize = 10_000;

/// Size of the reader's byte buffer.
const READ_BUFFER: usize = 1 << 16;

/// ASCII bytes that separate tokens: `\n` and the rest of Rust's (Unicode) ASCII whitespace.
#[inline]
fn is_ascii_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// Streams the sentences of a corpus: tokens are separated by Unicode whitespace, a sentence
/// ends at `\n` (empty lines are skipped) or after [`MAX_SENTENCE_LEN`] tokens (the rest of
/// the line continues as the next sentence, as in gensim's `LineSentence`).
///
/// Memory: a fixed byte buffer plus the current sentence (at most [`MAX_SENTENCE_LEN`]
/// tokens), however long the file or its lines are. Invalid UTF-8 is a
/// [`Word2VecError::Parse`] naming the line.
pub struct SentenceReader<R: Read> {
    reader: R,
    path: PathBuf,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// 1-based line of the next unread byte.
    line: usize,
    /// The current sentence's tokens, concatenated.
    text: String,
    /// End offset in `text` of each token of the current sentence.
    ends: Vec<usize>,
}

impl SentenceReader<File> {
    /// Opens the corpus at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        Ok(Self::new(file, path))
    }
}

impl<R: Read> SentenceReader<R> {
    /// Reads from `reader`; `path` only names the source in errors.
    pub fn new(reader: R, path: &Path) -> Self {
        Self {
            reader,
            path: path.to_path_buf(),
            buf: vec![0; READ_BUFFER],
            pos: 0,
            len: 0,
            eof: false,
            line: 1,
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Moves the unread bytes to the front and reads more; false when nothing new came.
    fn refill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&self.path)(e)),
            }
        }
    }

    fn utf8_error(&self) -> Word2VecError {
        Word2VecError::Parse {
            path: self.path.clone(),
            line: self.line,
            problem: "invalid UTF-8".into(),
        }
    }

    /// Ends the token being built, if any; true when the sentence is then full.
    #[inline]
    fn end_token(&mut self) -> bool {
        if self.text.len() > self.ends.last().copied().unwrap_or(0) {
            self.ends.push(self.text.len());
        }
        self.ends.len() >= MAX_SENTENCE_LEN
    }

    /// Advances to the next sentence; `Ok(false)` at the end of the input.
    pub fn next_sentence(&mut self) -> Result<bool> {
        self.text.clear();
        self.ends.clear();
        loop {
            if self.pos >= self.len && !self.refill()? {
                self.end_token();
                return Ok(!self.ends.is_empty());
            }
            let b = self.buf[self.pos];
            if b < 0x80 {
                if !is_ascii_separator(b) {
                    // copy the whole run of ordinary ASCII bytes at once (most of a token)
                    let start = self.pos;
                    let run = self.buf[start..self.len]
                        .iter()
                        .position(|&c| c >= 0x80 || is_ascii_separator(c))
                        .unwrap_or(self.len - start);
                    self.pos += run;
                    let bytes = &self.buf[start..self.pos];
                    // ASCII, hence valid UTF-8; the check never fails and costs little
                    let text = std::str::from_utf8(bytes).map_err(|_| self.utf8_error())?;
                    self.text.push_str(text);
                    continue;
                }
                self.pos += 1;
                if b == b'\n' {
                    self.line += 1;
                    self.end_token();
                    if !self.ends.is_empty() {
                        return Ok(true);
                    }
                } else if self.end_token() {
                    return Ok(true);
                }
                continue;
            }
            // a multi-byte character: make sure all of it is in the buffer, decode it
            let width = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Err(self.utf8_error()),
            };
            if self.pos + width > self.len && !self.refill()? {
                return Err(self.utf8_error());
            }
            if self.pos + width > self.len {
                continue; // a short read: refill again on the next turn
            }
            let ch = std::str::from_utf8(&self.buf[self.pos..self.pos + width])
                .ok()
                .and_then(|s| s.chars().next())
                .ok_or_else(|| self.utf8_error())?;
            self.pos += width;
            if ch.is_whitespace() {
                if self.end_token() {
                    return Ok(true);
                }
            } else {
                self.text.push(ch);
            }
        }
    }

    /// The tokens of the current sentence (after [`SentenceReader::next_sentence`] returned
    /// true).
    pub fn tokens(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let t = &self.text[start..end];
            start = end;
            t
        })
    }

    /// Number of tokens of the current sentence.
    pub fn token_count(&self) -> usize {
        self.ends.len()
    }
}

/// Calls `f` on every sentence of the corpus at `path`, streaming it (see [`SentenceReader`]).
pub fn for_each_sentence<F: FnMut(&[&str])>(path: &Path, mut f: F) -> Result<()> {
    let mut reader = SentenceReader::open(path)?;
    while reader.next_sentence()? {
        let tokens: Vec<&str> = reader.tokens().collect();
        f(&tokens);
    }
    Ok(())
}

/// A corpus in memory: every sentence as indices into a [`Vocab`], out-of-vocabulary words
/// dropped (before subsampling, as in gensim). Training streams files instead
/// ([`crate::train_file`]); this is for corpora built in code and for tests.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    sentences: Vec<Vec<u32>>,
    words: u64,
}

impl Corpus {
    /// Reads the corpus at `path`, keeping only the words of `vocab`.
    pub fn load(path: &Path, vocab: &Vocab) -> Result<Self> {
        let mut corpus = Corpus::default();
        let mut reader = SentenceReader::open(path)?;
        while reader.next_sentence()? {
            corpus.push_tokens(vocab, reader.tokens());
        }
        Ok(corpus)
    }

    /// Builds a corpus from in-memory tokenised sentences (each sentence is split at
    /// [`MAX_SENTENCE_LEN`] tokens, out-of-vocabulary words are dropped).
    pub fn from_sentences<'a, S, I>(vocab: &Vocab, sentences: S) -> Self
    where
        S: IntoIterator<Item = I>,
        I: IntoIterator<Item = &'a str>,
    {
        let mut corpus = Corpus::default();
        for sentence in sentences {
            let tokens: Vec<&str> = sentence.into_iter().collect();
            for chunk in tokens.chunks(MAX_SENTENCE_LEN) {
                corpus.push_tokens(vocab, chunk.iter().copied());
            }
        }
        corpus
    }

    fn push_tokens<'a>(&mut self, vocab: &Vocab, tokens: impl Iterator<Item = &'a str>) {
        let ids: Vec<u32> = tokens.filter_map(|t| vocab.index(t)).collect();
        if !ids.is_empty() {
            self.words += ids.len() as u64;
            self.sentences.push(ids);
        }
    }

    /// The sentences as vocabulary indices.
    pub fn sentences(&self) -> &[Vec<u32>] {
        &self.sentences
    }

    /// Number of in-vocabulary words in the corpus (one epoch, before subsampling).
    pub fn word_count(&self) -> u64 {
        self.words
    }
}

/// In-vocabulary words per training batch (gensim's `batch_words`): a worker takes one batch
/// from the shared source at a time, and the learning rate is set per batch.
pub(crate) const BATCH_WORDS: usize = 10_000;

/// A run of whole sentences as vocabulary indices.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The words of all sentences, concatenated.
    pub(crate) ids: Vec<u32>,
    /// End offset in `ids` of each sentence.
    pub(crate) ends: Vec<usize>,
}

impl Batch {
    fn clear(&mut self) {
        self.ids.clear();
        self.ends.clear();
    }

    /// The sentences of the batch.
    pub(crate) fn sentences(&self) -> impl Iterator<Item = &[u32]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.ids[start..end];
            start = end;
            s
        })
    }
}

/// Where the trainer's batches come from: one pass over the corpus per epoch.
pub(crate) trait BatchSource: Send {
    /// Restarts at the beginning of the corpus.
    fn rewind(&mut self) -> Result<()>;
    /// Replaces `batch` with the next sentences (at least [`BATCH_WORDS`] words unless the
    /// corpus ends); false when the corpus is exhausted.
    fn next_batch(&mut self, batch: &mut Batch) -> Result<bool>;
}

/// Batches of an in-memory [`Corpus`].
pub(crate) struct MemorySource<'a> {
    sentences: &'a [Vec<u32>],
    next: usize,
}

impl<'a> MemorySource<'a> {
    pub(crate) fn new(corpus: &'a Corpus) -> Self {
        Self {
            sentences: corpus.sentences(),
            next: 0,
        }
    }
}

impl BatchSource for MemorySource<'_> {
    fn rewind(&mut self) -> Result<()> {
        self.next = 0;
        Ok(())
    }

    fn next_batch(&mut self, batch: &mut Batch) -> Result<bool> {
        batch.clear();
        while batch.ids.len() < BATCH_WORDS {
            let Some(s) = self.sentences.get(self.next) else {
                break;
            };
            self.next += 1;
            batch.ids.extend_from_slice(s);
            batch.ends.push(batch.ids.len());
        }
        Ok(!batch.ends.is_empty())
    }
}

/// Batches streamed from a file (reopened each epoch), mapped through a vocabulary.
pub(crate) struct FileSource<'a> {
    path: PathBuf,
    vocab: &'a Vocab,
    reader: Option<SentenceReader<File>>,
}

impl<'a> FileSource<'a> {
    pub(crate) fn new(path: &Path, vocab: &'a Vocab) -> Self {
        Self {
            path: path.to_path_buf(),
            vocab,
            reader: None,
        }
    }
}

impl BatchSource for FileSource<'_> {
    fn rewind(&mut self) -> Result<()> {
        self.reader = Some(SentenceReader::open(&self.path)?);
        Ok(())
    }

    fn next_batch(&mut self, batch: &mut Batch) -> Result<bool> {
        batch.clear();
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        while batch.ids.len() < BATCH_WORDS {
            if !reader.next_sentence()? {
                self.reader = None;
                break;
            }
            let start = batch.ids.len();
            batch
                .ids
                .extend(reader.tokens().filter_map(|t| self.vocab.index(t)));
            // sentences without an in-vocabulary word are dropped, as in `Corpus`
            if batch.ids.len() > start {
                batch.ends.push(batch.ids.len());
            }
        }
        Ok(!batch.ends.is_empty())
    }
}
