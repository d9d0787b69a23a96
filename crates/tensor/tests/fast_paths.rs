//! Fused and fast-path kernels against plain compositions of simpler ops (or direct loops):
//! outputs and input gradients, for the same upstream gradient (`common::check_same`).

mod common;

use common::attn::{
    as_bhtd, attn_inputs, attn_mask, attn_mask_of, case, AttnCase, Mask, ATTN_CASES,
};
use common::{assert_close, assert_tensor_close, check_same, grad_vec, t, Data};
use ferrolab_tensor::{
    avg_pool2d, cat, conv2d, cross_entropy, embedding, layer_norm, linear, max_pool2d, one_hot,
    packed_qkv_attention, rms_norm, rope, rope_tables, scaled_dot_product_attention, AttnMask,
    Conv2dOpts, CrossEntropyOpts, Result, RopeLayout, Tensor,
};

// ---------------------------------------------------------------------------------------------
// Attention

/// `1.0` where key `j` is hidden from query `i` under the bottom-right aligned causal mask.
fn causal_hidden(t_len: usize, s_len: usize) -> Tensor {
    let shift = s_len as isize - t_len as isize;
    let v = (0..t_len * s_len)
        .map(|p| ((p % s_len) as isize > (p / s_len) as isize + shift) as u8 as f32)
        .collect();
    t(v, &[t_len, s_len])
}

/// `(B, Hkv, S, D)` repeated to `(B, Hkv * group, S, D)` (head `h` reads kv head `h / group`).
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    let [b, hkv, s, d] = x.dims::<4>("repeat_kv")?;
    x.unsqueeze(2)?
        .expand(&[b, hkv, group, s, d])?
        .reshape(&[b, hkv * group, s, d])
}

/// `softmax(q k^T * scale + mask) v` from matmul, mul_scalar, masked_fill / add and softmax.
fn reference_attention(
    c: &AttnCase,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Option<Tensor>,
) -> Result<Tensor> {
    let group = c.h / c.hkv;
    let scale = c.scale.unwrap_or(1.0 / (c.dk as f32).sqrt());
    let scores = q
        .matmul(&repeat_kv(k, group)?.transpose(-2, -1)?)?
        .mul_scalar(scale);
    let scores = match c.mask {
        Mask::None => scores,
        Mask::Causal => scores.masked_fill(&causal_hidden(c.t, c.s), f32::NEG_INFINITY)?,
        Mask::Additive(_) => scores.add(mask.as_ref().expect("additive case has a mask"))?,
    };
    scores.softmax(-1)?.matmul(&repeat_kv(v, group)?)
}

#[test]
fn attention_matches_plain_composition() {
    let mut d = Data::new(31);
    for c in ATTN_CASES {
        let inputs = attn_inputs(c, &mut d);
        let m = attn_mask(c, &mut d);
        check_same(
            &format!("attention {c:?}"),
            &inputs,
            1e-5,
            |x| {
                let (q, k, v) = (as_bhtd(c, &x[0])?, as_bhtd(c, &x[1])?, as_bhtd(c, &x[2])?);
                scaled_dot_product_attention(&q, &k, &v, attn_mask_of(c, &m), c.scale)
            },
            |x| {
                reference_attention(
                    c,
                    &as_bhtd(c, &x[0])?,
                    &as_bhtd(c, &x[1])?,
                    &as_bhtd(c, &x[2])?,
                    &m,
                )
            },
        );
    }
}

/// A bigger causal case than the finite-difference checks can afford: several row blocks,
/// a ragged last block and more heads than threads.
#[test]
fn attention_matches_plain_composition_large() {
    let mut d = Data::new(32);
    for c in [
        case(2, 4, 2, 100, 100, 16, 8, Mask::Causal),
        case(1, 2, 2, 70, 130, 8, 8, Mask::Causal),
    ] {
        let inputs = attn_inputs(&c, &mut d);
        check_same(
            &format!("attention {c:?}"),
            &inputs,
            1e-5,
            |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], AttnMask::Causal, None),
            |x| reference_attention(&c, &x[0], &x[1], &x[2], &None),
        );
    }
}

/// Keys and values broadcast over the batch (stride-0 views), as a shared prefix would be.
#[test]
fn attention_with_expanded_keys_and_values() {
    let mut d = Data::new(46);
    let c = case(3, 4, 2, 6, 5, 4, 3, Mask::None);
    let inputs = [
        d.randn(&[3, 4, 6, 4]),
        d.randn(&[1, 2, 5, 4]),
        d.randn(&[1, 2, 5, 3]),
    ];
    check_same(
        "attention with expanded k and v",
        &inputs,
        1e-5,
        |x| {
            let (k, v) = (x[1].expand(&[3, 2, 5, 4])?, x[2].expand(&[3, 2, 5, 3])?);
            scaled_dot_product_attention(&x[0], &k, &v, AttnMask::None, None)
        },
        |x| {
            reference_attention(
                &c,
                &x[0],
                &x[1].expand(&[3, 2, 5, 4])?,
                &x[2].expand(&[3, 2, 5, 3])?,
                &None,
            )
        },
    );
}

/// The split/reshape/transpose views of a fused `(B, T, 3C)` projection, as a model would
/// feed them to `scaled_dot_product_attention`, and the result back in `(B, T, C)`.
fn attention_on_views(qkv: &Tensor, heads: usize, mask: AttnMask<'_>) -> Result<Tensor> {
    let [b, tt, c3] = qkv.dims::<3>("attention_on_views")?;
    let c = c3 / 3;
    let part = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * c, c)?
            .reshape(&[b, tt, heads, c / heads])?
            .transpose(1, 2)
    };
    let y = scaled_dot_product_attention(&part(0)?, &part(1)?, &part(2)?, mask, None)?;
    y.transpose(1, 2)?.reshape(&[b, tt, c])
}

#[test]
fn packed_qkv_attention_matches_split_views() {
    let mut d = Data::new(33);
    let cases: &[(usize, usize, usize, usize, Mask)] = &[
        // (B, T, heads, head dim, mask)
        (2, 7, 2, 4, Mask::None),
        (2, 7, 3, 4, Mask::Causal),
        (1, 40, 2, 8, Mask::Causal),
        (2, 70, 4, 4, Mask::Causal),
        (2, 6, 2, 4, Mask::Additive(&[2, 1, 6, 6])),
        // whole 16-wide tiles of neighbouring heads in the packed gradient, several blocks
        (1, 60, 2, 16, Mask::Causal),
        (1, 50, 3, 24, Mask::Causal),
        (1, 49, 2, 64, Mask::None),
    ];
    for &(b, tt, heads, hd, mask) in cases {
        let c = case(b, heads, heads, tt, tt, hd, hd, mask);
        let m = attn_mask(&c, &mut d);
        let qkv = d.randn(&[b, tt, 3 * heads * hd]);
        check_same(
            &format!("packed_qkv_attention {c:?}"),
            &[qkv],
            1e-6,
            |x| packed_qkv_attention(&x[0], heads, attn_mask_of(&c, &m), None),
            |x| attention_on_views(&x[0], heads, attn_mask_of(&c, &m)),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Linear, matmul, losses, norms

#[test]
fn linear_matches_matmul_plus_bias() {
    let mut d = Data::new(34);
    // the first case has fewer rows than the transpose threshold (the w^T view path), the
    // second enough for the transposed copy and several parallel bias chunks
    // the third has few rows (direct dot products) but enough work for parallel blocks
    for (xs, o) in [
        (vec![2usize, 5, 7], 6usize),
        (vec![3, 100, 16], 20),
        (vec![3, 512], 700),
    ] {
        let i = *xs.last().unwrap();
        // f32 sums of 512 products round to ~3e-5 of their terms' size
        let tol = if i > 100 { 5e-5 } else { 1e-5 };
        let inputs = [d.randn(&xs), d.randn(&[o, i]), d.randn(&[o])];
        check_same(
            &format!("linear {xs:?} -> {o}"),
            &inputs,
            tol,
            |x| linear(&x[0], &x[1], Some(&x[2])),
            |x| x[0].matmul(&x[1].t()?)?.add(&x[2]),
        );
        check_same(
            &format!("linear {xs:?} -> {o} without bias"),
            &inputs[..2],
            tol,
            |x| linear(&x[0], &x[1], None),
            |x| x[0].matmul(&x[1].t()?),
        );
    }
}

/// `(.., m, k) @ (k, n)` folds the batch into rows; with the rhs as a size-1 batch it goes
/// through the batched kernel instead; both against a direct f64 triple loop.
#[test]
fn matmul_paths_agree_with_direct_loops() {
    let mut d = Data::new(35);
    for (bsz, m, k, n) in [
        (3usize, 5usize, 7usize, 4usize),
        (8, 33, 20, 17),
        (2, 64, 96, 80),
        (4, 130, 200, 170), // batched products over 2^22 multiply-adds each
    ] {
        let tol = if k > 100 { 5e-5 } else { 1e-5 }; // longer sums round further
        let (a, b) = (d.randn(&[bsz, m, k]), d.randn(&[k, n]));
        let (av, bv) = (a.to_vec(), b.to_vec());
        let mut want = vec![0f32; bsz * m * n];
        for bi in 0..bsz {
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|p| av[(bi * m + i) * k + p] as f64 * bv[p * n + j] as f64)
                        .sum();
                    want[(bi * m + i) * n + j] = s as f32;
                }
            }
        }
        assert_close("matmul folded", &a.matmul(&b).unwrap().to_vec(), &want, tol);
        check_same(
            &format!("matmul folded vs batched {bsz}x{m}x{k}x{n}"),
            &[a, b],
            tol,
            |x| x[0].matmul(&x[1]),
            |x| x[0].matmul(&x[1].unsqueeze(0)?.expand(&[bsz, k, n])?),
        );
    }
}

/// Mean cross-entropy over non-ignored rows from index_select, log_softmax, gather and means.
fn reference_cross_entropy(
    logits: &Tensor,
    targets: &[i64],
    opts: CrossEntropyOpts,
) -> Result<Tensor> {
    let rows: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i] != opts.ignore_index)
        .collect();
    let tg: Vec<usize> = rows.iter().map(|&i| targets[i] as usize).collect();
    let logp = logits.index_select(0, &rows)?.log_softmax(-1)?;
    let nll = logp.gather(1, &tg, &[tg.len(), 1])?.mean_all()?.neg();
    let eps = opts.label_smoothing;
    let smooth = logp.mean_dim(-1, false)?.mean_all()?.neg();
    nll.mul_scalar(1.0 - eps).add(&smooth.mul_scalar(eps))
}

#[test]
fn cross_entropy_matches_log_softmax_gather_mean() {
    let mut d = Data::new(36);
    for (n, v) in [(6usize, 5usize), (70, 37)] {
        let logits = d.randn(&[n, v]).mul_scalar(2.0);
        let mut targets: Vec<i64> = d.indices(n, v).into_iter().map(|i| i as i64).collect();
        targets[1] = -100;
        targets[n - 1] = -100;
        // the same rows ignored through a class index instead of -100
        let by_class: Vec<i64> = targets
            .iter()
            .map(|&t| if t == -100 { 2 } else { t })
            .collect();
        for (targets, opts) in [
            (&targets, CrossEntropyOpts::default()),
            (
                &targets,
                CrossEntropyOpts {
                    label_smoothing: 0.1,
                    ..Default::default()
                },
            ),
            (
                &by_class,
                CrossEntropyOpts {
                    ignore_index: 2,
                    label_smoothing: 0.1,
                },
            ),
        ] {
            check_same(
                &format!("cross_entropy {n}x{v} {opts:?}"),
                [logits.clone()],
                1e-5,
                |x| cross_entropy(&x[0], targets, opts),
                |x| reference_cross_entropy(&x[0], targets, opts),
            );
        }
    }
}

/// Layer norm from mean_dim, sub, sqr, mean_dim, add_scalar, rsqrt, mul and add.
fn reference_layer_norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    let xc = x.sub(&x.mean_dim(-1, true)?)?;
    let rstd = xc.sqr().mean_dim(-1, true)?.add_scalar(eps).rsqrt();
    let mut y = xc.mul(&rstd)?;
    if let Some(w) = w {
        y = y.mul(w)?;
    }
    if let Some(b) = b {
        y = y.add(b)?;
    }
    Ok(y)
}

#[test]
fn layer_norm_and_rms_norm_match_compositions() {
    let mut d = Data::new(37);
    // 70 rows of 37: several parallel row chunks, a width with a split-accumulator remainder
    let x = d.randn(&[2, 35, 37]).mul_scalar(2.0).add_scalar(0.5);
    let w = d.uniform(&[37], 0.5, 1.5);
    let b = d.randn(&[37]);
    check_same(
        "layer_norm weight+bias",
        &[x.clone(), w.clone(), b],
        1e-5,
        |x| layer_norm(&x[0], Some(&x[1]), Some(&x[2]), 1e-5),
        |x| reference_layer_norm(&x[0], Some(&x[1]), Some(&x[2]), 1e-5),
    );
    check_same(
        "layer_norm plain",
        [x.clone()],
        1e-5,
        |x| layer_norm(&x[0], None, None, 1e-5),
        |x| reference_layer_norm(&x[0], None, None, 1e-5),
    );
    check_same(
        "rms_norm weight",
        &[x, w],
        1e-5,
        |x| rms_norm(&x[0], Some(&x[1]), 1e-6),
        |x| {
            x[0].mul(&x[0].sqr().mean_dim(-1, true)?.add_scalar(1e-6).rsqrt())?
                .mul(&x[1])
        },
    );
}

/// Softmax over a non-last dim (strided kernel) equals softmax over the last dim (row kernel)
/// of the transposed tensor, with `-inf` entries and fully masked slices (zeros, or `-inf`
/// for log-softmax, in both kernels).
#[test]
fn softmax_over_any_dim_matches_the_row_kernel_with_masked_entries() {
    let x = Data::new(47).randn(&[5, 4]);
    // column 1 fully masked, column 2 partly
    let mask = t(
        (0..20)
            .map(|i| (i % 4 == 1 || i == 2 || i == 10) as u8 as f32)
            .collect(),
        &[5, 4],
    );
    type Sm = fn(&Tensor, isize) -> Result<Tensor>;
    let ops: &[(&str, Sm)] = &[
        ("softmax", Tensor::softmax),
        ("log_softmax", Tensor::log_softmax),
    ];
    for &(name, op) in ops {
        check_same(
            &format!("{name} over dim 0 with -inf"),
            [x.clone()],
            1e-6,
            |x| op(&x[0].masked_fill(&mask, f32::NEG_INFINITY)?, 0),
            |x| {
                op(
                    &x[0]
                        .masked_fill(&mask, f32::NEG_INFINITY)?
                        .t()?
                        .contiguous(),
                    -1,
                )?
                .t()
            },
        );
        let y = op(&x.masked_fill(&mask, f32::NEG_INFINITY).unwrap(), 0)
            .unwrap()
            .to_vec();
        assert!(y.iter().all(|v| !v.is_nan()), "{name}: NaN in {y:?}");
    }
}

#[test]
fn softmax_and_log_softmax_match_compositions() {
    let x = Data::new(38).randn(&[4, 6, 19]).mul_scalar(3.0);
    for dim in [0isize, 1, -1] {
        check_same(
            &format!("softmax dim {dim}"),
            [x.clone()],
            1e-5,
            |x| x[0].softmax(dim),
            |x| {
                let e = x[0].sub(&x[0].max_dim(dim, true)?)?.exp();
                e.div(&e.sum_dim(dim, true)?)
            },
        );
        check_same(
            &format!("log_softmax dim {dim}"),
            [x.clone()],
            1e-5,
            |x| x[0].log_softmax(dim),
            |x| {
                let z = x[0].sub(&x[0].max_dim(dim, true)?)?;
                z.sub(&z.exp().sum_dim(dim, true)?.log())
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise kernels: broadcast shortcuts and parallel sizes

/// Each broadcast shortcut (same shape, scalar, row suffix, general strided) against the same
/// op on operands expanded to the full shape and copied.
#[test]
fn broadcast_shortcuts_match_expanded_operands() {
    type BinOp = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops: &[(&str, BinOp)] = &[
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
    ];
    let shapes: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[4]),
        (&[4], &[2, 3, 4]),
        (&[2, 3, 4], &[1, 3, 4]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 3, 4], &[1]),
        (&[1], &[2, 3, 4]),
        (&[2, 1, 4], &[3, 1]),
        (&[3, 1], &[1, 5]),
    ];
    let mut d = Data::new(39);
    for &(name, op) in ops {
        for &(ash, bsh) in shapes {
            let (a, b) = (d.distinct(ash, 0.1, 0.0), d.away_from_zero(bsh, 0.8, 2.0));
            let full = ferrolab_tensor::shape::broadcast_shape("test", ash, bsh).unwrap();
            check_same(
                &format!("{name} {ash:?} with {bsh:?}"),
                &[a, b],
                1e-6,
                |x| op(&x[0], &x[1]),
                |x| {
                    op(
                        &x[0].expand(&full)?.contiguous(),
                        &x[1].expand(&full)?.contiguous(),
                    )
                },
            );
        }
    }
}

/// Sizes above the parallel threshold (2^15 elements) against scalar f64 references.
#[test]
fn large_tensors_take_the_parallel_paths() {
    let n = 3 * (1 << 15) + 5;
    let mut d = Data::new(40);
    let x = d.randn(&[n]).mul_scalar(2.0);
    let xv = x.to_vec();
    type Unary = fn(&Tensor) -> Tensor;
    type Scalar = fn(f64) -> f64;
    let unary: &[(&str, Unary, Scalar)] = &[
        ("exp", |x| x.exp(), f64::exp),
        ("tanh", |x| x.tanh(), f64::tanh),
        ("sigmoid", |x| x.sigmoid(), |v| 1.0 / (1.0 + (-v).exp())),
        ("silu", |x| x.silu(), |v| v / (1.0 + (-v).exp())),
        (
            "gelu_tanh",
            |x| x.gelu_tanh(),
            |v| 0.5 * v * (1.0 + (0.797_884_560_802_865_4 * (v + 0.044715 * v * v * v)).tanh()),
        ),
        ("affine", |x| x.affine(0.5, -1.0), |v| 0.5 * v - 1.0),
    ];
    for &(name, op, want) in unary {
        let got = op(&x).to_vec();
        let want: Vec<f32> = xv.iter().map(|&v| want(v as f64) as f32).collect();
        assert_close(&format!("{name} of {n} elements"), &got, &want, 2e-6);
    }
    // the sum is accumulated in f64 in parallel chunks
    let s: f64 = xv.iter().map(|&v| v as f64).sum();
    let got = x.sum_all().item().unwrap() as f64;
    assert!(
        (got - s).abs() <= 1e-6 * s.abs().max(1.0),
        "sum_all {got} vs {s}"
    );

    // a row broadcast and a same-shape product over rows longer than a parallel chunk
    let (rows, m) = (3usize, 40_000usize);
    let (a, b) = (d.randn(&[rows, m]), d.randn(&[m]));
    let (av, bv) = (a.to_vec(), b.to_vec());
    let want: Vec<f32> = (0..rows * m).map(|i| av[i] - bv[i % m]).collect();
    assert_eq!(a.sub(&b).unwrap().to_vec(), want, "row broadcast");
    let want: Vec<f32> = av.iter().map(|v| v * v).collect();
    assert_eq!(a.mul(&a).unwrap().to_vec(), want, "same-shape product");

    // gradients of two uses of a large tensor are accumulated (in parallel) into one
    let xv2 = x.clone().into_var();
    xv2.add(&xv2.mul_scalar(3.0))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert!(
        grad_vec(&xv2).iter().all(|&g| g == 4.0),
        "accumulated gradient"
    );

    // softmax over long rows
    let z = d.randn(&[2, 50_000]).mul_scalar(3.0);
    let zv = z.to_vec();
    let got = z.softmax(-1).unwrap().to_vec();
    for r in 0..2 {
        let row = &zv[r * 50_000..(r + 1) * 50_000];
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let want: Vec<f32> = row
            .iter()
            .map(|&v| ((v as f64 - m).exp() / s) as f32)
            .collect();
        assert_close(
            "softmax of a long row",
            &got[r * 50_000..(r + 1) * 50_000],
            &want,
            1e-6,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution and pooling

/// Direct convolution in f64 (NCHW, OIHW).
fn naive_conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, o: Conv2dOpts) -> Vec<f32> {
    let ([n, c, h, wd], [oc, _, kh, kw]) = (x.dims::<4>("").unwrap(), w.dims::<4>("").unwrap());
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let bv = b.map(|b| b.to_vec());
    let oh = (h + 2 * o.padding.0 - o.dilation.0 * (kh - 1) - 1) / o.stride.0 + 1;
    let ow = (wd + 2 * o.padding.1 - o.dilation.1 * (kw - 1) - 1) / o.stride.1 + 1;
    let mut out = Vec::with_capacity(n * oc * oh * ow);
    for ni in 0..n {
        for oi in 0..oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bv.as_ref().map_or(0.0, |b| b[oi] as f64);
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * o.stride.0 + ky * o.dilation.0) as isize
                                    - o.padding.0 as isize;
                                let xx = (ox * o.stride.1 + kx * o.dilation.1) as isize
                                    - o.padding.1 as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                let xi = ((ni * c + ci) * h + y as usize) * wd + xx as usize;
                                let wi = ((oi * c + ci) * kh + ky) * kw + kx;
                                s += xv[xi] as f64 * wv[wi] as f64;
                            }
                        }
                    }
                    out.push(s as f32);
                }
            }
        }
    }
    out
}

fn opts(stride: usize, padding: usize, dilation: usize) -> Conv2dOpts {
    Conv2dOpts {
        stride: (stride, stride),
        padding: (padding, padding),
        dilation: (dilation, dilation),
    }
}

#[test]
fn conv2d_matches_direct_loops() {
    let mut d = Data::new(41);
    let cases: &[([usize; 4], [usize; 4], bool, Conv2dOpts)] = &[
        ([2, 3, 9, 8], [4, 3, 3, 3], true, Conv2dOpts::default()),
        ([2, 3, 9, 8], [4, 3, 3, 3], true, opts(2, 1, 2)),
        (
            [1, 2, 10, 11],
            [5, 2, 2, 3],
            false,
            Conv2dOpts {
                stride: (3, 1),
                padding: (2, 0),
                dilation: (1, 3),
            },
        ),
    ];
    for &(xs, ws, bias, o) in cases {
        let (x, w, b) = (d.randn(&xs), d.randn(&ws), d.randn(&[ws[0]]));
        let b = bias.then_some(&b);
        let got = conv2d(&x, &w, b, o).unwrap().to_vec();
        assert_close(
            &format!("conv2d {xs:?} {ws:?} {o:?}"),
            &got,
            &naive_conv2d(&x, &w, b, o),
            1e-5,
        );
    }
}

/// Average pooling (zero padding counted) is a per-channel convolution with a constant kernel.
#[test]
fn avg_pool2d_matches_constant_kernel_convolution() {
    let x = Data::new(42).randn(&[2, 3, 7, 8]);
    for (k, o) in [
        ((2, 2), opts(2, 0, 1)),
        ((3, 3), opts(1, 1, 1)),
        ((3, 2), opts(2, 1, 1)),
    ] {
        let kernel = Tensor::full(&[1, 1, k.0, k.1], 1.0 / (k.0 * k.1) as f32);
        check_same(
            &format!("avg_pool2d {k:?} {o:?}"),
            [x.clone()],
            1e-6,
            |x| avg_pool2d(&x[0], k, o),
            |x| {
                let y = conv2d(&x[0].reshape(&[6, 1, 7, 8])?, &kernel, None, o)?;
                let s = y.shape().to_vec();
                y.reshape(&[2, 3, s[2], s[3]])
            },
        );
    }
}

#[test]
fn max_pool2d_matches_direct_loops() {
    let x = Data::new(43).randn(&[2, 2, 7, 6]);
    let xv = x.to_vec();
    for (k, o) in [
        ((2, 2), opts(2, 0, 1)),
        ((3, 3), opts(2, 1, 1)),
        ((2, 2), opts(1, 1, 2)),
    ] {
        let y = max_pool2d(&x, k, o).unwrap();
        let [_, _, oh, ow] = y.dims::<4>("").unwrap();
        let mut want = Vec::new();
        for p in 0..4 {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..k.0 {
                        for kx in 0..k.1 {
                            let yy = (oy * o.stride.0 + ky * o.dilation.0) as isize
                                - o.padding.0 as isize;
                            let xx = (ox * o.stride.1 + kx * o.dilation.1) as isize
                                - o.padding.1 as isize;
                            if (0..7).contains(&yy) && (0..6).contains(&xx) {
                                m = m.max(xv[(p * 7 + yy as usize) * 6 + xx as usize]);
                            }
                        }
                    }
                    want.push(m);
                }
            }
        }
        assert_eq!(y.to_vec(), want, "max_pool2d {k:?} {o:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding, embedding

/// Half-split RoPE as in HF `transformers`: `x * cos + rotate_half(x) * sin`.
fn reference_rope_half(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.shape()[x.rank() - 1] / 2;
    let (x1, x2) = (x.narrow(-1, 0, half)?, x.narrow(-1, half, half)?);
    let rot = cat(&[&x2.neg(), &x1], -1)?;
    let (c, s) = (cat(&[cos, cos], -1)?, cat(&[sin, sin], -1)?);
    x.mul(&c)?.add(&rot.mul(&s)?)
}

#[test]
fn rope_matches_rotate_half_and_layouts_agree() {
    let (dim, tt) = (8, 6);
    let x = Data::new(44).randn(&[2, 3, tt, dim]);
    let (cos, sin) = rope_tables(&[0, 1, 2, 5, 9, 17], dim, 10_000.0).unwrap();
    check_same(
        "rope half-split vs rotate_half",
        [x.clone()],
        1e-6,
        |x| rope(&x[0], &cos, &sin, RopeLayout::HalfSplit),
        |x| reference_rope_half(&x[0], &cos, &sin),
    );
    // interleaved pairs (2i, 2i+1) are half-split pairs (i, i + D/2) after a channel shuffle
    let to_half: Vec<usize> = (0..dim / 2)
        .map(|i| 2 * i)
        .chain((0..dim / 2).map(|i| 2 * i + 1))
        .collect();
    check_same(
        "rope interleaved vs shuffled half-split",
        [x.clone()],
        1e-6,
        |x| rope(&x[0], &cos, &sin, RopeLayout::Interleaved)?.index_select(-1, &to_half),
        |x| {
            rope(
                &x[0].index_select(-1, &to_half)?,
                &cos,
                &sin,
                RopeLayout::HalfSplit,
            )
        },
    );
    // position 0 is the identity
    let y = rope(&x, &cos, &sin, RopeLayout::Interleaved).unwrap();
    assert_tensor_close(
        "rope at position 0",
        &y.narrow(2, 0, 1).unwrap(),
        &x.narrow(2, 0, 1).unwrap(),
        1e-7,
    );
}

#[test]
fn embedding_matches_one_hot_matmul() {
    let w = Data::new(45).randn(&[7, 5]);
    let ids = [3u32, 0, 3, 6, 6, 6, 1];
    let idx: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let oh = one_hot(&idx, 7).unwrap();
    check_same(
        "embedding vs one_hot @ weight",
        &[w],
        1e-6,
        |x| embedding(&x[0], &ids, &[7]),
        |x| oh.matmul(&x[0]),
    );
}

/// Reference for the packed GQA path: split the fused projection into q, k, v heads, rotate
/// q and k with [`rope`], attend with [`scaled_dot_product_attention`].
fn gqa_on_views(
    qkv: &Tensor,
    heads: usize,
    kv: usize,
    tables: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let [b, tt, w] = qkv.dims::<3>("test")?;
    let d = w / (heads + 2 * kv);
    let part = |start: usize, n: usize| -> Result<Tensor> {
        qkv.narrow(2, start * d, n * d)?
            .reshape(&[b, tt, n, d])?
            .transpose(1, 2)
    };
    let (mut q, mut k, v) = (part(0, heads)?, part(heads, kv)?, part(heads + kv, kv)?);
    if let Some((c, s)) = tables {
        q = rope(&q, c, s, RopeLayout::HalfSplit)?;
        k = rope(&k, c, s, RopeLayout::HalfSplit)?;
    }
    let y = scaled_dot_product_attention(&q, &k, &v, AttnMask::Causal, None)?;
    y.transpose(1, 2)?.reshape(&[b, tt, heads * d])
}

#[test]
fn packed_gqa_attention_and_rope_packed_match_split_views() {
    let mut d = Data::new(35);
    // (B, T, heads, kv heads, head dim)
    for &(b, tt, h, kv, hd) in &[(2, 7, 4, 2, 4), (1, 70, 4, 1, 8), (2, 9, 3, 3, 2)] {
        let qkv = d.randn(&[b, tt, (h + 2 * kv) * hd]);
        check_same(
            &format!("packed_gqa_attention B{b} T{tt} H{h} Hkv{kv} D{hd}"),
            std::slice::from_ref(&qkv),
            1e-5,
            |x| ferrolab_tensor::packed_gqa_attention(&x[0], h, kv, AttnMask::Causal, None),
            |x| gqa_on_views(&x[0], h, kv, None),
        );
        let positions: Vec<usize> = (3..3 + tt).collect();
        let (c, s) = rope_tables(&positions, hd, 100.0).unwrap();
        check_same(
            &format!("rope_packed + packed_gqa_attention B{b} T{tt} H{h} Hkv{kv} D{hd}"),
            &[qkv],
            1e-5,
            |x| {
                let r =
                    ferrolab_tensor::rope_packed(&x[0], hd, h + kv, &c, &s, RopeLayout::HalfSplit)?;
                ferrolab_tensor::packed_gqa_attention(&r, h, kv, AttnMask::Causal, None)
            },
            |x| gqa_on_views(&x[0], h, kv, Some((&c, &s))),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row-chunked parallel kernels across several chunks (chunk edges not on sequence edges)

/// RoPE of `x` `(B, T, w)` with the plain elementwise ops: `x1 c - x2 s`, `x2 c + x1 s` over the
/// halves (half-split) or the pairs (interleaved).
fn rotate_ref(x: &Tensor, c: &Tensor, s: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let [b, tt, w] = x.dims::<3>("rotate_ref")?;
    let h = w / 2;
    let (x1, x2) = match layout {
        RopeLayout::HalfSplit => (x.narrow(2, 0, h)?, x.narrow(2, h, h)?),
        RopeLayout::Interleaved => {
            let p = x.reshape(&[b, tt, h, 2])?;
            (
                p.narrow(3, 0, 1)?.reshape(&[b, tt, h])?,
                p.narrow(3, 1, 1)?.reshape(&[b, tt, h])?,
            )
        }
    };
    let y1 = x1.mul(c)?.sub(&x2.mul(s)?)?;
    let y2 = x2.mul(c)?.add(&x1.mul(s)?)?;
    match layout {
        RopeLayout::HalfSplit => cat(&[&y1, &y2], 2),
        RopeLayout::Interleaved => ferrolab_tensor::stack(&[&y1, &y2], 3)?.reshape(&[b, tt, w]),
    }
}

/// Groups of `group` channels of `x` `(B, T, W)`; in each, the last `tail` are rotated by
/// [`rotate_ref`] when `rotated(g)`, the rest pass through.
fn rope_groups_ref(
    x: &Tensor,
    group: usize,
    tail: usize,
    rotated: impl Fn(usize) -> bool,
    (c, s): (&Tensor, &Tensor),
    layout: RopeLayout,
) -> Result<Tensor> {
    let w = x.shape()[2];
    let mut parts = Vec::new();
    for g in 0..w / group {
        let keep = group - tail;
        if rotated(g) {
            if keep > 0 {
                parts.push(x.narrow(2, g * group, keep)?);
            }
            parts.push(rotate_ref(
                &x.narrow(2, g * group + keep, tail)?,
                c,
                s,
                layout,
            )?);
        } else {
            parts.push(x.narrow(2, g * group, group)?);
        }
    }
    cat(&parts.iter().collect::<Vec<_>>(), 2)
}

#[test]
fn row_chunked_kernels_match_compositions_across_chunks() {
    let mut d = Data::new(47);
    let (b, tt) = (3usize, 37usize); // 111 rows; the chunks hold 32-36 rows
    let positions: Vec<usize> = (0..tt).collect();
    for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
        // rope_packed: 6 rotated heads of 32, then 32 channels passed through
        let (hd, n_rot) = (32usize, 6usize);
        let (c, s) = rope_tables(&positions, hd, 500.0).unwrap();
        let x = d.randn(&[b, tt, n_rot * hd + 32]);
        check_same(
            &format!("rope_packed {layout:?} over several chunks"),
            [x],
            1e-5,
            |x| ferrolab_tensor::rope_packed(&x[0], hd, n_rot, &c, &s, layout),
            |x| rope_groups_ref(&x[0], hd, hd, |g| g < n_rot, (&c, &s), layout),
        );
        // rope_tail: the last 8 of every group of 24
        let (c, s) = rope_tables(&positions, 8, 500.0).unwrap();
        let x = d.randn(&[b, tt, 24 * 10]);
        check_same(
            &format!("rope_tail {layout:?} over several chunks"),
            [x],
            1e-5,
            |x| ferrolab_tensor::rope_tail(&x[0], 24, 8, &c, &s, layout),
            |x| rope_groups_ref(&x[0], 24, 8, |_| true, (&c, &s), layout),
        );
    }
    // swiglu over (111, 2 x 128) and GELU over 60,000 elements (above the parallel threshold)
    check_same(
        "swiglu over several chunks",
        [d.randn(&[b, tt, 256])],
        1e-5,
        |x| ferrolab_tensor::swiglu(&x[0]),
        |x| {
            x[0].narrow(2, 0, 128)?
                .silu()
                .mul(&x[0].narrow(2, 128, 128)?)
        },
    );
    check_same(
        "gelu over several chunks against 60 serial pieces",
        [d.randn(&[60_000]).mul_scalar(2.0)],
        1e-6,
        |x| Ok(x[0].gelu()),
        |x| {
            let pieces: Vec<Tensor> = (0..60)
                .map(|i| Ok(x[0].narrow(0, i * 1000, 1000)?.gelu()))
                .collect::<Result<_>>()?;
            cat(&pieces.iter().collect::<Vec<_>>(), 0)
        },
    );
    // a row broadcast over rows shorter than a chunk (several rows per chunk)
    let (a, r) = (d.randn(&[100, 500]), d.randn(&[500]));
    let (av, rv) = (a.to_vec(), r.to_vec());
    let want: Vec<f32> = (0..50_000).map(|i| av[i] * rv[i % 500]).collect();
    assert_eq!(
        a.mul(&r).unwrap().to_vec(),
        want,
        "row broadcast, 500-wide rows"
    );
}
