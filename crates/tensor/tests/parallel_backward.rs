//! `parallel_backward`: the parts of a batch run side by side give the whole batch's
//! gradients, the same bits on every run whichever part finishes first, a random stream per
//! part, and nothing added to any gradient when a part fails.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use common::{grad_vec, Data};
use ferrolab_tensor::{
    is_grad_enabled, linear, no_grad_guard, parallel_backward, recompute, rng, Result, SegmentFn,
    Tensor,
};

const ROWS: usize = 6;
const D: usize = 8;

/// A small network with a weight used twice and, optionally, its second layer recomputed
/// (so that `w0` gets its gradient only through the recomputed segment's input).
struct Net {
    w0: Tensor,
    w1: Tensor,
    b1: Tensor,
    tied: Tensor,
    x: Vec<f32>,
    checkpoint: bool,
}

impl Net {
    fn new(checkpoint: bool) -> Net {
        let mut d = Data::new(3);
        Net {
            w0: d.randn(&[D, D]).mul_scalar(0.3).detach().into_var(),
            w1: d.randn(&[16, D]).mul_scalar(0.3).detach().into_var(),
            b1: d.randn(&[16]).mul_scalar(0.1).detach().into_var(),
            tied: d.randn(&[D, 16]).mul_scalar(0.3).detach().into_var(),
            x: d.normal_vec(ROWS * D),
            checkpoint,
        }
    }

    fn params(&self) -> [&Tensor; 4] {
        [&self.w0, &self.w1, &self.b1, &self.tied]
    }

    fn zero_grad(&self) {
        self.params().iter().for_each(|p| p.zero_grad());
    }

    fn grads(&self) -> Vec<Option<Vec<f32>>> {
        self.params()
            .iter()
            .map(|p| p.grad().map(|_| grad_vec(p)))
            .collect()
    }

    /// Mean over rows `lo..hi` of `|tied^T tied gelu(w1 w0 x + b1)|^2`: the tied weight is
    /// read twice per row.
    fn loss(&self, lo: usize, hi: usize) -> Result<Tensor> {
        let x = Tensor::from_slice(&self.x[lo * D..hi * D], &[hi - lo, D])?;
        let x = linear(&x, &self.w0, None)?;
        let (w1, b1) = (self.w1.clone(), self.b1.clone());
        let first: SegmentFn =
            Arc::new(move |xs: &[Tensor]| Ok(linear(&xs[0], &w1, Some(&b1))?.gelu()));
        let h = if self.checkpoint {
            recompute(&[&x], first)?
        } else {
            first(&[x])?
        };
        let y = linear(&h, &self.tied, None)?; // (rows, D)
        let z = linear(&y, &self.tied.transpose(0, 1)?, None)?; // (rows, 16)
        Ok(z.sqr().sum_all().mul_scalar(1.0 / (hi - lo) as f32))
    }

    /// The gradients of the batch's mean loss, the batch split into `parts` (1: the plain
    /// backward of the whole batch).
    fn split_grads(&self, parts: usize) -> Vec<Option<Vec<f32>>> {
        self.zero_grad();
        let losses = parallel_backward(parts, |i| {
            let (lo, hi) = (i * ROWS / parts, (i + 1) * ROWS / parts);
            let share = (hi - lo) as f32 / ROWS as f32;
            let loss = self.loss(lo, hi)?.mul_scalar(share);
            let value = loss.item()?;
            Ok((loss, value))
        })
        .unwrap();
        assert_eq!(losses.len(), parts.max(1));
        self.grads()
    }

    fn plain_grads(&self) -> Vec<Option<Vec<f32>>> {
        self.zero_grad();
        self.loss(0, ROWS).unwrap().backward().unwrap();
        self.grads()
    }
}

fn assert_close(a: &[Option<Vec<f32>>], b: &[Option<Vec<f32>>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (j, (p, q)) in x.iter().zip(y).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 * scale,
                "{what}: parameter {i} element {j}: {p} vs {q}"
            );
        }
    }
}

#[test]
fn one_part_is_the_plain_backward_bit_for_bit() {
    for checkpoint in [false, true] {
        let net = Net::new(checkpoint);
        assert_eq!(
            net.split_grads(1),
            net.plain_grads(),
            "checkpoint {checkpoint}"
        );
    }
}

#[test]
fn parts_give_the_whole_batch_gradients_and_the_same_bits_every_run() {
    for checkpoint in [false, true] {
        let net = Net::new(checkpoint);
        let whole = net.plain_grads();
        // 4 and 6 parts on fewer threads: parts wait for a thread, or run inside another
        for parts in [2, 3, 4, 6] {
            let first = net.split_grads(parts);
            assert_close(
                &first,
                &whole,
                &format!("{parts} parts, checkpoint {checkpoint}"),
            );
            for _ in 0..5 {
                assert_eq!(
                    net.split_grads(parts),
                    first,
                    "{parts} parts changed between runs"
                );
            }
        }
    }
}

#[test]
fn parts_add_to_the_gradients_already_held() {
    let net = Net::new(false);
    let once = net.split_grads(2);
    // no zero_grad between the two: the second adds to the first
    parallel_backward(2, |i| {
        let (lo, hi) = (i * ROWS / 2, (i + 1) * ROWS / 2);
        Ok((net.loss(lo, hi)?.mul_scalar(0.5), ()))
    })
    .unwrap();
    let twice: Vec<Option<Vec<f32>>> = once
        .iter()
        .map(|g| g.as_ref().map(|g| g.iter().map(|x| 2.0 * x).collect()))
        .collect();
    assert_close(&net.grads(), &twice, "second call");
}

#[test]
fn a_failing_part_adds_no_gradient_and_returns_its_error() {
    for checkpoint in [false, true] {
        let net = Net::new(checkpoint);
        net.zero_grad();
        let err = parallel_backward(3, |i| {
            if i == 0 {
                return Ok((net.loss(0, 2)?, ()));
            }
            // parts 1 and 2: a batch of the wrong width, the error names the op and shapes
            let x = Tensor::zeros(&[2, D + i]);
            Ok((linear(&x, &net.w1, None)?.sum_all(), ()))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("linear") && err.contains(&format!("{}", D + 1)),
            "{err}"
        );
        assert_eq!(net.grads(), vec![None; 4], "checkpoint {checkpoint}");
    }
}

#[test]
fn each_part_draws_from_its_own_stream_and_the_caller_continues_part_zeros() {
    let w = Tensor::ones(&[3]).into_var();
    let run = || {
        rng::manual_seed(42);
        let draws = parallel_backward(3, |_| Ok((w.sum_all(), rng::uniform_vec(5)))).unwrap();
        (draws, rng::get_state())
    };
    let (draws, after) = run();
    rng::manual_seed(42);
    let start = rng::get_state();
    // part 0 continues the caller's generator, part i draws from stream i of it
    assert_eq!(draws[0], rng::uniform_vec(5));
    assert_eq!(
        after,
        rng::get_state(),
        "the caller continues where part 0 stopped"
    );
    for (i, d) in draws.iter().enumerate().skip(1) {
        rng::set_state(start.stream(i as u64));
        assert_eq!(d, &rng::uniform_vec(5), "part {i}");
        assert_ne!(d, &draws[0], "part {i} repeats part 0's numbers");
    }
    assert_eq!(run(), (draws, after), "the draws changed between runs");
    // a part that draws more than part 0 moves the caller past its draw, and the next call's
    // streams are new ones
    let uneven =
        || parallel_backward(2, |i| Ok((w.sum_all(), rng::uniform_vec(3 + 4 * i)))).unwrap();
    rng::manual_seed(42);
    let first = uneven();
    assert_eq!(rng::get_state().offset, 7);
    let second = uneven();
    for part in 0..2 {
        assert!(
            first[part].iter().all(|x| !second[part].contains(x)),
            "part {part} drew numbers of the previous call again"
        );
    }
}

#[test]
fn parts_run_in_the_callers_grad_mode() {
    let w = Tensor::ones(&[3]).into_var();
    let seen = Mutex::new(Vec::new());
    let run = |parts: usize| {
        parallel_backward(parts, |_| {
            seen.lock().unwrap().push(is_grad_enabled());
            Ok((w.sum_all(), ()))
        })
    };
    run(2).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![true, true]);
    seen.lock().unwrap().clear();
    {
        let _off = no_grad_guard();
        // nothing recorded, so nothing to differentiate: an error, not a panic
        let err = run(2).unwrap_err().to_string();
        assert!(err.contains("does not require grad"), "{err}");
        assert!(!is_grad_enabled(), "the caller's grad mode changed");
    }
    assert_eq!(*seen.lock().unwrap(), vec![false, false]);
    assert!(is_grad_enabled());
}

#[test]
fn a_panicking_part_leaves_no_pool_thread_collecting() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let w = Tensor::ones(&[3]).into_var();
    pool.install(|| {
        for k in 0..4 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                parallel_backward(2, |i| {
                    let loss = w.sum_all();
                    if i == k % 2 {
                        loss.backward().unwrap(); // held by this part's collector
                        panic!("part {i} fails");
                    }
                    Ok((loss, ()))
                })
            }));
            assert!(r.is_err(), "the panic reached the caller");
        }
    });
    // a plain backward on either thread of the pool lands in the gradient
    let seen = pool.broadcast(|_| {
        let v = Tensor::ones(&[3]).into_var();
        v.sum_all().backward().unwrap();
        v.grad().map(|g| g.to_vec())
    });
    assert_eq!(seen, vec![Some(vec![1.0; 3]); 2]);
}
