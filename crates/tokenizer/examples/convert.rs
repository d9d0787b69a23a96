//! Converts a tokenizer (built-in name or file) to another file format.
//!
//! `cargo run --release -p ferrolab-tokenizer --example convert -- NAME_OR_FILE OUT`
//! where OUT ends in `.json` (HF tokenizer.json), `.tiktoken` (rank file; tiktoken-rule
//! vocabularies only) or is a folder (GPT-2 `encoder.json` + `vocab.bpe`).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to] = &args[..] else {
        return Err("usage: convert NAME_OR_FILE OUT(.json|.tiktoken|folder/)".into());
    };
    let tok = ferrolab_tokenizer::load(from, None)?;
    let out = Path::new(to);
    if to.ends_with(".json") {
        ferrolab_tokenizer::write_hf(&tok, out)?;
    } else if to.ends_with(".tiktoken") {
        ferrolab_tokenizer::write_tiktoken(tok.bpe(), out)?;
    } else {
        std::fs::create_dir_all(out)?;
        let specials: Vec<(String, u32)> = tok
            .special_tokens()
            .map(|(n, id)| (n.to_string(), id))
            .collect();
        ferrolab_tokenizer::write_gpt2(
            tok.bpe(),
            &specials,
            &out.join("encoder.json"),
            &out.join("vocab.bpe"),
        )?;
    }
    Ok(())
}
