//! ferrolab's tensor engine.
//!
//! - [`Tensor`]: shaped, strided f32 views over shared storage ([`tensor`]).
//! - Define-by-run autograd ([`autograd`]): `loss.backward()`, [`no_grad`], gradient
//!   accumulation.
//! - Ops with forward and backward: elementwise, reductions, matrix products on the `gemm`
//!   crate, fused softmax / cross-entropy / layer norm / RMS norm / attention, RoPE, indexing,
//!   convolution and pooling.
//! - [`recompute`] (activation checkpointing), seeded counter-based [`rng`], number formats
//!   ([`dtype`]: bf16, f16, FP8 E4M3/E5M2), safetensors I/O ([`io`]).
//!
//! Threads: kernels run on rayon's global pool; [`set_num_threads`] sizes it once per process.
//! With one thread every result is bitwise reproducible for a given seed. With more threads,
//! work is split into fixed chunks that do not depend on timing, so results are also
//! repeatable run to run on the same machine and thread count; they may differ in the last
//! bits between thread counts (reductions are summed in a different order). Training steps
//! run the parts of a batch side by side, one per thread ([`parallel_backward`]); their
//! gradients are added in part order, so this holds for them too.

pub mod autograd;
pub mod dtype;
pub mod error;
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod guarded;
pub mod io;
pub mod math;
mod ops;
pub mod profile;
pub mod recompute;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use autograd::{
    backward_in_parts, backward_with_grad, enable_grad_guard, is_grad_enabled, no_grad,
    no_grad_guard, parallel_backward,
};
pub use dtype::DType;
pub use error::{Error, Result};
pub use ops::attention::{
    attention_bthd, packed_gqa_attention, packed_qkv_attention, scaled_dot_product_attention,
    AttnMask,
};
pub use ops::conv::{avg_pool2d, conv2d, max_pool2d, Conv2dOpts};
pub use ops::fused_ce::linear_cross_entropy;
pub use ops::index::{embedding, one_hot, where_cond};
pub use ops::matmul::linear;
pub use ops::moe::{moe_experts, ExpertWeights};
pub use ops::norm::{layer_norm, rms_norm};
pub use ops::reduce::{cross_entropy, CrossEntropyOpts};
pub use ops::rope::{rope, rope_packed, rope_tables, rope_tail, RopeLayout};
pub use ops::unary::{gelu_erf, gelu_tanh, swiglu};
pub use ops::view::{cat, head_cat, stack};
pub use recompute::{recompute, segments, SegmentFn};
pub use tensor::{Contig, Device, Tensor, TensorId};

/// Keeps freed tensor buffers in the process instead of returning them to the OS.
///
/// A training step allocates and frees the same large buffers every step. glibc serves blocks
/// above its mmap threshold with fresh mappings and trims the heap top eagerly, so each step
/// paid thousands of page faults (zeroing pages in the kernel), about 10% of a step. Raising
/// both thresholds lets freed blocks be reused; the peak footprint is unchanged because the
/// same sizes come back. Blocks above the highest threshold glibc takes (32 MiB) would still
/// be mapped and unmapped each time (attention's probabilities at `llama-small`, 138 MB per
/// layer), so mappings are turned off and blocks of the main arena (the one for the threads
/// started after this call: the kernel pool's) come from the heap. A freed block then stays in
/// the process: [`release_free_memory`] gives free memory back after a one-off peak (loading a
/// checkpoint). No-op off glibc. Called by [`set_num_threads`].
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // one arena for all threads: the step runs on a pool thread and buffers are freed on
        // other threads than the one that allocated them; with an arena per thread, each
        // arena's heaps grew to hold a step's peak (peak RSS of the 24-layer GPT step at
        // batch 16 x 256: 5,322 MiB, against 2,869 MiB with one arena)
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // no mappings at all: above the 32 MiB threshold (its maximum) a freed block went back
        // to the OS and its next allocation faulted every page in again; `llama-small` step
        // 1.24x faster (tokens/s, A/B run), 4.8M -> 1.2M page faults over 6 steps, same peak
        // RSS
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

/// Gives the allocator's free memory back to the OS (glibc's `malloc_trim`), after a one-off
/// peak such as a checkpoint's bytes read whole: with [`tune_allocator`]'s settings freed
/// blocks otherwise stay resident. No-op off glibc. [`io::load_safetensors`] calls it.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sizes rayon's global thread pool (call once, before any op). Returns an error if the pool
/// was already built with another size.
pub fn set_num_threads(n: usize) -> Result<()> {
    tune_allocator();
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(e) => Err(Error::Invalid {
            op: "set_num_threads",
            msg: format!(
                "the thread pool already runs {} threads: {e}",
                rayon::current_num_threads()
            ),
        }),
    }
}

/// Runs `f` on a thread of the kernel pool and returns its result.
///
/// Every parallel op called from outside the pool hands its work to the pool's threads and
/// puts the caller to sleep until they finish: two thread switches per op, thousands per
/// training step. Called from inside, the calling thread takes part in the work and the
/// switches go away. Thread-local state (the RNG, grad mode) is the pool thread's inside `f`:
/// seed and run the whole computation inside.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("the scope ran its body")
}

/// Threads the kernels use.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}
