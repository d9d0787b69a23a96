//! Shared helpers of the integration tests: deterministic test data, a finite-difference
//! gradient checker and closeness assertions.
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod attn;

use ferrolab_tensor::rng::Rng;
use ferrolab_tensor::{backward_with_grad, no_grad, Result, Tensor};

/// Deterministic test data from a private generator (never touches the global one that
/// dropout draws from).
pub struct Data(Rng);

impl Data {
    pub fn new(seed: u64) -> Data {
        Data(Rng::new(seed))
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.0.uniform()).collect()
    }

    /// Standard normal (Box-Muller).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1 = 1.0 - self.0.uniform() as f64;
                let u2 = self.0.uniform() as f64;
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect()
    }

    /// Standard normal tensor.
    pub fn randn(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        t(self.normal_vec(n), shape)
    }

    /// Uniform tensor in `[lo, hi)`.
    pub fn uniform(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        t(self.uniform_vec(n, lo, hi), shape)
    }

    /// Values with magnitude in `[lo, hi)` and a random sign: away from 0 (kinks of relu and
    /// abs, poles of div).
    pub fn away_from_zero(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                let m = lo + (hi - lo) * self.0.uniform();
                if self.0.uniform() < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect();
        t(v, shape)
    }

    /// Pairwise distinct values `offset + step * k` in random order: no ties for max-like ops
    /// as long as the finite-difference step is below `step / 2`.
    pub fn distinct(&mut self, shape: &[usize], step: f32, offset: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.0.below(i + 1));
        }
        // integer centring keeps every value on the grid `offset + step * Z`
        let half = (n / 2) as isize;
        let v = order
            .iter()
            .map(|&k| offset + step * (k as isize - half) as f32)
            .collect();
        t(v, shape)
    }

    /// Random indices in `0..n`.
    pub fn indices(&mut self, len: usize, n: usize) -> Vec<usize> {
        (0..len).map(|_| self.0.below(n)).collect()
    }
}

/// A contiguous tensor from data (panics on a bad shape).
pub fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).expect("test data matches its shape")
}

/// Row-major multi-index of flat element `i` of `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

/// Asserts `|a - b| <= tol * max(1, |b|)` element by element, naming the first mismatches.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} elements vs {} expected",
        got.len(),
        want.len()
    );
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| !close(**g, **w, tol))
        .take(8)
        .map(|(i, (g, w))| format!("  [{i}] got {g:e}, want {w:e}, diff {:e}", (g - w).abs()))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: values differ beyond {tol:e}:\n{}",
        bad.join("\n")
    );
}

/// Same as [`assert_close`] on two tensors, also comparing shapes.
#[track_caller]
pub fn assert_tensor_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_close(what, &got.to_vec(), &want.to_vec(), tol);
}

/// `|a - b| <= tol * max(1, |b|)`; equal infinities are close, NaN never is.
pub fn close(a: f32, b: f32, tol: f32) -> bool {
    if a == b {
        return true;
    }
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// The gradient of a leaf as a vector, zeros if no backward reached it.
pub fn grad_vec(x: &Tensor) -> Vec<f32> {
    x.grad()
        .map_or_else(|| vec![0.0; x.numel()], |g| g.to_vec())
}

/// Fresh trainable leaves holding the values of `inputs` (contiguous copies).
pub fn vars(inputs: &[Tensor]) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|x| t(x.to_vec(), x.shape()).into_var())
        .collect()
}

/// Output weights `R` of the scalar `sum(y * R)`: fixed, non-zero, all different.
pub fn out_weights(n: usize) -> Vec<f32> {
    let mut d = Data::new(0x5EED);
    d.uniform_vec(n, 0.25, 1.0)
        .into_iter()
        .zip(d.uniform_vec(n, 0.0, 1.0))
        .map(|(m, s)| if s < 0.5 { -m } else { m })
        .collect()
}

/// Finite-difference settings of [`check_grad_with`].
#[derive(Clone, Copy, Debug)]
pub struct Fd {
    /// Step of the central difference.
    pub eps: f32,
    /// Allowed `|analytic - numeric| / max(1, |numeric|)`.
    pub tol: f32,
}

impl Default for Fd {
    fn default() -> Self {
        Fd {
            eps: 1e-2,
            tol: 1e-3,
        }
    }
}

/// [`check_grad_with`] with the default step and tolerance.
#[track_caller]
pub fn check_grad(
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    check_grad_with(name, inputs, Fd::default(), f)
}

/// Checks the backward of `f` against central finite differences.
///
/// Every input becomes a trainable leaf; the scalar is `L = sum(y * R)` for `y = f(inputs)`
/// and fixed weights `R` (so every output element matters). The analytic gradients come from
/// back-propagating `R` from `y` (the gradient of `L` with respect to `y`); the numeric ones
/// perturb each input element by `+-eps`, evaluate `f` in f32 without recording a graph and
/// accumulate `L` in f64.
#[track_caller]
pub fn check_grad_with(
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    fd: Fd,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let inputs = inputs.as_ref();
    let xs = vars(inputs);
    let y = f(&xs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert!(
        y.requires_grad(),
        "{name}: the output does not require grad"
    );
    let yv = y.to_vec();
    assert!(
        yv.iter().all(|v| !v.is_nan()),
        "{name}: the forward produced NaN"
    );
    let r = out_weights(y.numel());
    backward_with_grad(&y, r.clone()).unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));

    let plain: Vec<Tensor> = inputs.iter().map(|x| t(x.to_vec(), x.shape())).collect();
    let y0 = no_grad(|| f(&plain)).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert_close(
        &format!("{name}: forward without grad vs with grad"),
        &y0.to_vec(),
        &yv,
        1e-6,
    );
    let loss = |xs: &[Tensor]| -> f64 {
        let y = no_grad(|| f(xs)).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
        assert_eq!(y.numel(), r.len(), "{name}: output size changed");
        y.to_vec()
            .iter()
            .zip(&r)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };

    let mut failures = Vec::new();
    let mut checked = 0usize;
    for (i, x) in xs.iter().enumerate() {
        let analytic = grad_vec(x);
        let base = x.to_vec();
        for j in 0..base.len() {
            let at = |v: f32| {
                let mut d = base.clone();
                d[j] = v;
                let mut probe = plain.clone();
                probe[i] = t(d, x.shape());
                loss(&probe)
            };
            let (hi, lo) = (base[j] + fd.eps, base[j] - fd.eps);
            let numeric = ((at(hi) - at(lo)) / (hi as f64 - lo as f64)) as f32;
            checked += 1;
            let ok = (analytic[j] - numeric).abs() <= fd.tol * numeric.abs().max(1.0);
            if !ok {
                failures.push(format!(
                    "  input {i} {:?} element {j} {:?} (x = {}): analytic {:e}, numeric {:e}",
                    x.shape(),
                    unravel(j, x.shape()),
                    base[j],
                    analytic[j],
                    numeric
                ));
            }
        }
    }
    assert!(checked > 0, "{name}: nothing to check");
    assert!(
        failures.is_empty(),
        "{name}: {} of {checked} gradient elements differ from finite differences (eps {}, tol {}):\n{}",
        failures.len(),
        fd.eps,
        fd.tol,
        failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The output of `f` and the analytic gradients of `sum(f(inputs) * R)` for each input, with
/// the weights `R` of [`out_weights`].
pub fn grads_of(
    inputs: impl AsRef<[Tensor]>,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (Tensor, Vec<Vec<f32>>) {
    let xs = vars(inputs.as_ref());
    let y = f(&xs).expect("forward");
    backward_with_grad(&y, out_weights(y.numel())).expect("backward");
    let g = xs.iter().map(grad_vec).collect();
    (y, g)
}

/// Runs `fast` and `reference` on the same inputs and asserts equal outputs and input
/// gradients (for the same upstream gradient) within `tol`.
#[track_caller]
pub fn check_same(
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    tol: f32,
    fast: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let inputs = inputs.as_ref();
    let (yf, gf) = grads_of(inputs, &fast);
    let (yr, gr) = grads_of(inputs, &reference);
    assert_tensor_close(&format!("{name}: output"), &yf, &yr, tol);
    for (i, (a, b)) in gf.iter().zip(&gr).enumerate() {
        assert_close(&format!("{name}: gradient of input {i}"), a, b, tol);
    }
}
