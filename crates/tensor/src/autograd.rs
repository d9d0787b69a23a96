//! Define-by-run reverse-mode autograd.
//!
//! Every op whose inputs require gradients records a [`Node`]: its parents and a one-shot
//! backward closure that maps the output gradient (contiguous, the output's shape) to one
//! optional gradient per parent (contiguous, that parent's shape). [`backward`] walks the graph
//! in reverse topological order, frees each node as soon as it has run (so saved activations go
//! away during the backward, as PyTorch does without `retain_graph`), and accumulates leaf
//! gradients into [`Tensor::grad`] across calls until [`Tensor::zero_grad`].

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};

/// The backward closure of one op: `(grad_out, needs_grad_per_parent) -> grads per parent`.
/// It owns the output gradient, so identity-like ops (reshape) pass it on without a copy.
pub(crate) type BackwardFn =
    Box<dyn FnOnce(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + 'static>;

pub(crate) struct Node {
    pub(crate) parents: Vec<Tensor>,
    pub(crate) backward: BackwardFn,
    pub(crate) name: &'static str,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record a graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    prev: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Disables graph recording on this thread until the guard drops.
pub fn no_grad_guard() -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    GradModeGuard { prev }
}

/// Enables graph recording on this thread until the guard drops (inside a backward).
pub fn enable_grad_guard() -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(true));
    GradModeGuard { prev }
}

/// Runs `f` without recording a graph.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = no_grad_guard();
    f()
}

/// Non-leaf tensors reachable from `root` through recorded nodes, parents before children.
fn topo_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen: HashSet<TensorId> = HashSet::new();
    // Iterative DFS: (tensor, children_pushed)
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if t.is_leaf() || !seen.insert(t.id()) {
            continue;
        }
        let parents: Vec<Tensor> = {
            let node = t.0.node.lock().unwrap_or_else(|e| e.into_inner());
            match node.as_ref() {
                Some(n) => n.parents.clone(),
                None => return Err(Error::Backward(
                    "the graph was already freed by an earlier backward (call the forward again)"
                        .into(),
                )),
            }
        };
        stack.push((t, true));
        for p in parents {
            if !p.is_leaf() && p.requires_grad() && !seen.contains(&p.id()) {
                stack.push((p, false));
            }
        }
    }
    Ok(order)
}

/// Back-propagates from a one-element tensor, with gradient 1.
pub fn backward(root: &Tensor) -> Result<()> {
    if root.numel() != 1 {
        return Err(Error::Backward(format!(
            "backward needs a one-element tensor, got shape {:?}",
            root.shape()
        )));
    }
    backward_with_grad(root, vec![1.0])
}

/// Back-propagates from any tensor given the gradient of its elements (row-major).
pub fn backward_with_grad(root: &Tensor, grad: Vec<f32>) -> Result<()> {
    if grad.len() != root.numel() {
        return Err(Error::Backward(format!(
            "gradient has {} elements for a tensor of shape {:?}",
            grad.len(),
            root.shape()
        )));
    }
    if !root.requires_grad() {
        return Err(Error::Backward(
            "the tensor does not require grad (no parameter contributed to it)".into(),
        ));
    }
    if root.is_leaf() {
        root.accumulate_grad(grad);
        return Ok(());
    }
    let _no_grad = no_grad_guard();
    let order = topo_order(root)?;
    let mut grads: HashMap<TensorId, Vec<f32>> = HashMap::new();
    grads.insert(root.id(), grad);
    for t in order.iter().rev() {
        let node = t.0.node.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(node) = node else { continue };
        let Some(g) = grads.remove(&t.id()) else {
            continue; // no gradient reached this node: nothing flows from it
        };
        let needs: Vec<bool> = node.parents.iter().map(|p| p.requires_grad()).collect();
        let name = node.name;
        let t0 = std::time::Instant::now();
        let pgrads = (node.backward)(g, &needs)?;
        crate::profile::backward_done(name, t0.elapsed());
        for (p, pg) in node.parents.iter().zip(pgrads) {
            let Some(pg) = pg else { continue };
            if !p.requires_grad() {
                continue;
            }
            if pg.len() != p.numel() {
                return Err(Error::Backward(format!(
                    "op `{name}` produced a gradient of {} elements for an input of shape {:?}",
                    pg.len(),
                    p.shape()
                )));
            }
            if p.is_leaf() {
                p.accumulate_grad(pg);
            } else {
                match grads.get_mut(&p.id()) {
                    Some(acc) => crate::ops::add_assign(acc, &pg),
                    None => {
                        grads.insert(p.id(), pg);
                    }
                }
            }
        }
    }
    Ok(())
}
