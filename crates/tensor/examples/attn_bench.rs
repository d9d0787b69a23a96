//! Probe: causal packed attention forward and backward at the `llama-tiny` shapes
//! (batch 16, 256 tokens, 4 heads of 64), two threads.
//! `cargo run --release -p ferrolab-tensor --example attn_bench [T] [heads] [batch]`
//! (`THREADS=1` for one thread, `KV_HEADS=n` for grouped-query attention, `FWD_ONLY=1` to
//! skip the backward; `FERROLAB_PLAIN_ATTENTION=1` times the `gemm` path instead of the
//! register tiles, `FERROLAB_NO_AVX512=1` the 256-bit tiles on a machine with AVX-512).
use ferrolab_tensor::{packed_gqa_attention, AttnMask, Tensor};
use std::time::Instant;
fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (t, h, b) = (arg(1, 256), arg(2, 4), arg(3, 16));
    let d = 64;
    let hkv = std::env::var("KV_HEADS").map_or(h, |v| v.parse().unwrap());
    ferrolab_tensor::set_num_threads(std::env::var("THREADS").map_or(2, |v| v.parse().unwrap()))
        .unwrap();
    ferrolab_tensor::on_pool(|| {
        let qkv = Tensor::randn(&[b, t, (h + 2 * hkv) * d], 0.0, 1.0).into_var();
        let go = Tensor::randn(&[b, t, h * d], 0.0, 1.0);
        let flops = |frac: f64| 2.0 * (b * h * t * t * d) as f64 * frac;
        let mut fw = Vec::new();
        let mut bw = Vec::new();
        for _ in 0..30 {
            let t0 = Instant::now();
            let y = packed_gqa_attention(&qkv, h, hkv, AttnMask::Causal, None).unwrap();
            let t1 = Instant::now();
            let l = y.mul(&go).unwrap().sum_all();
            let t2 = Instant::now();
            if std::env::var("FWD_ONLY").is_err() {
                l.backward().unwrap();
            }
            let t3 = Instant::now();
            fw.push((t1 - t0).as_secs_f64());
            bw.push((t3 - t2).as_secs_f64());
            qkv.zero_grad();
        }
        fw.sort_by(f64::total_cmp);
        bw.sort_by(f64::total_cmp);
        let (f, g) = (fw[fw.len() / 2], bw[bw.len() / 2]);
        // causal: half the square (products over the full square would be 2 forward, 4 backward)
        println!(
            "T={t} H={h} B={b}: fwd {:.2} ms ({:.0} GFLOP/s of the causal half), bwd {:.2} ms ({:.0}); min {:.2} / {:.2}",
            f * 1e3,
            flops(1.0) / f / 1e9,
            g * 1e3,
            flops(2.0) / g / 1e9,
            fw[0] * 1e3,
            bw[0] * 1e3
        );
    });
}
