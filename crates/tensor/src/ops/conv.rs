//! 2-D convolution (im2col + gemm) and max/average pooling, NCHW layout.

use super::matmul::{gemm_into, gemm_new, par, MatRef};
use crate::error::{invalid, Error, Result};
use crate::tensor::Tensor;

/// Stride, padding and dilation of a 2-D window op, per spatial dim `(h, w)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOpts {
    /// Step between windows.
    pub stride: (usize, usize),
    /// Zero padding on each side.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
}

impl Default for Conv2dOpts {
    fn default() -> Self {
        Conv2dOpts {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
        }
    }
}

fn out_size(op: &'static str, n: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    if k == 0 || s == 0 || d == 0 {
        return invalid(
            op,
            format!("kernel {k}, stride {s} and dilation {d} must each be at least 1"),
        );
    }
    let span = d.saturating_mul(k - 1).saturating_add(1);
    let padded = n.saturating_add(p.saturating_mul(2));
    if padded < span {
        return invalid(
            op,
            format!("input {n} with padding {p} is smaller than the window {span} (stride {s}, dilation {d})"),
        );
    }
    Ok((padded - span) / s + 1)
}

#[derive(Clone, Copy)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    o: Conv2dOpts,
}

impl Geo {
    /// Input position of output `(oy, ox)` at tap `(ky, kx)`, if inside the image.
    #[inline]
    fn src(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let y =
            (oy * self.o.stride.0 + ky * self.o.dilation.0) as isize - self.o.padding.0 as isize;
        let x =
            (ox * self.o.stride.1 + kx * self.o.dilation.1) as isize - self.o.padding.1 as isize;
        (y >= 0 && x >= 0 && (y as usize) < self.h && (x as usize) < self.w)
            .then_some((y as usize, x as usize))
    }

    /// `(C*kh*kw, OH*OW)` columns of one image.
    fn im2col(&self, img: &[f32]) -> Vec<f32> {
        let l = self.oh * self.ow;
        let mut cols = vec![0f32; self.c * self.kh * self.kw * l];
        for ci in 0..self.c {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = ((ci * self.kh + ky) * self.kw + kx) * l;
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            if let Some((y, x)) = self.src(oy, ox, ky, kx) {
                                cols[row + oy * self.ow + ox] = img[(ci * self.h + y) * self.w + x];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// Adds columns back into an image gradient.
    fn col2im(&self, cols: &[f32], img: &mut [f32]) {
        let l = self.oh * self.ow;
        for ci in 0..self.c {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = ((ci * self.kh + ky) * self.kw + kx) * l;
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            if let Some((y, x)) = self.src(oy, ox, ky, kx) {
                                img[(ci * self.h + y) * self.w + x] +=
                                    cols[row + oy * self.ow + ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `x` `(N, C, H, W)` convolved with `weight` `(O, C, kh, kw)` plus `bias` `(O)`
/// (`torch.nn.functional.conv2d`, groups = 1).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOpts,
) -> Result<Tensor> {
    let [n, c, h, w] = x.dims::<4>("conv2d")?;
    let [o, wc, kh, kw] = weight.dims::<4>("conv2d")?;
    if wc != c {
        return Err(Error::ShapeMismatch {
            op: "conv2d",
            lhs: x.shape().to_vec(),
            rhs: weight.shape().to_vec(),
        });
    }
    if let Some(b) = bias {
        if b.shape() != [o] {
            return Err(Error::ShapeMismatch {
                op: "conv2d (bias)",
                lhs: vec![o],
                rhs: b.shape().to_vec(),
            });
        }
    }
    let oh = out_size(
        "conv2d",
        h,
        kh,
        opts.stride.0,
        opts.padding.0,
        opts.dilation.0,
    )?;
    let ow = out_size(
        "conv2d",
        w,
        kw,
        opts.stride.1,
        opts.padding.1,
        opts.dilation.1,
    )?;
    let g = Geo {
        c,
        h,
        w,
        kh,
        kw,
        oh,
        ow,
        o: opts,
    };
    let (l, ck) = (oh * ow, c * kh * kw);
    let xd = x.contig();
    let wd = weight.contig();
    let bd = bias.map(|b| b.contig());
    let mut out = vec![0f32; n * o * l];
    for ni in 0..n {
        let cols = g.im2col(&xd[ni * c * h * w..(ni + 1) * c * h * w]);
        let dst = &mut out[ni * o * l..(ni + 1) * o * l];
        if let Some(b) = &bd {
            for (oi, row) in dst.chunks_exact_mut(l.max(1)).enumerate() {
                row.iter_mut().for_each(|v| *v = b[oi]);
            }
        }
        // SAFETY: dst is o x l; w is o x ck; cols is ck x l.
        unsafe {
            gemm_into(
                o,
                l,
                ck,
                dst.as_mut_ptr(),
                l,
                bd.is_some(),
                MatRef::new(&wd, 0, ck, 1),
                MatRef::new(&cols, 0, l, 1),
                par(true),
            )
        };
    }
    let mut parents = vec![x, weight];
    if let Some(b) = bias {
        parents.push(b);
    }
    let has_b = bias.is_some();
    Ok(Tensor::from_op(
        out,
        vec![n, o, oh, ow],
        &parents,
        "conv2d",
        move |gy, needs| {
            let mut gx = needs[0].then(|| vec![0f32; n * c * h * w]);
            let mut gw = vec![0f32; o * ck];
            let mut gb = vec![0f32; o];
            for ni in 0..n {
                let gyn = &gy[ni * o * l..(ni + 1) * o * l];
                let gm = MatRef::new(gyn, 0, l, 1);
                if needs[1] {
                    let cols = g.im2col(&xd[ni * c * h * w..(ni + 1) * c * h * w]);
                    // SAFETY: gw is o x ck; gy_n is o x l; cols^T is l x ck.
                    unsafe {
                        gemm_into(
                            o,
                            ck,
                            l,
                            gw.as_mut_ptr(),
                            ck,
                            true,
                            gm,
                            MatRef::new(&cols, 0, l, 1).t(),
                            par(true),
                        )
                    };
                }
                if let Some(gx) = gx.as_mut() {
                    let dcols = gemm_new(ck, l, o, MatRef::new(&wd, 0, ck, 1).t(), gm);
                    g.col2im(&dcols, &mut gx[ni * c * h * w..(ni + 1) * c * h * w]);
                }
                if has_b {
                    for (oi, row) in gyn.chunks_exact(l.max(1)).enumerate() {
                        gb[oi] += row.iter().sum::<f32>();
                    }
                }
            }
            let mut res = vec![gx, needs[1].then_some(gw)];
            if has_b {
                res.push(Some(gb));
            }
            Ok(res)
        },
    ))
}

fn pool2d(x: &Tensor, k: (usize, usize), opts: Conv2dOpts, max: bool) -> Result<Tensor> {
    let op = if max { "max_pool2d" } else { "avg_pool2d" };
    let [n, c, h, w] = x.dims::<4>(op)?;
    let oh = out_size(op, h, k.0, opts.stride.0, opts.padding.0, opts.dilation.0)?;
    let ow = out_size(op, w, k.1, opts.stride.1, opts.padding.1, opts.dilation.1)?;
    // PyTorch's limit: padding at most half the kernel size (undilated)
    for (p, k) in [(opts.padding.0, k.0), (opts.padding.1, k.1)] {
        if p > k / 2 {
            return invalid(
                op,
                format!("padding {p} is more than half the kernel size {k}"),
            );
        }
    }
    let g = Geo {
        c: 1,
        h,
        w,
        kh: k.0,
        kw: k.1,
        oh,
        ow,
        o: opts,
    };
    let xd = x.contig();
    let planes = n * c;
    let mut out = vec![0f32; planes * oh * ow];
    // For max: the flat input index of the winner; for avg: unused.
    let mut arg = vec![usize::MAX; if max { out.len() } else { 0 }];
    let taps = (k.0 * k.1) as f32;
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let oi = (p * oh + oy) * ow + ox;
                let mut best = f32::NEG_INFINITY;
                let mut sum = 0f32;
                for ky in 0..k.0 {
                    for kx in 0..k.1 {
                        if let Some((y, xx)) = g.src(oy, ox, ky, kx) {
                            let ii = (p * h + y) * w + xx;
                            let v = xd[ii];
                            // NaN propagates, as in PyTorch
                            let nan = v.is_nan() && !best.is_nan();
                            if max && (v > best || arg[oi] == usize::MAX || nan) {
                                best = v;
                                arg[oi] = ii;
                            }
                            sum += v;
                        }
                    }
                }
                // avg counts padded zeros (PyTorch's count_include_pad=True default)
                out[oi] = if max { best } else { sum / taps };
            }
        }
    }
    Ok(Tensor::from_op(
        out,
        vec![n, c, oh, ow],
        &[x],
        op,
        move |gy, _| {
            let mut gx = vec![0f32; planes * h * w];
            if max {
                for (oi, &ii) in arg.iter().enumerate() {
                    if ii != usize::MAX {
                        gx[ii] += gy[oi];
                    }
                }
            } else {
                for p in 0..planes {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let gv = gy[(p * oh + oy) * ow + ox] / taps;
                            for ky in 0..k.0 {
                                for kx in 0..k.1 {
                                    if let Some((y, xx)) = g.src(oy, ox, ky, kx) {
                                        gx[(p * h + y) * w + xx] += gv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(vec![Some(gx)])
        },
    ))
}

/// Max pooling over `kernel` windows of `x` `(N, C, H, W)`; padding counts as `-inf` and may
/// be at most half the kernel size, as in PyTorch; a NaN in a window gives NaN.
pub fn max_pool2d(x: &Tensor, kernel: (usize, usize), opts: Conv2dOpts) -> Result<Tensor> {
    pool2d(x, kernel, opts, true)
}

/// Average pooling over `kernel` windows (dilation must be 1; padding at most half the
/// kernel; padded zeros are counted, as PyTorch's default `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, kernel: (usize, usize), opts: Conv2dOpts) -> Result<Tensor> {
    if opts.dilation != (1, 1) {
        return invalid("avg_pool2d", "dilation is not supported (as in PyTorch)");
    }
    pool2d(x, kernel, opts, false)
}
