//! Elementwise functions and dropout.

use super::{map1, map3};
use crate::error::{invalid, Result};
use crate::rng;
use crate::tensor::Tensor;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Exact GELU: `x * Phi(x)`.
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * INV_SQRT_2))
}

fn gelu_erf_grad(x: f32) -> f32 {
    0.5 * (1.0 + libm::erff(x * INV_SQRT_2)) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
}

/// Tanh-approximated GELU (GPT-2's).
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let t = u.tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
}

impl Tensor {
    /// Elementwise op whose derivative is a function of the input `x` and output `y`.
    fn unary(
        &self,
        name: &'static str,
        f: impl Fn(f32) -> f32 + Sync + Send,
        df: impl Fn(f32, f32) -> f32 + Sync + Send + 'static,
    ) -> Tensor {
        let x = self.contig();
        let y = map1(&x, f);
        let ys = if self.requires_grad() {
            Some(y.clone())
        } else {
            None
        };
        Tensor::from_op(y, self.shape().to_vec(), &[self], name, move |g, _| {
            let y = ys.unwrap_or_default();
            Ok(vec![Some(map3(g, &x, &y, |g, x, y| g * df(x, y)))])
        })
    }

    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        self.unary("exp", f32::exp, |_, y| y)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary("log", f32::ln, |x, _| 1.0 / x)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary("sqrt", f32::sqrt, |_, y| 0.5 / y)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        self.unary("rsqrt", |x| 1.0 / x.sqrt(), |x, y| -0.5 * y / x)
    }
    /// `x^2`.
    pub fn sqr(&self) -> Tensor {
        self.unary("sqr", |x| x * x, |x, _| 2.0 * x)
    }
    /// Absolute value (gradient 0 at 0).
    pub fn abs(&self) -> Tensor {
        self.unary("abs", f32::abs, |x, _| {
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
        self.unary("tanh", f32::tanh, |_, y| 1.0 - y * y)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Tensor {
        self.unary("sigmoid", sigmoid, |_, y| y * (1.0 - y))
    }
    /// `x * sigmoid(x)` (SwiGLU's gate).
    pub fn silu(&self) -> Tensor {
        self.unary(
            "silu",
            |x| x * sigmoid(x),
            |x, _| {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            },
        )
    }
    /// Exact GELU, `x * Phi(x)` with the error function (PyTorch's default).
    pub fn gelu(&self) -> Tensor {
        self.unary("gelu", gelu_erf, |x, _| gelu_erf_grad(x))
    }
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Tensor {
        self.unary("gelu_tanh", gelu_tanh, |x, _| gelu_tanh_grad(x))
    }
    /// `max(x, 0)` (gradient 0 at 0, as PyTorch).
    pub fn relu(&self) -> Tensor {
        self.unary("relu", |x| x.max(0.0), |x, _| if x > 0.0 { 1.0 } else { 0.0 })
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
        Ok(Tensor::from_op(y, self.shape().to_vec(), &[self], "dropout", move |g, _| {
            Ok(vec![Some(g.iter().zip(&mask).map(|(g, m)| g * m).collect())])
        }))
    }
}
