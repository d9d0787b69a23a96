//! The [`Tensor`] type: a shaped, strided view of shared f32 storage, with an optional
//! autograd node.
//!
//! Storage is an `Arc<Vec<f32>>` behind a lock that is only written by optimizers
//! ([`Tensor::update_data`]): every op reads a snapshot of the `Arc` and produces a new tensor,
//! so forward passes never race with anything. A CUDA backend would add a variant to
//! [`Device`] and a device buffer next to the host vector; ops dispatch on the device in one
//! place each, so models do not change.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::autograd::{self, BackwardFn, Node};
use crate::error::{invalid, Error, Result};
use crate::shape::{contiguous_strides, is_contiguous, numel};

/// Where a tensor's data lives. Only the CPU exists today; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Host memory, kernels on rayon threads.
    Cpu,
}

/// Unique identity of a tensor (used by autograd).
pub type TensorId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Inner {
    pub(crate) id: TensorId,
    storage: RwLock<Arc<Vec<f32>>>,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
    pub(crate) requires_grad: AtomicBool,
    pub(crate) is_leaf: bool,
    pub(crate) node: Mutex<Option<Node>>,
    pub(crate) grad: Mutex<Option<Tensor>>,
}

impl Drop for Inner {
    /// Frees the graph behind this tensor iteratively: the default drop would recurse once per
    /// op through the parents and overflow the stack on very deep graphs that are dropped
    /// without a backward.
    fn drop(&mut self) {
        let node = match self.node.get_mut() {
            Ok(n) => n.take(),
            Err(e) => e.into_inner().take(),
        };
        let Some(node) = node else { return };
        let mut stack = node.parents;
        drop(node.backward);
        while let Some(t) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(t.0) {
                let n = match inner.node.get_mut() {
                    Ok(n) => n.take(),
                    Err(e) => e.into_inner().take(),
                };
                if let Some(n) = n {
                    stack.extend(n.parents);
                }
                // `inner` drops here with no node left: no recursion
            }
        }
    }
}

/// An n-dimensional f32 tensor. Cloning is cheap (shared, reference counted).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

/// A contiguous, read-only view of a tensor's elements in row-major order. Borrowed from the
/// storage when the tensor is contiguous, materialised otherwise.
#[derive(Clone)]
pub struct Contig {
    buf: Arc<Vec<f32>>,
    start: usize,
    len: usize,
}

impl Deref for Contig {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Tensor {
    fn make(
        storage: Arc<Vec<f32>>,
        shape: Vec<usize>,
        strides: Vec<usize>,
        offset: usize,
        requires_grad: bool,
        node: Option<Node>,
    ) -> Tensor {
        let is_leaf = node.is_none();
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(storage),
            shape,
            strides,
            offset,
            requires_grad: AtomicBool::new(requires_grad),
            is_leaf,
            node: Mutex::new(node),
            grad: Mutex::new(None),
        }))
    }

    /// A tensor from row-major data. Fails if `data.len()` is not the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return invalid(
                "from_vec",
                format!(
                    "{} elements for shape {:?} ({} needed)",
                    data.len(),
                    shape,
                    numel(shape)
                ),
            );
        }
        Ok(Self::make(
            Arc::new(data),
            shape.to_vec(),
            contiguous_strides(shape),
            0,
            false,
            None,
        ))
    }

    /// A tensor from a slice (copied).
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Self::make(Arc::new(vec![v]), vec![], vec![], 0, false, None)
    }

    /// A tensor filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Self::make(
            Arc::new(vec![v; numel(shape)]),
            shape.to_vec(),
            contiguous_strides(shape),
            0,
            false,
            None,
        )
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Self::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Self::full(shape, 1.0)
    }

    /// `0, 1, ..., n-1` as a 1-D tensor.
    pub fn arange(n: usize) -> Tensor {
        let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        Self::make(Arc::new(v), vec![n], vec![1], 0, false, None)
    }

    /// Internal constructor for op outputs: contiguous data plus an optional backward.
    pub(crate) fn from_op(
        data: Vec<f32>,
        shape: Vec<usize>,
        parents: &[&Tensor],
        name: &'static str,
        backward: impl FnOnce(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + 'static,
    ) -> Tensor {
        let strides = contiguous_strides(&shape);
        Self::from_op_strided(Arc::new(data), shape, strides, 0, parents, name, backward)
    }

    /// Like [`Tensor::from_op`] but records the node whenever grad mode is on, even if no
    /// parent requires grad (recompute: the closure's captured parameters do).
    pub(crate) fn from_op_forced(
        data: Vec<f32>,
        shape: Vec<usize>,
        parents: &[&Tensor],
        name: &'static str,
        backward: impl FnOnce(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + 'static,
    ) -> Tensor {
        let strides = contiguous_strides(&shape);
        let node = autograd::is_grad_enabled().then(|| Node {
            parents: parents.iter().map(|p| (*p).clone()).collect(),
            backward: Box::new(backward) as BackwardFn,
            name,
        });
        let track = node.is_some();
        Self::make(Arc::new(data), shape, strides, 0, track, node)
    }

    /// Internal constructor for op outputs with an explicit layout (views, permuted outputs).
    pub(crate) fn from_op_strided(
        storage: Arc<Vec<f32>>,
        shape: Vec<usize>,
        strides: Vec<usize>,
        offset: usize,
        parents: &[&Tensor],
        name: &'static str,
        backward: impl FnOnce(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + 'static,
    ) -> Tensor {
        crate::profile::forward_done(name);
        let track = autograd::is_grad_enabled() && parents.iter().any(|p| p.requires_grad());
        let node = if track {
            Some(Node {
                parents: parents.iter().map(|p| (*p).clone()).collect(),
                backward: Box::new(backward) as BackwardFn,
                name,
            })
        } else {
            None
        };
        Self::make(storage, shape, strides, offset, track, node)
    }

    /// A leaf tensor that shares this one's data and records gradients: a trainable parameter.
    pub fn into_var(self) -> Tensor {
        let t = self.detach();
        t.0.requires_grad.store(true, Ordering::Relaxed);
        t
    }

    /// Turns gradient recording on or off for a leaf (for example to freeze a parameter).
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if !self.0.is_leaf {
            return invalid(
                "set_requires_grad",
                "only leaf tensors can change requires_grad",
            );
        }
        self.0.requires_grad.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// A new leaf sharing the data, outside of any graph.
    pub fn detach(&self) -> Tensor {
        Self::make(
            self.storage(),
            self.0.shape.clone(),
            self.0.strides.clone(),
            self.0.offset,
            false,
            None,
        )
    }

    /// Unique id of this tensor.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The device the data lives on.
    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.0.strides
    }

    pub(crate) fn offset(&self) -> usize {
        self.0.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Whether this tensor was created by the user rather than by an op.
    pub fn is_leaf(&self) -> bool {
        self.0.is_leaf
    }

    /// Whether the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        is_contiguous(&self.0.shape, &self.0.strides)
    }

    /// The shared storage (a snapshot of the `Arc`).
    pub(crate) fn storage(&self) -> Arc<Vec<f32>> {
        self.0
            .storage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Dims as a fixed-size array; fails naming the op if the rank differs.
    pub fn dims<const N: usize>(&self, op: &'static str) -> Result<[usize; N]> {
        self.0
            .shape
            .as_slice()
            .try_into()
            .map_err(|_| Error::Invalid {
                op,
                msg: format!("expected a rank-{N} tensor, got shape {:?}", self.0.shape),
            })
    }

    /// Normalises a possibly negative dim index.
    pub fn dim_index(&self, dim: isize, op: &'static str) -> Result<usize> {
        let r = self.rank() as isize;
        let d = if dim < 0 { dim + r } else { dim };
        if d < 0 || d >= r {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                rank: self.rank(),
            });
        }
        Ok(d as usize)
    }

    /// Contiguous row-major elements (borrowed when possible).
    pub fn contig(&self) -> Contig {
        let buf = self.storage();
        let len = self.numel();
        if self.is_contiguous() {
            Contig {
                buf,
                start: self.0.offset,
                len,
            }
        } else {
            let v = crate::shape::strided_copy(&buf, self.0.offset, &self.0.shape, &self.0.strides);
            Contig {
                buf: Arc::new(v),
                start: 0,
                len,
            }
        }
    }

    /// The elements as a row-major `Vec`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.contig().to_vec()
    }

    /// The single element of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return invalid(
                "item",
                format!("tensor of shape {:?} is not a scalar", self.shape()),
            );
        }
        Ok(self.contig()[0])
    }

    /// The accumulated gradient of a leaf, if any backward has reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Replaces the gradient (used by gradient clipping and tests).
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        if let Some(g) = &g {
            if g.shape() != self.shape() {
                return Err(Error::ShapeMismatch {
                    op: "set_grad",
                    lhs: self.shape().to_vec(),
                    rhs: g.shape().to_vec(),
                });
            }
        }
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
        Ok(())
    }

    pub(crate) fn accumulate_grad(&self, g: Vec<f32>) {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            None => {
                *slot = Some(Self::make(
                    Arc::new(g),
                    self.0.shape.clone(),
                    contiguous_strides(&self.0.shape),
                    0,
                    false,
                    None,
                ))
            }
            Some(existing) => {
                let mut guard = existing
                    .0
                    .storage
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                let buf = Arc::make_mut(&mut guard);
                crate::ops::add_assign(buf, &g);
            }
        }
    }

    /// Updates the data of a contiguous leaf in place (optimizers). The closure gets the
    /// elements; if the storage is shared with another live tensor it is copied first, so no
    /// other tensor ever sees the change.
    pub fn update_data<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        if !self.0.is_leaf || !self.is_contiguous() || self.0.offset != 0 {
            return invalid(
                "update_data",
                "only contiguous leaf tensors that own their storage can be updated in place",
            );
        }
        let n = self.numel();
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        let buf = Arc::make_mut(&mut guard);
        Ok(f(&mut buf[..n]))
    }

    /// Replaces the data of a leaf with `src` (same shape), e.g. when loading weights.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "copy_from",
                lhs: self.shape().to_vec(),
                rhs: src.shape().to_vec(),
            });
        }
        let data = src.contig();
        self.update_data(|d| d.copy_from_slice(&data))
    }

    /// Runs backward from this scalar: see [`crate::autograd`].
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.contig();
        let shown: Vec<f32> = v.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, data={:?}{}{})",
            self.shape(),
            shown,
            if v.len() > 8 { ", ..." } else { "" },
            if self.requires_grad() {
                ", requires_grad"
            } else {
                ""
            }
        )
    }
}
