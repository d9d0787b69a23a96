//! Branch-free scalar functions that the compiler vectorises inside kernel loops.
//!
//! `libm`'s `erff` and the system `expf` are scalar calls (they were 15% of a training step);
//! these are inlined polynomials with selects instead of branches. Accuracy (checked in the
//! tests against f64): `exp` within 2 ulp-ish (relative 3e-7), `erf` within 5e-7 absolute.
//! The polynomials are evaluated with fused multiply-adds where the target has them ([`fma`]):
//! written as a multiply and an add, LLVM may not fuse them, and `exp` ran at 0.81 ns per
//! element against 0.51 with them (`examples/math_probe.rs`; `erf` 0.53 -> 0.40, GELU's
//! derivative 1.6 -> 1.2).

/// `a * b + c`: one fused instruction where the target has FMA (`target-cpu=native` on any
/// recent x86-64), else a multiply and an add (`mul_add` without FMA is a slow library call).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// `e^x`: Cody-Waite range reduction to `[-ln2/2, ln2/2]`, Cephes' degree-6 polynomial, and
/// scaling by `2^k` through the exponent bits. `-inf` and anything below -87.3 give 0, above
/// 88.7 give `inf`, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer (ties even)
    let xc = if x < -87.3 { -87.3 } else { x };
    let xc = if xc > 88.7 { 88.7 } else { xc };
    let kf = fma(xc, LOG2E, ROUND);
    let k = kf - ROUND;
    let r = fma(-k, LN2_LO, fma(-k, LN2_HI, xc));
    let mut p = 1.987_569_2e-4f32;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let y = fma(p, r * r, r) + 1.0;
    // kf's low mantissa bits hold k (ROUND's mantissa is 0x400000): adding the bias and
    // shifting into the exponent field gives 2^k without a float-to-int conversion, which
    // would keep the loop from vectorising.
    let scale = f32::from_bits(kf.to_bits().wrapping_add(127) << 23);
    let v = y * scale;
    let v = if x < -87.3 { 0.0 } else { v };
    let v = if x > 88.7 { f32::INFINITY } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// The error function: odd rational approximation on `[-4, 4]` (the one in Eigen/XLA), exact
/// to float precision beyond where erf saturates.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = if x < -4.0 { -4.0 } else { x };
    let x = if x > 4.0 { 4.0 } else { x };
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = fma(p, x2, 2.770_681_4e-8);
    p = fma(p, x2, -2.101_024e-6);
    p = fma(p, x2, -5.692_506_4e-5);
    p = fma(p, x2, -7.349_906_3e-4);
    p = fma(p, x2, -2.954_6e-3);
    p = fma(p, x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5f32;
    q = fma(q, x2, -2.133_740_6e-4);
    q = fma(q, x2, -1.682_827e-3);
    q = fma(q, x2, -7.373_329e-3);
    q = fma(q, x2, -1.426_474e-2);
    x * p / q
}

/// `(Phi(x), phi(x))`: the standard normal CDF and density, sharing one `exp`.
///
/// Abramowitz and Stegun 7.1.26 for `erfc` (absolute error below 1.5e-7; 3e-7 in f32), so that the
/// lower tail is computed directly (no `1 - (1 - tiny)` cancellation). Costs one `exp` and one
/// division, against the rational `erf` plus a separate `exp` that GELU's value and derivative
/// otherwise need.
#[inline(always)]
pub fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * INV_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * fma(t, fma(t, fma(t, fma(t, A[4], A[3]), A[2]), A[1]), A[0]);
    let e = exp(-0.5 * x * x); // = exp(-z^2)
    let tail = 0.5 * poly * e; // P(N > |x|)
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, INV_SQRT_2PI * e)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)`: `(e^{2x} - 1) / (e^{2x} + 1)`, saturating cleanly for large |x|; below |x| = 0.4
/// the odd Taylor series to `x^13` (the quotient loses the low digits there: at 1e-6 it was
/// 1.3% off), whose first omitted term is about 4e-9 of the value there.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let xc = if x < -15.0 { -15.0 } else { x };
    let xc = if xc > 15.0 { 15.0 } else { xc };
    let e = exp(2.0 * xc);
    let big = (e - 1.0) / (e + 1.0);
    let x2 = x * x;
    let small = x
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (2.0 / 15.0
                    + x2 * (-17.0 / 315.0
                        + x2 * (62.0 / 2835.0
                            + x2 * (-1382.0 / 155_925.0 + x2 * (21_844.0 / 6_081_075.0)))))));
    if x.abs() < 0.4 {
        small
    } else {
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-7, "max relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_matches_f64() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
            x += 0.001;
        }
        assert!(worst < 5e-7, "max absolute error {worst}");
    }

    #[test]
    fn normal_cdf_pdf_matches_f64() {
        let mut x = -9.0f32;
        while x < 9.0 {
            let (c, p) = normal_cdf_pdf(x);
            let xd = x as f64;
            let want_c = 0.5 * libm::erfc(-xd / std::f64::consts::SQRT_2);
            let want_p = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (c as f64 - want_c).abs() < 3e-7,
                "cdf({x}) = {c} vs {want_c}"
            );
            assert!((p as f64 - want_p).abs() < 1e-7, "pdf({x})");
            x += 0.003;
        }
    }

    #[test]
    fn tanh_and_sigmoid_match_f64() {
        let mut x = -20.0f32;
        while x < 20.0 {
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 3e-7,
                "tanh({x})"
            );
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 3e-7, "sigmoid({x})");
            x += 0.01;
        }
        // relative error near 0, where tanh(x) ~ x
        let mut x = 1e-30f32;
        while x < 2.0 {
            for x in [x, -x] {
                let want = (x as f64).tanh();
                let rel = (tanh(x) as f64 - want).abs() / want.abs();
                assert!(rel < 2.5e-7, "tanh({x}) = {} vs {want}: {rel:e}", tanh(x));
            }
            x *= 1.01;
        }
        assert_eq!(tanh(0.0), 0.0);
    }
}

/// Lanes of the split accumulators below: wide enough for AVX-512, and the compiler keeps
/// them in registers.
const L: usize = 16;

/// Sum with `L` independent accumulators (a plain `iter().sum()` is one serial chain the
/// compiler may not reorder, so it never vectorises).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        for i in 0..L {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Dot product with split accumulators.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ia = a.chunks_exact(L);
    let mut ib = b.chunks_exact(L);
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for i in 0..L {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Maximum (ignores NaN like `f32::max`; `-inf` for an empty slice).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; L];
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        for i in 0..L {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    it.remainder().iter().copied().fold(m, f32::max)
}

/// `sum_i exp(x_i - m)`.
#[inline]
pub fn sum_exp(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; L];
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        for i in 0..L {
            acc[i] += exp(c[i] - m);
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().map(|&v| exp(v - m)).sum::<f32>()
}

/// `x_i = exp(x_i - m)` in place, returning the sum: one pass, split accumulators (the same
/// sum, in the same order, as [`sum`] of the result).
#[inline]
pub fn exp_into_self(x: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; L];
    let mut it = x.chunks_exact_mut(L);
    for c in &mut it {
        for i in 0..L {
            let e = exp(c[i] - m);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut rest = 0.0;
    for v in it.into_remainder() {
        *v = exp(*v - m);
        rest += *v;
    }
    acc.iter().sum::<f32>() + rest
}

/// `y_i = exp(x_i - m)`, returning `sum_i y_i`.
#[inline]
pub fn exp_into(x: &[f32], m: f32, y: &mut [f32]) -> f32 {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = exp(xv - m);
    }
    sum(y)
}

#[cfg(test)]
mod reduce_tests {
    use super::*;

    #[test]
    fn split_reductions_match_plain_ones() {
        for n in [0usize, 1, 5, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let y: Vec<f32> = (0..n).map(|i| ((i * 31) % 13) as f32 / 6.0 - 1.0).collect();
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - s).abs() < 1e-4);
            let d: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((dot(&x, &y) as f64 - d).abs() < 1e-4);
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m);
            let se: f64 = x.iter().map(|&v| ((v - 0.5) as f64).exp()).sum();
            assert!((sum_exp(&x, 0.5) as f64 - se).abs() < 1e-4 * se.max(1.0));
            let mut e = x.clone();
            let s_e = exp_into_self(&mut e, 0.5);
            assert!((s_e as f64 - se).abs() < 1e-4 * se.max(1.0));
            for (&ev, &xv) in e.iter().zip(&x) {
                assert!(
                    (ev - exp(xv - 0.5)).abs() <= 1e-7 * ev.abs(),
                    "{ev} at {xv}"
                );
            }
        }
    }
}

/// `sum_i (x_i - m)^2` with split accumulators.
#[inline]
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; L];
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        for i in 0..L {
            let d = c[i] - m;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>()
        + it.remainder()
            .iter()
            .map(|&v| (v - m) * (v - m))
            .sum::<f32>()
}
