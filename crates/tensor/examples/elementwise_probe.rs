//! Times the non-matmul ops of a training step at the benchmark's sizes (a tuning aid, not a
//! test).
use ferrolab_tensor::{
    backward_with_grad, cross_entropy, layer_norm, no_grad, CrossEntropyOpts, Tensor,
};
use std::time::Instant;

fn time(name: &str, f: impl Fn()) {
    for _ in 0..3 {
        f();
    }
    let r = 30;
    let t = Instant::now();
    for _ in 0..r {
        f();
    }
    println!(
        "{name}: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / r as f64
    );
}

fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    if std::env::args().any(|a| a == "lm") {
        lm_ops();
        return;
    }
    let h = Tensor::randn(&[1024, 1024], 0.0, 1.0).into_var();
    let n = h.numel();
    time("gelu fwd (1024x1024)", || {
        no_grad(|| h.gelu());
    });
    time("gelu fwd+bwd", || {
        let y = h.gelu();
        backward_with_grad(&y, vec![1.0; n]).unwrap();
    });
    let x = Tensor::randn(&[8, 128, 256], 0.0, 1.0).into_var();
    let w = Tensor::ones(&[256]).into_var();
    let b = Tensor::zeros(&[256]).into_var();
    time("layer_norm fwd (1024x256)", || {
        no_grad(|| layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap());
    });
    time("layer_norm fwd+bwd", || {
        let y = layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap();
        backward_with_grad(&y, vec![1.0; x.numel()]).unwrap();
    });
    time("add fwd+bwd (1024x256)", || {
        let y = x.add(&x).unwrap();
        backward_with_grad(&y, vec![1.0; x.numel()]).unwrap();
    });
    let logits = Tensor::randn(&[1024, 4096], 0.0, 1.0).into_var();
    let t: Vec<i64> = (0..1024).map(|i| (i * 7) % 4096).collect();
    time("cross_entropy fwd (1024x4096)", || {
        no_grad(|| cross_entropy(&logits, &t, CrossEntropyOpts::default()).unwrap());
    });
    time("cross_entropy fwd+bwd", || {
        let l = cross_entropy(&logits, &t, CrossEntropyOpts::default()).unwrap();
        l.backward().unwrap();
    });
    let qkv = Tensor::randn(&[8, 128, 768], 0.0, 1.0).into_var();
    time("packed attention fwd", || {
        no_grad(|| {
            ferrolab_tensor::packed_qkv_attention(&qkv, 4, ferrolab_tensor::AttnMask::Causal, None)
                .unwrap()
        });
    });
    time("packed attention fwd+bwd", || {
        let y =
            ferrolab_tensor::packed_qkv_attention(&qkv, 4, ferrolab_tensor::AttnMask::Causal, None)
                .unwrap();
        backward_with_grad(&y, vec![1.0; 8 * 128 * 256]).unwrap();
    });
}

/// The language model's non-product ops at the `llama-tiny` benchmark's sizes (16 x 256 tokens).
fn lm_ops() {
    let x = Tensor::randn(&[16, 256, 1376], 0.0, 1.0).into_var();
    time("swiglu fwd (4096x1376)", || {
        no_grad(|| ferrolab_tensor::swiglu(&x).unwrap());
    });
    time("swiglu fwd+bwd", || {
        let y = ferrolab_tensor::swiglu(&x).unwrap();
        backward_with_grad(&y, vec![1.0; 16 * 256 * 688]).unwrap();
    });
    let qkv = Tensor::randn(&[16, 256, 768], 0.0, 1.0).into_var();
    let pos: Vec<usize> = (0..256).collect();
    let (c, s) = ferrolab_tensor::rope_tables(&pos, 64, 1e4).unwrap();
    let rl = ferrolab_tensor::RopeLayout::HalfSplit;
    time("rope_packed fwd (16x256x768)", || {
        no_grad(|| ferrolab_tensor::rope_packed(&qkv, 64, 8, &c, &s, rl).unwrap());
    });
    time("rope_packed fwd+bwd", || {
        let y = ferrolab_tensor::rope_packed(&qkv, 64, 8, &c, &s, rl).unwrap();
        backward_with_grad(&y, vec![1.0; qkv.numel()]).unwrap();
    });
    let h = Tensor::randn(&[16, 256, 256], 0.0, 1.0).into_var();
    let w = Tensor::ones(&[256]).into_var();
    time("rms_norm fwd (4096x256)", || {
        no_grad(|| ferrolab_tensor::rms_norm(&h, Some(&w), 1e-6).unwrap());
    });
    time("rms_norm fwd+bwd", || {
        let y = ferrolab_tensor::rms_norm(&h, Some(&w), 1e-6).unwrap();
        backward_with_grad(&y, vec![1.0; h.numel()]).unwrap();
    });
    time("add fwd+bwd (4096x256)", || {
        let y = h.add(&h).unwrap();
        backward_with_grad(&y, vec![1.0; h.numel()]).unwrap();
    });
    time("packed attention fwd+bwd (16x256x768)", || {
        let y =
            ferrolab_tensor::packed_qkv_attention(&qkv, 4, ferrolab_tensor::AttnMask::Causal, None)
                .unwrap();
        backward_with_grad(&y, vec![1.0; 16 * 256 * 256]).unwrap();
    });
}
