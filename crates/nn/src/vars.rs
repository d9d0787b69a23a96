//! Named parameters.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrolab_tensor::{io, DType, Error, Result, Tensor};

/// How a new parameter is initialised.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Uniform in `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
}

impl Init {
    fn make(self, shape: &[usize]) -> Tensor {
        match self {
            Init::Zeros => Tensor::zeros(shape),
            Init::Ones => Tensor::ones(shape),
            Init::Normal { mean, std } => Tensor::randn(shape, mean, std),
            Init::Uniform { lo, hi } => Tensor::rand(shape, lo, hi),
        }
    }
}

/// A shared, ordered list of named parameters with a current name prefix.
#[derive(Clone, Default)]
pub struct Vars {
    store: Arc<Mutex<Vec<(String, Tensor)>>>,
    prefix: String,
}

impl Vars {
    /// An empty store.
    pub fn new() -> Vars {
        Vars::default()
    }

    /// The same store with `name` appended to the prefix (`a.b` + `c` = `a.b.c`).
    pub fn pp(&self, name: impl AsRef<str>) -> Vars {
        let name = name.as_ref();
        Vars {
            store: self.store.clone(),
            prefix: if self.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", self.prefix)
            },
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Creates a trainable parameter `prefix.name`; fails if the name exists.
    pub fn var(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.full(name);
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if s.iter().any(|(n, _)| *n == full) {
            return Err(Error::Invalid {
                op: "Vars::var",
                msg: format!("parameter `{full}` is defined twice"),
            });
        }
        let t = init.make(shape).into_var();
        s.push((full, t.clone()));
        Ok(t)
    }

    /// Creates a named tensor that is saved and loaded with the parameters but is not trained
    /// (no gradient, skipped by the optimizers), e.g. a routing bias updated by a rule; fails
    /// if the name exists.
    pub fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.full(name);
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if s.iter().any(|(n, _)| *n == full) {
            return Err(Error::Invalid {
                op: "Vars::buffer",
                msg: format!("tensor `{full}` is defined twice"),
            });
        }
        let t = init.make(shape);
        s.push((full, t.clone()));
        Ok(t)
    }

    /// All parameters, in creation order.
    pub fn all(&self) -> Vec<(String, Tensor)> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The parameter tensors, in creation order.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.all().into_iter().map(|(_, t)| t).collect()
    }

    /// Total number of parameter elements.
    pub fn num_params(&self) -> usize {
        self.all().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Saves all parameters (as f32) to a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        io::save_safetensors(path, &self.all(), DType::F32, None)
    }

    /// Loads all parameters from a safetensors file; a missing tensor or a shape mismatch is
    /// an error naming the tensor (and both shapes), and then nothing is changed.
    pub fn load(&self, path: &Path) -> Result<()> {
        io::load_into(path, &self.all())
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) {
        for (_, t) in self.all() {
            t.zero_grad();
        }
    }
}
