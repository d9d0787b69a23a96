//! GFLOP/s of `linear` forward and forward+backward on the benchmark's shapes (a tuning aid,
//! not a test).
use ferrolab_tensor::{backward_with_grad, linear, no_grad, Tensor};
use std::time::Instant;

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    // `lm`: the `llama-tiny` language model's products (16 x 256 tokens), else the GPT step's
    let shapes: &[(usize, usize, usize)] = if std::env::args().any(|a| a == "lm") {
        &[
            (4096, 768, 256),
            (4096, 256, 256),
            (4096, 1376, 256),
            (4096, 256, 688),
        ]
    } else {
        &[
            (1024, 768, 256),
            (1024, 256, 256),
            (1024, 1024, 256),
            (1024, 256, 1024),
            (1024, 4096, 256),
        ]
    };
    for &(m, n, k) in shapes {
        let x = Tensor::randn(&[m, k], 0.0, 1.0).into_var();
        let w = Tensor::randn(&[n, k], 0.0, 1.0).into_var();
        let b = Tensor::randn(&[n], 0.0, 1.0).into_var();
        let r = 20;
        let flop = 2.0 * (m * n * k) as f64;
        let f = no_grad(|| {
            for _ in 0..3 {
                linear(&x, &w, Some(&b)).unwrap();
            }
            let t = Instant::now();
            for _ in 0..r {
                linear(&x, &w, Some(&b)).unwrap();
            }
            t.elapsed().as_secs_f64() / r as f64
        });
        let g = vec![1.0f32; m * n];
        let step = || {
            let y = linear(&x, &w, Some(&b)).unwrap();
            backward_with_grad(&y, g.clone()).unwrap();
        };
        for _ in 0..3 {
            step();
        }
        let t = Instant::now();
        for _ in 0..r {
            step();
        }
        let fb = t.elapsed().as_secs_f64() / r as f64;
        println!(
            "{m}x{n}x{k}: fwd {:.2} ms {:.0} GFLOP/s | fwd+bwd {:.2} ms {:.0} GFLOP/s",
            f * 1e3,
            flop / f / 1e9,
            fb * 1e3,
            3.0 * flop / fb / 1e9
        );
    }
}
