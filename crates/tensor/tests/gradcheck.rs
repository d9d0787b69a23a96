//! Every op's backward against central finite differences (see `common::check_grad_with`).
//!
//! One test per op family. Inputs that meet a kink (relu and abs at 0, ties of max-like ops)
//! are drawn away from it: `Data::away_from_zero` and `Data::distinct` keep every such
//! distance well above the finite-difference step.

mod common;

use common::attn::{
    as_bhtd, attn_inputs, attn_mask, attn_mask_of, case, noise_mask, Mask, ATTN_CASES,
};
use common::{assert_close, check_grad, check_grad_with, grads_of, out_weights, t, Data, Fd};
use ferrolab_tensor::dtype::round_to;
use ferrolab_tensor::{
    avg_pool2d, cat, conv2d, cross_entropy, embedding, layer_norm, linear, max_pool2d, one_hot,
    packed_qkv_attention, rms_norm, rope, rope_tables, scaled_dot_product_attention, stack,
    where_cond, AttnMask, Conv2dOpts, CrossEntropyOpts, DType, Result, RopeLayout, Tensor,
};

/// A test body over the checker's inputs.
type F = fn(&[Tensor]) -> Result<Tensor>;
/// An elementwise op.
type Unary = fn(&Tensor) -> Tensor;
/// A reduction over `(dim, keepdim)`.
type Reduce = fn(&Tensor, isize, bool) -> Result<Tensor>;

// ---------------------------------------------------------------------------------------------
// Elementwise

#[derive(Clone, Copy)]
enum Domain {
    /// Standard normal.
    Any,
    /// In `[0.5, 2.5)`.
    Positive,
    /// Magnitude in `[0.1, 2)`, either sign.
    AwayFromZero,
}

fn domain_data(d: &mut Data, domain: Domain, shape: &[usize]) -> Tensor {
    match domain {
        Domain::Any => d.randn(shape),
        Domain::Positive => d.uniform(shape, 0.5, 2.5),
        Domain::AwayFromZero => d.away_from_zero(shape, 0.1, 2.0),
    }
}

#[test]
fn unary_elementwise() {
    let ops: &[(&str, Unary, Domain)] = &[
        ("exp", |x| x.exp(), Domain::Any),
        ("log", |x| x.log(), Domain::Positive),
        ("sqrt", |x| x.sqrt(), Domain::Positive),
        ("rsqrt", |x| x.rsqrt(), Domain::Positive),
        ("sqr", |x| x.sqr(), Domain::Any),
        ("abs", |x| x.abs(), Domain::AwayFromZero),
        ("tanh", |x| x.tanh(), Domain::Any),
        ("sigmoid", |x| x.sigmoid(), Domain::Any),
        ("silu", |x| x.silu(), Domain::Any),
        ("gelu", |x| x.gelu(), Domain::Any),
        ("gelu_tanh", |x| x.gelu_tanh(), Domain::Any),
        ("relu", |x| x.relu(), Domain::AwayFromZero),
        ("affine", |x| x.affine(-1.5, 0.25), Domain::Any),
        ("add_scalar", |x| x.add_scalar(3.0), Domain::Any),
        ("mul_scalar", |x| x.mul_scalar(-0.7), Domain::Any),
        ("neg", |x| x.neg(), Domain::Any),
        ("powf 3", |x| x.powf(3.0), Domain::Any),
        ("powf 1.5", |x| x.powf(1.5), Domain::Positive),
        ("powf -0.5", |x| x.powf(-0.5), Domain::Positive),
    ];
    let mut d = Data::new(1);
    for &(name, op, domain) in ops {
        let x = domain_data(&mut d, domain, &[2, 3, 5]);
        check_grad(name, [x.clone()], |x| Ok(op(&x[0])));
        // the same op on a strided (transposed) view
        check_grad(&format!("{name} on a transposed view"), &[x], |x| {
            Ok(op(&x[0].transpose(0, 2)?))
        });
    }
}

/// Rounding is piecewise constant, so instead of finite differences: the forward rounds each
/// element and the gradient passes straight through.
#[test]
fn quantize_roundtrip_is_straight_through() {
    let x = Data::new(2).randn(&[3, 7]);
    for dtype in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
    ] {
        let (y, g) = grads_of([x.clone()], |x| Ok(x[0].quantize_roundtrip(dtype)));
        let want: Vec<f32> = x.to_vec().iter().map(|&v| round_to(v, dtype)).collect();
        assert_eq!(y.to_vec(), want, "{dtype:?}: forward");
        assert_eq!(g[0], out_weights(x.numel()), "{dtype:?}: gradient");
    }
}

#[test]
fn dropout_gradient_is_the_output_mask() {
    let mut d = Data::new(3);
    let x = d.away_from_zero(&[40, 50], 0.5, 2.0).into_var();
    for p in [0.1f32, 0.5] {
        ferrolab_tensor::rng::manual_seed(11);
        let y = x.dropout(p, true).unwrap();
        y.sum_all().backward().unwrap();
        let g = x.grad().unwrap().to_vec();
        x.zero_grad();
        let (xv, yv) = (x.to_vec(), y.to_vec());
        let scale = 1.0 / (1.0 - p);
        let mut dropped = 0usize;
        for i in 0..xv.len() {
            let ratio = yv[i] / xv[i];
            assert!(
                ratio == 0.0 || (ratio - scale).abs() <= 1e-6 * scale,
                "p {p}: y/x = {ratio} at {i}"
            );
            assert!(
                (g[i] - ratio).abs() <= 1e-6 * scale,
                "p {p}: gradient {} vs y/x {ratio} at {i}",
                g[i]
            );
            dropped += (ratio == 0.0) as usize;
        }
        let frac = dropped as f32 / xv.len() as f32;
        assert!((frac - p).abs() < 0.05, "p {p}: dropped fraction {frac}");
        // the same generator state draws the same mask
        ferrolab_tensor::rng::manual_seed(11);
        assert_eq!(
            x.dropout(p, true).unwrap().to_vec(),
            yv,
            "p {p}: same seed, same mask"
        );
    }
    // eval mode and p = 0 are the identity; p outside [0, 1) is an error
    assert_eq!(x.dropout(0.5, false).unwrap().to_vec(), x.to_vec());
    assert_eq!(x.dropout(0.0, true).unwrap().to_vec(), x.to_vec());
    assert!(x.dropout(1.0, true).is_err());
}

/// Dropout with the generator reset on every evaluation is a fixed linear map, so it can go
/// through the finite-difference checker too.
#[test]
fn dropout_with_a_fixed_generator_state() {
    let x = Data::new(4).randn(&[6, 7]);
    check_grad("dropout", &[x], |x| {
        ferrolab_tensor::rng::manual_seed(5);
        x[0].sqr().dropout(0.3, true)
    });
}

// ---------------------------------------------------------------------------------------------
// Binary ops with broadcasting

type BinOp = fn(&Tensor, &Tensor) -> Result<Tensor>;

const BINARY_OPS: &[(&str, BinOp)] = &[
    ("add", Tensor::add),
    ("sub", Tensor::sub),
    ("mul", Tensor::mul),
    ("div", Tensor::div),
    ("maximum", Tensor::maximum),
    ("minimum", Tensor::minimum),
];

/// Operands for a binary op: `b` never near 0 for `div`; `a` and `b` on interleaved grids
/// (never within 0.05 of each other) for everything else, so maximum/minimum have no ties.
fn binary_operands(d: &mut Data, name: &str, ash: &[usize], bsh: &[usize]) -> (Tensor, Tensor) {
    let a = d.distinct(ash, 0.1, 0.0);
    let b = if name == "div" {
        d.away_from_zero(bsh, 0.8, 2.0)
    } else {
        d.distinct(bsh, 0.1, 0.05)
    };
    (a, b)
}

#[test]
fn binary_broadcasting() {
    let shapes: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[4], &[2, 3, 4]),
        (&[2, 3, 4], &[3, 1]),
        (&[3, 1], &[2, 3, 4]),
        (&[2, 3, 4], &[1]),
        (&[1], &[2, 3, 4]),
        (&[2, 3, 4], &[]),
        (&[2, 1, 4], &[3, 1]),
        (&[2, 3, 1], &[1, 3, 4]),
        (&[3, 4], &[2, 1, 4]),
    ];
    let mut d = Data::new(5);
    for &(name, op) in BINARY_OPS {
        for &(ash, bsh) in shapes {
            let (a, b) = binary_operands(&mut d, name, ash, bsh);
            check_grad(&format!("{name} {ash:?} with {bsh:?}"), &[a, b], |x| {
                op(&x[0], &x[1])
            });
        }
    }
}

#[test]
fn binary_ops_on_strided_views() {
    let mut d = Data::new(6);
    for &(name, op) in BINARY_OPS {
        // a: [4,3,2] viewed as [2,3,4]; b: [4,3] viewed as [3,4] and broadcast
        let (a, b) = binary_operands(&mut d, name, &[4, 3, 2], &[4, 3]);
        check_grad(&format!("{name} on permuted views"), &[a, b], |x| {
            op(&x[0].permute(&[2, 1, 0])?, &x[1].t()?)
        });
        // the same input on both sides (gradients from two uses accumulate)
        let a = binary_operands(&mut d, "div", &[3, 4], &[3, 4]).1;
        check_grad(&format!("{name} of a tensor with itself"), &[a], |x| {
            op(&x[0], &x[0].t()?.t()?)
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions and softmax

#[test]
fn reductions_over_every_dim() {
    let x = Data::new(7).distinct(&[3, 4, 5], 0.1, 0.0);
    let ops: &[(&str, Reduce)] = &[
        ("sum_dim", Tensor::sum_dim),
        ("mean_dim", Tensor::mean_dim),
        ("max_dim", Tensor::max_dim),
    ];
    for &(name, op) in ops {
        for dim in [0isize, 1, 2, -1, -2] {
            for keepdim in [false, true] {
                check_grad(
                    &format!("{name} dim {dim} keepdim {keepdim}"),
                    [x.clone()],
                    |x| op(&x[0], dim, keepdim),
                );
            }
        }
        check_grad(&format!("{name} of a permuted view"), [x.clone()], |x| {
            op(&x[0].permute(&[2, 0, 1])?, 1, false)
        });
    }
    check_grad("sum_all", [x.clone()], |x| Ok(x[0].sum_all()));
    check_grad("mean_all", [x.clone()], |x| x[0].mean_all());
    let v = Data::new(70).distinct(&[5], 0.1, 0.0);
    check_grad("sum_dim of rank 1", [v.clone()], |x| x[0].sum_dim(0, false));
    check_grad("max_dim of rank 1 keepdim", [v.clone()], |x| {
        x[0].max_dim(-1, true)
    });
    check_grad("mean_all of a rank-0 tensor", &[t(vec![0.7], &[])], |x| {
        x[0].mean_all()
    });
    check_grad("sum_all of a transposed view", &[x], |x| {
        Ok(x[0].transpose(0, 2)?.sqr().sum_all())
    });
}

#[test]
fn softmax_and_log_softmax() {
    let mut d = Data::new(8);
    let x = d.randn(&[3, 4, 5]).mul_scalar(2.0);
    let wide = d.randn(&[3, 37]).mul_scalar(2.0);
    type Softmax = fn(&Tensor, isize) -> Result<Tensor>;
    let ops: &[(&str, Softmax)] = &[
        ("softmax", Tensor::softmax),
        ("log_softmax", Tensor::log_softmax),
    ];
    for &(name, op) in ops {
        for dim in [0isize, 1, -1] {
            check_grad(&format!("{name} dim {dim}"), [x.clone()], |x| {
                op(&x[0], dim)
            });
        }
        check_grad(&format!("{name} of a 37-wide row"), [wide.clone()], |x| {
            op(&x[0], -1)
        });
        check_grad(&format!("{name} of a transposed view"), [x.clone()], |x| {
            op(&x[0].transpose(1, 2)?, -1)
        });
    }
}

#[test]
fn cross_entropy_with_ignore_and_smoothing() {
    let logits = Data::new(9).randn(&[6, 5]).mul_scalar(1.5);
    let targets = [1i64, 0, 4, -100, 2, 4];
    let cases = [
        ("default", targets, CrossEntropyOpts::default()),
        (
            "label_smoothing 0.1",
            targets,
            CrossEntropyOpts {
                label_smoothing: 0.1,
                ..Default::default()
            },
        ),
        (
            "ignore_index 4 and smoothing",
            [1, 0, 4, 3, 2, 4],
            CrossEntropyOpts {
                ignore_index: 4,
                label_smoothing: 0.1,
            },
        ),
    ];
    for (name, tg, opts) in cases {
        check_grad(&format!("cross_entropy {name}"), [logits.clone()], |x| {
            cross_entropy(&x[0], &tg, opts)
        });
        check_grad(
            &format!("cross_entropy {name} of a transposed view"),
            [logits.clone()],
            |x| cross_entropy(&x[0].t()?.contiguous().t()?, &tg, opts),
        );
    }
    // all rows ignored: the mean over no targets is NaN (as in PyTorch), with no error
    let all = cross_entropy(&logits, &[-100; 6], CrossEntropyOpts::default()).unwrap();
    assert!(all.item().unwrap().is_nan());
    // targets out of range are errors naming the op
    let err = cross_entropy(&logits, &[0, 0, 0, 0, 0, 5], CrossEntropyOpts::default()).unwrap_err();
    assert!(err.to_string().contains("cross_entropy"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Matrix products

#[test]
fn matmul_shapes_broadcasting_and_strides() {
    let cases: &[(&str, &[&[usize]], F)] = &[
        ("2-D", &[&[3, 4], &[4, 5]], |x| x[0].matmul(&x[1])),
        ("batched @ 2-D (rows folded)", &[&[2, 3, 4], &[4, 5]], |x| {
            x[0].matmul(&x[1])
        }),
        ("batched", &[&[2, 3, 4], &[2, 4, 5]], |x| x[0].matmul(&x[1])),
        (
            "batch broadcast both ways",
            &[&[2, 1, 3, 4], &[5, 4, 2]],
            |x| x[0].matmul(&x[1]),
        ),
        ("2-D @ batched", &[&[3, 4], &[2, 4, 5]], |x| {
            x[0].matmul(&x[1])
        }),
        ("size-1 batch @ batched", &[&[1, 3, 4], &[2, 4, 5]], |x| {
            x[0].matmul(&x[1])
        }),
        ("transposed lhs", &[&[4, 3], &[4, 5]], |x| {
            x[0].t()?.matmul(&x[1])
        }),
        ("transposed rhs", &[&[2, 3, 4], &[2, 5, 4]], |x| {
            x[0].matmul(&x[1].t()?)
        }),
        (
            "both transposed, broadcast",
            &[&[2, 1, 4, 3], &[3, 5, 4]],
            |x| x[0].t()?.matmul(&x[1].t()?),
        ),
        (
            "transposed batched lhs @ 2-D",
            &[&[2, 4, 3], &[4, 5]],
            |x| x[0].t()?.matmul(&x[1]),
        ),
        ("permuted batch dims", &[&[3, 2, 4], &[2, 4, 5]], |x| {
            x[0].permute(&[1, 0, 2])?.matmul(&x[1])
        }),
        ("same operand twice", &[&[4, 4]], |x| {
            x[0].matmul(&x[0].t()?)
        }),
        ("narrowed views (offsets)", &[&[3, 6], &[6, 5]], |x| {
            x[0].narrow(1, 1, 4)?.matmul(&x[1].narrow(0, 2, 4)?)
        }),
        ("expanded batch (stride 0)", &[&[3, 4], &[4, 5]], |x| {
            x[0].expand(&[2, 3, 4])?.matmul(&x[1].expand(&[2, 4, 5])?)
        }),
        ("expanded lhs @ 2-D", &[&[3, 4], &[4, 5]], |x| {
            x[0].expand(&[2, 3, 4])?.matmul(&x[1])
        }),
    ];
    run_cases("matmul", cases, 10);
}

#[test]
fn linear_with_and_without_bias() {
    let cases: &[(&str, &[&[usize]], F)] = &[
        ("bias", &[&[5, 4], &[3, 4], &[3]], |x| {
            linear(&x[0], &x[1], Some(&x[2]))
        }),
        ("no bias, rank 3", &[&[2, 3, 4], &[6, 4]], |x| {
            linear(&x[0], &x[1], None)
        }),
        ("transposed weight", &[&[5, 4], &[4, 3], &[3]], |x| {
            linear(&x[0], &x[1].t()?, Some(&x[2]))
        }),
        ("strided input", &[&[3, 2, 4], &[3, 4], &[3]], |x| {
            linear(&x[0].transpose(0, 1)?, &x[1], Some(&x[2]))
        }),
        ("rank-1 input", &[&[4], &[3, 4], &[3]], |x| {
            linear(&x[0], &x[1], Some(&x[2]))
        }),
        ("narrowed weight (offset)", &[&[5, 4], &[6, 5]], |x| {
            linear(&x[0], &x[1].narrow(0, 2, 3)?.narrow(1, 1, 4)?, None)
        }),
    ];
    run_cases("linear", cases, 11);
}

/// Runs the finite-difference check for each `(name, input shapes, f)` on normal inputs.
fn run_cases(family: &str, cases: &[(&str, &[&[usize]], F)], seed: u64) {
    let mut d = Data::new(seed);
    for &(name, shapes, f) in cases {
        let inputs: Vec<Tensor> = shapes.iter().map(|s| d.randn(s)).collect();
        check_grad(&format!("{family} {name}"), &inputs, f);
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

#[test]
fn layer_norm_and_rms_norm() {
    // 36 rows (more than one parallel chunk of 32), a width that is not a multiple of 16
    let (xs, c): (&[usize], usize) = (&[3, 12, 7], 7);
    let mut d = Data::new(12);
    let x = d.randn(xs).mul_scalar(1.5).add_scalar(0.3);
    let w = d.uniform(&[c], 0.5, 1.5);
    let b = d.randn(&[c]);
    let cases: &[(&str, &[&Tensor], F)] = &[
        ("layer_norm weight+bias", &[&x, &w, &b], |x| {
            layer_norm(&x[0], Some(&x[1]), Some(&x[2]), 1e-5)
        }),
        ("layer_norm weight", &[&x, &w], |x| {
            layer_norm(&x[0], Some(&x[1]), None, 1e-5)
        }),
        ("layer_norm bias", &[&x, &b], |x| {
            layer_norm(&x[0], None, Some(&x[1]), 1e-5)
        }),
        ("layer_norm plain", &[&x], |x| {
            layer_norm(&x[0], None, None, 1e-5)
        }),
        ("layer_norm of a strided view", &[&x, &w, &b], |x| {
            layer_norm(&x[0].transpose(0, 1)?, Some(&x[1]), Some(&x[2]), 1e-5)
        }),
        ("rms_norm weight", &[&x, &w], |x| {
            rms_norm(&x[0], Some(&x[1]), 1e-6)
        }),
        ("rms_norm plain", &[&x], |x| rms_norm(&x[0], None, 1e-6)),
    ];
    for &(name, inputs, f) in cases {
        let inputs: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        check_grad(name, &inputs, f);
    }
    // a row wider than the 16 split accumulators
    let wide = d.randn(&[4, 21]);
    let ww = d.uniform(&[21], 0.5, 1.5);
    check_grad("layer_norm 21 wide", &[wide.clone(), ww.clone()], |x| {
        layer_norm(&x[0], Some(&x[1]), None, 1e-5)
    });
    check_grad("rms_norm 21 wide", &[wide, ww], |x| {
        rms_norm(&x[0], Some(&x[1]), 1e-6)
    });
}

// ---------------------------------------------------------------------------------------------
// Indexing

#[test]
fn embedding_with_repeated_ids() {
    let w = Data::new(13).randn(&[5, 4]);
    let ids = [1u32, 3, 1, 0, 3, 3];
    check_grad("embedding", [w.clone()], |x| {
        embedding(&x[0], &ids, &[2, 3])
    });
    check_grad("embedding then mul", [w.clone()], |x| {
        let e = embedding(&x[0], &ids, &[6])?;
        e.mul(&x[0].narrow(0, 0, 1)?)
    });
    let err = embedding(&w, &[5], &[1]).unwrap_err();
    assert!(err.to_string().contains("embedding"), "{err}");
}

#[test]
fn index_select_gather_scatter_add() {
    let mut d = Data::new(14);
    let x = d.randn(&[4, 5]);
    let x3 = d.randn(&[2, 5, 3]);
    let g0 = d.indices(3 * 5, 4); // (3, 5) indices into dim 0 of (4, 5)
    let g1 = d.indices(4 * 7, 5); // (4, 7) indices into dim 1 of (4, 5)
    let g3 = d.indices(2 * 6 * 3, 5); // (2, 6, 3) indices into dim 1 of (2, 5, 3)
    check_grad("index_select dim 0", [x.clone()], |x| {
        x[0].index_select(0, &[2, 0, 2, 3])
    });
    check_grad("index_select dim 1", [x3.clone()], |x| {
        x[0].index_select(1, &[4, 4, 1])
    });
    check_grad("index_select dim -1", [x3.clone()], |x| {
        x[0].index_select(-1, &[2, 0])
    });
    check_grad("gather dim 0", [x.clone()], |x| {
        x[0].gather(0, &g0, &[3, 5])
    });
    check_grad("gather dim 1", [x.clone()], |x| {
        x[0].gather(1, &g1, &[4, 7])
    });
    check_grad("gather dim 1 of rank 3", [x3.clone()], |x| {
        x[0].gather(1, &g3, &[2, 6, 3])
    });

    // scatter_add: both the destination and the source get gradients
    let src0 = d.randn(&[6, 5]);
    let s0 = d.indices(6 * 5, 4);
    check_grad("scatter_add dim 0", &[x.clone(), src0], |x| {
        x[0].scatter_add(0, &s0, &x[1])
    });
    let src1 = d.randn(&[4, 3]);
    let s1 = d.indices(4 * 3, 5);
    check_grad("scatter_add dim 1", &[x.clone(), src1], |x| {
        x[0].scatter_add(1, &s1, &x[1])
    });
    let src3 = d.randn(&[2, 2, 3]);
    let s3 = d.indices(2 * 2 * 3, 5);
    check_grad("scatter_add dim 1 of rank 3", &[x3, src3], |x| {
        x[0].scatter_add(1, &s3, &x[1].mul_scalar(2.0))
    });
    // forward of scatter_add against a direct loop
    let (base, src) = (d.randn(&[4, 5]), d.randn(&[4, 3]));
    let out = base.scatter_add(1, &s1, &src).unwrap().to_vec();
    let mut want = base.to_vec();
    for (p, &v) in src.to_vec().iter().enumerate() {
        want[(p / 3) * 5 + s1[p]] += v;
    }
    assert_close("scatter_add forward", &out, &want, 1e-6);
}

/// Gradients of `sum(f(inputs))` for each input.
fn grads_of_sum(inputs: Vec<Tensor>, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Vec<Vec<f32>> {
    let xs: Vec<Tensor> = inputs.into_iter().map(Tensor::into_var).collect();
    f(&xs).unwrap().sum_all().backward().unwrap();
    xs.iter().map(common::grad_vec).collect()
}

/// Where the finite-difference checks stay away from: the subgradient each kink takes.
#[test]
fn kink_and_tie_conventions() {
    let g = |f: fn(&Tensor) -> Result<Tensor>, x: Vec<f32>| {
        let n = x.len();
        grads_of_sum(vec![t(x, &[n])], |x| f(&x[0])).remove(0)
    };
    // relu and abs: 0 at 0 (PyTorch's choice)
    assert_eq!(g(|x| Ok(x.relu()), vec![-1.0, 0.0, 2.0]), [0.0, 0.0, 1.0]);
    assert_eq!(g(|x| Ok(x.abs()), vec![-1.0, 0.0, 2.0]), [-1.0, 0.0, 1.0]);
    // maximum / minimum ties: the gradient goes to the left operand
    let both = |f: BinOp| {
        grads_of_sum(
            vec![t(vec![1.0, 2.0], &[2]), t(vec![1.0, 3.0], &[2])],
            |x| f(&x[0], &x[1]),
        )
    };
    assert_eq!(both(Tensor::maximum), [vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert_eq!(both(Tensor::minimum), [vec![1.0, 1.0], vec![0.0, 0.0]]);
    // max_dim and max_pool2d ties: the first maximal element
    assert_eq!(
        g(|x| x.max_dim(0, false), vec![1.0, 3.0, 3.0]),
        [0.0, 1.0, 0.0]
    );
    let pool = grads_of_sum(vec![t(vec![1.0, 4.0, 4.0, 0.0], &[1, 1, 2, 2])], |x| {
        max_pool2d(&x[0], (2, 2), Conv2dOpts::default())
    });
    assert_eq!(pool[0], [0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn topk_values_indices_and_gradient() {
    let mut d = Data::new(15);
    let x = d.distinct(&[3, 6], 0.1, 0.0);
    for k in [1, 3, 6] {
        check_grad(&format!("topk k {k}"), [x.clone()], |x| Ok(x[0].topk(k)?.0));
    }
    let x3 = d.distinct(&[2, 2, 5], 0.1, 0.0);
    check_grad("topk rank 3", &[x3], |x| Ok(x[0].topk(2)?.0));
    // values descending, indices pointing at them, ties to the lower index
    let v = t(vec![1.0, 5.0, 3.0, 5.0, -2.0], &[5]);
    let (vals, idx) = v.topk(3).unwrap();
    assert_eq!(vals.to_vec(), [5.0, 5.0, 3.0]);
    assert_eq!(idx, [1, 3, 2]);
    assert!(v.topk(6).is_err());
    // NaN above every number (torch.topk), -0 tied with 0
    let v = t(vec![1.0, f32::NAN, 3.0, 2.0], &[4]);
    let (vals, idx) = v.topk(2).unwrap();
    assert!(vals.to_vec()[0].is_nan() && vals.to_vec()[1] == 3.0);
    assert_eq!(idx, [1, 2]);
    let (_, idx) = t(vec![-1.0, -0.0, 0.0], &[3]).topk(2).unwrap();
    assert_eq!(idx, [1, 2]);
}

/// A NaN input gives NaN as in PyTorch (max over a dim, elementwise maximum and minimum, ReLU,
/// max pooling, softmax), so a diverging run shows it instead of hiding it.
#[test]
fn nan_propagates_as_in_pytorch() {
    let nan = f32::NAN;
    let x = t(vec![1.0, nan, 3.0, nan, 0.0, 1.0], &[2, 3]);
    let m = x.max_dim(1, false).unwrap().to_vec();
    assert!(m[0].is_nan() && m[1].is_nan(), "max_dim {m:?}");
    let y = t(vec![2.0, 2.0, nan, 2.0, 2.0, 2.0], &[2, 3]);
    for (name, r) in [
        ("maximum", x.maximum(&y).unwrap().to_vec()),
        ("minimum", x.minimum(&y).unwrap().to_vec()),
    ] {
        let nans: Vec<bool> = r.iter().map(|v| v.is_nan()).collect();
        assert_eq!(
            nans,
            [false, true, true, true, false, false],
            "{name} {r:?}"
        );
    }
    let r = x.relu().to_vec();
    assert!(r[1].is_nan() && r[0] == 1.0 && r[4] == 0.0, "relu {r:?}");
    let img = t(vec![1.0, nan, 3.0, 4.0], &[1, 1, 2, 2]);
    let p = max_pool2d(&img, (2, 2), Conv2dOpts::default())
        .unwrap()
        .to_vec();
    assert!(p[0].is_nan(), "max_pool2d {p:?}");
    let s = t(vec![nan, nan, 1.0, 2.0], &[2, 2])
        .softmax(-1)
        .unwrap()
        .to_vec();
    assert!(
        s[0].is_nan() && s[1].is_nan() && !s[2].is_nan(),
        "softmax {s:?}"
    );
    // over a dim that is not the last (a strided lane)
    let s = t(vec![nan, 1.0, nan, 2.0], &[2, 2])
        .softmax(0)
        .unwrap()
        .to_vec();
    assert!(
        s[0].is_nan() && s[2].is_nan() && !s[1].is_nan(),
        "softmax(0) {s:?}"
    );
    // gradients: a NaN sends it to both operands of maximum / minimum (ties to `self`), and
    // through ReLU, as in torch
    for op in [Tensor::maximum, Tensor::minimum] {
        let a = t(vec![1.0, nan, 2.0], &[3]).into_var();
        let b = t(vec![nan, 1.0, 2.0], &[3]).into_var();
        op(&a, &b).unwrap().sum_all().backward().unwrap();
        assert_eq!(common::grad_vec(&a), [1.0, 1.0, 1.0]);
        assert_eq!(common::grad_vec(&b), [1.0, 1.0, 0.0]);
    }
    let r = t(vec![nan, -1.0, 1.0], &[3]).into_var();
    r.relu().sum_all().backward().unwrap();
    assert_eq!(common::grad_vec(&r), [1.0, 0.0, 1.0]);
}

#[test]
fn where_cond_and_masked_fill() {
    let mut d = Data::new(16);
    let (a, b) = (d.randn(&[2, 3, 4]), d.randn(&[4]));
    let cond = t(vec![1.0, 0.0, 1.0], &[3, 1]);
    check_grad("where_cond broadcast", &[a.clone(), b.clone()], |x| {
        where_cond(&cond, &x[0], &x[1])
    });
    check_grad("where_cond swapped", &[b.clone(), a.clone()], |x| {
        where_cond(&cond, &x[0], &x[1])
    });
    let full_cond = t(
        (0..24).map(|i| (i % 5 < 2) as u8 as f32).collect(),
        &[2, 3, 4],
    );
    check_grad(
        "where_cond with a rank-0 branch",
        &[b.clone(), t(vec![0.3], &[])],
        |x| where_cond(&full_cond, &x[0], &x[1]),
    );
    let mask = t(
        (0..12).map(|i| (i % 3 == 0) as u8 as f32).collect(),
        &[3, 4],
    );
    check_grad("masked_fill", [a.clone()], |x| {
        x[0].masked_fill(&mask, -2.5)
    });
    check_grad("masked_fill with -inf, then exp", [a.clone()], |x| {
        Ok(x[0].masked_fill(&mask, f32::NEG_INFINITY)?.exp())
    });
    let row = t(vec![0.0, 1.0, 1.0, 0.0], &[4]);
    let y = a.masked_fill(&row, 7.0).unwrap().to_vec();
    for (i, (&yv, &av)) in y.iter().zip(&a.to_vec()).enumerate() {
        assert_eq!(yv, if i % 4 == 1 || i % 4 == 2 { 7.0 } else { av });
    }
    let oh = one_hot(&[2, 0, 2], 3).unwrap();
    assert_eq!(oh.shape(), [3, 3]);
    assert_eq!(oh.to_vec(), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    assert!(one_hot(&[3], 3).is_err());
}

// ---------------------------------------------------------------------------------------------
// Layout ops

#[test]
fn views_and_copies() {
    let cases: &[(&str, &[&[usize]], F)] = &[
        ("reshape", &[&[2, 3, 4]], |x| x[0].reshape(&[4, 6])),
        ("reshape of a transposed view (copy)", &[&[2, 3, 4]], |x| {
            x[0].t()?.reshape(&[2, 12])
        }),
        ("permute", &[&[2, 3, 4]], |x| x[0].permute(&[2, 0, 1])),
        ("transpose", &[&[2, 3, 4]], |x| x[0].transpose(0, 2)),
        ("t", &[&[3, 4]], |x| x[0].t()),
        ("narrow dim 0", &[&[4, 3, 2]], |x| x[0].narrow(0, 1, 2)),
        ("narrow dim 1", &[&[4, 3, 2]], |x| x[0].narrow(1, 1, 2)),
        ("narrow dim -1", &[&[4, 3, 2]], |x| x[0].narrow(-1, 1, 1)),
        ("unsqueeze", &[&[3, 4]], |x| {
            x[0].unsqueeze(1)?.mul(&x[0].unsqueeze(2)?)
        }),
        ("squeeze", &[&[3, 1, 4]], |x| x[0].squeeze(1)),
        ("expand [3,1] to [2,3,4]", &[&[3, 1]], |x| {
            x[0].expand(&[2, 3, 4])
        }),
        ("expand [4] to [3,4]", &[&[4]], |x| {
            Ok(x[0].expand(&[3, 4])?.sqr())
        }),
        ("contiguous", &[&[3, 4]], |x| Ok(x[0].t()?.contiguous())),
        ("split", &[&[2, 5, 3]], |x| {
            let p = x[0].split(&[1, 3, 1], 1)?;
            cat(&[&p[2], &p[0].mul(&p[2])?, &p[1]], 1)
        }),
        ("chunk", &[&[2, 3, 4]], |x| {
            let p = x[0].chunk(2, -1)?;
            p[0].mul(&p[1])
        }),
        ("flatten_from", &[&[2, 3, 4]], |x| {
            x[0].transpose(0, 1)?.flatten_from(1)
        }),
        ("cat dim 0", &[&[1, 3], &[2, 3], &[3, 3]], |x| {
            cat(&[&x[0], &x[1], &x[2]], 0)
        }),
        ("cat dim 1", &[&[2, 1, 2], &[2, 3, 2], &[2, 2, 2]], |x| {
            cat(&[&x[0], &x[1], &x[2]], 1)
        }),
        ("cat dim -1", &[&[2, 3, 1], &[2, 3, 2]], |x| {
            cat(&[&x[1], &x[0], &x[1]], -1)
        }),
        ("stack dim 0", &[&[2, 3], &[2, 3]], |x| {
            stack(&[&x[0], &x[1]], 0)
        }),
        ("stack last dim", &[&[2, 3], &[2, 3]], |x| {
            stack(&[&x[0], &x[1], &x[0]], 2)
        }),
        ("view chain", &[&[4, 3, 2]], |x| {
            x[0].permute(&[2, 0, 1])?
                .narrow(1, 1, 3)?
                .reshape(&[2, 1, 9])?
                .expand(&[3, 2, 2, 9])
        }),
    ];
    run_cases("view", cases, 17);
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

#[test]
fn rope_both_layouts() {
    let mut d = Data::new(18);
    let x = d.randn(&[2, 3, 5, 8]);
    let (cos, sin) = rope_tables(&[3, 4, 5, 6, 7], 8, 10_000.0).unwrap();
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        check_grad(&format!("rope {layout:?}"), [x.clone()], |x| {
            rope(&x[0], &cos, &sin, layout)
        });
        // (B, T, H, D) viewed as (B, H, T, D)
        check_grad(
            &format!("rope {layout:?} of a transposed view"),
            [x.clone()],
            |x| {
                rope(
                    &x[0].transpose(1, 2)?.transpose(1, 2)?.narrow(1, 0, 2)?,
                    &cos,
                    &sin,
                    layout,
                )
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution and pooling

fn opts(stride: usize, padding: usize, dilation: usize) -> Conv2dOpts {
    Conv2dOpts {
        stride: (stride, stride),
        padding: (padding, padding),
        dilation: (dilation, dilation),
    }
}

#[test]
fn conv2d_stride_padding_dilation_bias() {
    // (name, input shape, weight shape, bias, options)
    type Case = (&'static str, [usize; 4], [usize; 4], bool, Conv2dOpts);
    let cases: &[Case] = &[
        (
            "default",
            [2, 3, 6, 7],
            [4, 3, 3, 3],
            true,
            Conv2dOpts::default(),
        ),
        (
            "stride 2 padding 1",
            [2, 3, 6, 7],
            [4, 3, 3, 3],
            true,
            opts(2, 1, 1),
        ),
        (
            "dilation 2 no bias",
            [1, 2, 7, 7],
            [3, 2, 3, 3],
            false,
            opts(1, 0, 2),
        ),
        (
            "stride 2 padding 1 dilation 2",
            [2, 2, 8, 7],
            [3, 2, 3, 2],
            true,
            opts(2, 1, 2),
        ),
        (
            "per-axis options",
            [1, 2, 6, 9],
            [2, 2, 2, 3],
            true,
            Conv2dOpts {
                stride: (2, 1),
                padding: (0, 2),
                dilation: (1, 2),
            },
        ),
        (
            "1x1",
            [2, 3, 4, 4],
            [5, 3, 1, 1],
            true,
            Conv2dOpts::default(),
        ),
    ];
    let mut d = Data::new(19);
    for &(name, xs, ws, bias, o) in cases {
        let mut inputs = vec![d.randn(&xs), d.randn(&ws)];
        if bias {
            inputs.push(d.randn(&[ws[0]]));
        }
        check_grad(&format!("conv2d {name}"), &inputs, |x| {
            conv2d(&x[0], &x[1], x.get(2), o)
        });
    }
}

#[test]
fn max_and_avg_pooling() {
    type Pool = fn(&Tensor, (usize, usize), Conv2dOpts) -> Result<Tensor>;
    let cases: &[(&str, Pool, (usize, usize), Conv2dOpts)] = &[
        ("max 2x2 stride 2", max_pool2d, (2, 2), opts(2, 0, 1)),
        (
            "max 3x3 stride 2 padding 1",
            max_pool2d,
            (3, 3),
            opts(2, 1, 1),
        ),
        ("max 2x3 dilation 2", max_pool2d, (2, 3), opts(1, 0, 2)),
        ("avg 2x2 stride 2", avg_pool2d, (2, 2), opts(2, 0, 1)),
        (
            "avg 3x3 stride 1 padding 1",
            avg_pool2d,
            (3, 3),
            opts(1, 1, 1),
        ),
        (
            "avg 2x3 per-axis stride",
            avg_pool2d,
            (2, 3),
            Conv2dOpts {
                stride: (1, 2),
                ..Conv2dOpts::default()
            },
        ),
    ];
    let x = Data::new(20).distinct(&[2, 2, 6, 7], 0.1, 0.0);
    for &(name, pool, k, o) in cases {
        check_grad(name, [x.clone()], |x| pool(&x[0], k, o));
    }
    assert!(avg_pool2d(&x, (2, 2), opts(1, 0, 2)).is_err());
    // refused as in PyTorch: an empty kernel, padding over half the window
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    let e = err(max_pool2d(&x, (0, 2), opts(1, 0, 1)));
    assert!(e.contains("max_pool2d") && e.contains("kernel 0"), "{e}");
    let e = err(avg_pool2d(
        &x,
        (2, 2),
        Conv2dOpts {
            stride: (0, 1),
            ..Conv2dOpts::default()
        },
    ));
    assert!(e.contains("stride 0"), "{e}");
    for pool in [max_pool2d as Pool, avg_pool2d] {
        let e = err(pool(&x, (2, 2), opts(1, 2, 1)));
        assert!(e.contains("padding 2") && e.contains("half"), "{e}");
    }
    assert!(
        max_pool2d(&x, (2, 2), opts(1, 1, 2)).is_ok(),
        "half of a dilated window of 3"
    );
    let e = err(conv2d(
        &x,
        &Tensor::zeros(&[3, 2, 0, 3]),
        None,
        opts(1, 0, 1),
    ));
    assert!(e.contains("conv2d") && e.contains("kernel 0"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Attention (cases in `common::attn`)

#[test]
fn scaled_dot_product_attention_cases() {
    let mut d = Data::new(21);
    for c in ATTN_CASES {
        let inputs = attn_inputs(c, &mut d);
        let m = attn_mask(c, &mut d);
        check_grad(&format!("attention {c:?}"), &inputs, |x| {
            let (q, k, v) = (as_bhtd(c, &x[0])?, as_bhtd(c, &x[1])?, as_bhtd(c, &x[2])?);
            scaled_dot_product_attention(&q, &k, &v, attn_mask_of(c, &m), c.scale)
        });
    }
}

#[test]
fn packed_qkv_attention_cases() {
    let mut d = Data::new(22);
    let cases: &[(usize, usize, usize, usize, Mask)] = &[
        // (B, T, heads, head dim, mask)
        (2, 5, 2, 4, Mask::None),
        (2, 6, 2, 3, Mask::Causal),
        (1, 40, 2, 3, Mask::Causal),
        (1, 66, 1, 2, Mask::Causal), // two row blocks, the second of 2 rows
        (2, 5, 3, 2, Mask::Additive(&[2, 1, 5, 5])),
    ];
    for &(b, tt, heads, hd, mask) in cases {
        let c = case(b, heads, heads, tt, tt, hd, hd, mask);
        let qkv = d.randn(&[b, tt, 3 * heads * hd]);
        let m = attn_mask(&c, &mut d);
        check_grad(&format!("packed_qkv_attention {c:?}"), [qkv.clone()], |x| {
            packed_qkv_attention(&x[0], heads, attn_mask_of(&c, &m), None)
        });
    }
    // a contiguous qkv at a non-zero offset
    let big = d.randn(&[3, 6, 12]);
    check_grad("packed_qkv_attention at an offset", &[big], |x| {
        packed_qkv_attention(&x[0].narrow(0, 1, 2)?, 2, AttnMask::Causal, None)
    });
    // a strided qkv (copied inside the op) and an explicit scale
    let qkv = d.randn(&[2, 12, 5]);
    check_grad("packed_qkv_attention of a transposed view", &[qkv], |x| {
        packed_qkv_attention(&x[0].transpose(1, 2)?, 2, AttnMask::Causal, Some(0.7))
    });
}

/// A composite through many ops at once (a tiny transformer block): catches gradients that
/// only go wrong when ops feed each other.
#[test]
fn composite_block() {
    let mut d = Data::new(23);
    let (b, tt, c, heads) = (2, 6, 8, 2);
    let inputs = vec![
        d.randn(&[b, tt, c]),
        d.uniform(&[c], 0.5, 1.5),
        d.randn(&[3 * c, c]).mul_scalar(0.3),
        d.randn(&[c, c]).mul_scalar(0.3),
        d.randn(&[c]),
    ];
    let (cos, sin) = rope_tables(&(0..tt).collect::<Vec<_>>(), c / heads, 10_000.0).unwrap();
    check_grad_with(
        "composite block",
        &inputs,
        Fd {
            eps: 1e-2,
            tol: 3e-3,
        },
        |x| {
            let h = rms_norm(&x[0], Some(&x[1]), 1e-6)?;
            let qkv = linear(&h, &x[2], None)?;
            let heads_of = |i: usize| -> Result<Tensor> {
                qkv.narrow(2, i * c, c)?
                    .reshape(&[b, tt, heads, c / heads])?
                    .transpose(1, 2)
            };
            let q = rope(&heads_of(0)?, &cos, &sin, RopeLayout::HalfSplit)?;
            let k = rope(&heads_of(1)?, &cos, &sin, RopeLayout::HalfSplit)?;
            let a = scaled_dot_product_attention(&q, &k, &heads_of(2)?, AttnMask::Causal, None)?;
            let a = a.transpose(1, 2)?.reshape(&[b, tt, c])?;
            let y = x[0].add(&linear(&a, &x[3], Some(&x[4]))?)?;
            y.silu().mean_dim(1, false)
        },
    );
}

/// The checker is not vacuous: `x * detach(x)` has analytic gradient `x` where the true one
/// is `2x`, and the check must fail.
#[test]
#[should_panic(expected = "differ from finite differences")]
fn checker_rejects_a_wrong_gradient() {
    let x = Data::new(24).uniform(&[3], 0.5, 1.0);
    check_grad("x * detach(x)", &[x], |x| x[0].mul(&x[0].detach()));
}

#[test]
fn swiglu_fused() {
    let mut d = Data::new(77);
    let x = d.randn(&[3, 5, 8]);
    check_grad("swiglu", [x.clone()], |xs| ferrolab_tensor::swiglu(&xs[0]));
    // against the unfused reference silu(a) * b
    common::check_same(
        "swiglu vs silu * mul",
        [x],
        1e-5,
        |xs| ferrolab_tensor::swiglu(&xs[0]),
        |xs| {
            let h = xs[0].split(&[4, 4], -1)?;
            h[0].silu().mul(&h[1])
        },
    );
    let e = ferrolab_tensor::swiglu(&d.randn(&[2, 3]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("swiglu") && e.contains("even"), "{e}");
}

#[test]
fn rope_packed_and_packed_gqa_attention() {
    let mut d = Data::new(78);
    for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
        let x = d.randn(&[2, 5, 3 * 4 + 3]); // 3 rotated heads of 4, then 3 passed through
        let (c, s) = rope_tables(&[0, 1, 2, 3, 4], 4, 10.0).unwrap();
        check_grad(&format!("rope_packed {layout:?}"), [x], |xs| {
            ferrolab_tensor::rope_packed(&xs[0], 4, 3, &c, &s, layout)
        });
    }
    let am = noise_mask(&mut d, &[2, 4, 6, 6]);
    for (name, mask) in [
        ("causal", AttnMask::Causal),
        ("no mask", AttnMask::None),
        ("additive mask", AttnMask::Additive(&am)),
    ] {
        let qkv = d.randn(&[2, 6, (4 + 2 * 2) * 3]);
        check_grad(
            &format!("packed_gqa_attention H4 Hkv2, {name}"),
            [qkv],
            |xs| ferrolab_tensor::packed_gqa_attention(&xs[0], 4, 2, mask, None),
        );
    }
    let e = ferrolab_tensor::rope_packed(
        &d.randn(&[1, 2, 6]),
        4,
        2,
        &Tensor::zeros(&[2, 2]),
        &Tensor::zeros(&[2, 2]),
        RopeLayout::HalfSplit,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rope_packed"), "{e}");
    let e =
        ferrolab_tensor::packed_gqa_attention(&d.randn(&[1, 2, 14]), 3, 2, AttnMask::Causal, None)
            .unwrap_err()
            .to_string();
    assert!(e.contains("multiple"), "{e}");
}

/// Experts of a `moe_experts` case: inputs `[x, weights, (gate, up, down) per expert]`.
fn moe_case(d: &mut Data, n: usize, c: usize, k: usize, e: usize, f: usize) -> Vec<Tensor> {
    let mut v = vec![d.randn(&[n, c]), d.uniform(&[n, k], 0.2, 1.0)];
    for _ in 0..e {
        v.push(d.randn(&[f, c]).mul_scalar(0.5));
        v.push(d.randn(&[f, c]).mul_scalar(0.5));
        v.push(d.randn(&[c, f]).mul_scalar(0.5));
    }
    v
}

fn moe_fused(xs: &[Tensor], idx: &[usize]) -> Result<Tensor> {
    let ex: Vec<ferrolab_tensor::ExpertWeights> = xs[2..]
        .chunks(3)
        .map(|w| ferrolab_tensor::ExpertWeights {
            gate: &w[0],
            up: &w[1],
            down: &w[2],
        })
        .collect();
    ferrolab_tensor::moe_experts(&xs[0], &xs[1], idx, &ex)
}

/// The plain path: every (token, slot) pair through its expert with ordinary ops.
fn moe_reference(xs: &[Tensor], idx: &[usize], k: usize) -> Result<Tensor> {
    let n = xs[0].shape()[0];
    let mut rows = Vec::new();
    for t in 0..n {
        let mut acc: Option<Tensor> = None;
        for s in 0..k {
            let e = idx[t * k + s];
            let x = xs[0].narrow(0, t, 1)?;
            let (g, u, dn) = (&xs[2 + 3 * e], &xs[3 + 3 * e], &xs[4 + 3 * e]);
            let h = linear(&x, g, None)?.silu().mul(&linear(&x, u, None)?)?;
            let y = linear(&h, dn, None)?.mul(&xs[1].narrow(0, t, 1)?.narrow(1, s, 1)?)?;
            acc = Some(match acc {
                None => y,
                Some(a) => a.add(&y)?,
            });
        }
        rows.push(acc.expect("k > 0"));
    }
    let refs: Vec<&Tensor> = rows.iter().collect();
    ferrolab_tensor::cat(&refs, 0)
}

#[test]
fn moe_experts_dispatch() {
    let mut d = Data::new(91);
    // 5 tokens, 2 slots, 4 experts (expert 3 gets no token), width 6, inner 4
    let idx = [0, 1, 2, 0, 1, 2, 0, 2, 1, 0];
    let xs = moe_case(&mut d, 5, 6, 2, 4, 4);
    check_grad("moe_experts", &xs, |xs| moe_fused(xs, &idx));
    common::check_same(
        "moe_experts vs per-token reference",
        &xs,
        1e-5,
        |xs| moe_fused(xs, &idx),
        |xs| moe_reference(xs, &idx, 2),
    );
    // inputs or routing weights without gradient (a frozen router, a detached input), and a
    // token routed to the same expert in both slots
    let idx2 = [0, 0, 1, 2, 0, 1, 2, 0, 1, 2];
    for (what, detach_x, detach_w) in [("input", true, false), ("routing weights", false, true)] {
        let strip = move |xs: &[Tensor]| -> Vec<Tensor> {
            let mut v = xs.to_vec();
            if detach_x {
                v[0] = v[0].detach();
            }
            if detach_w {
                v[1] = v[1].detach();
            }
            v
        };
        common::check_same(
            &format!("moe_experts with the {what} detached vs per-token reference"),
            &xs,
            1e-5,
            |xs| moe_fused(&strip(xs), &idx2),
            |xs| moe_reference(&strip(xs), &idx2, 2),
        );
    }
    // a busy expert is split into work items of 512 rows: 1100 tokens all routed to expert 0
    // in their first slot (three items) and spread over the others in the second
    let n = 1100;
    let big_idx: Vec<usize> = (0..2 * n)
        .map(|p| if p % 2 == 0 { 0 } else { 1 + (p / 2) % 3 })
        .collect();
    let big = moe_case(&mut d, n, 4, 2, 4, 3);
    common::check_same(
        "moe_experts with split work items vs per-token reference",
        &big,
        1e-5,
        |xs| moe_fused(xs, &big_idx),
        |xs| moe_reference(xs, &big_idx, 2),
    );
    // bad input is a typed error naming the problem
    let e = moe_fused(&xs, &[0, 1, 2, 0, 1, 2, 0, 2, 1, 7])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expert index 7"), "{e}");
    let e = moe_fused(&xs, &idx[..8]).unwrap_err().to_string();
    assert!(e.contains("indices"), "{e}");
}

#[test]
fn rope_tail_and_head_cat_for_latent_attention() {
    let mut d = Data::new(93);
    let (b, tt, h, nope, r) = (2, 5, 3, 4, 4);
    let (cos, sin) = ferrolab_tensor::rope_tables(&[0, 1, 2, 3, 4], r, 100.0).unwrap();
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        let x = d.randn(&[b, tt, h * (nope + r)]);
        let (c2, s2) = (cos.clone(), sin.clone());
        check_grad("rope_tail", [x.clone()], move |xs| {
            ferrolab_tensor::rope_tail(&xs[0], nope + r, r, &c2, &s2, layout)
        });
        // against rope on the narrowed heads, concatenated back
        let (c2, s2, c3, s3) = (cos.clone(), sin.clone(), cos.clone(), sin.clone());
        common::check_same(
            "rope_tail vs narrow + rope + cat",
            [x],
            1e-6,
            move |xs| ferrolab_tensor::rope_tail(&xs[0], nope + r, r, &c2, &s2, layout),
            move |xs| {
                let q = xs[0]
                    .reshape(&[b, tt, h, nope + r])?
                    .permute(&[0, 2, 1, 3])?;
                let pe = rope(&q.narrow(3, nope, r)?, &c3, &s3, layout)?;
                cat(&[&q.narrow(3, 0, nope)?, &pe], 3)?
                    .permute(&[0, 2, 1, 3])?
                    .reshape(&[b, tt, h * (nope + r)])
            },
        );
    }
    // keys: [first `nope` of each (nope + dv) head | channels 6..10 of the shared projection];
    // the second size is large enough for the row-parallel paths of head_cat and of narrow's
    // backward
    let dv = 3;
    for (b, tt, w) in [(b, tt, 10), (3, 700, 20)] {
        let kv = d.randn(&[b, tt, h * (nope + dv)]);
        let kva = d.randn(&[b, tt, w]);
        if tt < 10 {
            check_grad("head_cat", [kv.clone(), kva.clone()], |xs| {
                ferrolab_tensor::head_cat(&xs[0], h, nope, &xs[1], 6, 4)
            });
        }
        common::check_same(
            &format!("head_cat vs narrow + expand + cat, {b} x {tt}"),
            [kv, kva],
            1e-6,
            |xs| ferrolab_tensor::head_cat(&xs[0], h, nope, &xs[1], 6, 4),
            move |xs| {
                let a = xs[0].reshape(&[b, tt, h, nope + dv])?.narrow(3, 0, nope)?;
                let p = xs[1]
                    .narrow(2, 6, 4)?
                    .reshape(&[b, tt, 1, 4])?
                    .expand(&[b, tt, h, 4])?;
                cat(&[&a, &p], 3)?.reshape(&[b, tt, h * (nope + 4)])
            },
        );
    }
    // an empty `a` (no per-head channels): every head is b's part, and b still gets its gradient
    let a0 = Tensor::zeros(&[1, 2, 0]).into_var();
    let b0 = d.randn(&[1, 2, 3]).into_var();
    let y = ferrolab_tensor::head_cat(&a0, 2, 0, &b0, 1, 2).unwrap();
    let bv = b0.to_vec();
    assert_eq!(y.shape(), &[1, 2, 4]);
    assert_eq!(
        y.to_vec(),
        vec![bv[1], bv[2], bv[1], bv[2], bv[4], bv[5], bv[4], bv[5]]
    );
    y.sum_all().backward().unwrap();
    assert_eq!(
        b0.grad().unwrap().to_vec(),
        vec![0.0, 2.0, 2.0, 0.0, 2.0, 2.0]
    );
    let e = ferrolab_tensor::head_cat(&d.randn(&[1, 2, 7]), 2, 1, &d.randn(&[1, 2, 3]), 0, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("head_cat"), "{e}");
    let e = ferrolab_tensor::rope_tail(
        &d.randn(&[1, 5, 6]),
        6,
        3,
        &cos,
        &sin,
        RopeLayout::Interleaved,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("even"), "{e}");
}

#[test]
fn linear_cross_entropy_fused() {
    let mut d = Data::new(95);
    // 300 rows: one block with gradients, two full and a partial one without; 2,300 rows:
    // two full blocks and a partial one with gradients (the weight gradient accumulated over
    // blocks); some ignored targets
    let (c, v) = (6, 11);
    let targets = |n: usize| -> Vec<i64> {
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    -100
                } else {
                    ((i * 5) % v) as i64
                }
            })
            .collect()
    };
    for n in [300, 2300] {
        let tg = targets(n);
        let t2 = tg.clone();
        common::check_same(
            &format!("linear_cross_entropy vs linear + cross_entropy, {n} rows"),
            [d.randn(&[n, c]), d.randn(&[v, c])],
            1e-5,
            move |xs| ferrolab_tensor::linear_cross_entropy(&xs[0], &xs[1], &tg),
            move |xs| {
                ferrolab_tensor::cross_entropy(
                    &linear(&xs[0], &xs[1], None)?,
                    &t2,
                    Default::default(),
                )
            },
        );
    }
    // without gradients the loss is the same
    let n = 300;
    let h = d.randn(&[n, c]);
    let w = d.randn(&[v, c]);
    let tg = targets(n);
    let fused = ferrolab_tensor::no_grad(|| ferrolab_tensor::linear_cross_entropy(&h, &w, &tg))
        .unwrap()
        .item()
        .unwrap();
    let plain =
        ferrolab_tensor::cross_entropy(&linear(&h, &w, None).unwrap(), &tg, Default::default())
            .unwrap()
            .item()
            .unwrap();
    assert!(
        (fused - plain).abs() < 1e-5 * plain.abs().max(1.0),
        "{fused} vs {plain}"
    );
    let small_t: Vec<i64> = vec![1, -100, 4];
    check_grad(
        "linear_cross_entropy",
        [d.randn(&[3, 4]), d.randn(&[5, 4])],
        |xs| ferrolab_tensor::linear_cross_entropy(&xs[0], &xs[1], &small_t),
    );
    let e = ferrolab_tensor::linear_cross_entropy(&h, &w, &vec![11; n])
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 11"), "{e}");
    let all_ignored = ferrolab_tensor::linear_cross_entropy(&h, &w, &vec![-100; n]).unwrap();
    assert!(all_ignored.item().unwrap().is_nan());
}

#[test]
fn attention_on_token_major_operands() {
    let mut d = Data::new(97);
    // (b, t, s, h, hkv, dk, dv): causal with a cached prefix, grouped heads, Dk != Dv
    for (b, tt, s, h, hkv, dk, dv) in [
        (2, 5, 5, 2, 2, 6, 4),
        (1, 3, 7, 4, 2, 5, 3),
        (1, 40, 40, 2, 1, 4, 6),
    ] {
        // causal, none, and an additive mask over (B, 1, T, S)
        let am = noise_mask(&mut d, &[b, 1, tt, s]);
        for (name, mask) in [
            ("causal", AttnMask::Causal),
            ("no mask", AttnMask::None),
            ("additive mask", AttnMask::Additive(&am)),
        ] {
            let q = d.randn(&[b, tt, h, dk]);
            let k = d.randn(&[b, s, hkv, dk]);
            // v as a strided view: every other channel block of a wider tensor
            let vw = d.randn(&[b, s, hkv, dv + 2]);
            let f = |xs: &[Tensor]| -> Result<Tensor> {
                let v = xs[2].narrow(3, 2, dv)?;
                ferrolab_tensor::attention_bthd(&xs[0], &xs[1], &v, mask, None)
            };
            if tt <= 5 {
                check_grad(
                    &format!("attention_bthd {name}"),
                    [q.clone(), k.clone(), vw.clone()],
                    f,
                );
            }
            common::check_same(
                &format!("attention_bthd vs scaled_dot_product_attention, {name}"),
                [q, k, vw],
                1e-5,
                f,
                |xs| {
                    let tr = |x: &Tensor| x.permute(&[0, 2, 1, 3]);
                    let v = xs[2].narrow(3, 2, dv)?;
                    scaled_dot_product_attention(&tr(&xs[0])?, &tr(&xs[1])?, &tr(&v)?, mask, None)?
                        .permute(&[0, 2, 1, 3])
                },
            );
        }
    }
    // decoding with v not unit-stride along its channels (the direct path's fallback for the
    // probabilities-times-values product)
    let q = d.randn(&[1, 2, 1, 4]);
    let k = d.randn(&[1, 1, 6, 4]);
    let vt = d.randn(&[1, 1, 3, 6]); // (B, Hkv, Dv, S): v is its transpose
    check_grad("decoding attention, v channels strided", [q, k, vt], |xs| {
        scaled_dot_product_attention(
            &xs[0],
            &xs[1],
            &xs[2].transpose(2, 3)?,
            AttnMask::Causal,
            None,
        )
    });
}
