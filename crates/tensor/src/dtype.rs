//! Number formats: bf16, f16 and the two FP8 formats of the OCP 8-bit floating point spec,
//! with round-to-nearest-even and saturation.
//!
//! Compute is f32; these formats are for storage (safetensors) and for emulating low-precision
//! training ([`Tensor::quantize_roundtrip`]: what DeepSeek-V3's FP8 GEMM inputs see).
//!
//! - E4M3 ("fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; `S.1111.111`
//!   is NaN; largest finite 448; smallest subnormal 2^-9.
//! - E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits; IEEE-like with infinities and NaNs;
//!   largest finite 57344; smallest subnormal 2^-16.
//!
//! Conversions to FP8 saturate: finite values (and infinities) beyond the largest finite value
//! become that value with the same sign; NaN stays NaN.

use crate::tensor::Tensor;

/// Element formats known to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32 (compute format).
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// FP8 E4M3, "fn" variant (finite, max 448).
    F8E4M3,
    /// FP8 E5M2 (max 57344).
    F8E5M2,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 | DType::F8E5M2 => 1,
        }
    }
    /// Largest finite value.
    pub fn max_finite(self) -> f32 {
        match self {
            DType::F32 => f32::MAX,
            DType::F16 => 65504.0,
            DType::BF16 => half::bf16::MAX.to_f32(),
            DType::F8E4M3 => 448.0,
            DType::F8E5M2 => 57344.0,
        }
    }
}

struct Fp8 {
    mbits: i32,
    bias: i32,
    max: f64,
    /// E5M2 has infinities and several NaN codes; E4M3fn only `S.1111.111` NaN.
    ieee: bool,
}

const E4M3: Fp8 = Fp8 {
    mbits: 3,
    bias: 7,
    max: 448.0,
    ieee: false,
};
const E5M2: Fp8 = Fp8 {
    mbits: 2,
    bias: 15,
    max: 57344.0,
    ieee: true,
};

/// Rounds to the nearest integer, ties to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

fn fp8_encode(f: &Fp8, x: f32) -> u8 {
    let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return 0x7F | sign; // a NaN code in both formats
    }
    let a = (x as f64).abs();
    if a >= f.max {
        // saturate (also infinities)
        return sign | fp8_bits(f, f.max);
    }
    let min_normal_exp = 1 - f.bias;
    let e = if a == 0.0 {
        min_normal_exp
    } else {
        (a.log2().floor() as i32).max(min_normal_exp)
    };
    let quantum = 2f64.powi(e - f.mbits);
    let q = round_half_even(a / quantum) * quantum;
    if q >= f.max {
        return sign | fp8_bits(f, f.max);
    }
    sign | fp8_bits(f, q)
}

/// Bits (without sign) of a non-negative value exactly representable in the format.
fn fp8_bits(f: &Fp8, q: f64) -> u8 {
    if q == 0.0 {
        return 0;
    }
    let min_normal = 2f64.powi(1 - f.bias);
    if q < min_normal {
        let m = (q / 2f64.powi(1 - f.bias - f.mbits)).round() as u8;
        return m;
    }
    let mut e = q.log2().floor() as i32;
    // guard against log2 rounding at binade edges
    if 2f64.powi(e) > q {
        e -= 1;
    } else if 2f64.powi(e + 1) <= q {
        e += 1;
    }
    let m = ((q / 2f64.powi(e) - 1.0) * 2f64.powi(f.mbits)).round() as u8;
    (((e + f.bias) as u8) << f.mbits) | m
}

fn fp8_decode(f: &Fp8, b: u8) -> f32 {
    let sign: f64 = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let ebits = 7 - f.mbits;
    let e = ((b & 0x7F) >> f.mbits) as i32;
    let m = (b & ((1 << f.mbits) - 1)) as i32;
    let emax = (1 << ebits) - 1;
    if f.ieee && e == emax {
        return if m == 0 {
            sign as f32 * f32::INFINITY
        } else {
            f32::NAN
        };
    }
    if !f.ieee && e == emax && m == (1 << f.mbits) - 1 {
        return f32::NAN;
    }
    let v = if e == 0 {
        m as f64 * 2f64.powi(1 - f.bias - f.mbits)
    } else {
        (1.0 + m as f64 / (1 << f.mbits) as f64) * 2f64.powi(e - f.bias)
    };
    (sign * v) as f32
}

/// f32 to FP8 E4M3fn bits (round-to-nearest-even, saturating).
pub fn f32_to_e4m3(x: f32) -> u8 {
    fp8_encode(&E4M3, x)
}
/// FP8 E4M3fn bits to f32.
pub fn e4m3_to_f32(b: u8) -> f32 {
    fp8_decode(&E4M3, b)
}
/// f32 to FP8 E5M2 bits (round-to-nearest-even, saturating).
pub fn f32_to_e5m2(x: f32) -> u8 {
    fp8_encode(&E5M2, x)
}
/// FP8 E5M2 bits to f32.
pub fn e5m2_to_f32(b: u8) -> f32 {
    fp8_decode(&E5M2, b)
}

/// Encodes f32 values into little-endian bytes of `dtype`.
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::F8E4M3 => values.iter().map(|&v| f32_to_e4m3(v)).collect(),
        DType::F8E5M2 => values.iter().map(|&v| f32_to_e5m2(v)).collect(),
    }
}

/// Decodes little-endian bytes of `dtype` into f32 values (a trailing partial element is
/// ignored; callers check the length).
pub fn decode(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F8E4M3 => {
            let table: Vec<f32> = (0..=255u8).map(e4m3_to_f32).collect();
            bytes.iter().map(|&b| table[b as usize]).collect()
        }
        DType::F8E5M2 => {
            let table: Vec<f32> = (0..=255u8).map(e5m2_to_f32).collect();
            bytes.iter().map(|&b| table[b as usize]).collect()
        }
    }
}

/// The value `x` takes after a round trip through `dtype`.
pub fn round_to(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        DType::F8E4M3 => e4m3_to_f32(f32_to_e4m3(x)),
        DType::F8E5M2 => e5m2_to_f32(f32_to_e5m2(x)),
    }
}

impl Tensor {
    /// Rounds every element through `dtype` and back (fake quantisation). The gradient passes
    /// straight through (identity), as in quantisation-aware and FP8-emulated training.
    pub fn quantize_roundtrip(&self, dtype: DType) -> Tensor {
        let y = super::ops::map1(&self.contig(), move |v| round_to(v, dtype));
        Tensor::from_op(
            y,
            self.shape().to_vec(),
            &[self],
            "quantize_roundtrip",
            |g: Vec<f32>, _| Ok(vec![Some(g)]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code point of both FP8 formats decodes to the value its bit fields define and
    /// re-encodes to itself.
    #[test]
    fn fp8_every_code_point_round_trips() {
        for (f, enc, dec) in [
            (
                &E4M3,
                f32_to_e4m3 as fn(f32) -> u8,
                e4m3_to_f32 as fn(u8) -> f32,
            ),
            (&E5M2, f32_to_e5m2, e5m2_to_f32),
        ] {
            for b in 0..=255u8 {
                let v = dec(b);
                // independent definition from the bit fields
                let s = if b & 0x80 != 0 { -1f64 } else { 1f64 };
                let e = ((b & 0x7F) >> f.mbits) as i32;
                let m = (b & ((1 << f.mbits) - 1)) as f64;
                let emax = (1 << (7 - f.mbits)) - 1;
                let nan = if f.ieee {
                    e == emax && m != 0.0
                } else {
                    b & 0x7F == 0x7F
                };
                if nan {
                    assert!(v.is_nan(), "code {b:#04x} should be NaN");
                    assert!(dec(enc(v)).is_nan());
                    continue;
                }
                if f.ieee && e == emax {
                    assert_eq!(v, s as f32 * f32::INFINITY);
                    continue;
                }
                let want = if e == 0 {
                    s * m * 2f64.powi(1 - f.bias - f.mbits)
                } else {
                    s * (1.0 + m / (1 << f.mbits) as f64) * 2f64.powi(e - f.bias)
                };
                assert_eq!(v as f64, want, "code {b:#04x}");
                assert_eq!(enc(v), b, "code {b:#04x} value {v}");
            }
        }
    }

    #[test]
    fn fp8_limits_and_saturation() {
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e5m2_to_f32(0x7B), 57344.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e5m2_to_f32(0x01), 2f32.powi(-16));
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1e6)), 448.0);
        assert_eq!(e4m3_to_f32(f32_to_e4m3(-500.0)), -448.0);
        assert_eq!(e4m3_to_f32(f32_to_e4m3(f32::INFINITY)), 448.0);
        assert_eq!(e5m2_to_f32(f32_to_e5m2(1e9)), 57344.0);
        assert!(e4m3_to_f32(f32_to_e4m3(f32::NAN)).is_nan());
        // below half the smallest subnormal: zero
        assert_eq!(e4m3_to_f32(f32_to_e4m3(2f32.powi(-11))), 0.0);
    }

    #[test]
    fn fp8_rounds_to_nearest_even() {
        // E4M3 around 1: spacing 1/8. 1 + 1/16 is a tie between 1 (even) and 1.125.
        assert_eq!(round_to(1.0 + 1.0 / 16.0, DType::F8E4M3), 1.0);
        // 1.125 + 1/16 ties between 1.125 (odd mantissa 001) and 1.25 (even 010)
        assert_eq!(round_to(1.125 + 1.0 / 16.0, DType::F8E4M3), 1.25);
        assert_eq!(round_to(1.0 + 0.07, DType::F8E4M3), 1.125);
        // E5M2 around 1: spacing 1/4; 1.125 ties to 1.0
        assert_eq!(round_to(1.125, DType::F8E5M2), 1.0);
        assert_eq!(round_to(1.375, DType::F8E5M2), 1.5);
        // subnormal tie in E4M3: 1.5 * 2^-9 ties between 2^-9 (odd) and 2^-8 (even)
        assert_eq!(round_to(1.5 * 2f32.powi(-9), DType::F8E4M3), 2f32.powi(-8));
    }

    #[test]
    fn half_formats_round_trip() {
        let v = [0.0f32, 1.0, -2.5, 65504.0, 1e-3, 3.140625];
        for d in [DType::F16, DType::BF16, DType::F32] {
            let back = decode(&encode(&v, d), d);
            for (a, b) in v.iter().zip(&back) {
                assert_eq!(round_to(*a, d), *b);
            }
        }
        // bf16 keeps 8 bits of precision: 1 + 2^-8 ties to 1 (even)
        assert_eq!(round_to(1.0 + 2f32.powi(-8), DType::BF16), 1.0);
        assert_eq!(
            round_to(1.0 + 3.0 * 2f32.powi(-8), DType::BF16),
            1.0 + 2f32.powi(-6)
        );
    }
}
