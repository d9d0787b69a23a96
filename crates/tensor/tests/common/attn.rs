//! Attention test cases shared by the gradient checks and the fast-path comparisons.

use ferrolab_tensor::{AttnMask, Result, Tensor};

use super::{t, Data};

/// The mask of an attention case.
#[derive(Clone, Copy, Debug)]
pub enum Mask {
    None,
    Causal,
    /// A random additive bias of this shape, with some `-inf` entries (never a whole row).
    Additive(&'static [usize]),
}

/// Sizes and options of an attention case.
#[derive(Clone, Copy, Debug)]
pub struct AttnCase {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub t: usize,
    pub s: usize,
    pub dk: usize,
    pub dv: usize,
    pub mask: Mask,
    pub scale: Option<f32>,
    /// Inputs stored `(B, T, H, D)` and passed as transposed views.
    pub bthd: bool,
}

#[allow(clippy::too_many_arguments)] // one positional row of a case table
pub const fn case(
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    s: usize,
    dk: usize,
    dv: usize,
    mask: Mask,
) -> AttnCase {
    AttnCase {
        b,
        h,
        hkv,
        t,
        s,
        dk,
        dv,
        mask,
        scale: None,
        bthd: false,
    }
}

pub const ATTN_CASES: &[AttnCase] = &[
    case(2, 2, 2, 5, 7, 6, 4, Mask::None),
    case(2, 2, 2, 6, 6, 4, 4, Mask::Causal),
    case(1, 2, 1, 5, 9, 6, 4, Mask::Causal),
    case(1, 2, 2, 6, 4, 4, 3, Mask::Causal), // T > S: the first rows see no key
    case(2, 2, 2, 5, 7, 4, 4, Mask::Additive(&[1, 1, 5, 7])),
    case(2, 2, 1, 5, 7, 4, 5, Mask::Additive(&[2, 1, 5, 7])),
    case(1, 4, 2, 3, 5, 4, 4, Mask::Additive(&[5])),
    case(1, 4, 2, 6, 7, 6, 4, Mask::None),     // grouped-query
    case(1, 4, 2, 40, 40, 6, 4, Mask::Causal), // one row block of 40
    case(1, 2, 1, 40, 45, 4, 3, Mask::Causal),
    case(1, 2, 2, 40, 33, 4, 4, Mask::None),
    // decoding (at most two query rows: direct dot products instead of `gemm`)
    case(1, 2, 1, 1, 6, 4, 3, Mask::Causal), // one row after a cached prefix
    case(2, 2, 2, 2, 7, 4, 4, Mask::Additive(&[2, 2, 2, 7])),
    // several causal row blocks of 64; the last one of 2 rows takes the direct path
    case(1, 1, 1, 66, 66, 3, 2, Mask::Causal),
    case(1, 2, 1, 70, 73, 3, 2, Mask::Causal), // with a cached prefix
    AttnCase {
        scale: Some(0.3),
        bthd: true,
        ..case(2, 4, 2, 5, 6, 4, 6, Mask::None)
    },
    AttnCase {
        bthd: true,
        ..case(1, 4, 4, 37, 37, 4, 4, Mask::Causal)
    },
];

/// Query, key and value inputs of a case (stored `(B, T, H, D)` when `bthd`).
pub fn attn_inputs(c: &AttnCase, d: &mut Data) -> Vec<Tensor> {
    let shape = |h: usize, t: usize, dd: usize| {
        if c.bthd {
            vec![c.b, t, h, dd]
        } else {
            vec![c.b, h, t, dd]
        }
    };
    vec![
        d.randn(&shape(c.h, c.t, c.dk)),
        d.randn(&shape(c.hkv, c.s, c.dk)),
        d.randn(&shape(c.hkv, c.s, c.dv)),
    ]
}

/// The additive mask of a case, if any: normal noise with every third entry `-inf`, except
/// the first key (so no row is fully masked).
pub fn attn_mask(c: &AttnCase, d: &mut Data) -> Option<Tensor> {
    let Mask::Additive(shape) = c.mask else {
        return None;
    };
    Some(noise_mask(d, shape))
}

/// Normal noise of `shape` with every third entry `-inf`, except in the first key column (so
/// no row is fully masked): an additive attention mask.
pub fn noise_mask(d: &mut Data, shape: &[usize]) -> Tensor {
    let last = *shape.last().unwrap();
    let mut m = d.randn(shape).to_vec();
    for (i, v) in m.iter_mut().enumerate() {
        if i % 3 == 1 && i % last != 0 {
            *v = f32::NEG_INFINITY;
        }
    }
    t(m, shape)
}

pub fn as_bhtd(c: &AttnCase, x: &Tensor) -> Result<Tensor> {
    if c.bthd {
        x.transpose(1, 2)
    } else {
        Ok(x.clone())
    }
}

pub fn attn_mask_of<'a>(c: &AttnCase, m: &'a Option<Tensor>) -> AttnMask<'a> {
    match (c.mask, m) {
        (Mask::Causal, _) => AttnMask::Causal,
        (Mask::Additive(_), Some(m)) => AttnMask::Additive(m),
        _ => AttnMask::None,
    }
}
