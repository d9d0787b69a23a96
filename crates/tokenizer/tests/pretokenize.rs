//! The hand-written splitters give exactly the pieces of the reference regexes.

mod common;

use common::{random_scalars, random_text, Rng};
use ferrolab_tokenizer::{PreTokenizer, Preset};

fn check(preset: Preset, text: &str) {
    let (fast, slow) = (
        PreTokenizer::preset(preset),
        PreTokenizer::reference(preset),
    );
    let a = fast.split(text).unwrap();
    let b = slow.split(text).unwrap();
    if a != b {
        let show = |v: &[(usize, usize)]| v.iter().map(|&(s, e)| &text[s..e]).collect::<Vec<_>>();
        panic!(
            "{preset}: {text:?}\nfast: {:?}\nregex: {:?}",
            show(&a),
            show(&b)
        );
    }
}

const FAST: [Preset; 4] = [
    Preset::Gpt2,
    Preset::Cl100k,
    Preset::O200k,
    Preset::DeepSeek,
];

#[test]
fn fast_splitters_exist() {
    for p in FAST {
        assert!(PreTokenizer::preset(p).is_fast(), "{p}");
    }
}

#[test]
fn adversarial_cases_agree() {
    let cases = [
        "",
        " ",
        "a",
        "'s",
        "'S",
        "'ſ",
        "'ll",
        "'LL",
        "'lL",
        "'ve",
        "'re",
        "'x",
        "''s",
        "' s",
        "x's",
        "X'S",
        "Hello world",
        "  hello",
        "hello  ",
        "a\n\nb",
        "a \n b",
        "a\r\n\r\nb",
        " \n",
        "\n ",
        "   \t\n  x",
        "x\u{a0}\u{a0}y",
        "1234567",
        "a1b2",
        "...\n\n",
        ".\r\n",
        "foo//bar//\n",
        " !!!",
        "!!! ",
        " 'x",
        "e\u{301}\u{301}",
        "\u{301}a",
        "\u{301}1",
        " \u{301}",
        "ABCdef",
        "ABC",
        "abcDEF",
        "ǅǈ",
        "ʰa",
        "aʰ",
        "Aʰ",
        "ʰA",
        "あA",
        "Aあ",
        "Aあb",
        "ꞈA",
        "中文abc",
        "ＡＢＣ１２３",
        "DON'T",
        "don'ts",
        "I'M'S",
        "\u{85}\u{85}x",
        "\u{2028}a",
        "a\u{3000}\u{3000}b",
        "😀😀 😀",
        "\t\tx",
        "\n\n\n",
        "x \t \n\n y",
        // DeepSeek's categories: CJK scripts, punctuation and symbols, numbers one by one
        "中〇文",
        "〇〇",
        "、。「中」",
        "中、文",
        "ｱｲｳ ｴ",
        "한국어 텍스트",
        "ひらがなカタカナ漢字",
        "ー",
        " 中",
        " 1",
        " ,x",
        " ,\r\n\r\nx",
        "a.\r\n b",
        "!!\n\n x",
        "x . y",
        "$%^&*",
        " $5",
        "Ⅻ①½",
        "a\u{301}b",
        " \u{301}",
        "\u{200b}\u{200b}",
        "x\u{0}y",
        "'中",
        "'1",
        "' ",
        "\u{2028}\n",
        " \n \n",
        " ㋾",
        " ㋾㋾x",
    ];
    for p in FAST {
        for c in cases {
            check(p, c);
        }
    }
}

#[test]
fn random_mixed_text_agrees() {
    let mut rng = Rng(0x5eed_1234);
    for p in FAST {
        for _ in 0..1500 {
            let t = random_text(&mut rng, 24);
            check(p, &t);
        }
    }
}

#[test]
fn random_scalars_agree() {
    let mut rng = Rng(0xabcdef);
    for p in FAST {
        for _ in 0..1000 {
            let t = random_scalars(&mut rng, 24);
            check(p, &t);
        }
    }
}

#[test]
fn every_byte_is_in_one_piece() {
    let mut rng = Rng(7);
    for p in Preset::ALL {
        let pre = PreTokenizer::preset(p);
        for _ in 0..200 {
            let t = random_text(&mut rng, 20);
            let pieces = pre.split(&t).unwrap();
            let mut at = 0;
            for (s, e) in pieces {
                assert_eq!(s, at, "{p}: {t:?}");
                assert!(e > s);
                at = e;
            }
            assert_eq!(at, t.len());
        }
    }
}

#[test]
fn deepseek_splits_digits_and_categories() {
    let pre = PreTokenizer::preset(Preset::DeepSeek);
    let t = "abc123中文!! x";
    let pieces: Vec<&str> = pre
        .split(t)
        .unwrap()
        .iter()
        .map(|&(s, e)| &t[s..e])
        .collect();
    assert_eq!(pieces, ["abc", "1", "2", "3", "中文", "!!", " x"]);
}

/// Cutting a text where `is_safe_cut` holds and splitting the two halves gives the pieces of the
/// whole, for every preset (checked on the reference regexes).
#[test]
fn safe_cuts_do_not_change_pieces() {
    let mut rng = Rng(77);
    let mut checked = 0;
    for _ in 0..300 {
        let t = random_text(&mut rng, 30)
            + " ab cd"
            + &random_text(&mut rng, 20)
            + "ef\ngh"
            + &random_text(&mut rng, 20);
        let b = t.as_bytes();
        for p in (0..b.len()).filter(|&p| ferrolab_tokenizer::is_safe_cut(b, p)) {
            for preset in Preset::ALL {
                let pre = PreTokenizer::reference(preset);
                let whole = pre.split(&t).unwrap();
                let mut parts = pre.split(&t[..p]).unwrap();
                parts.extend(
                    pre.split(&t[p..])
                        .unwrap()
                        .into_iter()
                        .map(|(s, e)| (s + p, e + p)),
                );
                assert_eq!(parts, whole, "{preset}: {t:?} cut at {p}");
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
    // both shapes were exercised
    assert!(
        ferrolab_tokenizer::is_safe_cut(b"ab\ncd", 3)
            && ferrolab_tokenizer::is_safe_cut(b"ab cd", 2)
    );
    assert!(
        !ferrolab_tokenizer::is_safe_cut(b"a.\ncd", 3)
            && !ferrolab_tokenizer::is_safe_cut(b"ab  cd", 3)
    );
}

#[test]
fn a_text_the_regex_engine_cannot_match_is_an_error_about_the_text() {
    // DeepSeek's pattern on the backtracking engine gives up on a run of a million spaces:
    // the error names the text, not the pattern
    let text = format!("hello{}world", " ".repeat(1_000_000));
    let e = PreTokenizer::reference(Preset::DeepSeek)
        .split(&text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("at byte 5") && e.contains("1000000 whitespace"),
        "{e}"
    );
}

#[test]
fn the_deepseek_preset_splits_runs_the_regex_engine_gives_up_on() {
    // the hand-written splitter has no backtracking limit: a run of a million spaces splits
    // as a shorter one does on the regex (the run less its last space, which leads the word)
    let short = "hello     world";
    let want: Vec<(usize, usize)> = vec![(0, 5), (5, 9), (9, 15)];
    assert_eq!(
        PreTokenizer::reference(Preset::DeepSeek)
            .split(short)
            .unwrap(),
        want
    );
    let n = 1_000_000;
    let text = format!("hello{}world", " ".repeat(n));
    let pieces = PreTokenizer::preset(Preset::DeepSeek).split(&text).unwrap();
    assert_eq!(pieces, [(0, 5), (5, 5 + n - 1), (5 + n - 1, text.len())]);
}
