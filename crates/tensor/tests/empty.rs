//! Zero-size inputs (an empty batch, no classes, no keys, no channels): each op gives the
//! empty or trivial result PyTorch gives, or a typed error; never a panic. Forward and
//! backward.

use ferrolab_tensor::{
    attention_bthd, cat, conv2d, cross_entropy, embedding, layer_norm, linear,
    linear_cross_entropy, max_pool2d, one_hot, rms_norm, rope, rope_tables,
    scaled_dot_product_attention, swiglu, AttnMask, Conv2dOpts, Result, RopeLayout, Tensor,
};

fn z(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape).into_var()
}

/// Runs `f`, then a backward from the sum of its output; returns the output's shape and its
/// values, and checks that every input's gradient has the input's shape.
fn run(
    what: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (Vec<usize>, Vec<f32>) {
    let y = f(inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    y.sum_all()
        .backward()
        .unwrap_or_else(|e| panic!("{what} backward: {e}"));
    for (i, x) in inputs.iter().enumerate() {
        if let Some(g) = x.grad() {
            assert_eq!(g.shape(), x.shape(), "{what}: gradient of input {i}");
        }
    }
    (y.shape().to_vec(), y.to_vec())
}

#[test]
fn zero_size_inputs_give_empty_results() {
    // broadcasting over an empty dim
    let (s, _) = run("add (2,0)+(0)", &[z(&[2, 0]), z(&[0])], |x| x[0].add(&x[1]));
    assert_eq!(s, [2, 0]);
    let (s, _) = run("mul (2,0)*(1,0)", &[z(&[2, 0]), z(&[1, 0])], |x| {
        x[0].mul(&x[1])
    });
    assert_eq!(s, [2, 0]);
    let (s, _) = run("sub (3,0,2)-(0,2)", &[z(&[3, 0, 2]), z(&[0, 2])], |x| {
        x[0].sub(&x[1])
    });
    assert_eq!(s, [3, 0, 2]);
    let (s, _) = run("maximum (2,0),(0)", &[z(&[2, 0]), z(&[0])], |x| {
        x[0].maximum(&x[1])
    });
    assert_eq!(s, [2, 0]);
    let (s, _) = run("gelu of (0,3)", &[z(&[0, 3])], |x| Ok(x[0].gelu()));
    assert_eq!(s, [0, 3]);

    // linear with no rows, no inputs, no outputs
    let w = Tensor::ones(&[5, 4]).into_var();
    let (s, _) = run("linear (0,4)x(5,4)", &[z(&[0, 4]), w.clone()], |x| {
        linear(&x[0], &x[1], None)
    });
    assert_eq!(s, [0, 5]);
    assert_eq!(
        w.grad().unwrap().to_vec(),
        vec![0.0; 20],
        "no rows: no weight gradient"
    );
    let b = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])
        .unwrap()
        .into_var();
    let (s, v) = run(
        "linear (2,0)x(3,0)+b",
        &[z(&[2, 0]), z(&[3, 0]), b.clone()],
        |x| linear(&x[0], &x[1], Some(&x[2])),
    );
    assert_eq!((s, v), (vec![2, 3], vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]));
    assert_eq!(
        b.grad().unwrap().to_vec(),
        [2.0, 2.0, 2.0],
        "bias gradient: one per row"
    );
    let (s, _) = run(
        "linear (3,4)x(0,4)+b",
        &[z(&[3, 4]), z(&[0, 4]), z(&[0])],
        |x| linear(&x[0], &x[1], Some(&x[2])),
    );
    assert_eq!(s, [3, 0]);
    let (s, v) = run("matmul (2,0)@(0,3)", &[z(&[2, 0]), z(&[0, 3])], |x| {
        x[0].matmul(&x[1])
    });
    assert_eq!((s, v), (vec![2, 3], vec![0.0; 6]));
    let (s, _) = run("matmul (2,0,3)@(3,4)", &[z(&[2, 0, 3]), z(&[3, 4])], |x| {
        x[0].matmul(&x[1])
    });
    assert_eq!(s, [2, 0, 4]);

    // reductions, softmax, norms over empty rows or an empty batch
    let (s, v) = run("sum over an empty dim", &[z(&[2, 0])], |x| {
        x[0].sum_dim(1, false)
    });
    assert_eq!((s, v), (vec![2], vec![0.0, 0.0]));
    let (s, _) = run("softmax of (2,0)", &[z(&[2, 0])], |x| x[0].softmax(-1));
    assert_eq!(s, [2, 0]);
    let (s, _) = run("log_softmax of (0,5)", &[z(&[0, 5])], |x| {
        x[0].log_softmax(-1)
    });
    assert_eq!(s, [0, 5]);
    let (s, _) = run(
        "layer_norm of (0,4)",
        &[z(&[0, 4]), z(&[4]), z(&[4])],
        |x| layer_norm(&x[0], Some(&x[1]), Some(&x[2]), 1e-5),
    );
    assert_eq!(s, [0, 4]);
    let (s, _) = run("rms_norm of (0,4)", &[z(&[0, 4]), z(&[4])], |x| {
        rms_norm(&x[0], Some(&x[1]), 1e-6)
    });
    assert_eq!(s, [0, 4]);
    let (s, _) = run("swiglu of (0,6)", &[z(&[0, 6])], |x| swiglu(&x[0]));
    assert_eq!(s, [0, 3]);

    // losses: no classes (every target ignored), an empty batch, no channels
    let ce = cross_entropy(&z(&[2, 0]), &[-100, -100], Default::default()).unwrap();
    assert!(ce.item().unwrap().is_nan());
    let ce = cross_entropy(&z(&[0, 5]), &[], Default::default()).unwrap();
    assert!(ce.item().unwrap().is_nan());
    let l = linear_cross_entropy(&z(&[2, 0]), &z(&[5, 0]), &[0, 1]).unwrap();
    assert!(
        (l.item().unwrap() - 5f32.ln()).abs() < 1e-6,
        "{:?}",
        l.item()
    );
    let l = linear_cross_entropy(&z(&[0, 4]), &z(&[5, 4]), &[]).unwrap();
    assert!(l.item().unwrap().is_nan());

    // indexing and views
    let (s, _) = run("embedding of no ids", &[z(&[5, 3])], |x| {
        embedding(&x[0], &[], &[0])
    });
    assert_eq!(s, [0, 3]);
    let (s, _) = run("index_select of nothing", &[z(&[4, 3])], |x| {
        x[0].index_select(0, &[])
    });
    assert_eq!(s, [0, 3]);
    let (s, _) = run("narrow to 0", &[z(&[4, 3])], |x| x[0].narrow(1, 3, 0));
    assert_eq!(s, [4, 0]);
    let (s, _) = run("cat of empties", &[z(&[0, 3]), z(&[2, 3])], |x| {
        cat(&[&x[0], &x[1]], 0)
    });
    assert_eq!(s, [2, 3]);
    let (s, _) = run("transpose of (0,3)", &[z(&[0, 3])], |x| {
        x[0].t()?.contiguous().reshape(&[3, 0])
    });
    assert_eq!(s, [3, 0]);
    let (v, idx) = z(&[2, 5]).topk(0).unwrap();
    assert_eq!((v.shape(), idx.len()), (&[2usize, 0][..], 0));
    assert_eq!(one_hot(&[], 4).unwrap().shape(), [0, 4]);

    // rope with no positions; attention with no keys (zeros, as in PyTorch) or no queries
    let (c, sn) = rope_tables(&[], 4, 10.0).unwrap();
    let (s, _) = run("rope with T = 0", &[z(&[3, 0, 4])], |x| {
        rope(&x[0], &c, &sn, RopeLayout::HalfSplit)
    });
    assert_eq!(s, [3, 0, 4]);
    let q = Tensor::ones(&[1, 1, 2, 2]).into_var();
    let (s, v) = run(
        "attention with S = 0",
        &[q.clone(), z(&[1, 1, 0, 2]), z(&[1, 1, 0, 3])],
        |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], AttnMask::None, None),
    );
    assert_eq!((s, v), (vec![1, 1, 2, 3], vec![0.0; 6]));
    assert_eq!(
        q.grad().unwrap().to_vec(),
        vec![0.0; 4],
        "no key: no query gradient"
    );
    // more query rows than decoding takes, both entry points, both masks (the gemm path's
    // backward indexed the empty keys here)
    for mask in [AttnMask::None, AttnMask::Causal] {
        let q = Tensor::ones(&[2, 2, 5, 4]).into_var();
        let (s, v) = run(
            "attention with S = 0 and T = 5",
            &[q.clone(), z(&[2, 1, 0, 4]), z(&[2, 1, 0, 3])],
            |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], mask, None),
        );
        assert_eq!((s, v), (vec![2, 2, 5, 3], vec![0.0; 60]));
        assert_eq!(q.grad().unwrap().to_vec(), vec![0.0; 80]);
        let q = Tensor::ones(&[2, 5, 2, 4]).into_var(); // (B, T, H, D)
        let (s, v) = run(
            "token-major attention with S = 0 and T = 5",
            &[q.clone(), z(&[2, 0, 2, 4]), z(&[2, 0, 2, 3])],
            |x| attention_bthd(&x[0], &x[1], &x[2], mask, None),
        );
        assert_eq!((s, v), (vec![2, 5, 2, 3], vec![0.0; 60]));
        assert_eq!(q.grad().unwrap().to_vec(), vec![0.0; 80]);
    }
    let (s, _) = run(
        "attention with T = 0",
        &[z(&[1, 1, 0, 2]), z(&[1, 1, 3, 2]), z(&[1, 1, 3, 2])],
        |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], AttnMask::Causal, None),
    );
    assert_eq!(s, [1, 1, 0, 2]);

    // convolution and pooling of an empty batch
    let (s, _) = run(
        "conv2d of an empty batch",
        &[z(&[0, 2, 5, 5]), z(&[3, 2, 3, 3])],
        |x| conv2d(&x[0], &x[1], None, Conv2dOpts::default()),
    );
    assert_eq!(s, [0, 3, 3, 3]);
    let (s, _) = run("max_pool2d of an empty batch", &[z(&[0, 2, 4, 4])], |x| {
        max_pool2d(
            &x[0],
            (2, 2),
            Conv2dOpts {
                stride: (2, 2),
                ..Default::default()
            },
        )
    });
    assert_eq!(s, [0, 2, 2, 2]);
}

/// Dims of a scalar do not exist: ops that take a dim refuse it by name.
#[test]
fn dims_of_a_scalar_are_refused() {
    let s = Tensor::scalar(2.0);
    let errs = [
        s.softmax(0).err(),
        s.log_softmax(-1).err(),
        s.sum_dim(0, false).err(),
        s.mean_dim(0, true).err(),
        s.max_dim(0, false).err(),
        s.index_select(0, &[0]).err(),
        s.gather(0, &[0], &[]).err(),
        s.narrow(0, 0, 1).err(),
        s.transpose(0, 0).err(),
        s.split(&[1], 0).err(),
        s.squeeze(0).err(),
        cat(&[&s, &s], 0).err(),
    ];
    for (i, e) in errs.into_iter().enumerate() {
        let e = e.unwrap_or_else(|| panic!("call {i} on a scalar should fail"));
        assert!(e.to_string().contains("rank 0"), "call {i}: {e}");
    }
}
