use ferrolab_tensor::{linear, Tensor};
use std::time::Instant;
fn main() {
    let t: usize = std::env::var("T")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    ferrolab_tensor::set_num_threads(t).unwrap();
    let run = || {
        for (m, k, n) in [
            (1024, 256, 352),
            (1024, 176, 256),
            (2048, 256, 352),
            (4096, 256, 352),
            (4096, 256, 256),
        ] {
            let x = Tensor::randn(&[m, k], 0.0, 1.0);
            let w = Tensor::randn(&[n, k], 0.0, 1.0);
            let mut best = 1e9f64;
            for _ in 0..10 {
                let t0 = Instant::now();
                let _y = linear(&x, &w, None).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "T={t} {m}x{k}x{n}: {:.2} ms {:.0} GF/s",
                best * 1e3,
                2.0 * (m * k * n) as f64 / best / 1e9
            );
        }
    };
    if std::env::var("POOL").is_ok() {
        ferrolab_tensor::on_pool(run)
    } else {
        run()
    }
}
