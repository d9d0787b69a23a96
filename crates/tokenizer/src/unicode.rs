//! Unicode character classes for the hand-written pre-tokenisers.
//!
//! The classes are taken from `regex-syntax`, the same tables the reference regex engine
//! (`fancy-regex`, which hands classes to `regex`) uses, so the fast splitters and the reference
//! patterns can never disagree on which characters are letters, numbers or white space, whatever
//! Unicode version the regex crates ship. A two-level table (256-character blocks, identical blocks
//! shared) gives one load per non-ASCII character; ASCII has its own flat table.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`
pub const L: u16 = 1;
/// `\p{N}`
pub const N: u16 = 1 << 1;
/// `\s` (Unicode White_Space)
pub const WS: u16 = 1 << 2;
/// o200k's upper-ish class `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`
pub const UPPER: u16 = 1 << 3;
/// o200k's lower-ish class `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`
pub const LOWER: u16 = 1 << 4;
/// `(?i:s)`: s, S and the long s U+017F (case-insensitive matching folds them together)
pub const CI_S: u16 = 1 << 5;
/// `(?i:d)`
pub const CI_D: u16 = 1 << 6;
/// `(?i:m)`
pub const CI_M: u16 = 1 << 7;
/// `(?i:t)`
pub const CI_T: u16 = 1 << 8;
/// `(?i:l)`
pub const CI_L: u16 = 1 << 9;
/// `(?i:v)`
pub const CI_V: u16 = 1 << 10;
/// `(?i:e)`
pub const CI_E: u16 = 1 << 11;
/// `(?i:r)`
pub const CI_R: u16 = 1 << 12;
/// `[\p{P}\p{S}]` (DeepSeek's punctuation and symbol runs)
pub const PS: u16 = 1 << 13;
/// `[\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}]` (DeepSeek's CJK runs)
pub const CJK: u16 = 1 << 14;

const CLASSES: [(&str, u16); 15] = [
    (r"\p{L}", L),
    (r"\p{N}", N),
    (r"\s", WS),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
    ("(?i:s)", CI_S),
    ("(?i:d)", CI_D),
    ("(?i:m)", CI_M),
    ("(?i:t)", CI_T),
    ("(?i:l)", CI_L),
    ("(?i:v)", CI_V),
    ("(?i:e)", CI_E),
    ("(?i:r)", CI_R),
    (r"[\p{P}\p{S}]", PS),
    (r"[\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}]", CJK),
];

const BLOCK: usize = 256;
const N_CHARS: usize = 0x11_0000;

/// Class flags of every character.
pub struct Table {
    ascii: [u16; 128],
    /// block index per 256-character block
    index: Vec<u16>,
    /// the distinct blocks, `BLOCK` flags each
    blocks: Vec<u16>,
}

impl Table {
    fn build() -> Table {
        let mut flat = vec![0u16; N_CHARS];
        for (pattern, flag) in CLASSES {
            // The patterns are constants of this file, so a parse failure is a bug here, not an
            // input error; an empty class would only make the fast path disagree with the
            // reference, which the parity tests catch.
            let Ok(hir) = regex_syntax::parse(pattern) else {
                continue;
            };
            let ranges: Vec<(u32, u32)> = match hir.kind() {
                HirKind::Class(Class::Unicode(c)) => c
                    .ranges()
                    .iter()
                    .map(|r| (r.start() as u32, r.end() as u32))
                    .collect(),
                HirKind::Literal(lit) => std::str::from_utf8(&lit.0)
                    .ok()
                    .and_then(|s| s.chars().next())
                    .map(|c| vec![(c as u32, c as u32)])
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            for (a, b) in ranges {
                for f in &mut flat[a as usize..=b as usize] {
                    *f |= flag;
                }
            }
        }
        let mut ascii = [0u16; 128];
        ascii.copy_from_slice(&flat[..128]);
        let mut index = Vec::with_capacity(N_CHARS / BLOCK);
        let mut blocks: Vec<u16> = Vec::new();
        let mut seen: rustc_hash::FxHashMap<&[u16], u16> = Default::default();
        for chunk in flat.chunks(BLOCK) {
            let next = seen.len() as u16;
            let id = *seen.entry(chunk).or_insert_with(|| {
                blocks.extend_from_slice(chunk);
                next
            });
            index.push(id);
        }
        Table {
            ascii,
            index,
            blocks,
        }
    }

    /// Flags of one character.
    #[inline(always)]
    pub fn flags(&self, c: char) -> u16 {
        let c = c as usize;
        if c < 128 {
            self.ascii[c]
        } else {
            self.blocks[self.index[c / BLOCK] as usize * BLOCK + c % BLOCK]
        }
    }
}

/// The shared table, built on first use (about a millisecond).
pub fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(Table::build)
}
