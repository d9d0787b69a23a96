//! Broadcasting elementwise arithmetic, scalar arithmetic and comparisons.

use rayon::prelude::*;

use super::{map1, map2, PAR_MIN};
use crate::error::Result;
use crate::shape::{broadcast_shape, broadcast_strides, numel, strided_copy, sum_to_shape};
use crate::tensor::Tensor;

/// `f(a, b)` with `a` shaped `ash` and `b` shaped `bsh`, both broadcast to `out`.
pub(crate) fn bcast2(
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    out: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    let n = numel(out);
    if n == 0 {
        return Vec::new();
    }
    if ash == bsh {
        return map2(a, b, f);
    }
    if b.len() == 1 && a.len() == n {
        let bv = b[0];
        return map1(a, |x| f(x, bv));
    }
    if a.len() == 1 && b.len() == n {
        let av = a[0];
        return map1(b, |y| f(av, y));
    }
    let suffix = |sh: &[usize]| {
        let s: Vec<usize> = sh.iter().copied().skip_while(|&d| d == 1).collect();
        !s.is_empty() && out.ends_with(&s)
    };
    if a.len() == n && suffix(bsh) {
        return rows_kernel(a, b, f);
    }
    if b.len() == n && suffix(ash) {
        return rows_kernel(b, a, |y, x| f(x, y));
    }
    let ax = if a.len() == n {
        a.to_vec()
    } else {
        strided_copy(a, 0, out, &broadcast_strides(ash, out))
    };
    let bx = if b.len() == n {
        b.to_vec()
    } else {
        strided_copy(b, 0, out, &broadcast_strides(bsh, out))
    };
    map2(&ax, &bx, f)
}

/// `f(full[r][i], row[i])` for every row `r` of `full` (`row` broadcast over leading dims).
fn rows_kernel(full: &[f32], row: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let (n, m) = (full.len(), row.len());
    let mut o = super::alloc_out(n);
    let rows = |(oc, ac): (&mut [f32], &[f32])| {
        for (orow, arow) in oc.chunks_exact_mut(m).zip(ac.chunks_exact(m)) {
            let (orow, arow, row) = (&mut orow[..m], &arow[..m], &row[..m]);
            for i in 0..m {
                orow[i] = f(arow[i], row[i]);
            }
        }
    };
    let ch = (PAR_MIN / m).max(1) * m;
    if n >= PAR_MIN {
        o.par_chunks_mut(ch).zip(full.par_chunks(ch)).for_each(rows);
    } else {
        rows((&mut o, full));
    }
    o
}

#[derive(Clone, Copy)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

fn binary(a: &Tensor, b: &Tensor, kind: Bin, op: &'static str) -> Result<Tensor> {
    let out = broadcast_shape(op, a.shape(), b.shape())?;
    let (ad, bd) = (a.contig(), b.contig());
    let (ash, bsh) = (a.shape().to_vec(), b.shape().to_vec());
    let data = match kind {
        Bin::Add => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| x + y),
        Bin::Sub => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| x - y),
        Bin::Mul => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| x * y),
        Bin::Div => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| x / y),
        // NaN propagates, as in torch.maximum / torch.minimum (f32::max would drop it)
        Bin::Max => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| {
            if x >= y || x.is_nan() {
                x
            } else {
                y
            }
        }),
        Bin::Min => bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| {
            if x <= y || x.is_nan() {
                x
            } else {
                y
            }
        }),
    };
    if matches!(kind, Bin::Add | Bin::Sub) {
        // The gradient does not depend on the operands: keep neither alive, and hand the
        // incoming gradient itself to `a` when no reduction is needed.
        let neg = matches!(kind, Bin::Sub);
        let o = out.clone();
        return Ok(Tensor::from_op(
            data,
            out,
            &[a, b],
            op,
            move |g: Vec<f32>, needs| {
                let gb = needs[1].then(|| {
                    let mut v = sum_to_shape(&g, &o, &bsh);
                    if neg {
                        v.iter_mut().for_each(|x| *x = -*x);
                    }
                    v
                });
                let ga = needs[0].then(|| {
                    if ash == o {
                        g
                    } else {
                        sum_to_shape(&g, &o, &ash)
                    }
                });
                Ok(vec![ga, gb])
            },
        ));
    }
    let out2 = out.clone();
    Ok(Tensor::from_op(
        data,
        out,
        &[a, b],
        op,
        move |g: Vec<f32>, needs| {
            let g = &g[..];
            let out = out2;
            let ga = if needs[0] {
                let full = match kind {
                    Bin::Add | Bin::Sub => None,
                    Bin::Mul => Some(bcast2(g, &out, &bd, &bsh, &out, |g, y| g * y)),
                    Bin::Div => Some(bcast2(g, &out, &bd, &bsh, &out, |g, y| g / y)),
                    Bin::Max | Bin::Min => {
                        let sel = bcast2(&ad, &ash, &bd, &bsh, &out, move |x, y| {
                            // ties to `self`; with a NaN both get the gradient (as torch)
                            let pick = match kind {
                                Bin::Max => x >= y || x.is_nan() || y.is_nan(),
                                _ => x <= y || x.is_nan() || y.is_nan(),
                            };
                            if pick {
                                1.0
                            } else {
                                0.0
                            }
                        });
                        Some(map2(g, &sel, |g, s| g * s))
                    }
                };
                Some(match full {
                    None => sum_to_shape(g, &out, &ash),
                    Some(f) => sum_to_shape(&f, &out, &ash),
                })
            } else {
                None
            };
            let gb = if needs[1] {
                let full = match kind {
                    Bin::Add => None,
                    Bin::Sub => Some(map1(g, |g| -g)),
                    Bin::Mul => Some(bcast2(g, &out, &ad, &ash, &out, |g, x| g * x)),
                    Bin::Div => {
                        // d(x/y)/dy = -x / y^2
                        let xy = bcast2(&ad, &ash, &bd, &bsh, &out, |x, y| -x / (y * y));
                        Some(map2(g, &xy, |g, q| g * q))
                    }
                    Bin::Max | Bin::Min => {
                        let sel = bcast2(&ad, &ash, &bd, &bsh, &out, move |x, y| {
                            let pick_b = match kind {
                                Bin::Max => y > x || x.is_nan() || y.is_nan(),
                                _ => y < x || x.is_nan() || y.is_nan(),
                            };
                            if pick_b {
                                1.0
                            } else {
                                0.0
                            }
                        });
                        Some(map2(g, &sel, |g, s| g * s))
                    }
                };
                Some(match full {
                    None => sum_to_shape(g, &out, &bsh),
                    Some(f) => sum_to_shape(&f, &out, &bsh),
                })
            } else {
                None
            };
            Ok(vec![ga, gb])
        },
    ))
}

fn compare(a: &Tensor, b: &Tensor, op: &'static str, f: fn(f32, f32) -> bool) -> Result<Tensor> {
    let out = broadcast_shape(op, a.shape(), b.shape())?;
    let data = bcast2(
        &a.contig(),
        a.shape(),
        &b.contig(),
        b.shape(),
        &out,
        move |x, y| {
            if f(x, y) {
                1.0
            } else {
                0.0
            }
        },
    );
    Tensor::from_vec(data, &out)
}

impl Tensor {
    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Add, "add")
    }
    /// `self - rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Sub, "sub")
    }
    /// `self * rhs` with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Mul, "mul")
    }
    /// `self / rhs` with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Div, "div")
    }
    /// Elementwise maximum with broadcasting (ties send the gradient to `self`; a NaN in either
    /// operand gives NaN and sends the gradient to both, as in `torch.maximum`).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Max, "maximum")
    }
    /// Elementwise minimum with broadcasting (ties send the gradient to `self`; a NaN in either
    /// operand gives NaN and sends the gradient to both, as in `torch.minimum`).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, Bin::Min, "minimum")
    }

    /// `self * mul + add`, elementwise with scalars.
    pub fn affine(&self, mul: f32, add: f32) -> Tensor {
        let data = map1(&self.contig(), |x| x * mul + add);
        Tensor::from_op(
            data,
            self.shape().to_vec(),
            &[self],
            "affine",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                Ok(vec![Some(map1(g, |g| g * mul))])
            },
        )
    }
    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        self.affine(1.0, s)
    }
    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        self.affine(s, 0.0)
    }
    /// `-self`.
    pub fn neg(&self) -> Tensor {
        self.affine(-1.0, 0.0)
    }
    /// `self ^ p` elementwise.
    pub fn powf(&self, p: f32) -> Tensor {
        let x = self.contig();
        let data = map1(&x, |v| v.powf(p));
        Tensor::from_op(
            data,
            self.shape().to_vec(),
            &[self],
            "powf",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                Ok(vec![Some(map2(g, &x, |g, v| g * p * v.powf(p - 1.0)))])
            },
        )
    }

    /// `1.0` where `self == rhs`, else `0.0` (broadcasting; no gradient).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "eq", |x, y| x == y)
    }
    /// `1.0` where `self != rhs`.
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "ne", |x, y| x != y)
    }
    /// `1.0` where `self < rhs`.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "lt", |x, y| x < y)
    }
    /// `1.0` where `self <= rhs`.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "le", |x, y| x <= y)
    }
    /// `1.0` where `self > rhs`.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "gt", |x, y| x > y)
    }
    /// `1.0` where `self >= rhs`.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        compare(self, rhs, "ge", |x, y| x >= y)
    }
}
