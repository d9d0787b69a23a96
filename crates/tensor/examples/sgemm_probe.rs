//! Probe: a plain BLIS-style sgemm (6 x 16 AVX2 + FMA register tile, packed operands, blocks
//! `mc x kc` of the left operand against `kc x nc` panels of the right) against `gemm` on the
//! language model's products, on one thread and on two (rows split in halves). It asks whether
//! a kernel of our own could beat `gemm` here: on the 2026-11-30 AVX2 machine both reach
//! 90-96 GFLOP/s on one thread, ~94% of one core's FMA peak, and neither wins on two.
//! `cargo run --release -p ferrolab-tensor --example sgemm_probe [MC KC NC]` (x86-64 with
//! AVX2 + FMA only).
#[cfg(target_arch = "x86_64")]
mod common;

#[cfg(target_arch = "x86_64")]
mod probe {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const MR: usize = 6;
    const NR: usize = 16;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        let (mut a, mut b) = (a, b);
        let mut r00 = _mm256_setzero_ps();
        let mut r01 = _mm256_setzero_ps();
        let mut r10 = _mm256_setzero_ps();
        let mut r11 = _mm256_setzero_ps();
        let mut r20 = _mm256_setzero_ps();
        let mut r21 = _mm256_setzero_ps();
        let mut r30 = _mm256_setzero_ps();
        let mut r31 = _mm256_setzero_ps();
        let mut r40 = _mm256_setzero_ps();
        let mut r41 = _mm256_setzero_ps();
        let mut r50 = _mm256_setzero_ps();
        let mut r51 = _mm256_setzero_ps();
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            let x = _mm256_broadcast_ss(&*a);
            r00 = _mm256_fmadd_ps(x, b0, r00);
            r01 = _mm256_fmadd_ps(x, b1, r01);
            let x = _mm256_broadcast_ss(&*a.add(1));
            r10 = _mm256_fmadd_ps(x, b0, r10);
            r11 = _mm256_fmadd_ps(x, b1, r11);
            let x = _mm256_broadcast_ss(&*a.add(2));
            r20 = _mm256_fmadd_ps(x, b0, r20);
            r21 = _mm256_fmadd_ps(x, b1, r21);
            let x = _mm256_broadcast_ss(&*a.add(3));
            r30 = _mm256_fmadd_ps(x, b0, r30);
            r31 = _mm256_fmadd_ps(x, b1, r31);
            let x = _mm256_broadcast_ss(&*a.add(4));
            r40 = _mm256_fmadd_ps(x, b0, r40);
            r41 = _mm256_fmadd_ps(x, b1, r41);
            let x = _mm256_broadcast_ss(&*a.add(5));
            r50 = _mm256_fmadd_ps(x, b0, r50);
            r51 = _mm256_fmadd_ps(x, b1, r51);
            a = a.add(MR);
            b = b.add(NR);
        }
        let c0 = [r00, r01, r10, r11, r20, r21, r30, r31, r40, r41, r50, r51];
        for i in 0..MR {
            let p = c.add(i * ldc);
            let (mut v0, mut v1) = (c0[2 * i], c0[2 * i + 1]);
            if acc {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
    }

    /// C (m x n, row-major) = A (m x k, strides ra, ca) * B (k x n, strides rb, cb); full tiles only
    /// (m % 6 == 0, n % 16 == 0) in this probe.
    #[allow(clippy::too_many_arguments)]
    unsafe fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        ra: usize,
        ca: usize,
        b: *const f32,
        rb: usize,
        cb: usize,
        c: *mut f32,
        mc: usize,
        kcmax: usize,
        nc: usize,
        pa: &mut Vec<f32>,
        pb: &mut Vec<f32>,
    ) {
        pa.resize(mc * kcmax, 0.0);
        pb.resize(nc * kcmax, 0.0);
        let mut jc = 0;
        while jc < n {
            let nb = nc.min(n - jc);
            let mut pc = 0;
            while pc < k {
                let kc = kcmax.min(k - pc);
                // pack B[pc..pc+kc, jc..jc+nb] into 16-column panels
                for jp in (0..nb).step_by(NR) {
                    let dst = pb.as_mut_ptr().add(jp * kc);
                    for p in 0..kc {
                        let src = b.add((pc + p) * rb + (jc + jp) * cb);
                        if cb == 1 {
                            std::ptr::copy_nonoverlapping(src, dst.add(p * NR), NR);
                        } else {
                            for j in 0..NR {
                                *dst.add(p * NR + j) = *src.add(j * cb);
                            }
                        }
                    }
                }
                let mut ic = 0;
                while ic < m {
                    let mb = mc.min(m - ic);
                    for ip in (0..mb).step_by(MR) {
                        let dst = pa.as_mut_ptr().add(ip * kc);
                        for p in 0..kc {
                            for i in 0..MR {
                                *dst.add(p * MR + i) = *a.add((ic + ip + i) * ra + (pc + p) * ca);
                            }
                        }
                    }
                    for jp in (0..nb).step_by(NR) {
                        for ip in (0..mb).step_by(MR) {
                            kernel(
                                kc,
                                pa.as_ptr().add(ip * kc),
                                pb.as_ptr().add(jp * kc),
                                c.add((ic + ip) * n + jc + jp),
                                n,
                                pc > 0,
                            );
                        }
                    }
                    ic += mb;
                }
                pc += kc;
            }
            jc += nb;
        }
    }

    /// `c = a @ b`, all row-major.
    fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        par: gemm::Parallelism,
    ) {
        super::common::mm(m, n, k, a, (1, k as isize), b, c, par);
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let mc: usize = args.get(1).map_or(144, |s| s.parse().unwrap());
        let kc: usize = args.get(2).map_or(256, |s| s.parse().unwrap());
        let nc: usize = args.get(3).map_or(4096, |s| s.parse().unwrap());
        ferrolab_tensor::set_num_threads(2).unwrap();
        for (m, n, k) in [
            (4092, 768, 256),
            (4092, 1376, 256),
            (4092, 256, 688),
            (4092, 2048, 256),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let mut c = vec![0f32; m * n];
            let mut c2 = vec![0f32; m * n];
            mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::None);
            // rows x n = rows x k (a, row-major) @ k x n (b, row-major) with our kernel
            let ours =
                |rows: usize, a: &[f32], c: &mut [f32], pa: &mut Vec<f32>, pb: &mut Vec<f32>| {
                    assert!(a.len() >= rows * k && c.len() >= rows * n);
                    // SAFETY: the slices hold rows x k and rows x n elements; b holds k x n.
                    unsafe {
                        sgemm(
                            rows,
                            n,
                            k,
                            a.as_ptr(),
                            k,
                            1,
                            b.as_ptr(),
                            n,
                            1,
                            c.as_mut_ptr(),
                            mc,
                            kc,
                            nc,
                            pa,
                            pb,
                        )
                    }
                };
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            ours(m, &a, &mut c2, &mut pa, &mut pb);
            let err = c
                .iter()
                .zip(&c2)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let r = 10;
            let flop = 2.0 * (m * n * k) as f64;
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..r {
                    f();
                }
                flop / (t.elapsed().as_secs_f64() / r as f64) / 1e9
            };
            let g1 = time(&mut || mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::None));
            let g2 = time(&mut || mm(m, n, k, &a, &b, &mut c, gemm::Parallelism::Rayon(2)));
            let o1 = time(&mut || ours(m, &a, &mut c2, &mut pa, &mut pb));
            let half = m / 2 / MR * MR;
            let o2 = time(&mut || {
                let (top, bot) = c2.split_at_mut(half * n);
                let (at, ab) = a.split_at(half * k);
                rayon::join(
                    || ours(half, at, top, &mut Vec::new(), &mut Vec::new()),
                    || ours(m - half, ab, bot, &mut Vec::new(), &mut Vec::new()),
                );
            });
            println!("{m}x{n}x{k}: gemm 1t {g1:.0} 2t {g2:.0} | ours 1t {o1:.0} 2t {o2:.0} GFLOP/s (max err {err:.1e})");
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        probe::main();
        return;
    }
    eprintln!("sgemm_probe needs x86-64 with AVX2 and FMA");
}
