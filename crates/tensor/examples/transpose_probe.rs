//! Transpose throughput (a tuning aid, not a test). `THREADS=1` for one thread.
use ferrolab_tensor::{no_grad, Tensor};
use std::time::Instant;

fn main() {
    let threads = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    ferrolab_tensor::set_num_threads(threads).unwrap();
    // the last five: the GPT benchmark's weights (out, in) and a head block's rows
    for (r, c) in [
        (1024usize, 4096usize),
        (4096, 256),
        (1024, 256),
        (768, 256),
        (256, 256),
        (256, 1024),
        (256, 4096),
    ] {
        let x = Tensor::randn(&[r, c], 0.0, 1.0);
        no_grad(|| {
            let xt = x.t().unwrap();
            for _ in 0..3 {
                xt.contiguous();
            }
            let t = Instant::now();
            for _ in 0..20 {
                xt.contiguous();
            }
            let dt = t.elapsed().as_secs_f64() / 20.0;
            println!(
                "{r}x{c}: {:.3} ms, {:.1} GB/s (read+write)",
                dt * 1e3,
                8.0 * (r * c) as f64 / dt / 1e9
            );
        });
    }
}
