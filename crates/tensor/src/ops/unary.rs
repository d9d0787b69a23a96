//! Elementwise functions and dropout.

use std::sync::Arc;

use rayon::prelude::*;

use super::map1;

/// `g[i] *= df(v[i])`, in parallel chunks.
fn scale_by(g: &mut [f32], v: &[f32], df: impl Fn(f32) -> f32 + Sync + Send) {
    let ch = super::chunk_len(g.len());
    g.par_chunks_mut(ch)
        .zip(v.par_chunks(ch))
        .for_each(|(g, v)| {
            for (g, &v) in g.iter_mut().zip(v) {
                *g *= df(v);
            }
        });
}
use crate::error::{invalid, Result};
use crate::rng;
use crate::tensor::Tensor;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

use crate::math::{erf, exp, normal_cdf_pdf, sigmoid, tanh};

/// Exact GELU: `x * Phi(x)`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * INV_SQRT_2))
}

/// Tanh-approximated GELU (GPT-2's).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
}

#[inline(always)]
fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
}

impl Tensor {
    /// Elementwise op whose derivative is a function of the input `x`.
    fn unary_x(
        &self,
        name: &'static str,
        f: impl Fn(f32) -> f32 + Sync + Send,
        df: impl Fn(f32) -> f32 + Sync + Send + 'static,
    ) -> Tensor {
        let x = self.contig();
        let y = map1(&x, f);
        Tensor::from_op(
            y,
            self.shape().to_vec(),
            &[self],
            name,
            move |mut g: Vec<f32>, _| {
                scale_by(&mut g, &x, df);
                Ok(vec![Some(g)])
            },
        )
    }

    /// Elementwise op whose derivative is a function of the output `y` (kept by sharing the
    /// output's storage, no copy).
    fn unary_y(
        &self,
        name: &'static str,
        f: impl Fn(f32) -> f32 + Sync + Send,
        df: impl Fn(f32) -> f32 + Sync + Send + 'static,
    ) -> Tensor {
        let y = Arc::new(map1(&self.contig(), f));
        let ys = y.clone();
        let shape = self.shape().to_vec();
        let strides = crate::shape::contiguous_strides(&shape);
        Tensor::from_op_strided(
            y,
            shape,
            strides,
            0,
            &[self],
            name,
            move |mut g: Vec<f32>, _| {
                scale_by(&mut g, &ys, df);
                Ok(vec![Some(g)])
            },
        )
    }

    /// Elementwise op that computes its value and its derivative in one pass, keeping only the
    /// derivative for the backward (which is then one multiply, in place in the gradient).
    fn unary_fused(
        &self,
        name: &'static str,
        f: impl Fn(f32) -> (f32, f32) + Sync + Send,
    ) -> Tensor {
        let x = self.contig();
        let n = x.len();
        let mut y = super::alloc_out(n); // both buffers are filled below
        let track = self.requires_grad() && crate::autograd::is_grad_enabled();
        let mut d = if track {
            super::alloc_out(n)
        } else {
            Vec::new()
        };
        let ch = super::chunk_len(n);
        if track {
            y.par_chunks_mut(ch)
                .zip(d.par_chunks_mut(ch))
                .zip(x.par_chunks(ch))
                .for_each(|((y, d), x)| {
                    for ((y, d), &x) in y.iter_mut().zip(d.iter_mut()).zip(x) {
                        (*y, *d) = f(x);
                    }
                });
        } else {
            y.par_chunks_mut(ch)
                .zip(x.par_chunks(ch))
                .for_each(|(y, x)| {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = f(x).0;
                    }
                });
        }
        Tensor::from_op(
            y,
            self.shape().to_vec(),
            &[self],
            name,
            move |mut g: Vec<f32>, _| {
                scale_by(&mut g, &d, |d| d);
                Ok(vec![Some(g)])
            },
        )
    }

    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        self.unary_y("exp", exp, |y| y)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary_x("log", f32::ln, |x| 1.0 / x)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary_y("sqrt", f32::sqrt, |y| 0.5 / y)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        self.unary_x("rsqrt", |x| 1.0 / x.sqrt(), |x| -0.5 / (x * x.sqrt()))
    }
    /// `x^2`.
    pub fn sqr(&self) -> Tensor {
        self.unary_x("sqr", |x| x * x, |x| 2.0 * x)
    }
    /// Absolute value (gradient 0 at 0).
    pub fn abs(&self) -> Tensor {
        self.unary_x("abs", f32::abs, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        })
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary_y("tanh", tanh, |y| 1.0 - y * y)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Tensor {
        self.unary_y("sigmoid", sigmoid, |y| y * (1.0 - y))
    }
    /// `x * sigmoid(x)` (SwiGLU's gate).
    pub fn silu(&self) -> Tensor {
        self.unary_x(
            "silu",
            |x| x * sigmoid(x),
            |x| {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            },
        )
    }
    /// Exact GELU, `x * Phi(x)` with the error function (PyTorch's default).
    pub fn gelu(&self) -> Tensor {
        self.unary_fused("gelu", |x| {
            // one exp gives both x * Phi(x) and its derivative Phi(x) + x * phi(x)
            let (cdf, pdf) = normal_cdf_pdf(x);
            (x * cdf, cdf + x * pdf)
        })
    }
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Tensor {
        self.unary_x("gelu_tanh", gelu_tanh, gelu_tanh_grad)
    }
    /// `max(x, 0)` (gradient 0 at 0; NaN stays NaN and passes its gradient, as in PyTorch).
    pub fn relu(&self) -> Tensor {
        self.unary_x(
            "relu",
            |x| if x <= 0.0 { 0.0 } else { x },
            |x| if x <= 0.0 { 0.0 } else { 1.0 },
        )
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales the rest by
    /// `1 / (1 - p)`. The mask comes from the global seeded generator ([`crate::rng`]), so a
    /// recomputed segment that restores the generator reproduces it.
    pub fn dropout(&self, p: f32, train: bool) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("p must be in [0, 1), got {p}"));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let n = self.numel();
        let u = rng::uniform_vec(n);
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = u.iter().map(|&u| if u < p { 0.0 } else { scale }).collect();
        let x = self.contig();
        let y: Vec<f32> = x.iter().zip(&mask).map(|(x, m)| x * m).collect();
        Ok(Tensor::from_op(
            y,
            self.shape().to_vec(),
            &[self],
            "dropout",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                Ok(vec![Some(
                    g.iter().zip(&mask).map(|(g, m)| g * m).collect(),
                )])
            },
        ))
    }
}

/// Fused SwiGLU activation: `x` `(.., 2F)` holds the gate `a` and the up projection `b` side
/// by side (the output of one `Linear(C, 2F)`); returns `silu(a) * b` `(.., F)`.
///
/// One pass forward and one backward instead of silu, mul and their two backwards over three
/// `(.., F)` temporaries; the backward recomputes `sigmoid(a)` from the kept input rather than
/// storing it.
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let w = if r == 0 { 0 } else { x.shape()[r - 1] };
    if r == 0 || w == 0 || w % 2 != 0 {
        return invalid(
            "swiglu",
            format!(
                "needs an even, non-empty last dim (.., 2F), got {:?}",
                x.shape()
            ),
        );
    }
    let f = w / 2;
    let xs = x.contig();
    let rows = xs.len() / w;
    let mut y = super::alloc_out(rows * f);
    let rows_per = (super::chunk_len(rows * w) / w).max(1);
    y.par_chunks_mut(rows_per * f)
        .zip(xs.par_chunks(rows_per * w))
        .for_each(|(y, x)| {
            for (yr, xr) in y.chunks_exact_mut(f).zip(x.chunks_exact(w)) {
                let (a, b) = xr.split_at(f);
                let (a, b, yr) = (&a[..f], &b[..f], &mut yr[..f]);
                for i in 0..f {
                    yr[i] = a[i] * sigmoid(a[i]) * b[i];
                }
            }
        });
    let mut shape = x.shape().to_vec();
    shape[r - 1] = f;
    Ok(Tensor::from_op(
        y,
        shape,
        &[x],
        "swiglu",
        move |g: Vec<f32>, _| {
            let mut gx = super::alloc_out(rows * w);
            gx.par_chunks_mut(rows_per * w)
                .zip(xs.par_chunks(rows_per * w))
                .zip(g.par_chunks(rows_per * f))
                .for_each(|((gx, x), g)| {
                    for ((gr, xr), gy) in gx
                        .chunks_exact_mut(w)
                        .zip(x.chunks_exact(w))
                        .zip(g.chunks_exact(f))
                    {
                        let (a, b) = xr.split_at(f);
                        let (ga, gb) = gr.split_at_mut(f);
                        // equal lengths stated up front: no bounds checks, so the loop
                        // (exp included) vectorises; without this it ran scalar, 6x slower
                        let (a, b, gy) = (&a[..f], &b[..f], &gy[..f]);
                        let (ga, gb) = (&mut ga[..f], &mut gb[..f]);
                        for i in 0..f {
                            let s = sigmoid(a[i]);
                            ga[i] = gy[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
                            gb[i] = gy[i] * a[i] * s;
                        }
                    }
                });
            Ok(vec![Some(gx)])
        },
    ))
}
