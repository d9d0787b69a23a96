//! Models built from [`ferrolab_nn`] layers.

pub mod gpt;

pub use gpt::{Gpt, GptConfig};
