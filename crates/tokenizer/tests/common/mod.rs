//! Shared test helpers: a seeded random generator of adversarial text.
#![allow(dead_code)]

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const ENGLISH: &[&str] = &[
    "The",
    " the",
    " Union",
    " of",
    " America",
    "'s",
    "'S",
    "'ll",
    "'LL",
    "'ve",
    "'Re",
    "'d",
    "'t",
    "'m",
    " don't",
    " I'M",
    " we're",
    " it's",
    "Hello",
    " world",
    ".",
    ",",
    "!",
    "?",
    ";",
    ":",
    " --",
    "...",
    " (",
    ")",
    "\"",
    " \"quoted\"",
    "-",
    " well-known",
    " U.S.",
    " Mr.",
    " HELLO",
    " CamelCase",
    "iPhone",
];
const CODE: &[&str] = &[
    "fn main() {",
    "}",
    "\n    ",
    "let x = 42;",
    "if (a && b) {",
    "\t\treturn",
    " x += 1;",
    "//",
    " /* c */",
    "#include <stdio.h>",
    "def f(x):",
    "    return x**2",
    "a[i]=b[j];",
    "0x1F",
    "std::vec::Vec<u8>",
    "=>",
    "!=",
    "<<=",
    "\r\n",
    "foo/bar/",
    "/*/",
    "\"\\n\"",
    "'a'",
    "__init__",
    "x_1",
    "$PATH",
];
const CJK: &[&str] = &[
    "中文",
    "日本語",
    "ひらがな",
    "カタカナ",
    "한국어",
    "漢字テスト",
    "。",
    "、",
    "「引用」",
    "１２３",
];
const EMOJI: &[&str] = &["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸", "❤️", "🤖", "✨", "🎉🎉"];
const SCRIPTS: &[&str] = &[
    "Привет",
    " мир",
    "Ελληνικά",
    "العربية",
    "עברית",
    "हिन्दी",
    "ภาษาไทย",
    "Ǆemal",
    "ǅ",
    "ǈ",
    "ſ",
    "e\u{301}",
    "\u{301}",
    "\u{300}a",
    "a\u{300}\u{301}",
    "ʰ",
    "ꞈ",
    "Ⅻ",
    "½",
    "²",
    "٣",
    "߀",
    "ＡＢＣ",
    "ﬁ",
    "İ",
    "ß",
    "ΣΑΣ",
    "ς",
    "\u{200d}",
    "\u{feff}",
    "\u{2028}",
    "\u{85}",
    "\u{a0}",
    "\u{3000}",
    "\u{1680}",
    "Ꙁ",
    "𝐀𝐁",
    "𝑎",
    "ᾼ",
    "ǲ",
];
const SPACE: &[&str] = &[
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\n  \n", "\u{a0}", "\u{3000}",
    " \t ", "\u{b}", "\u{c}",
];
const DIGITS: &[&str] = &[
    "0",
    "12",
    "123",
    "1234",
    "12345678901",
    "3.14",
    "1,000,000",
    "2024-01-01",
    " 42",
    "٣٤٥",
    "１２",
];

/// A random string mixing all the categories above plus random code points.
pub fn random_text(rng: &mut Rng, max_parts: usize) -> String {
    let n = 1 + rng.below(max_parts);
    let mut s = String::new();
    for _ in 0..n {
        match rng.below(9) {
            0 | 1 => s.push_str(rng.pick(ENGLISH)),
            2 => s.push_str(rng.pick(CODE)),
            3 => s.push_str(rng.pick(CJK)),
            4 => s.push_str(rng.pick(EMOJI)),
            5 => s.push_str(rng.pick(SCRIPTS)),
            6 => {
                for _ in 0..1 + rng.below(3) {
                    s.push_str(rng.pick(SPACE));
                }
            }
            7 => s.push_str(rng.pick(DIGITS)),
            _ => s.push(random_char(rng)),
        }
    }
    s
}

/// A random Unicode scalar: ASCII, Latin/BMP, or anywhere.
pub fn random_char(rng: &mut Rng) -> char {
    loop {
        let c = match rng.below(4) {
            0 => rng.below(128) as u32,
            1 => rng.below(0x800) as u32,
            2 => rng.below(0x10000) as u32,
            _ => rng.below(0x110000) as u32,
        };
        if let Some(c) = char::from_u32(c) {
            return c;
        }
    }
}

/// Arbitrary valid UTF-8: random scalars only.
pub fn random_scalars(rng: &mut Rng, max_len: usize) -> String {
    (0..rng.below(max_len + 1))
        .map(|_| random_char(rng))
        .collect()
}
