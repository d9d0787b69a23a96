//! `gemm` speed by operand layout (a tuning aid, not a test). Strides are (row, col).
use std::time::Instant;

type S = (isize, isize);

#[allow(clippy::too_many_arguments)]
fn mm(m: usize, n: usize, k: usize, d: &mut [f32], ds: S, a: &[f32], a_s: S, b: &[f32], bs: S) {
    mm_par(m, n, k, d, ds, a, a_s, b, bs, gemm::Parallelism::Rayon(2));
}

/// One single-threaded product.
#[allow(clippy::too_many_arguments)]
fn mm1(m: usize, n: usize, k: usize, d: &mut [f32], ds: S, a: &[f32], a_s: S, b: &[f32], bs: S) {
    mm_par(m, n, k, d, ds, a, a_s, b, bs, gemm::Parallelism::None);
}

#[allow(clippy::too_many_arguments)]
fn mm_par(
    m: usize,
    n: usize,
    k: usize,
    d: &mut [f32],
    ds: S,
    a: &[f32],
    a_s: S,
    b: &[f32],
    bs: S,
    par: gemm::Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            d.as_mut_ptr(),
            ds.1,
            ds.0,
            false,
            a.as_ptr(),
            a_s.1,
            a_s.0,
            b.as_ptr(),
            bs.1,
            bs.0,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// dw (o x i) = g^T x with the rows split in two halves, one single-threaded product per
/// core, partial results added.
fn bench_split_k(rows: usize, o: usize, i: usize) -> f64 {
    let g = vec![0.5f32; rows * o];
    let x = vec![0.25f32; rows * i];
    let mut d0 = vec![0f32; o * i];
    let mut d1 = vec![0f32; o * i];
    let h = rows / 2;
    let (oi, ii) = (o as isize, i as isize);
    let run = |d0: &mut [f32], d1: &mut [f32]| {
        rayon::join(
            || {
                mm1(
                    o,
                    i,
                    h,
                    d0,
                    (ii, 1),
                    &g[..h * o],
                    (1, oi),
                    &x[..h * i],
                    (ii, 1),
                )
            },
            || {
                mm1(
                    o,
                    i,
                    rows - h,
                    d1,
                    (ii, 1),
                    &g[h * o..],
                    (1, oi),
                    &x[h * i..],
                    (ii, 1),
                )
            },
        );
        use rayon::prelude::*;
        d0.par_chunks_mut(4096)
            .zip(d1.par_chunks(4096))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
    };
    for _ in 0..3 {
        run(&mut d0, &mut d1);
    }
    let r = 30;
    let t = Instant::now();
    for _ in 0..r {
        run(&mut d0, &mut d1);
    }
    2.0 * (rows * o * i) as f64 / (t.elapsed().as_secs_f64() / r as f64) / 1e9
}

fn bench(m: usize, n: usize, k: usize, ds: S, a_s: S, bs: S) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    for _ in 0..3 {
        mm(m, n, k, &mut c, ds, &a, a_s, &b, bs);
    }
    let r = 30;
    let t = Instant::now();
    for _ in 0..r {
        mm(m, n, k, &mut c, ds, &a, a_s, &b, bs);
    }
    2.0 * (m * n * k) as f64 / (t.elapsed().as_secs_f64() / r as f64) / 1e9
}

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    // linear shapes: rows x out x in
    // `lm`: the `llama-tiny` language model's shapes (16 x 256 tokens), else the GPT step's
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
            (1024, 1024, 256),
            (1024, 256, 1024),
            (1024, 4096, 256),
        ]
    };
    for &(rows, o, i) in shapes {
        let (ri, oi, ii) = (rows as isize, o as isize, i as isize);
        // forward y(rows x o) = x(rows x i) w^T, w (o x i)
        let f_view = bench(rows, o, i, (oi, 1), (ii, 1), (1, ii));
        let f_t = bench(rows, o, i, (oi, 1), (ii, 1), (oi, 1)); // w^T materialised
                                                                // same product computed as the column-major problem y^T = w x^T
        let f_col = bench(o, rows, i, (1, oi), (ii, 1), (1, ii));
        // dx(rows x i) = g(rows x o) w(o x i)
        let dx = bench(rows, i, o, (ii, 1), (oi, 1), (ii, 1));
        // dw(o x i) = g^T x: lhs g^T view
        let dw_view = bench(o, i, rows, (ii, 1), (1, oi), (ii, 1));
        // dw as the column-major problem dw^T(i x o) = x^T g, dst stored row-major o x i
        let dw_col = bench(i, o, rows, (1, ii), (1, ii), (oi, 1));
        // dw with g^T materialised (o x rows, row-major)
        let dw_t = bench(o, i, rows, (ii, 1), (ri, 1), (ii, 1));
        let dw_split = bench_split_k(rows, o, i);
        println!("{rows}x{o}x{i}: dw split-k {dw_split:.0}");
        println!("{rows}x{o}x{i}: fwd view {f_view:.0} | fwd W^T copy {f_t:.0} | fwd col {f_col:.0} | dx {dx:.0} | dw view {dw_view:.0} | dw col {dw_col:.0} | dw g^T copy {dw_t:.0}");
    }
}
