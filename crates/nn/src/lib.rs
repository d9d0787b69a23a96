//! Layers, named parameters, optimizers and learning-rate schedules on top of
//! [`ferrolab_tensor`].
//!
//! Parameters are created through a [`Vars`] path (`vars.pp("layers.0.attn")`), so the struct
//! tree of a model equals the tensor-name tree of its checkpoint.

pub mod layers;
pub mod optim;
pub mod schedule;
pub mod vars;

pub use layers::{Embedding, LayerNorm, Linear, RmsNorm};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
pub use schedule::LrSchedule;
pub use vars::{Init, Vars};
