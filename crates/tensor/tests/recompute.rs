//! Recompute (activation checkpointing): a residual MLP with dropout run plain and through
//! `recompute` over `segments(n)` gives the same loss and the same gradients.

mod common;

use std::sync::Arc;

use common::{assert_close, check_grad, grad_vec, vars, Data};
use ferrolab_tensor::rng::manual_seed;
use ferrolab_tensor::{linear, no_grad, recompute, segments, Result, SegmentFn, Tensor};

const D: usize = 6;
const HIDDEN: usize = 10;
const ROWS: usize = 4;

/// `x + W2 dropout(gelu(W1 x + b1))` with `p = [W1, b1, W2]`.
fn block(x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
    let h = linear(x, &p[0], Some(&p[1]))?.gelu().dropout(0.2, true)?;
    x.add(&linear(&h, &p[2], None)?)
}

/// Parameters of `n` blocks, three tensors each.
fn params(n: usize, d: &mut Data) -> Vec<Tensor> {
    (0..n)
        .flat_map(|_| {
            [
                d.randn(&[HIDDEN, D]).mul_scalar(0.4),
                d.randn(&[HIDDEN]).mul_scalar(0.1),
                d.randn(&[D, HIDDEN]).mul_scalar(0.4),
            ]
        })
        .collect()
}

/// The blocks in order, each segment through `recompute` when `checkpoint`.
fn forward(x: &Tensor, p: &[Tensor], checkpoint: bool) -> Result<Tensor> {
    let n = p.len() / 3;
    if !checkpoint {
        return p.chunks(3).try_fold(x.clone(), |h, bp| block(&h, bp));
    }
    let mut h = x.clone();
    for seg in segments(n) {
        // the segment's parameters are captured, not passed as inputs
        let ps: Vec<Tensor> = p[seg.start * 3..seg.end * 3].to_vec();
        let f: SegmentFn = Arc::new(move |xs: &[Tensor]| {
            ps.chunks(3).try_fold(xs[0].clone(), |h, bp| block(&h, bp))
        });
        h = recompute(&[&h], f)?;
    }
    Ok(h)
}

/// Loss and gradients (input first, then every parameter) of one run from a fixed seed.
fn run(x: &Tensor, p: &[Tensor], checkpoint: bool, x_trainable: bool) -> (f32, Vec<Vec<f32>>) {
    let x = if x_trainable {
        x.clone().into_var()
    } else {
        x.clone()
    };
    let p = vars(p);
    manual_seed(1234);
    let loss = forward(&x, &p, checkpoint)
        .unwrap()
        .sqr()
        .mean_all()
        .unwrap();
    loss.backward().unwrap();
    let grads = std::iter::once(&x).chain(&p).map(grad_vec).collect();
    (loss.item().unwrap(), grads)
}

#[test]
fn recompute_matches_the_plain_run() {
    for (blocks, x_trainable) in [(3, true), (5, true), (3, false)] {
        let mut d = Data::new(50 + blocks as u64);
        let x = d.randn(&[ROWS, D]);
        let p = params(blocks, &mut d);
        let (plain_loss, plain) = run(&x, &p, false, x_trainable);
        let (ck_loss, ck) = run(&x, &p, true, x_trainable);
        assert_eq!(plain_loss, ck_loss, "{blocks} blocks: loss");
        for (i, (a, b)) in ck.iter().zip(&plain).enumerate() {
            assert_close(&format!("{blocks} blocks: gradient {i}"), a, b, 1e-6);
        }
        assert!(
            plain.iter().skip(1).all(|g| g.iter().any(|&v| v != 0.0)),
            "every parameter gets a gradient"
        );
    }
}

/// Dropout really is active (the plain run depends on the seed), so the equality above
/// checks that recompute replays the generator.
#[test]
fn dropout_inside_depends_on_the_seed() {
    let mut d = Data::new(60);
    let (x, p) = (d.randn(&[ROWS, D]), params(3, &mut d));
    let at = |seed| {
        manual_seed(seed);
        no_grad(|| forward(&x, &p, true)).unwrap().to_vec()
    };
    assert_eq!(at(1), at(1));
    assert_ne!(at(1), at(2));
    // without grad, recompute just runs the segment
    manual_seed(1);
    assert_eq!(no_grad(|| forward(&x, &p, false)).unwrap().to_vec(), at(1));
}

/// Finite differences through a recomputed segment, for its input and its captured
/// parameters (the checker's inputs, so they are trainable leaves).
#[test]
fn recompute_gradients_match_finite_differences() {
    let mut d = Data::new(61);
    let mut inputs = vec![d.randn(&[3, D])];
    inputs.extend(params(2, &mut d));
    check_grad("recompute over two blocks", &inputs, |xs| {
        manual_seed(9);
        let ps = xs[1..].to_vec();
        let f: SegmentFn = Arc::new(move |i: &[Tensor]| {
            ps.chunks(3).try_fold(i[0].clone(), |h, bp| block(&h, bp))
        });
        recompute(&[&xs[0].tanh()], f)
    });
}

#[test]
fn segments_cover_the_blocks_in_order() {
    assert!(segments(0).is_empty());
    assert_eq!(segments(1), vec![std::ops::Range { start: 0, end: 1 }]);
    assert_eq!(segments(3), [0..2, 2..3]);
    assert_eq!(segments(4), [0..2, 2..4]);
    assert_eq!(segments(10), [0..4, 4..8, 8..10]);
    for n in 1..50 {
        let s = segments(n);
        assert_eq!(s.first().unwrap().start, 0);
        assert_eq!(s.last().unwrap().end, n);
        assert!(s
            .windows(2)
            .all(|w| w[0].end == w[1].start && !w[0].is_empty()));
    }
}
