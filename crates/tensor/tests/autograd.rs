//! Autograd semantics: accumulation, zero_grad, no_grad, detach, frozen leaves, and errors
//! (never panics) for misuse and shape mismatches.

mod common;

use common::{grad_vec, t, Data};
use ferrolab_tensor::{
    backward_with_grad, cat, conv2d, cross_entropy, embedding, enable_grad_guard, is_grad_enabled,
    layer_norm, linear, no_grad, no_grad_guard, packed_qkv_attention, rms_norm, rope,
    scaled_dot_product_attention, where_cond, AttnMask, Conv2dOpts, CrossEntropyOpts, Error,
    Result, RopeLayout, Tensor,
};

fn var(shape: &[usize], seed: u64) -> Tensor {
    Data::new(seed).randn(shape).into_var()
}

/// `sum(x^2 * 3)`: gradient `6x`.
fn loss_of(x: &Tensor) -> Tensor {
    x.sqr().mul_scalar(3.0).sum_all()
}

#[test]
fn gradients_accumulate_across_backward_calls() {
    let x = var(&[2, 3], 1);
    loss_of(&x).backward().unwrap();
    let g1 = grad_vec(&x);
    let want: Vec<f32> = x.to_vec().iter().map(|v| 6.0 * v).collect();
    assert_eq!(g1, want);
    loss_of(&x).backward().unwrap();
    let doubled: Vec<f32> = g1.iter().map(|g| 2.0 * g).collect();
    assert_eq!(grad_vec(&x), doubled);
}

#[test]
fn zero_grad_clears_and_restarts_accumulation() {
    let x = var(&[4], 2);
    loss_of(&x).backward().unwrap();
    let g1 = grad_vec(&x);
    x.zero_grad();
    assert!(x.grad().is_none());
    loss_of(&x).backward().unwrap();
    assert_eq!(grad_vec(&x), g1);
}

#[test]
fn no_grad_records_nothing_and_restores_the_mode() {
    let x = var(&[3], 3);
    assert!(is_grad_enabled());
    let y = no_grad(|| x.mul(&x).unwrap().exp());
    assert!(!y.requires_grad());
    assert!(y.is_leaf(), "no graph node");
    assert!(is_grad_enabled(), "restored after no_grad");
    let err = y.sum_all().backward().unwrap_err();
    assert!(matches!(err, Error::Backward(_)), "{err}");
    {
        let _g = no_grad_guard();
        assert!(!is_grad_enabled());
        assert!(!x.sqr().requires_grad());
        {
            let _e = enable_grad_guard();
            assert!(x.sqr().requires_grad());
        }
        assert!(!is_grad_enabled());
        // the mode is per thread
        assert!(std::thread::spawn(is_grad_enabled).join().unwrap());
    }
    assert!(is_grad_enabled());
    assert!(x.sqr().requires_grad());
}

#[test]
fn detach_stops_gradients() {
    let x = var(&[5], 4);
    // d/dx (x * detach(x)) = detach(x): half of d/dx x^2
    x.mul(&x.detach()).unwrap().sum_all().backward().unwrap();
    assert_eq!(grad_vec(&x), x.to_vec());
    let d = x.detach();
    assert!(!d.requires_grad() && d.is_leaf());
    assert_eq!(d.to_vec(), x.to_vec());
    // only a detached path: nothing to back-propagate
    assert!(d.sqr().sum_all().backward().is_err());
}

#[test]
fn constants_and_frozen_leaves_get_no_gradient() {
    let (x, c) = (var(&[3], 5), Data::new(6).randn(&[3]));
    let y = x.mul(&c).unwrap();
    assert!(y.requires_grad() && !c.requires_grad());
    y.sum_all().backward().unwrap();
    assert_eq!(grad_vec(&x), c.to_vec());
    assert!(c.grad().is_none());

    let w = var(&[3], 7);
    w.set_requires_grad(false).unwrap();
    x.zero_grad();
    x.mul(&w).unwrap().sum_all().backward().unwrap();
    assert!(w.grad().is_none());
    assert_eq!(grad_vec(&x), w.to_vec());
    // only leaves can change requires_grad
    assert!(x.sqr().set_requires_grad(false).is_err());
}

#[test]
fn backward_from_a_leaf_and_with_an_explicit_gradient() {
    let s = t(vec![2.0], &[]).into_var();
    s.backward().unwrap();
    assert_eq!(grad_vec(&s), [1.0]);
    let x = var(&[2, 3], 8);
    let g: Vec<f32> = (0..6).map(|i| i as f32).collect();
    backward_with_grad(&x.mul_scalar(2.0), g.clone()).unwrap();
    assert_eq!(grad_vec(&x), g.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
}

#[test]
fn backward_misuse_is_an_error_not_a_panic() {
    let x = var(&[2, 3], 9);
    // non-scalar root
    let err = x.sqr().backward().unwrap_err();
    assert!(
        matches!(err, Error::Backward(_)) && err.to_string().contains("one-element"),
        "{err}"
    );
    // wrong number of gradient elements
    assert!(matches!(
        backward_with_grad(&x.sqr(), vec![1.0; 5]),
        Err(Error::Backward(_))
    ));
    // twice through the same graph: the first backward freed it
    let l = loss_of(&x);
    l.backward().unwrap();
    let err = l.backward().unwrap_err();
    assert!(err.to_string().contains("freed"), "{err}");
    // a second loss over a shared intermediate whose node the first backward freed
    let h = x.exp();
    let (l1, l2) = (h.sum_all(), h.mul_scalar(2.0).sum_all());
    l1.backward().unwrap();
    assert!(matches!(l2.backward(), Err(Error::Backward(_))));
    // a fresh forward works again
    x.zero_grad();
    loss_of(&x).backward().unwrap();
    assert!(x.grad().is_some());
}

#[test]
fn shape_errors_name_the_op() {
    let m = |s: &[usize]| Tensor::zeros(s);
    let cases: Vec<(&str, Result<Tensor>)> = vec![
        ("matmul", m(&[2, 3]).matmul(&m(&[4, 5]))),
        ("matmul", m(&[3]).matmul(&m(&[3, 2]))),
        ("matmul", m(&[2, 2, 3]).matmul(&m(&[3, 3, 4]))),
        ("add", m(&[2, 3]).add(&m(&[4]))),
        ("sub", m(&[2, 3]).sub(&m(&[2]))),
        ("mul", m(&[2, 3]).mul(&m(&[3, 3]))),
        ("div", m(&[5]).div(&m(&[4]))),
        ("maximum", m(&[5]).maximum(&m(&[4]))),
        ("reshape", m(&[2, 3]).reshape(&[4])),
        ("permute", m(&[2, 3]).permute(&[0, 0])),
        ("expand", m(&[3]).expand(&[2, 4])),
        ("narrow", m(&[2, 3]).narrow(1, 2, 2)),
        ("squeeze", m(&[2, 3]).squeeze(0)),
        ("softmax", m(&[2, 3]).softmax(2)),
        ("sum_dim", m(&[2, 3]).sum_dim(-3, false)),
        ("split", m(&[2, 3]).split(&[1, 1], 1).map(|v| v[0].clone())),
        ("cat", cat(&[&m(&[2, 3]), &m(&[2, 4])], 0)),
        ("linear", linear(&m(&[2, 3]), &m(&[4, 5]), None)),
        (
            "linear (bias)",
            linear(&m(&[2, 3]), &m(&[4, 3]), Some(&m(&[3]))),
        ),
        (
            "layer_norm",
            layer_norm(&m(&[2, 4]), Some(&m(&[3])), None, 1e-5),
        ),
        ("rms_norm", rms_norm(&m(&[2, 4]), Some(&m(&[5])), 1e-5)),
        (
            "conv2d",
            conv2d(
                &m(&[1, 3, 5, 5]),
                &m(&[2, 4, 3, 3]),
                None,
                Conv2dOpts::default(),
            ),
        ),
        (
            "conv2d",
            conv2d(
                &m(&[1, 3, 2, 2]),
                &m(&[2, 3, 3, 3]),
                None,
                Conv2dOpts::default(),
            ),
        ),
        ("embedding", embedding(&m(&[4, 2]), &[1, 4], &[2])),
        ("gather", m(&[3, 4]).gather(1, &[0; 6], &[2, 3])),
        ("scatter_add", m(&[3, 4]).scatter_add(0, &[0; 4], &m(&[4]))),
        ("index_select", m(&[3, 4]).index_select(0, &[3])),
        ("where", where_cond(&m(&[3]), &m(&[4]), &m(&[3]))),
        (
            "cross_entropy",
            cross_entropy(&m(&[3, 4]), &[0, 1], CrossEntropyOpts::default()),
        ),
        (
            "rope",
            rope(
                &m(&[2, 3, 4]),
                &m(&[3, 1]),
                &m(&[3, 1]),
                RopeLayout::HalfSplit,
            ),
        ),
        (
            "scaled_dot_product_attention",
            scaled_dot_product_attention(
                &m(&[1, 4, 3, 2]),
                &m(&[1, 3, 3, 2]),
                &m(&[1, 3, 3, 2]),
                AttnMask::None,
                None,
            ),
        ),
        (
            "scaled_dot_product_attention",
            scaled_dot_product_attention(
                &m(&[1, 2, 3, 2]),
                &m(&[1, 2, 3, 2]),
                &m(&[1, 2, 3, 2]),
                AttnMask::Additive(&m(&[4, 3])),
                None,
            ),
        ),
        (
            "packed_qkv_attention",
            packed_qkv_attention(&m(&[1, 3, 10]), 2, AttnMask::None, None),
        ),
    ];
    for (op, res) in cases {
        match res {
            Ok(y) => panic!("{op}: expected an error, got shape {:?}", y.shape()),
            Err(e) => assert!(
                e.to_string().contains(op),
                "error for {op} does not name it: {e}"
            ),
        }
    }
}

/// Dropping a very deep graph without a backward must not overflow the stack.
#[test]
fn dropping_a_deep_graph_does_not_overflow_the_stack() {
    let x = ferrolab_tensor::Tensor::ones(&[2]).into_var();
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.add_scalar(1.0);
    }
    assert_eq!(y.to_vec(), vec![200_001.0; 2]);
    drop(y);
}
