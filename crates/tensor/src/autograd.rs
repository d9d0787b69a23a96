//! Define-by-run reverse-mode autograd.
//!
//! Every op whose inputs require gradients records a [`Node`]: its parents and a one-shot
//! backward closure that maps the output gradient (contiguous, the output's shape) to one
//! optional gradient per parent (contiguous, that parent's shape). [`backward`] walks the graph
//! in reverse topological order, frees each node as soon as it has run (so saved activations go
//! away during the backward, as PyTorch does without `retain_graph`), and accumulates leaf
//! gradients into [`Tensor::grad`] across calls until [`Tensor::zero_grad`].
//!
//! [`parallel_backward`] runs the forward and backward of the parts of a batch side by side,
//! one per pool thread, and adds their leaf gradients in part order.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng;
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
    grad_mode_guard(true)
}

fn grad_mode_guard(on: bool) -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(on));
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

/// Leaf gradients held back from [`Tensor::grad`]: one entry per leaf, in the order the
/// backward first reached it, later contributions added in the order they came.
#[derive(Default)]
struct LeafGrads {
    grads: Vec<(Tensor, Vec<f32>)>,
    index: HashMap<TensorId, usize>,
}

impl LeafGrads {
    fn add(&mut self, leaf: &Tensor, g: Vec<f32>) {
        match self.index.get(&leaf.id()) {
            Some(&i) => crate::ops::add_assign(&mut self.grads[i].1, &g),
            None => {
                self.index.insert(leaf.id(), self.grads.len());
                self.grads.push((leaf.clone(), g));
            }
        }
    }

    /// Adds every held gradient into its leaf's [`Tensor::grad`].
    fn accumulate(self) {
        for (leaf, g) in self.grads {
            leaf.accumulate_grad(g);
        }
    }
}

thread_local! {
    // Set while a part of `parallel_backward` runs on this thread: leaf gradients (those of a
    // recomputed segment's inner backward included) are held here instead of added into the
    // leaves, so that the parts' sums do not depend on which part finishes first.
    static COLLECTOR: RefCell<Option<LeafGrads>> = const { RefCell::new(None) };
}

/// Hands a leaf its gradient: into the thread's collector when one is set, else into
/// [`Tensor::grad`]. The collector is taken out while it grows: the addition runs on the
/// pool, and this thread may meanwhile run another part (which sets a collector of its own).
pub(crate) fn deliver(leaf: &Tensor, g: Vec<f32>) {
    match COLLECTOR.with(|c| c.borrow_mut().take()) {
        Some(mut held) => {
            held.add(leaf, g);
            COLLECTOR.with(|c| *c.borrow_mut() = Some(held));
        }
        None => leaf.accumulate_grad(g),
    }
}

/// Runs `f` with this thread's leaf gradients held in a fresh collector; returns them. The
/// thread's previous collector comes back even if `f` panics (a pool thread lives on).
fn collecting<R>(f: impl FnOnce() -> Result<R>) -> (LeafGrads, Result<R>) {
    struct Restore(Option<Option<LeafGrads>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                COLLECTOR.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(
        COLLECTOR.with(|c| c.replace(Some(LeafGrads::default()))),
    ));
    let r = f();
    let outer = restore.0.take().unwrap_or_default();
    let held = COLLECTOR.with(|c| c.replace(outer)).unwrap_or_default();
    (held, r)
}

/// Sets the thread's random generator until the guard drops (a panic included).
struct RngGuard(rng::RngState);

impl RngGuard {
    fn set(s: rng::RngState) -> RngGuard {
        let outer = rng::get_state();
        rng::set_state(s);
        RngGuard(outer)
    }
}

impl Drop for RngGuard {
    fn drop(&mut self) {
        rng::set_state(self.0);
    }
}

/// Forward and backward of `parts` parts of a batch side by side on the pool's threads (data
/// parallelism inside one process), then every part's leaf gradients added into
/// [`Tensor::grad`] in part order.
///
/// `f(i)` builds part `i`'s graph and returns its loss (one element, already weighted: for a
/// mean over a batch split by sequences, part `i`'s mean times its share of the sequences) and
/// anything else the caller wants back. The parts' graphs must not share a recorded node
/// (parameters, leaves, are shared; an activation computed before the call is not): a node
/// runs its backward once. Each part runs with grad mode as the caller had it and with a
/// random generator of its own: part 0 continues the caller's, part `i` draws from stream `i`
/// of it ([`rng::RngState::stream`]); afterwards the caller's generator is past the longest
/// of the parts' draws. So the result depends only on the inputs and `parts`, never on which
/// thread ran what (random draws, such as dropout's, do depend on `parts`).
///
/// Memory: each part holds its own copy of the gradients until all are done.
///
/// Why: the two halves of a batch share nothing until their gradients are summed, so each
/// core runs one half's ops back to back (a product still takes both threads when the other
/// core is idle, as rayon steals work) instead of every op meeting the other core at its end.
/// On two cores the GPT benchmark step took 5-8% less time, and the language models' steps
/// ran 8-15% more tokens per second (crates/tensor/PERFORMANCE.md).
///
/// With `parts` 1 (or 0) this is `f(0)` and [`backward`]: bitwise the plain step. If any part
/// fails, no gradient is added and the error of the first failing part is returned.
pub fn parallel_backward<R: Send>(
    parts: usize,
    f: impl Fn(usize) -> Result<(Tensor, R)> + Sync,
) -> Result<Vec<R>> {
    if parts <= 1 {
        let (loss, r) = f(0)?;
        backward(&loss)?;
        return Ok(vec![r]);
    }
    let state = rng::get_state();
    let grad_on = is_grad_enabled();
    let done: Vec<(LeafGrads, Result<R>, rng::RngState)> = (0..parts)
        .into_par_iter()
        .map(|i| {
            // this thread may be in the middle of another part (rayon runs stolen work while
            // a thread waits): its generator, grad mode, collector and profile clock come
            // back as they were
            let _rng = RngGuard::set(state.stream(i as u64));
            let _mode = grad_mode_guard(grad_on);
            let _clock = crate::profile::Clock::restart();
            let (held, r) = collecting(|| {
                let (loss, r) = f(i)?;
                backward(&loss)?;
                Ok(r)
            });
            (held, r, rng::get_state())
        })
        .collect();
    let mut held = Vec::with_capacity(parts);
    let mut out = Vec::with_capacity(parts);
    // every stream starts at the caller's offset: the caller goes on past the longest draw
    let mut drawn = 0u64;
    for (h, r, e) in done {
        out.push(r?);
        held.push(h);
        drawn = drawn.max(e.offset.wrapping_sub(state.offset));
    }
    let t0 = std::time::Instant::now();
    for h in held {
        h.accumulate();
    }
    crate::profile::record("parts' gradients added", t0.elapsed());
    rng::set_state(rng::RngState {
        seed: state.seed,
        offset: state.offset.wrapping_add(drawn),
    });
    Ok(out)
}

/// [`parallel_backward`] over a batch of `b` sequences in `parts` parts of whole sequences
/// (`parts` at most `b`): `f(lo, hi)` builds the mean loss of sequences `lo..hi`, which is
/// back-propagated times `scale` and its share of the sequences, `(hi - lo) / b` (as is when
/// that product is 1). Returns each part's result with its share.
pub fn backward_in_parts<R: Send>(
    b: usize,
    parts: usize,
    scale: f32,
    f: impl Fn(usize, usize) -> Result<(Tensor, R)> + Sync,
) -> Result<Vec<(R, f32)>> {
    let parts = parts.clamp(1, b.max(1));
    parallel_backward(parts, |i| {
        let (lo, hi) = (i * b / parts, (i + 1) * b / parts);
        let share = (hi - lo) as f32 / b.max(1) as f32;
        let (loss, r) = f(lo, hi)?;
        let weight = scale * share;
        let loss = if weight == 1.0 {
            loss
        } else {
            loss.mul_scalar(weight)
        };
        Ok((loss, (r, share)))
    })
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
    backward_into(root, grad, &mut deliver)
}

/// [`backward_with_grad`] handing the leaves' gradients to `sink` (recompute's inner
/// backward keeps its segment's inputs' gradients and passes the others on to [`deliver`]).
pub(crate) fn backward_into(
    root: &Tensor,
    grad: Vec<f32>,
    sink: &mut dyn FnMut(&Tensor, Vec<f32>),
) -> Result<()> {
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
        sink(root, grad);
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
                sink(p, pg);
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
