//! Basic layers with PyTorch's parameter layout and names.

use ferrolab_tensor::{embedding, layer_norm, linear, rms_norm, Result, Tensor};

use crate::vars::{Init, Vars};

/// `y = x W^T + b` with `weight` `(out, in)` and `bias` `(out)`.
#[derive(Clone)]
pub struct Linear {
    /// `(out, in)`.
    pub weight: Tensor,
    /// `(out)`, if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with weights from `init` and zero bias (when `bias`).
    pub fn new(vars: &Vars, d_in: usize, d_out: usize, bias: bool, init: Init) -> Result<Linear> {
        Ok(Linear {
            weight: vars.var("weight", &[d_out, d_in], init)?,
            bias: if bias {
                Some(vars.var("bias", &[d_out], Init::Zeros)?)
            } else {
                None
            },
        })
    }

    /// # Shapes
    /// `x` `(.., in)` -> `(.., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A lookup table `(vocab, dim)`.
#[derive(Clone)]
pub struct Embedding {
    /// `(vocab, dim)`.
    pub weight: Tensor,
}

impl Embedding {
    /// A table initialised by `init`.
    pub fn new(vars: &Vars, vocab: usize, dim: usize, init: Init) -> Result<Embedding> {
        Ok(Embedding {
            weight: vars.var("weight", &[vocab, dim], init)?,
        })
    }

    /// # Shapes
    /// `ids` shaped `shape` -> `(shape.., dim)`.
    pub fn forward(&self, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
        embedding(&self.weight, ids, shape)
    }
}

/// Layer norm over the last dim with learnable scale and shift.
#[derive(Clone)]
pub struct LayerNorm {
    /// Scale `(dim)`, initialised to 1.
    pub weight: Tensor,
    /// Shift `(dim)`, initialised to 0.
    pub bias: Tensor,
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f32,
}

impl LayerNorm {
    /// A layer norm of width `dim`.
    pub fn new(vars: &Vars, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vars.var("weight", &[dim], Init::Ones)?,
            bias: vars.var("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }

    /// # Shapes
    /// `(.., dim)` -> `(.., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

/// RMS norm over the last dim with a learnable scale.
#[derive(Clone)]
pub struct RmsNorm {
    /// Scale `(dim)`, initialised to 1.
    pub weight: Tensor,
    /// Added to the mean square (LLaMA/DeepSeek: 1e-6).
    pub eps: f32,
}

impl RmsNorm {
    /// An RMS norm of width `dim`.
    pub fn new(vars: &Vars, dim: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: vars.var("weight", &[dim], Init::Ones)?,
            eps,
        })
    }

    /// # Shapes
    /// `(.., dim)` -> `(.., dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, Some(&self.weight), self.eps)
    }
}
