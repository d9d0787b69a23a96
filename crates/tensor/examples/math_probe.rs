//! Single-thread throughput of the math kernels (a tuning aid, not a test).
use ferrolab_tensor::math;
use std::time::Instant;

fn run(name: &str, x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    let t = Instant::now();
    for _ in 0..20 {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = f(v);
        }
        std::hint::black_box(&mut *y);
    }
    println!(
        "{name}: {:.3} ns/elem",
        t.elapsed().as_secs_f64() * 1e9 / (20 * x.len()) as f64
    );
}

fn main() {
    let n = 1 << 20;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32) * 8.0 - 4.0).collect();
    let mut y = vec![0f32; n];
    run("copy", &x, &mut y, |v| v);
    run("math::exp", &x, &mut y, math::exp);
    run("std exp", &x, &mut y, f32::exp);
    run("math::erf", &x, &mut y, math::erf);
    run("gelu", &x, &mut y, ferrolab_tensor::gelu_erf);
    run("gelu grad", &x, &mut y, |x| {
        0.5 * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2))
            + x * 0.398_942_3 * math::exp(-0.5 * x * x)
    });
}
