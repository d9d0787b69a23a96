//! decode(encode(bytes)) == bytes for any input, with a merge-list vocabulary (the HF fixture)
//! and the pair-free tiktoken rule (cl100k_base).
#![no_main]

use std::sync::OnceLock;

use ferrolab_tokenizer::{builtin, parse_hf_str, SpecialSet, Tokenizer};
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let hf = parse_hf_str(include_str!("../../tests/fixtures/hf_cl100k.json"))
            .expect("fixture loads");
        [hf, builtin("cl100k_base").expect("builtin")]
    })
}

fuzz_target!(|data: &[u8]| {
    for tok in tokenizers() {
        let ids = tok.encode_bytes(data, &SpecialSet::None).unwrap_or_default();
        if let Ok(back) = tok.decode_bytes(&ids) {
            if !ids.is_empty() || data.is_empty() {
                assert_eq!(back, data);
            }
        }
        if let Ok(s) = std::str::from_utf8(data) {
            let ids = tok.encode_ordinary(s).expect("ordinary encoding never fails on presets");
            assert_eq!(tok.decode(&ids).expect("valid UTF-8 in, valid out"), s);
        }
    }
});
