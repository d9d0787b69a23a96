//! Any bytes given to the file loaders give a tokenizer or an error, never a panic; a tokenizer
//! that loads encodes and decodes without panicking.
#![no_main]

use ferrolab_tokenizer::{parse_hf_str, parse_tiktoken_str, SpecialSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(tok) = parse_hf_str(&text) {
        if let Ok(ids) = tok.encode(&text, &SpecialSet::All) {
            let _ = tok.decode_bytes(&ids);
        }
    }
    if let Ok(bpe) = parse_tiktoken_str(&text) {
        let mut out = Vec::new();
        bpe.encode_piece(data, &mut out);
    }
});
