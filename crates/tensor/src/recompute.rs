//! Recompute (activation checkpointing).
//!
//! [`recompute`] runs a closure as one op: the forward runs without recording a graph, so
//! everything it allocates inside is freed at once and only the inputs and the output are
//! kept. During the backward the closure runs again, this time recording, from the same
//! inputs and with the random generator restored to the state it had on the first run (so
//! dropout draws the same masks), and the output gradient is back-propagated through that
//! fresh graph. Parameters the closure captures receive their gradients in that inner pass.
//!
//! With N blocks in [`segments`] of about sqrt(N) blocks, peak activation memory goes from
//! O(N) blocks to O(sqrt(N)), for roughly one extra forward pass of compute.

use std::ops::Range;
use std::sync::Arc;

use crate::autograd::{self, no_grad};
use crate::error::{Error, Result};
use crate::rng;
use crate::tensor::Tensor;

/// A segment body: inputs to one output.
pub type SegmentFn = Arc<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>;

/// Runs `f(inputs)` as a recomputed segment (see the module docs).
pub fn recompute(inputs: &[&Tensor], f: SegmentFn) -> Result<Tensor> {
    if !autograd::is_grad_enabled() {
        let xs: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        return f(&xs);
    }
    let state = rng::get_state();
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let y = no_grad(|| f(&detached))?;
    let saved: Vec<Tensor> = detached;
    let needs_in: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let y_shape = y.shape().to_vec();
    let data = y.contig().to_vec();
    drop(y);
    Ok(Tensor::from_op_forced(
        data,
        y_shape,
        inputs,
        "recompute",
        move |g: Vec<f32>, _| {
            let after = rng::get_state();
            rng::set_state(state);
            let xs: Vec<Tensor> = saved
                .iter()
                .zip(&needs_in)
                .map(|(t, &n)| if n { t.detach().into_var() } else { t.detach() })
                .collect();
            let res = {
                let _on = autograd::enable_grad_guard();
                f(&xs)
            };
            rng::set_state(after);
            let y = res?;
            if y.numel() != g.len() {
                return Err(Error::Backward(format!(
                    "recompute: the segment gave shape {:?} on the second run",
                    y.shape()
                )));
            }
            // the inputs' gradients are this op's output; the parameters' go on to their
            // leaves (or to the collector of a part of `parallel_backward`)
            let mut grads: Vec<Option<Vec<f32>>> = vec![None; xs.len()];
            if y.requires_grad() {
                autograd::backward_into(&y, g, &mut |leaf, lg| match xs
                    .iter()
                    .position(|x| x.id() == leaf.id())
                {
                    Some(i) => match &mut grads[i] {
                        Some(acc) => crate::ops::add_assign(acc, &lg),
                        None => grads[i] = Some(lg),
                    },
                    None => autograd::deliver(leaf, lg),
                })?;
            }
            Ok(grads
                .into_iter()
                .zip(&needs_in)
                .map(|(g, &n)| if n { g } else { None })
                .collect())
        },
    ))
}

/// Splits `n` blocks into consecutive segments of `ceil(sqrt(n))` blocks.
pub fn segments(n: usize) -> Vec<Range<usize>> {
    if n == 0 {
        return vec![];
    }
    let size = (n as f64).sqrt().ceil() as usize;
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}
