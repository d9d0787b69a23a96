use ferrolab_tensor::{linear, Tensor};
use std::time::Instant;
fn main() {
    ferrolab_tensor::set_num_threads(2).unwrap();
    for (n, i, o) in [
        (4096, 256, 2040),
        (4096, 256, 2048),
        (4000, 256, 2048),
        (4096, 256, 256),
        (4096, 256, 112),
        (4096, 96, 448),
        (4096, 256, 2048),
        (4096, 256, 1376),
        (4096, 688, 256),
        (4096, 256, 704),
        (4096, 352, 256),
        (4096, 512, 256),
    ] {
        let x = Tensor::randn(&[n, i], 0.0, 1.0).into_var();
        let w = Tensor::randn(&[o, i], 0.0, 0.02).into_var();
        let mut tf = 1e9f64;
        let mut tb = 1e9f64;
        for _ in 0..5 {
            let t0 = Instant::now();
            let y = linear(&x, &w, None).unwrap();
            let f = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            y.sum_all().backward().unwrap();
            let b = t1.elapsed().as_secs_f64();
            tf = tf.min(f);
            tb = tb.min(b);
            x.zero_grad();
            w.zero_grad();
        }
        let fl = 2.0 * (n * i * o) as f64;
        println!(
            "{n}x{i} -> {o}: fwd {:.1} ms {:.0} GF/s  bwd {:.1} ms {:.0} GF/s",
            tf * 1e3,
            fl / tf / 1e9,
            tb * 1e3,
            2.0 * fl / tb / 1e9
        );
    }
}
