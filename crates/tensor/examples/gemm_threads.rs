//! Single- vs multi-threaded `gemm` on the benchmark's shapes (a tuning aid, not a test).
use std::time::Instant;

mod common;

/// `c = a @ b`, all row-major.
fn mm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    common::mm(m, n, k, a, (1, k as isize), b, c, par);
}

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    for (m, n, k) in [
        (1024, 768, 256),
        (1024, 1024, 256),
        (1024, 256, 1024),
        (1024, 4096, 256),
        (4096, 256, 1024),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        let r = 20;
        let flop = 2.0 * (m * n * k) as f64;
        let t = Instant::now();
        for _ in 0..r {
            mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::Rayon(2));
        }
        let par = t.elapsed().as_secs_f64() / r as f64;
        let t = Instant::now();
        for _ in 0..r {
            mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::None);
        }
        let one = t.elapsed().as_secs_f64() / r as f64;
        let t = Instant::now();
        for _ in 0..r {
            rayon::join(
                || mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::None),
                || mm(m, n, k, &a, &b, &mut c2, gemm::Parallelism::None),
            );
        }
        let two = t.elapsed().as_secs_f64() / r as f64;
        let t = Instant::now();
        for _ in 0..r {
            let (top, bot) = c.split_at_mut(m / 2 * n);
            let (at, ab) = a.split_at(m / 2 * k);
            rayon::join(
                || mm(m / 2, n, k, at, &b, top, gemm::Parallelism::None),
                || mm(m - m / 2, n, k, ab, &b, bot, gemm::Parallelism::None),
            );
        }
        let split = t.elapsed().as_secs_f64() / r as f64;
        println!("{m}x{n}x{k}: 2 threads {:.0} GFLOP/s | 1 thread {:.0} | two 1-thread products at once {:.0} (total) | rows split in 2 {:.0}", flop / par / 1e9, flop / one / 1e9, 2.0 * flop / two / 1e9, flop / split / 1e9);
    }
}
