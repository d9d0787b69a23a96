//! GFLOP/s of `linear`'s three products through `gemm` on the `llama-tiny` step's shapes
//! (4096 rows): forward `x w^T` (with `w^T` copied row-major, as `linear` does), `dx = g w`, and
//! `dw = g^T x` (the `g^T` view). `bench/mm_torch.py` prints the same table for PyTorch; run the
//! two alternately (a tuning aid, not a test):
//! `cargo run --release -p ferrolab-tensor --example mm_cmp; python3 bench/mm_torch.py`
use std::time::Instant;

mod common;

/// The product on both threads, as `linear` runs it.
fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    c: &mut [f32],
) {
    common::mm(m, n, k, a, a_strides, b, c, gemm::Parallelism::Rayon(2));
}

/// One timed product: writes its output into the slice.
type Product<'a> = &'a dyn Fn(&mut [f32]);

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    let m = 4096;
    let r = 20;
    let mut out = Vec::new();
    for (n, k) in [(768, 256), (256, 256), (1376, 256), (256, 688), (2048, 256)] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let wt: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let g: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32 * 0.1).collect();
        let flop = 2.0 * (m * n * k) as f64;
        let mut res = Vec::new();
        for name in ["fwd", "dx", "dw"] {
            let (len, run): (usize, Product) = match name {
                "fwd" => (m * n, &|c| mm(m, n, k, &x, (1, k as isize), &wt, c)),
                "dx" => (m * k, &|c| mm(m, k, n, &g, (1, n as isize), &w, c)),
                _ => (n * k, &|c| mm(n, k, m, &g, (n as isize, 1), &x, c)),
            };
            let mut c = vec![0f32; len];
            for _ in 0..3 {
                run(&mut c);
            }
            let t = Instant::now();
            for _ in 0..r {
                run(&mut c);
            }
            let dt = t.elapsed().as_secs_f64() / r as f64;
            res.push(format!("{name} {:.0}", flop / dt / 1e9));
        }
        out.push(format!("{n}x{k}: {}", res.join(" ")));
    }
    println!("gemm   {}", out.join(" | "));
}
