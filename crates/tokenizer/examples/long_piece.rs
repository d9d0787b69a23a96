//! Encodes one long run of pseudo-random letters (a piece with no split points) and prints the
//! time: `cargo run --release -p ferrolab-tokenizer --example long_piece -- [BYTES]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1 << 20), |a| a.parse())?;
    let tok = ferrolab_tokenizer::builtin("cl100k_base")?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let text: String = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let t = std::time::Instant::now();
    let ids = tok.encode_ordinary(&text)?;
    println!(
        "{n} bytes -> {} tokens in {:.1} ms",
        ids.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
