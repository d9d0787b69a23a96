//! `tune_allocator` keeps freed buffers of any size in the process: a freed 64 MiB buffer
//! (above glibc's highest mmap threshold, 32 MiB) comes back for the next buffer of its size
//! without faulting its pages in again. Without a harness, so that the check runs on the main
//! thread: libtest's threads may have malloc arenas of their own, made before the tuning, whose
//! heaps cannot hold 64 MiB. Then `release_free_memory` gives such a buffer back, and
//! `io::load_safetensors` does so with a file's bytes once its tensors are parsed.

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
    // 4 KiB pages: with transparent huge pages a 64 MiB buffer faults ~100-500 times, too few
    // to tell reuse from a fresh mapping
    // SAFETY: prctl with integer arguments; it only changes this process's THP policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    ferrolab_tensor::tune_allocator();
    let n = 16 << 20; // floats: 64 MiB, 16,384 pages of 4 KiB
    let fresh = || {
        let mut v: Vec<f32> = Vec::with_capacity(n);
        v.resize(n, 1.0); // every page touched
        std::hint::black_box(v)
    };
    // page faults taken by allocating, filling and freeing one such buffer
    let fresh_faults = || {
        let before = faults();
        drop(fresh());
        faults() - before
    };
    let once = fresh_faults();
    let again: Vec<i64> = (0..3).map(|_| fresh_faults()).collect();
    println!("64 MiB buffer: {once} page faults the first time, then {again:?}");
    assert!(
        once >= 10_000,
        "the first buffer should fault its pages in: {once}"
    );
    assert!(
        again.iter().all(|&f| f < 1_000),
        "a freed 64 MiB buffer was given back to the OS and faulted in again: {again:?}"
    );
    // and `release_free_memory` gives a freed buffer back: the next one faults again
    ferrolab_tensor::release_free_memory();
    let trimmed = fresh_faults();
    println!("after release_free_memory: {trimmed} page faults");
    assert!(
        trimmed >= 10_000,
        "release_free_memory kept the freed 64 MiB: {trimmed} faults"
    );
    println!("test large_freed_buffers_are_reused_without_page_faults ... ok");

    // loading a safetensors file gives its bytes back once the tensors are parsed
    use ferrolab_tensor::{io, DType, Tensor};
    let path =
        std::env::temp_dir().join(format!("ferrolab-alloc-{}.safetensors", std::process::id()));
    let big = Tensor::from_vec(vec![0.5f32; n], &[n]).expect("a vector is a tensor");
    io::save_safetensors(&path, &[("w".to_string(), big)], DType::F32, None).expect("saved");
    ferrolab_tensor::release_free_memory();
    let loaded = io::load_safetensors(&path);
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.expect("loaded");
    let after_load = fresh_faults();
    println!("a 64 MiB buffer after loading a 64 MiB file: {after_load} page faults");
    assert!(
        after_load >= 10_000,
        "the file's bytes stayed resident after load_safetensors: {after_load} faults"
    );
    assert_eq!(loaded["w"].numel(), n);
    println!("test loading_gives_the_file_bytes_back ... ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}
