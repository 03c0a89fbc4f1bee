//! The AVX-512 intrinsics our dot-product kernels use ([`super::int8_gemm`], [`super::bf16_gemm`]),
//! written portably with the same names and signatures, so tests compile the kernels' own code
//! against them and run it on any CPU (most test machines have no VNNI or AVX512-BF16).
//!
//! Each function computes what Intel's pseudo-code for its instruction says, lane by lane, on
//! little-endian lanes, so `transmute`s between vector types mean what they mean on hardware.
//! Where the CPU has the instructions, tests hold the emulated kernels equal to the native ones.
//! Only for tests: a kernel's speed is the native one's business.
#![allow(non_camel_case_types)]

/// A mask, one bit a 32-bit lane.
pub type __mmask16 = u16;

/// 16 i32 lanes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct __m512i([i32; 16]);

/// 16 f32 lanes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct __m512([f32; 16]);

/// 32 bf16 lanes (their bits).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct __m512bh([u16; 32]);

/// 16 bf16 lanes (their bits).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct __m256bh([u16; 16]);

/// 8 i32 lanes.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct __m256i([i32; 8]);

fn lane_set(mask: __mmask16, lane: usize) -> bool {
    mask >> lane & 1 == 1
}

/// # Safety
/// `p` is readable for the 16 floats whose mask bit is set.
pub unsafe fn _mm512_maskz_loadu_ps(mask: __mmask16, p: *const f32) -> __m512 {
    // SAFETY: only the lanes the mask selects are read.
    __m512(std::array::from_fn(|i| {
        if lane_set(mask, i) {
            unsafe { p.add(i).read_unaligned() }
        } else {
            0.0
        }
    }))
}

/// # Safety
/// `p` is readable for 16 floats.
pub unsafe fn _mm512_loadu_ps(p: *const f32) -> __m512 {
    // SAFETY: as the caller promises.
    unsafe { _mm512_maskz_loadu_ps(u16::MAX, p) }
}

/// # Safety
/// `p` is readable for the 16 i32 whose mask bit is set.
pub unsafe fn _mm512_maskz_loadu_epi32(mask: __mmask16, p: *const i32) -> __m512i {
    // SAFETY: only the lanes the mask selects are read.
    __m512i(std::array::from_fn(|i| {
        if lane_set(mask, i) {
            unsafe { p.add(i).read_unaligned() }
        } else {
            0
        }
    }))
}

/// # Safety
/// `p` is readable for 64 bytes.
pub unsafe fn _mm512_loadu_si512(p: *const __m512i) -> __m512i {
    // SAFETY: as the caller promises.
    unsafe { _mm512_maskz_loadu_epi32(u16::MAX, p.cast()) }
}

/// # Safety
/// `p` is writable for the 16 floats whose mask bit is set.
pub unsafe fn _mm512_mask_storeu_ps(p: *mut f32, mask: __mmask16, a: __m512) {
    for (i, &v) in a.0.iter().enumerate() {
        if lane_set(mask, i) {
            // SAFETY: only the lanes the mask selects are written.
            unsafe { p.add(i).write_unaligned(v) };
        }
    }
}

/// # Safety
/// `p` is writable for the 16 i32 whose mask bit is set.
pub unsafe fn _mm512_mask_storeu_epi32(p: *mut i32, mask: __mmask16, a: __m512i) {
    for (i, &v) in a.0.iter().enumerate() {
        if lane_set(mask, i) {
            // SAFETY: only the lanes the mask selects are written.
            unsafe { p.add(i).write_unaligned(v) };
        }
    }
}

/// # Safety
/// `p` is writable for 32 bytes.
pub unsafe fn _mm256_storeu_si256(p: *mut __m256i, a: __m256i) {
    // SAFETY: as the caller promises.
    unsafe { p.write_unaligned(a) }
}

pub fn _mm512_setzero_si512() -> __m512i {
    __m512i([0; 16])
}

pub fn _mm512_set1_epi32(v: i32) -> __m512i {
    __m512i([v; 16])
}

pub fn _mm512_set1_ps(v: f32) -> __m512 {
    __m512([v; 16])
}

pub fn _mm512_sub_epi32(a: __m512i, b: __m512i) -> __m512i {
    __m512i(std::array::from_fn(|i| a.0[i].wrapping_sub(b.0[i])))
}

/// The low 32 bits of each product.
pub fn _mm512_mullo_epi32(a: __m512i, b: __m512i) -> __m512i {
    __m512i(std::array::from_fn(|i| a.0[i].wrapping_mul(b.0[i])))
}

pub fn _mm512_mul_ps(a: __m512, b: __m512) -> __m512 {
    __m512(std::array::from_fn(|i| a.0[i] * b.0[i]))
}

/// a · b + c with one rounding.
pub fn _mm512_fmadd_ps(a: __m512, b: __m512, c: __m512) -> __m512 {
    __m512(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
}

/// Rounded to nearest even (MXCSR's default).
pub fn _mm512_cvtepi32_ps(a: __m512i) -> __m512 {
    __m512(a.0.map(|v| v as f32))
}

/// `vpdpbusd`: each lane adds the four products of a's unsigned bytes and b's signed bytes of
/// the same lane to src, wrapping (no saturation).
pub fn _mm512_dpbusd_epi32(src: __m512i, a: __m512i, b: __m512i) -> __m512i {
    __m512i(std::array::from_fn(|i| {
        let (a, b) = (a.0[i].to_le_bytes(), b.0[i].to_le_bytes());
        (0..4).fold(src.0[i], |sum, j| {
            sum.wrapping_add(i32::from(a[j]) * i32::from(b[j] as i8))
        })
    }))
}

/// A bf16's value with denormals read as zero, as the bf16 instructions read them.
fn bf16_value(bits: u16) -> f32 {
    let value = f32::from_bits(u32::from(bits) << 16);
    if value.is_subnormal() {
        0.0f32.copysign(value)
    } else {
        value
    }
}

/// `vdpbf16ps`: src + a[2i+1]·b[2i+1], then + a[2i]·b[2i], in each lane (Intel's order; a bf16
/// product is exact in f32).
pub fn _mm512_dpbf16_ps(src: __m512, a: __m512bh, b: __m512bh) -> __m512 {
    __m512(std::array::from_fn(|i| {
        let product = |j: usize| bf16_value(a.0[j]) * bf16_value(b.0[j]);
        (src.0[i] + product(2 * i + 1)) + product(2 * i)
    }))
}

/// `vcvtneps2bf16`: each lane rounded to the nearest bf16 (ties to even; denormals to zero; a
/// NaN stays a quiet NaN).
pub fn _mm512_cvtneps_pbh(a: __m512) -> __m256bh {
    __m256bh(a.0.map(|v| {
        let v = if v.is_subnormal() {
            0.0f32.copysign(v)
        } else {
            v
        };
        half::bf16::from_f32(v).to_bits()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_products_follow_the_instructions_definitions() {
        // Bytes (low first): a = 255, 1, 2, 3 unsigned; b = -128, 127, -1, 2 signed.
        let a = _mm512_set1_epi32(i32::from_le_bytes([255, 1, 2, 3]));
        let b = _mm512_set1_epi32(i32::from_le_bytes([0x80, 127, 0xFF, 2]));
        let sum = _mm512_dpbusd_epi32(_mm512_set1_epi32(10), a, b);
        assert_eq!(sum.0, [10 + 255 * -128 + 127 - 2 + 6; 16]);
        // bf16 pairs (1.5, -2) · (4, 0.25): 6 − 0.5, added to 1.
        let pair = |low: f32, high: f32| {
            let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
            bits(low) | bits(high) << 16
        };
        let transmute = |word: u32| -> __m512bh {
            // SAFETY: both types are 64 plain bytes.
            unsafe { std::mem::transmute(_mm512_set1_epi32(word as i32)) }
        };
        let dot = _mm512_dpbf16_ps(
            _mm512_set1_ps(1.0),
            transmute(pair(1.5, -2.0)),
            transmute(pair(4.0, 0.25)),
        );
        assert_eq!(dot.0, [6.5; 16]);
    }
}
