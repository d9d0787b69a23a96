//! Measures GFLOP/s of `linear`-shaped products (a tuning aid, not a test).
use ferrolab_tensor::{linear, no_grad, Tensor};
use std::time::Instant;

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    for (m, n, k) in [
        (1024, 768, 256),
        (1024, 1024, 256),
        (1024, 256, 1024),
        (1024, 4096, 256),
    ] {
        let x = Tensor::randn(&[m, k], 0.0, 1.0);
        let w = Tensor::randn(&[n, k], 0.0, 1.0);
        let wt = w.t().unwrap().contiguous();
        no_grad(|| {
            for _ in 0..3 {
                linear(&x, &w, None).unwrap();
            }
            let r = 20;
            let t = Instant::now();
            for _ in 0..r {
                linear(&x, &w, None).unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / r as f64;
            let t2 = Instant::now();
            for _ in 0..r {
                x.matmul(&wt).unwrap();
            }
            let dt2 = t2.elapsed().as_secs_f64() / r as f64;
            println!(
                "{m} {n} {k}: linear (w^T view) {:.2} ms {:.0} GFLOP/s | matmul (contiguous rhs) {:.2} ms {:.0} GFLOP/s",
                dt * 1e3,
                2.0 * (m * n * k) as f64 / dt / 1e9,
                dt2 * 1e3,
                2.0 * (m * n * k) as f64 / dt2 / 1e9
            );
        });
    }
}
