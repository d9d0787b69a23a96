//! Probe: the fused output head + cross-entropy (`linear_cross_entropy`) against `linear` +
//! `cross_entropy` at 4096 rows, width 256, vocabulary 2048, forward + backward.
//! `cargo run --release -p ferrolab-tensor --example lce_bench`
use ferrolab_tensor::{cross_entropy, linear, linear_cross_entropy, Tensor};
use std::time::Instant;
fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    ferrolab_tensor::on_pool(|| {
        // `gpt`: the GPT benchmark's head (1024 rows, vocabulary 4096)
        let (n, c, v) = if std::env::args().any(|a| a == "gpt") {
            (1024, 256, 4096)
        } else {
            (4096, 256, 2048)
        };
        let h = Tensor::randn(&[n, c], 0.0, 1.0).into_var();
        let w = Tensor::randn(&[v, c], 0.0, 0.02).into_var();
        let tg: Vec<i64> = (0..n).map(|i| ((i * 7) % v) as i64).collect();
        for fused in [true, false, true, false] {
            let mut best = 1e9f64;
            for _ in 0..5 {
                let t0 = Instant::now();
                let l = if fused {
                    linear_cross_entropy(&h, &w, &tg).unwrap()
                } else {
                    cross_entropy(&linear(&h, &w, None).unwrap(), &tg, Default::default()).unwrap()
                };
                l.backward().unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
                h.zero_grad();
                w.zero_grad();
            }
            println!("fused {fused}: {:.1} ms fwd+bwd", best * 1e3);
        }
    });
}
