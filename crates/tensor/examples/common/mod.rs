//! What the standalone `gemm` probes share (not an example itself: no `main.rs`).

/// `c (m x n, row-major) = a @ b` through `gemm`, overwriting `c`: `a` is `m x k` with column
/// stride `a_cs` and row stride `a_rs` (`(1, k)` row-major, `(m, 1)` the transpose of a
/// row-major `k x m`), `b` is `k x n` row-major.
#[allow(clippy::too_many_arguments)]
pub fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    (a_cs, a_rs): (isize, isize),
    b: &[f32],
    c: &mut [f32],
    par: gemm::Parallelism,
) {
    assert!(c.len() >= m * n && b.len() >= k * n && a.len() >= m * k);
    // SAFETY: c holds m x n and b k x n row-major; a holds m x k elements, which the callers'
    // strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
