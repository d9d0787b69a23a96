//! Times elementwise kernels on 1M elements (a tuning aid, not a test).
use ferrolab_tensor::{backward_with_grad, Tensor};
use std::time::Instant;

fn time(name: &str, f: impl Fn()) {
    for _ in 0..3 {
        f();
    }
    let r = 20;
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
    let n = 1 << 20;
    let x = Tensor::randn(&[1024, 1024], 0.0, 1.0).into_var();
    time("gelu fwd", || {
        ferrolab_tensor::no_grad(|| x.gelu());
    });
    time("gelu fwd+bwd", || {
        let y = x.gelu();
        backward_with_grad(&y, vec![1.0; n]).unwrap();
    });
    time("exp fwd+bwd", || {
        let y = x.exp();
        backward_with_grad(&y, vec![1.0; n]).unwrap();
    });
    time("relu fwd+bwd", || {
        let y = x.relu();
        backward_with_grad(&y, vec![1.0; n]).unwrap();
    });
    time("gelu_tanh fwd+bwd", || {
        let y = x.gelu_tanh();
        backward_with_grad(&y, vec![1.0; n]).unwrap();
    });
    time("exp fwd", || {
        ferrolab_tensor::no_grad(|| x.exp());
    });
    time("alloc+fill 4MB", || {
        let v = vec![1.0f32; n];
        std::hint::black_box(v);
    });
    let q = Tensor::randn(&[8, 4, 128, 64], 0.0, 1.0);
    time("sdpa fwd", || {
        ferrolab_tensor::no_grad(|| {
            ferrolab_tensor::scaled_dot_product_attention(
                &q,
                &q,
                &q,
                ferrolab_tensor::AttnMask::Causal,
                None,
            )
            .unwrap()
        });
    });
}
