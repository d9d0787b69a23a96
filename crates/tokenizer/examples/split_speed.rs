//! Pre-tokenisation speed: every preset's hand-written splitter against its reference regex on
//! a folder of text files (the State of the Union corpus: `ferrolab data fetch sotu`), checking
//! that both give the same pieces.
//! `cargo run --release -p ferrolab-tokenizer --example split_speed -- ~/.cache/ferrolab/sotu`
use ferrolab_tokenizer::{PreTokenizer, Preset};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: split_speed FOLDER_OF_TEXT_FILES")?;
    let mut files = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    let mut text = String::new();
    for p in files {
        text.push_str(&std::fs::read_to_string(&p)?);
    }
    let mb = text.len() as f64 / 1e6;
    println!("{mb:.2} MB");
    for preset in Preset::ALL {
        let mut best = [0f64; 2];
        let mut pieces = [Vec::new(), Vec::new()];
        for _ in 0..3 {
            let paths = [
                PreTokenizer::preset(preset),
                PreTokenizer::reference(preset),
            ];
            for (k, pre) in paths.iter().enumerate() {
                let t = Instant::now();
                pieces[k] = pre.split(&text)?;
                best[k] = best[k].max(mb / t.elapsed().as_secs_f64());
            }
        }
        if pieces[0] != pieces[1] {
            return Err(format!("{preset}: the two paths split differently").into());
        }
        println!(
            "{preset}: {} pieces, hand-written {:.0} MB/s, regex {:.1} MB/s ({:.1}x), best of 3",
            pieces[0].len(),
            best[0],
            best[1],
            best[0] / best[1]
        );
    }
    Ok(())
}
