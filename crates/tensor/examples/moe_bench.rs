//! Probe: the routed-expert op (`moe_experts`) forward and backward at the tiny preset's shape
//! (4096 token rows, width 256, 8 experts of 176, top-2), with balanced and with skewed routing
//! (half the slots on one expert). `cargo run --release -p ferrolab-tensor --example moe_bench`
use ferrolab_tensor::{moe_experts, ExpertWeights, Tensor};
use std::time::Instant;
fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    let (n, c, f, e, k) = (4096, 256, 176, 8, 2);
    if std::env::var("ONE").is_ok() {
        ferrolab_tensor::set_num_threads(1).ok();
    }
    let x = Tensor::randn(&[n, c], 0.0, 1.0).into_var();
    let w = Tensor::rand(&[n, k], 0.1, 1.0).into_var();
    let ws: Vec<(Tensor, Tensor, Tensor)> = (0..e)
        .map(|_| {
            (
                Tensor::randn(&[f, c], 0.0, 0.02).into_var(),
                Tensor::randn(&[f, c], 0.0, 0.02).into_var(),
                Tensor::randn(&[c, f], 0.0, 0.02).into_var(),
            )
        })
        .collect();
    let ex: Vec<ExpertWeights> = ws
        .iter()
        .map(|(g, u, d)| ExpertWeights {
            gate: g,
            up: u,
            down: d,
        })
        .collect();
    for skew in [false, true] {
        let idx: Vec<usize> = (0..n * k)
            .map(|p| {
                if skew && p % 2 == 0 {
                    0
                } else {
                    (p * 7 + p / 13) % e
                }
            })
            .collect();
        let (mut tf, mut tb) = (1e9f64, 1e9f64);
        for _ in 0..6 {
            let t0 = Instant::now();
            let y = moe_experts(&x, &w, &idx, &ex).unwrap();
            let a = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            y.sum_all().backward().unwrap();
            tf = tf.min(a);
            tb = tb.min(t1.elapsed().as_secs_f64());
        }
        let fl = 2.0 * (n * k * 3 * c * f) as f64;
        println!(
            "skew {skew}: fwd {:.1} ms ({:.0} GF/s) bwd {:.1} ms ({:.0} GF/s)",
            tf * 1e3,
            fl / tf / 1e9,
            tb * 1e3,
            2.0 * fl / tb / 1e9
        );
    }
}
