//! `tune_allocator` keeps freed buffers of any size in the process: a freed 64 MiB buffer
//! (above glibc's highest mmap threshold, 32 MiB) comes back for the next buffer of its size
//! without faulting its pages in again. Without a harness, so that the check runs on the main
//! thread: libtest's threads may have malloc arenas of their own, made before the tuning, whose
//! heaps cannot hold 64 MiB.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    /// Minor page faults of this thread so far.
    fn faults() -> i64 {
        // SAFETY: getrusage only writes the struct it is given.
        unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut u);
            u.ru_minflt
        }
    }
    ferrolab_tensor::tune_allocator();
    let n = 16 << 20; // floats: 64 MiB, 16,384 pages of 4 KiB
    let fresh = || {
        let mut v: Vec<f32> = Vec::with_capacity(n);
        v.resize(n, 1.0); // every page touched
        std::hint::black_box(v)
    };
    let first = faults();
    drop(fresh());
    let once = faults() - first;
    let mut again = Vec::new();
    for _ in 0..3 {
        let before = faults();
        drop(fresh());
        again.push(faults() - before);
    }
    println!("64 MiB buffer: {once} page faults the first time, then {again:?}");
    assert!(
        once >= 10_000,
        "the first buffer should fault its pages in: {once}"
    );
    assert!(
        again.iter().all(|&f| f < 1_000),
        "a freed 64 MiB buffer was given back to the OS and faulted in again: {again:?}"
    );
    println!("test large_freed_buffers_are_reused_without_page_faults ... ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}
