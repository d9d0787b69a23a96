//! [`Tokenizer`]: pre-tokenizer + BPE + special tokens, with tiktoken's encoding semantics.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::bpe::{Bpe, Rank};
use crate::error::{Result, TokenizerError};
use crate::pretokenize::{is_safe_cut, PreTokenizer};

/// A set of special tokens, as tiktoken's `allowed_special` / `disallowed_special` arguments:
/// `"all"`, none, or named ones.
#[derive(Clone, Debug, Default)]
pub enum SpecialSet {
    /// All special tokens.
    All,
    /// None.
    #[default]
    None,
    /// These.
    Some(HashSet<String>),
}

impl SpecialSet {
    fn contains(&self, token: &str) -> bool {
        match self {
            SpecialSet::All => true,
            SpecialSet::None => false,
            SpecialSet::Some(s) => s.contains(token),
        }
    }
}

/// Token ids with the byte range of the input that each one covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<Rank>,
    /// `offsets[i]` = byte range `(start, end)` of the input that `ids[i]` encodes. A token that
    /// holds part of a multi-byte character has a range that cuts the character.
    pub offsets: Vec<(usize, usize)>,
}

/// Special tokens (`<|endoftext|>` and the like): matched before pre-tokenisation.
///
/// Some of them may be *plain* added tokens (HF `tokenizer.json` added tokens with
/// `"special": false`): HF matches those in every text, so they are always taken as their ids,
/// whatever the special-token choice, `encode_ordinary` included.
///
/// HF looks for its added tokens in two passes: those with `"normalized": false` first, then
/// those with `"normalized": true` in the text the first pass left (text of a special token
/// taken as ordinary text included). Tokens of other origins are all first-pass.
#[derive(Clone, Debug, Default)]
struct Specials {
    names: Vec<String>,
    ids: Vec<Rank>,
    /// Per token: a plain added token (always matched).
    plain: Vec<bool>,
    /// Per token: looked for in the second pass.
    normalized: Vec<bool>,
    /// Per token: the bytes it decodes to (its text; HF's byte-level reading of it for
    /// `tokenizer.json` files).
    bytes: Vec<Vec<u8>>,
    by_id: FxHashMap<Rank, usize>,
    /// Per pass: a leftmost-longest matcher over its tokens, and each pattern's token index.
    passes: [Option<(AhoCorasick, Vec<usize>)>; 2],
}

impl Specials {
    fn new(list: Vec<(String, Rank)>) -> Result<Specials> {
        let mut s = Specials::default();
        for (name, id) in list {
            if name.is_empty() {
                return Err(TokenizerError::BadVocab(format!(
                    "special token {id} is the empty string"
                )));
            }
            if s.by_id.insert(id, s.names.len()).is_some() {
                return Err(TokenizerError::BadVocab(format!(
                    "special token id {id} appears twice"
                )));
            }
            s.bytes.push(name.as_bytes().to_vec());
            s.names.push(name);
            s.ids.push(id);
            s.plain.push(false);
            s.normalized.push(false);
        }
        s.build_matchers()?;
        Ok(s)
    }

    /// The index of the token with id `id`, which a `what` added token must be.
    fn index(&self, id: Rank, what: &str) -> Result<usize> {
        self.by_id.get(&id).copied().ok_or_else(|| {
            TokenizerError::BadVocab(format!("{what} added token {id} is not an added token"))
        })
    }

    /// The matchers of both passes (leftmost-longest: of two tokens starting at one place,
    /// the longer one).
    fn build_matchers(&mut self) -> Result<()> {
        for (pass, slot) in self.passes.iter_mut().enumerate() {
            let idx: Vec<usize> = (0..self.names.len())
                .filter(|&k| self.normalized[k] == (pass == 1))
                .collect();
            *slot = if idx.is_empty() {
                None
            } else {
                let m = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(idx.iter().map(|&k| &self.names[k]))
                    .map_err(|e| TokenizerError::BadVocab(format!("special tokens: {e}")))?;
                Some((m, idx))
            };
        }
        Ok(())
    }
}

/// What a `tokenizer.json` `post_processor` adds around one encoded text when HF encodes with
/// `add_special_tokens=True` (its default): ids before and after (a BOS, `<s> ... </s>`). Read
/// from a file (and written back as it was read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostProcessor {
    pub(crate) prefix: Vec<Rank>,
    pub(crate) suffix: Vec<Rank>,
    /// The `post_processor` object as the file held it.
    pub(crate) json: String,
}

impl PostProcessor {
    /// Ids put before the text's ids.
    pub fn prefix(&self) -> &[Rank] {
        &self.prefix
    }

    /// Ids put after them.
    pub fn suffix(&self) -> &[Rank] {
        &self.suffix
    }

    /// The `post_processor` object as the file held it.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// A complete byte-level BPE tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    bpe: Bpe,
    pre: PreTokenizer,
    specials: Specials,
    post: Option<PostProcessor>,
}

impl Tokenizer {
    /// Builds a tokenizer. Special token ids must not collide with BPE ids.
    pub fn new(bpe: Bpe, pre: PreTokenizer, specials: Vec<(String, Rank)>) -> Result<Tokenizer> {
        for (name, id) in &specials {
            if bpe.token_bytes(*id).is_some() {
                return Err(TokenizerError::BadVocab(format!(
                    "special token {name:?} has id {id}, which is also an ordinary token"
                )));
            }
        }
        Self::new_sharing_ids(bpe, pre, specials)
    }

    /// As [`Tokenizer::new`], but a special (added) token may have the id of an ordinary token,
    /// as HF `tokenizer.json` added tokens often do (`add_tokens` of a word the vocabulary
    /// has). Its text is still matched as a special token; BPE can still make the id; decoding
    /// it gives the ordinary token's bytes, as HF's byte-level decoder does.
    pub fn new_sharing_ids(
        bpe: Bpe,
        pre: PreTokenizer,
        specials: Vec<(String, Rank)>,
    ) -> Result<Tokenizer> {
        Ok(Tokenizer {
            bpe,
            pre,
            specials: Specials::new(specials)?,
            post: None,
        })
    }

    /// Sets what [`Tokenizer::add_special_tokens`] adds (from a `tokenizer.json`
    /// `post_processor`). Every id must be one the tokenizer can decode.
    pub fn with_post_processor(mut self, post: PostProcessor) -> Result<Tokenizer> {
        if let Some(&id) = post
            .prefix
            .iter()
            .chain(&post.suffix)
            .find(|&&id| self.token_bytes(id).is_none())
        {
            return Err(TokenizerError::BadVocab(format!(
                "the post-processor adds id {id}, which is no token"
            )));
        }
        self.post = Some(post);
        Ok(self)
    }

    /// The post-processor, if the tokenizer has one.
    pub fn post_processor(&self) -> Option<&PostProcessor> {
        self.post.as_ref()
    }

    /// `ids` with what the post-processor adds around one text (HF's `encode` with
    /// `add_special_tokens=True`); `ids` unchanged without one.
    pub fn add_special_tokens(&self, ids: &[Rank]) -> Vec<Rank> {
        match &self.post {
            None => ids.to_vec(),
            Some(p) => [&p.prefix[..], ids, &p.suffix[..]].concat(),
        }
    }

    /// The BPE model.
    pub fn bpe(&self) -> &Bpe {
        &self.bpe
    }

    /// The pre-tokenizer.
    pub fn pre_tokenizer(&self) -> &PreTokenizer {
        &self.pre
    }

    /// Replaces the pre-tokenizer (for example to run the reference regex path).
    pub fn with_pre_tokenizer(mut self, pre: PreTokenizer) -> Tokenizer {
        self.pre = pre;
        self
    }

    /// Special tokens and their ids, plain added tokens ([`Tokenizer::is_plain_token`]) among
    /// them.
    pub fn special_tokens(&self) -> impl Iterator<Item = (&str, Rank)> {
        self.specials
            .names
            .iter()
            .map(String::as_str)
            .zip(self.specials.ids.iter().copied())
    }

    /// Marks the special tokens with these ids as plain added tokens (HF added tokens with
    /// `"special": false`): they are then matched in every text and never refused. An id that
    /// is not a special token is an error.
    pub fn with_plain_tokens(mut self, ids: &[Rank]) -> Result<Tokenizer> {
        for &id in ids {
            let k = self.specials.index(id, "plain")?;
            self.specials.plain[k] = true;
        }
        Ok(self)
    }

    /// HF `tokenizer.json` added tokens: those with these ids (`"normalized": true`) are looked
    /// for only in the text that the others leave, as HF does; and every added token decodes
    /// as HF's byte-level decoder reads its text (as the bytes of a GPT-2 text form when every
    /// character is of the byte-level alphabet, else as its UTF-8). An id that is not an added
    /// token is an error.
    pub fn with_hf_added_tokens(mut self, normalized: &[Rank]) -> Result<Tokenizer> {
        for &id in normalized {
            let k = self.specials.index(id, "normalized")?;
            self.specials.normalized[k] = true;
        }
        for (b, name) in self.specials.bytes.iter_mut().zip(&self.specials.names) {
            *b = crate::files::gpt2::byte_level_decode(name);
        }
        self.specials.build_matchers()?;
        Ok(self)
    }

    /// Whether `id` is an added token looked for in HF's second pass (see
    /// [`Tokenizer::with_hf_added_tokens`]).
    pub fn is_normalized_token(&self, id: Rank) -> bool {
        self.specials
            .by_id
            .get(&id)
            .is_some_and(|&k| self.specials.normalized[k])
    }

    /// Whether `id` is a plain added token (see [`Tokenizer::with_plain_tokens`]).
    pub fn is_plain_token(&self, id: Rank) -> bool {
        self.specials
            .by_id
            .get(&id)
            .is_some_and(|&k| self.specials.plain[k])
    }

    fn has_plain_tokens(&self) -> bool {
        self.specials.plain.iter().any(|&p| p)
    }

    /// The id of a special token (or of a plain added token).
    pub fn special_id(&self, name: &str) -> Option<Rank> {
        self.special_tokens()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| id)
    }

    /// One past the largest id, special tokens included.
    pub fn vocab_end(&self) -> usize {
        let sp = self.specials.ids.iter().map(|&i| i as usize + 1).max();
        self.bpe.id_end().max(sp.unwrap_or(0))
    }

    /// Encodes text as ordinary text: special-token strings are encoded like any other text
    /// (plain added tokens, which are not special, still become their ids).
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<Rank>> {
        if self.has_plain_tokens() {
            // no special allowed or refused: only the plain tokens are split out
            return self.encode_with_special(text, &SpecialSet::None, &SpecialSet::None);
        }
        let mut out = Vec::with_capacity(text.len() / 4);
        self.encode_text_into(text, &mut out)?;
        Ok(out)
    }

    /// Pre-tokenizer and BPE only: no special or added token is looked for.
    fn encode_text_into(&self, text: &str, out: &mut Vec<Rank>) -> Result<()> {
        let b = text.as_bytes();
        self.pre
            .for_each_piece(text, |s, e| self.bpe.encode_piece(&b[s..e], out))
    }

    /// Encodes text with tiktoken's default special-token semantics: allowed specials become
    /// their ids, any other special token in the text is an error (`disallowed_special="all"`).
    pub fn encode(&self, text: &str, allowed: &SpecialSet) -> Result<Vec<Rank>> {
        self.encode_with_special(text, allowed, &SpecialSet::All)
    }

    /// tiktoken's `encode(text, allowed_special, disallowed_special)`: allowed specials become
    /// their ids; a disallowed one that is not allowed is an error; the rest are ordinary text.
    pub fn encode_with_special(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<Vec<Rank>> {
        let mut out = Vec::with_capacity(text.len() / 4);
        self.encode_segments(text, allowed, disallowed, |seg| match seg {
            Segment::Text(s, _) => self.encode_text_into(s, &mut out),
            Segment::Special(id, _) => {
                out.push(id);
                Ok(())
            }
        })?;
        Ok(out)
    }

    /// Like [`Tokenizer::encode`], with the byte range of each token.
    pub fn encode_with_offsets(&self, text: &str, allowed: &SpecialSet) -> Result<Encoding> {
        self.offsets_with_special(text, allowed, &SpecialSet::All)
    }

    /// Like [`Tokenizer::encode_ordinary`], with the byte range of each token.
    pub fn encode_ordinary_with_offsets(&self, text: &str) -> Result<Encoding> {
        let none = SpecialSet::Some(HashSet::new());
        self.offsets_with_special(text, &none, &none)
    }

    fn offsets_with_special(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
    ) -> Result<Encoding> {
        let mut enc = Encoding::default();
        let mut ids = Vec::new();
        self.encode_segments(text, allowed, disallowed, |seg| {
            match seg {
                Segment::Text(s, base) => {
                    let b = s.as_bytes();
                    self.pre.for_each_piece(s, |ps, pe| {
                        ids.clear();
                        self.bpe.encode_piece(&b[ps..pe], &mut ids);
                        let mut at = base + ps;
                        for &id in &ids {
                            let len = self.bpe.token_bytes(id).map_or(0, <[u8]>::len);
                            enc.ids.push(id);
                            enc.offsets.push((at, at + len));
                            at += len;
                        }
                    })?;
                }
                Segment::Special(id, (s, e)) => {
                    enc.ids.push(id);
                    enc.offsets.push((s, e));
                }
            }
            Ok(())
        })?;
        Ok(enc)
    }

    /// Encodes bytes that need not be valid UTF-8: each maximal valid run is encoded as text,
    /// each invalid sequence as a piece of its own (single-byte tokens mostly).
    pub fn encode_bytes(&self, bytes: &[u8], allowed: &SpecialSet) -> Result<Vec<Rank>> {
        let mut out = Vec::new();
        for chunk in bytes.utf8_chunks() {
            out.extend(self.encode(chunk.valid(), allowed)?);
            self.bpe.encode_piece(chunk.invalid(), &mut out);
        }
        Ok(out)
    }

    /// Splits `text` at allowed special tokens and calls `f` on each segment; fails on the first
    /// disallowed one; others stay inside the text segments. First-pass tokens are looked for
    /// in the whole text, second-pass ones in the text segments the first pass leaves.
    fn encode_segments(
        &self,
        text: &str,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
        mut f: impl FnMut(Segment<'_>) -> Result<()>,
    ) -> Result<()> {
        self.scan(0, text, 0, allowed, disallowed, &mut f)
    }

    /// One pass of [`Tokenizer::encode_segments`] over `text`, which starts at byte `base`.
    fn scan(
        &self,
        pass: usize,
        text: &str,
        base: usize,
        allowed: &SpecialSet,
        disallowed: &SpecialSet,
        f: &mut dyn FnMut(Segment<'_>) -> Result<()>,
    ) -> Result<()> {
        // text this pass leaves: the next pass, or the caller
        let rest = |s: &str, at: usize, f: &mut dyn FnMut(Segment<'_>) -> Result<()>| {
            if pass == 0 {
                self.scan(1, s, at, allowed, disallowed, f)
            } else {
                f(Segment::Text(s, at))
            }
        };
        let Some((m, idx)) = &self.specials.passes[pass] else {
            return rest(text, base, f);
        };
        let mut last = 0;
        for hit in m.find_iter(text) {
            let k = idx[hit.pattern().as_usize()];
            let name = &self.specials.names[k];
            if !self.specials.plain[k] && !allowed.contains(name) {
                if disallowed.contains(name) {
                    return Err(TokenizerError::DisallowedSpecial {
                        token: name.clone(),
                        offset: base + hit.start(),
                    });
                }
                // neither: ordinary text, left inside the current text segment
                continue;
            }
            if hit.start() > last {
                rest(&text[last..hit.start()], base + last, f)?;
            }
            f(Segment::Special(
                self.specials.ids[k],
                (base + hit.start(), base + hit.end()),
            ))?;
            last = hit.end();
        }
        if last < text.len() {
            rest(&text[last..], base + last, f)?;
        }
        Ok(())
    }

    /// Encodes many texts on the rayon thread pool, as ordinary text.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<Rank>>> {
        texts
            .par_iter()
            .map(|t| self.encode_ordinary(t.as_ref()))
            .collect()
    }

    /// Encodes one long text as ordinary text on the rayon thread pool. The text is cut only at
    /// places where every preset's pre-tokenizer has a piece boundary that does not depend on the
    /// rest of the text ([`is_safe_cut`]), so the result equals
    /// [`Tokenizer::encode_ordinary`]; other pre-tokenizers run on one thread.
    pub fn encode_ordinary_parallel(&self, text: &str) -> Result<Vec<Rank>> {
        let threads = rayon::current_num_threads();
        // a plain added token may straddle a cut
        if self.pre.preset_kind().is_none()
            || self.has_plain_tokens()
            || threads < 2
            || text.len() < 1 << 16
        {
            return self.encode_ordinary(text);
        }
        let cuts = safe_cuts(text, threads * 8);
        let parts: Result<Vec<Vec<Rank>>> = cuts
            .par_windows(2)
            .map(|w| self.encode_ordinary(&text[w[0]..w[1]]))
            .collect();
        Ok(parts?.concat())
    }

    /// Appends the bytes of the tokens (special tokens as their text, or as HF decodes it) to
    /// `out`.
    pub fn decode_bytes_into(&self, ids: &[Rank], out: &mut Vec<u8>) -> Result<()> {
        for &id in ids {
            if let Some(b) = self.bpe.token_bytes(id) {
                out.extend_from_slice(b);
            } else if let Some(&k) = self.specials.by_id.get(&id) {
                out.extend_from_slice(&self.specials.bytes[k]);
            } else {
                return Err(TokenizerError::UnknownId(id));
            }
        }
        Ok(())
    }

    /// The bytes of the tokens; valid UTF-8 or not (a token run may split a character).
    pub fn decode_bytes(&self, ids: &[Rank]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_bytes_into(ids, &mut out)?;
        Ok(out)
    }

    /// The text of the tokens; an error if the bytes are not valid UTF-8.
    pub fn decode(&self, ids: &[Rank]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?).map_err(|e| TokenizerError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }

    /// The bytes of one token, special tokens included.
    pub fn token_bytes(&self, id: Rank) -> Option<&[u8]> {
        self.bpe.token_bytes(id).or_else(|| {
            self.specials
                .by_id
                .get(&id)
                .map(|&k| self.specials.bytes[k].as_slice())
        })
    }
}

/// A run of ordinary text (with its offset in the whole text) or a special token (id, range).
enum Segment<'a> {
    Text(&'a str, usize),
    Special(Rank, (usize, usize)),
}

/// About `n` cut points (including 0 and the end) where [`is_safe_cut`] holds.
pub(crate) fn safe_cuts(text: &str, n: usize) -> Vec<usize> {
    let b = text.as_bytes();
    let step = (b.len() / n.max(1)).max(1);
    let mut cuts = vec![0];
    let mut target = step;
    while target < b.len() {
        let mut p = target;
        while p < b.len() && !is_safe_cut(b, p) {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        cuts.push(p);
        target = p + step;
    }
    cuts.push(b.len());
    cuts
}
