//! Pre-tokenisation: splitting text into pieces that BPE merges never cross.
//!
//! Each [`Preset`] is defined by its regex pattern (the reference path, run by `fancy-regex`).
//! Every preset also has a hand-written splitter (the fast path) that yields the same
//! pieces; `tests/pretokenize.rs` checks the two agree on random and adversarial text. The
//! hand-written splitters are derived from the patterns alternative by alternative; the comments
//! in each say which alternative a branch implements and how backtracking resolves. They have
//! no backtracking limit: a run of a million spaces, on which `fancy-regex` gives up, splits
//! like a short one.

use std::fmt;
use std::sync::OnceLock;

use crate::error::{Result, TokenizerError};
use crate::unicode::{
    self, Table, CI_D, CI_E, CI_L, CI_M, CI_R, CI_S, CI_T, CI_V, CJK, L, LOWER, N, PS, UPPER, WS,
};

/// GPT-2 / r50k / p50k pattern (also HF's `ByteLevel` pre-tokenizer with `use_regex`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// cl100k_base pattern, as tiktoken ships it.
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// o200k_base pattern, as tiktoken ships it.
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// DeepSeek-style pattern: digits one by one; CJK runs, letter runs, punctuation/symbol runs and
/// white space never share a piece, so no merge crosses those categories.
pub const DEEPSEEK_PATTERN: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{N}",
    r"|[\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}]+",
    r"| ?[^\s\p{N}\p{P}\p{S}\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}]+",
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// A named pre-tokenisation scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// GPT-2 (r50k_base, p50k_base, HF `ByteLevel`).
    Gpt2,
    /// cl100k_base (GPT-3.5/4).
    Cl100k,
    /// o200k_base (GPT-4o and later).
    O200k,
    /// DeepSeek-style: single digits, no merges across letter/number/punctuation/CJK.
    DeepSeek,
}

impl Preset {
    /// All presets.
    pub const ALL: [Preset; 4] = [
        Preset::Gpt2,
        Preset::Cl100k,
        Preset::O200k,
        Preset::DeepSeek,
    ];

    /// The regex that defines the preset.
    pub fn pattern(self) -> &'static str {
        match self {
            Preset::Gpt2 => GPT2_PATTERN,
            Preset::Cl100k => CL100K_PATTERN,
            Preset::O200k => O200K_PATTERN,
            Preset::DeepSeek => DEEPSEEK_PATTERN,
        }
    }

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Gpt2 => "gpt2",
            Preset::Cl100k => "cl100k",
            Preset::O200k => "o200k",
            Preset::DeepSeek => "deepseek",
        }
    }

    /// Parse a preset name (`gpt2`/`r50k`/`p50k`, `cl100k`, `o200k`, `deepseek`).
    pub fn from_name(name: &str) -> Result<Preset> {
        match name.to_ascii_lowercase().as_str() {
            "gpt2" | "gpt-2" | "r50k" | "p50k" => Ok(Preset::Gpt2),
            "cl100k" | "cl100k_base" => Ok(Preset::Cl100k),
            "o200k" | "o200k_base" => Ok(Preset::O200k),
            "deepseek" => Ok(Preset::DeepSeek),
            _ => Err(TokenizerError::UnknownPreset(name.to_string())),
        }
    }

    /// The pattern as written into HF `tokenizer.json`, which HF runs with Oniguruma. Oniguruma
    /// (Ruby syntax) reads `X{n,m}+` not as possessive but as `(?:X{n,m})+`, so cl100k's
    /// `\p{N}{1,3}+` would let HF put any number of digits in one piece. Written as
    /// `\p{N}{1,3}` (the same thing for a backtracking engine: nothing follows it in its
    /// alternative) HF splits exactly like tiktoken.
    pub fn hf_pattern(self) -> String {
        self.pattern().replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")
    }

    /// The preset whose pattern (or HF form of it) is exactly `pattern`, if any.
    pub fn from_pattern(pattern: &str) -> Option<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.pattern() == pattern || p.hf_pattern() == pattern)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a [`PreTokenizer`] finds its pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// hand-written splitter of a preset
    Fast(Preset),
    /// the regex, run by fancy-regex
    Regex,
}

/// Splits text into pieces. Every byte of the text is in exactly one piece: text that the
/// pattern does not match becomes a piece of its own (tiktoken drops it; silently losing input
/// is worse than a different split for patterns that do not cover all text).
#[derive(Clone, Debug)]
pub struct PreTokenizer {
    pattern: String,
    /// The pattern as an HF `tokenizer.json` wrote it (Oniguruma's reading), when `pattern` is
    /// its translation for fancy-regex.
    hf_pattern: Option<String>,
    preset: Option<Preset>,
    regex: fancy_regex::Regex,
    engine: Engine,
    /// A pre-tokenizer that splits each piece of this one again (HF's `Sequence` of several
    /// `Split`s, as in DeepSeek-V3's `tokenizer.json`).
    then: Option<Box<PreTokenizer>>,
}

impl PreTokenizer {
    /// The preset's pre-tokenizer, on its hand-written splitter (the fast path).
    pub fn preset(preset: Preset) -> PreTokenizer {
        let mut p = PreTokenizer::reference(preset);
        p.engine = Engine::Fast(preset);
        p
    }

    /// The preset's pre-tokenizer that always runs the regex (the reference path).
    pub fn reference(preset: Preset) -> PreTokenizer {
        // compiled once per process: fancy-regex compilation of these patterns takes
        // milliseconds, and tokenizers are built often in tests and tools
        static COMPILED: [OnceLock<fancy_regex::Regex>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        let k = Preset::ALL.iter().position(|&p| p == preset).unwrap_or(0);
        let regex = COMPILED[k]
            .get_or_init(|| {
                // The preset patterns are constants of this file, tested to compile
                // (`presets_compile`): a failure here is a bug in this file, never bad input,
                // and a silent fallback would change every encoding.
                #[allow(clippy::expect_used)]
                fancy_regex::Regex::new(preset.pattern()).expect("preset patterns compile")
            })
            .clone();
        PreTokenizer {
            pattern: preset.pattern().to_string(),
            hf_pattern: None,
            preset: Some(preset),
            regex,
            engine: Engine::Regex,
            then: None,
        }
    }

    /// A pre-tokenizer from any pattern; a preset's own pattern gets its fast path.
    pub fn from_pattern(pattern: &str) -> Result<PreTokenizer> {
        if let Some(p) = Preset::from_pattern(pattern) {
            return Ok(PreTokenizer::preset(p));
        }
        let regex = fancy_regex::Regex::new(pattern).map_err(|e| TokenizerError::BadPattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?;
        Ok(PreTokenizer {
            pattern: pattern.to_string(),
            hf_pattern: None,
            preset: None,
            regex,
            engine: Engine::Regex,
            then: None,
        })
    }

    /// The regex that defines the split.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Records the HF `tokenizer.json` pattern that [`PreTokenizer::pattern`] translates (it is
    /// written back as it was read).
    pub fn with_hf_pattern(mut self, original: &str) -> PreTokenizer {
        self.hf_pattern = Some(original.to_string());
        self
    }

    /// The pattern in HF's (Oniguruma's) reading: the one a `tokenizer.json` gave, or the
    /// preset's HF form, or the pattern itself.
    pub fn hf_pattern(&self) -> String {
        match (&self.hf_pattern, self.preset) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p.hf_pattern().to_string(),
            (None, None) => self.pattern.clone(),
        }
    }

    /// The preset, when the pattern is one (and no other split follows it).
    pub fn preset_kind(&self) -> Option<Preset> {
        self.preset.filter(|_| self.then.is_none())
    }

    /// This split, then `next` on each of its pieces.
    pub fn followed_by(mut self, next: PreTokenizer) -> PreTokenizer {
        self.then = Some(Box::new(match self.then.take() {
            Some(t) => t.followed_by(next),
            None => next,
        }));
        self
    }

    /// The splits one after another: this one first (one element without
    /// [`PreTokenizer::followed_by`]).
    pub fn chain(&self) -> Vec<&PreTokenizer> {
        let mut v = vec![self];
        let mut at = self;
        while let Some(t) = &at.then {
            v.push(t);
            at = t;
        }
        v
    }

    /// Whether the hand-written splitter is used.
    pub fn is_fast(&self) -> bool {
        matches!(self.engine, Engine::Fast(_))
    }

    /// Calls `f(start, end)` for each piece `text[start..end]`, in order.
    ///
    /// Fails only on the regex path, when the regex engine gives up (backtracking limit).
    pub fn for_each_piece(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        if self.then.is_none() {
            return self.own_pieces(text, f);
        }
        self.chained_pieces(text, 0, &mut f)
    }

    /// [`PreTokenizer::for_each_piece`] through the chain; `base` is `text`'s offset.
    fn chained_pieces(
        &self,
        text: &str,
        base: usize,
        f: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let Some(next) = &self.then else {
            return self.own_pieces(text, |a, b| f(base + a, base + b));
        };
        let mut failed = None;
        self.own_pieces(text, |s, e| {
            if failed.is_none() {
                if let Err(x) = next.chained_pieces(&text[s..e], base + s, f) {
                    failed = Some(x);
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// The pieces of this split alone.
    fn own_pieces(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        match self.engine {
            Engine::Fast(preset) => {
                let t = unicode::table();
                let next: fn(&Table, &str, usize) -> usize = match preset {
                    Preset::Gpt2 => gpt2_end,
                    Preset::Cl100k => cl100k_end,
                    Preset::O200k => o200k_end,
                    Preset::DeepSeek => deepseek_end,
                };
                let mut i = 0;
                while i < text.len() {
                    let e = next(t, text, i);
                    f(i, e);
                    i = e;
                }
                Ok(())
            }
            Engine::Regex => self.regex_pieces(text, f),
        }
    }

    /// The pieces of `text` as byte ranges.
    pub fn split(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut v = Vec::new();
        self.for_each_piece(text, |a, b| v.push((a, b)))?;
        Ok(v)
    }

    fn regex_pieces(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        let mut last = 0;
        for m in self.regex.find_iter(text) {
            let m = m.map_err(|e| {
                let ws = text[last..]
                    .chars()
                    .take_while(|c| c.is_whitespace())
                    .count();
                TokenizerError::PretokenizeFailed {
                    offset: last,
                    message: e.to_string(),
                    hint: if ws > 10_000 {
                        format!(
                            " (a run of {ws} whitespace characters starts there; shorten it, \
                             e.g. squeeze repeated spaces)"
                        )
                    } else {
                        String::new()
                    },
                }
            })?;
            if m.start() > last {
                f(last, m.start());
            }
            if m.end() > m.start() {
                f(m.start(), m.end());
            }
            last = m.end();
        }
        if last < text.len() {
            f(last, text.len());
        }
        Ok(())
    }
}

/// Whether every preset ends a piece at byte `p` whatever the rest of the text holds, so text
/// cut there pre-tokenises exactly like the whole. Two shapes qualify:
/// - `x| y` (ASCII letter, then a space and an ASCII letter): every preset's piece holding the
///   letter stops at a space (letter runs, contractions), none looks behind, and the piece from
///   the space (` y...`) does not depend on what came before;
/// - `x\n|y` (ASCII letter, line break, ASCII letter): the lone `\n` is a piece of its own in
///   every preset, at the end of a text (`\s+$`-like rules) as before a letter (`\s+` once
///   `\s+(?!\S)` fails).
///
/// Used to encode one text on several threads and to stream training files.
#[inline]
pub fn is_safe_cut(b: &[u8], p: usize) -> bool {
    let alpha = |i: usize| b.get(i).is_some_and(u8::is_ascii_alphabetic);
    (p >= 1 && b.get(p) == Some(&b' ') && alpha(p - 1) && alpha(p + 1))
        || (p >= 2 && b[p - 1] == b'\n' && alpha(p - 2) && alpha(p))
}

/// The character at byte `i` and its length in bytes. `i` is always a char boundary here.
#[inline(always)]
fn ch(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        return (b as char, 1);
    }
    match s[i..].chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => ('\0', 1),
    }
}

/// Flags and length of the character at `i`, or `None` at the end.
#[inline(always)]
fn fl(t: &Table, s: &str, i: usize) -> Option<(u16, usize, char)> {
    if i >= s.len() {
        return None;
    }
    let (c, l) = ch(s, i);
    Some((t.flags(c), l, c))
}

/// End of the run of characters whose flags intersect `mask`, from `i`.
#[inline(always)]
fn run(t: &Table, s: &str, mut i: usize, mask: u16) -> usize {
    let b = s.as_bytes();
    while i < b.len() {
        let x = b[i];
        if x < 0x80 {
            // ASCII fast loop: most text stays here
            if t.flags(x as char) & mask == 0 {
                return i;
            }
            i += 1;
        } else {
            let (c, l) = ch(s, i);
            if t.flags(c) & mask == 0 {
                return i;
            }
            i += l;
        }
    }
    i
}

/// End of the run of characters that are in none of `mask`'s classes.
#[inline(always)]
fn run_not(t: &Table, s: &str, mut i: usize, mask: u16) -> usize {
    while let Some((f, l, _)) = fl(t, s, i) {
        if f & mask != 0 {
            return i;
        }
        i += l;
    }
    i
}

/// A white-space run from `i`: its end and the start of its last character.
#[inline(always)]
fn ws_run(t: &Table, s: &str, i: usize) -> (usize, usize) {
    let mut j = i;
    let mut last = i;
    while let Some((f, l, _)) = fl(t, s, j) {
        if f & WS == 0 {
            break;
        }
        last = j;
        j += l;
    }
    (j, last)
}

/// `\s+(?!\S)|\s+` (and `\s++$` before it in cl100k, which only differs when the run ends the
/// text, where both take the whole run): the whole run if it ends the text, else the run
/// less its last character (so that character can lead the next word) when that leaves one,
/// else the single character.
#[inline(always)]
fn ws_tail(s: &str, i: usize, end: usize, last: usize) -> usize {
    if end == s.len() || last == i {
        end
    } else {
        last
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn gpt2_end(t: &Table, s: &str, i: usize) -> usize {
    let b = s.as_bytes();
    let (c, _) = ch(s, i);
    if c == '\'' {
        // case-sensitive contractions, ASCII only
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(b's' | b't' | b'm' | b'd'), _) => return i + 2,
            (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => {
                return i + 3
            }
            _ => {}
        }
    }
    let f = t.flags(c);
    // ` ?X+`: an optional leading space, then a run of one class
    let (start, f0) = if c == ' ' {
        match fl(t, s, i + 1) {
            Some((f1, _, _)) if f1 & WS == 0 => (i + 1, f1),
            _ => (i, f),
        }
    } else {
        (i, f)
    };
    if f0 & L != 0 {
        return run(t, s, start, L);
    }
    if f0 & N != 0 {
        return run(t, s, start, N);
    }
    if f0 & WS == 0 {
        return run_not(t, s, start, WS | L | N);
    }
    let (end, last) = ws_run(t, s, i);
    ws_tail(s, i, end, last)
}

/// cl100k: `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|
/// ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`. The possessive quantifiers mean no
/// alternative ever gives characters back, which keeps every branch a single forward scan.
fn cl100k_end(t: &Table, s: &str, i: usize) -> usize {
    let (c, cl) = ch(s, i);
    if c == '\'' {
        if let Some(e) = contraction_ci(t, s, i + 1, true) {
            return e;
        }
    }
    let f = t.flags(c);
    // [^\r\n\p{L}\p{N}]?+\p{L}++
    if f & L != 0 {
        return run(t, s, i, L);
    }
    if c != '\r' && c != '\n' && f & N == 0 {
        if let Some((f1, _, _)) = fl(t, s, i + cl) {
            if f1 & L != 0 {
                return run(t, s, i + cl, L);
            }
        }
    }
    // \p{N}{1,3}+
    if f & N != 0 {
        let mut j = i + cl;
        for _ in 0..2 {
            match fl(t, s, j) {
                Some((f1, l, _)) if f1 & N != 0 => j += l,
                _ => break,
            }
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]++[\r\n]*+`
    let start = if c == ' ' {
        match fl(t, s, i + 1) {
            Some((f1, _, _)) if f1 & (WS | L | N) == 0 => Some(i + 1),
            _ => None,
        }
    } else if f & WS == 0 {
        Some(i)
    } else {
        None
    };
    if let Some(start) = start {
        let e = run_not(t, s, start, WS | L | N);
        return newlines(s, e, false);
    }
    // white space: \s++$ | \s*[\r\n] | \s+(?!\S) | \s
    let (end, last) = ws_run(t, s, i);
    if end == s.len() {
        return end;
    }
    // `\s*[\r\n]` backtracks to the last line break in the run
    if let Some(k) = s.as_bytes()[i..end]
        .iter()
        .rposition(|&x| x == b'\r' || x == b'\n')
    {
        return i + k + 1;
    }
    ws_tail(s, i, end, last)
}

/// o200k: `[^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+` with U = `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`,
/// W = `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, C the optional case-insensitive contraction. These
/// quantifiers backtrack; `o200k_word` works out where backtracking settles.
fn o200k_end(t: &Table, s: &str, i: usize) -> usize {
    let (c, cl) = ch(s, i);
    let f = t.flags(c);
    let prefix = f & (L | N) == 0 && c != '\r' && c != '\n';
    for lower_first in [true, false] {
        if prefix {
            if let Some(e) = o200k_word(t, s, i + cl, lower_first) {
                return e;
            }
        }
        // without the optional prefix (reached for letters, and for a mark as prefix whose
        // rest failed: marks are in U and W)
        if let Some(e) = o200k_word(t, s, i, lower_first) {
            return e;
        }
    }
    if f & N != 0 {
        let mut j = i + cl;
        for _ in 0..2 {
            match fl(t, s, j) {
                Some((f1, l, _)) if f1 & N != 0 => j += l,
                _ => break,
            }
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
    let start = if c == ' ' {
        match fl(t, s, i + 1) {
            Some((f1, _, _)) if f1 & (WS | L | N) == 0 => Some(i + 1),
            _ => None,
        }
    } else if f & WS == 0 {
        Some(i)
    } else {
        None
    };
    if let Some(start) = start {
        let e = run_not(t, s, start, WS | L | N);
        return newlines(s, e, true);
    }
    ws_lines(t, s, i)
}

/// White space under `\s*[\r\n]+|\s+(?!\S)|\s+` (o200k, DeepSeek): `\s*[\r\n]+` backtracks to
/// the run's last line break when it has one; otherwise [`ws_tail`].
fn ws_lines(t: &Table, s: &str, i: usize) -> usize {
    let (end, last) = ws_run(t, s, i);
    if let Some(k) = s.as_bytes()[i..end]
        .iter()
        .rposition(|&x| x == b'\r' || x == b'\n')
    {
        return i + k + 1;
    }
    ws_tail(s, i, end, last)
}

/// One of o200k's two word alternatives at `i` (after any prefix).
///
/// `lower_first`: `U*W+C?`. Greedy `U*` takes the whole U run, and `W+` then needs a W
/// character: the one after the run (only Ll can be there, Lm/Lo/M being in U), else U* gives
/// back characters until it stands before one that is also in W (Lm, Lo, M). `W+` then runs as
/// far as it can. Otherwise `U+W*C?`: the U run (at least one), then the W run.
fn o200k_word(t: &Table, s: &str, i: usize, lower_first: bool) -> Option<usize> {
    let w_start = if lower_first {
        let mut j = i;
        let mut last_w = None;
        while let Some((f, l, _)) = fl(t, s, j) {
            if f & UPPER == 0 {
                break;
            }
            if f & LOWER != 0 {
                last_w = Some(j);
            }
            j += l;
        }
        match fl(t, s, j) {
            Some((f, _, _)) if f & LOWER != 0 => j,
            _ => last_w?,
        }
    } else {
        let j = run(t, s, i, UPPER);
        if j == i {
            return None;
        }
        j
    };
    let e = run(t, s, w_start, LOWER);
    if lower_first && e == w_start {
        return None;
    }
    Some(contraction_ci(t, s, e, false).unwrap_or(e))
}

/// DeepSeek: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{N}|C+| ?[^\s\p{N}\p{P}\p{S}C]+|
/// ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` with C = `[\p{Han}\p{Hangul}\p{Hiragana}
/// \p{Katakana}]`. Every character is white space, a number, CJK, punctuation or a symbol, or
/// in the fourth alternative's class (X), so some alternative always matches; the runs are
/// single forward scans (nothing after a `+` can fail), and only the white-space alternatives
/// backtrack, as in o200k.
fn deepseek_end(t: &Table, s: &str, i: usize) -> usize {
    let (c, cl) = ch(s, i);
    if c == '\'' {
        if let Some(e) = contraction_ci(t, s, i + 1, true) {
            return e;
        }
    }
    let f = t.flags(c);
    // \p{N}: one at a time (before C: a Han numeral such as U+3007 is both)
    if f & N != 0 {
        return i + cl;
    }
    if f & CJK != 0 {
        return run(t, s, i, CJK);
    }
    // ` ?X+` and ` ?[\p{P}\p{S}]+[\r\n]*`: a space leads the piece when the next character
    // starts one (X, or P/S even when it is also CJK: C's alternative takes no space); alone
    // it is white space, in neither class
    let (start, f0) = if c == ' ' {
        match fl(t, s, i + cl) {
            Some((f1, _, _)) if f1 & PS != 0 || f1 & (WS | N | CJK) == 0 => (i + cl, f1),
            _ => (i, f),
        }
    } else {
        (i, f)
    };
    if f0 & WS == 0 {
        if f0 & PS != 0 {
            return newlines(s, run(t, s, start, PS), false);
        }
        return run_not(t, s, start, WS | N | PS | CJK);
    }
    ws_lines(t, s, i)
}

/// Case-insensitive contraction. `bare`: cl100k's `'(?i:[sdmt]|ll|ve|re)` with `i` after the
/// apostrophe; otherwise o200k's `(?i:'s|'t|'re|'ve|'m|'ll|'d)` with `i` at the apostrophe.
#[inline]
fn contraction_ci(t: &Table, s: &str, i: usize, bare: bool) -> Option<usize> {
    let i = if bare {
        i
    } else {
        if s.as_bytes().get(i) != Some(&b'\'') {
            return None;
        }
        i + 1
    };
    let (f1, l1, _) = fl(t, s, i)?;
    if f1 & (CI_S | CI_D | CI_M | CI_T) != 0 {
        return Some(i + l1);
    }
    let (f2, l2, _) = fl(t, s, i + l1)?;
    if (f1 & CI_L != 0 && f2 & CI_L != 0)
        || (f1 & CI_V != 0 && f2 & CI_E != 0)
        || (f1 & CI_R != 0 && f2 & CI_E != 0)
    {
        return Some(i + l1 + l2);
    }
    None
}

/// `[\r\n]*` (or `[\r\n/]*` with `slash`) from `i`.
#[inline]
fn newlines(s: &str, mut i: usize, slash: bool) -> usize {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b'\r' || b[i] == b'\n' || (slash && b[i] == b'/')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_compile() {
        for p in Preset::ALL {
            assert!(fancy_regex::Regex::new(p.pattern()).is_ok(), "{p}");
        }
    }
}
