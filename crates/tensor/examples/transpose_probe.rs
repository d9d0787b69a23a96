//! Transpose throughput (a tuning aid, not a test).
use ferrolab_tensor::{no_grad, Tensor};
use std::time::Instant;

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    for (r, c) in [(1024usize, 4096usize), (4096, 256), (1024, 256)] {
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
