//! Ops with forward and backward. Each file groups one family; every op is a method on
//! [`Tensor`](crate::Tensor) or a free function re-exported from the crate root.

pub(crate) mod attention;
mod attn_kernel;
pub(crate) mod binary;
pub(crate) mod conv;
pub(crate) mod fused_ce;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod moe;
pub(crate) mod norm;
pub(crate) mod reduce;
pub(crate) mod rope;
pub(crate) mod unary;
pub(crate) mod view;

pub(crate) use matmul::transpose_copy;

use rayon::prelude::*;

/// Below this many elements an elementwise kernel runs on the calling thread: waking rayon
/// costs more than the work.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// A vector of `n` elements whose contents are unspecified, for outputs that the caller
/// overwrites completely before anything reads them. Zero-filling every output first was 5%
/// of a training step.
///
/// With `FERROLAB_POISON_OUTPUTS=1` (read once) the contents are NaN instead, so that a kernel
/// that leaves an element unwritten shows in its results; CI runs the workspace's tests that
/// way.
#[allow(clippy::uninit_vec)]
pub(crate) fn alloc_out(n: usize) -> Vec<f32> {
    static POISON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *POISON.get_or_init(|| std::env::var("FERROLAB_POISON_OUTPUTS").is_ok_and(|v| v == "1")) {
        return vec![f32::NAN; n];
    }
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns and every caller writes all `n` elements before
    // reading any (each call site is an output buffer that a kernel fills entirely).
    unsafe { v.set_len(n) };
    v
}

/// Chunk length for splitting `n` elements over the pool: a few chunks per thread (enough to
/// balance, few enough that task overhead stays negligible).
pub(crate) fn chunk_len(n: usize) -> usize {
    (n / (rayon::current_num_threads() * 4)).max(PAR_MIN / 4)
}

/// `acc += g`, in parallel when large.
pub(crate) fn add_assign(acc: &mut [f32], g: &[f32]) {
    if acc.len() >= PAR_MIN {
        let ch = chunk_len(acc.len());
        acc.par_chunks_mut(ch)
            .zip(g.par_chunks(ch))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
    } else {
        acc.iter_mut().zip(g).for_each(|(x, y)| *x += y);
    }
}

/// `out[i] = f(a[i])`, in parallel when large.
pub(crate) fn map1(a: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = alloc_out(a.len());
    if a.len() >= PAR_MIN {
        let ch = chunk_len(a.len());
        out.par_chunks_mut(ch)
            .zip(a.par_chunks(ch))
            .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)));
    } else {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    }
    out
}

/// `out[i] = f(a[i], b[i])`, in parallel when large.
pub(crate) fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = alloc_out(a.len());
    if a.len() >= PAR_MIN {
        let ch = chunk_len(a.len());
        out.par_chunks_mut(ch)
            .zip(a.par_chunks(ch).zip(b.par_chunks(ch)))
            .for_each(|(o, (a, b))| {
                let n = o.len();
                let (a, b) = (&a[..n], &b[..n]); // equal lengths: no bounds checks, vectorises
                for i in 0..n {
                    o[i] = f(a[i], b[i]);
                }
            });
    } else {
        let n = out.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            out[i] = f(a[i], b[i]);
        }
    }
    out
}
