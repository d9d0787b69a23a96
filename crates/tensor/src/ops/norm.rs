//! Fused layer norm and RMS norm over the last dim.
//!
//! Forward keeps only the per-row statistics (mean and 1/std, or 1/rms); backward recomputes
//! the normalised input from them. Rows run in parallel; weight/bias gradients are summed per
//! chunk of rows and then across chunks.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::math;
use crate::tensor::Tensor;

/// Rows per parallel task.
const ROWS: usize = 32;

fn check_param(op: &'static str, p: Option<&Tensor>, c: usize) -> Result<()> {
    if let Some(p) = p {
        if p.shape() != [c] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![c],
                rhs: p.shape().to_vec(),
            });
        }
    }
    Ok(())
}

fn last_dim(x: &Tensor, op: &'static str) -> Result<usize> {
    match x.shape().last() {
        Some(&c) if c > 0 => Ok(c),
        _ => Err(Error::Invalid {
            op,
            msg: format!("needs a last dim of size > 0, got shape {:?}", x.shape()),
        }),
    }
}

/// Sums per-chunk partial vectors.
fn sum_partials(parts: Vec<Vec<f32>>, c: usize) -> Vec<f32> {
    let mut acc = vec![0f32; c];
    for p in parts {
        for (a, b) in acc.iter_mut().zip(&p) {
            *a += b;
        }
    }
    acc
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dim (PyTorch's `LayerNorm`).
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    let c = last_dim(x, "layer_norm")?;
    check_param("layer_norm", weight, c)?;
    check_param("layer_norm", bias, c)?;
    let xd = x.contig();
    let w: Vec<f32> = weight.map_or_else(|| vec![1.0; c], |w| w.to_vec());
    let b: Vec<f32> = bias.map_or_else(|| vec![0.0; c], |b| b.to_vec());
    let rows = x.numel() / c;
    let mut y = super::alloc_out(x.numel());
    let mut stats = vec![(0f32, 0f32); rows];
    y.par_chunks_mut(c * ROWS)
        .zip(stats.par_chunks_mut(ROWS))
        .enumerate()
        .for_each(|(k, (yc, sc))| {
            for (r, (yr, st)) in yc.chunks_exact_mut(c).zip(sc.iter_mut()).enumerate() {
                let xr = &xd[(k * ROWS + r) * c..(k * ROWS + r + 1) * c];
                let mean = math::sum(xr) / c as f32;
                let var = math::sum_sq_dev(xr, mean) / c as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                *st = (mean, rstd);
                let (yr, w, b) = (&mut yr[..c], &w[..c], &b[..c]);
                for i in 0..c {
                    yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
    let mut parents = vec![x];
    if let Some(w) = weight {
        parents.push(w);
    }
    if let Some(b) = bias {
        parents.push(b);
    }
    let has_w = weight.is_some();
    let has_b = bias.is_some();
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        &parents,
        "layer_norm",
        move |g: Vec<f32>, needs| {
            let g = &g[..];
            let mut gx = super::alloc_out(g.len());
            let partial: Vec<(Vec<f32>, Vec<f32>)> = gx
                .par_chunks_mut(c * ROWS)
                .enumerate()
                .map(|(k, gxc)| {
                    let mut dw = vec![0f32; c];
                    let mut db = vec![0f32; c];
                    let mut xh = vec![0f32; c];
                    let mut dxh = vec![0f32; c];
                    for (r, gxr) in gxc.chunks_exact_mut(c).enumerate() {
                        let row = k * ROWS + r;
                        let (mean, rstd) = stats[row];
                        let xr = &xd[row * c..(row + 1) * c];
                        let gr = &g[row * c..(row + 1) * c];
                        let (xh, dxh, w) = (&mut xh[..c], &mut dxh[..c], &w[..c]);
                        let (dw, db, gxr) = (&mut dw[..c], &mut db[..c], &mut gxr[..c]);
                        for i in 0..c {
                            xh[i] = (xr[i] - mean) * rstd;
                            dxh[i] = gr[i] * w[i];
                            dw[i] += gr[i] * xh[i];
                            db[i] += gr[i];
                        }
                        let m1 = math::sum(dxh) / c as f32;
                        let m2 = math::dot(dxh, xh) / c as f32;
                        for i in 0..c {
                            gxr[i] = rstd * (dxh[i] - m1 - xh[i] * m2);
                        }
                    }
                    (dw, db)
                })
                .collect();
            let (dws, dbs): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
            let mut out = vec![needs[0].then_some(gx)];
            if has_w {
                out.push(Some(sum_partials(dws, c)));
            }
            if has_b {
                out.push(Some(sum_partials(dbs, c)));
            }
            Ok(out)
        },
    ))
}

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dim (LLaMA/DeepSeek `RMSNorm`).
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = last_dim(x, "rms_norm")?;
    check_param("rms_norm", weight, c)?;
    let xd = x.contig();
    let w: Vec<f32> = weight.map_or_else(|| vec![1.0; c], |w| w.to_vec());
    let rows = x.numel() / c;
    let mut y = super::alloc_out(x.numel());
    let mut rr = vec![0f32; rows];
    y.par_chunks_mut(c * ROWS)
        .zip(rr.par_chunks_mut(ROWS))
        .enumerate()
        .for_each(|(k, (yc, rc))| {
            for (r, (yr, st)) in yc.chunks_exact_mut(c).zip(rc.iter_mut()).enumerate() {
                let xr = &xd[(k * ROWS + r) * c..(k * ROWS + r + 1) * c];
                let ms = math::dot(xr, xr) / c as f32;
                let rrms = 1.0 / (ms + eps).sqrt();
                *st = rrms;
                let (yr, w) = (&mut yr[..c], &w[..c]);
                for i in 0..c {
                    yr[i] = xr[i] * rrms * w[i];
                }
            }
        });
    let mut parents = vec![x];
    if let Some(w) = weight {
        parents.push(w);
    }
    let has_w = weight.is_some();
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        &parents,
        "rms_norm",
        move |g: Vec<f32>, needs| {
            let g = &g[..];
            let mut gx = super::alloc_out(g.len());
            let dws: Vec<Vec<f32>> = gx
                .par_chunks_mut(c * ROWS)
                .enumerate()
                .map(|(k, gxc)| {
                    let mut dw = vec![0f32; c];
                    let mut xh = vec![0f32; c];
                    let mut dxh = vec![0f32; c];
                    for (r, gxr) in gxc.chunks_exact_mut(c).enumerate() {
                        let row = k * ROWS + r;
                        let rrms = rr[row];
                        let xr = &xd[row * c..(row + 1) * c];
                        let gr = &g[row * c..(row + 1) * c];
                        let (xh, dxh, w) = (&mut xh[..c], &mut dxh[..c], &w[..c]);
                        let (dw, gxr) = (&mut dw[..c], &mut gxr[..c]);
                        for i in 0..c {
                            xh[i] = xr[i] * rrms;
                            dxh[i] = gr[i] * w[i];
                            dw[i] += gr[i] * xh[i];
                        }
                        let m2 = math::dot(dxh, xh) / c as f32;
                        for i in 0..c {
                            gxr[i] = rrms * (dxh[i] - xh[i] * m2);
                        }
                    }
                    dw
                })
                .collect();
            let mut out = vec![needs[0].then_some(gx)];
            if has_w {
                out.push(Some(sum_partials(dws, c)));
            }
            Ok(out)
        },
    ))
}
