//! bf16 matrix products with f32 accumulation on AVX512-BF16 (`vdpbf16ps`): y = x·W + b for a
//! weight rounded to bf16 and packed once at load, the activations rounded per product (round to
//! nearest even, `vcvtneps2bf16`).
//!
//! `vdpbf16ps` adds, in each f32 lane, the two products of a pair of bf16 values: twice the
//! multiply-adds of an f32 FMA per instruction. The weight's words are k-pairs, the even row in
//! the low half; the blocking is [`super::packed_gemm`]'s. CPUs without AVX512-BF16 are not
//! served here: [`available`] says so and the caller keeps the exact emulation (operands
//! rounded to bf16, multiplied on the f32 kernels). Tests also run the conversion's and the
//! kernel's code against emulated intrinsics ([`super::avx512_emulation`]), so machines without
//! AVX512-BF16 test it too.

use rayon::prelude::*;

use super::packed_gemm::{
    has_avx512_base, Intrinsics, Output, PackedPanels, Slice, Tile, TileKernel, PANEL_COLUMNS,
};
use super::product::Threads;

/// Whether this CPU runs [`PackedBf16::forward`] (AVX-512 F/BW/VL and BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx512_base() && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `value`'s bf16 bits, rounded to nearest even (as `vcvtneps2bf16` and `half` compute them; a
/// NaN stays a quiet NaN), in the low half. Branch-free, so packing loops vectorise.
#[inline(always)]
fn bf16_bits(value: f32) -> u32 {
    let bits = value.to_bits();
    // Wrapping: a NaN with the sign bit may carry out of 32 bits; it takes the other branch.
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x40;
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        quiet_nan
    } else {
        rounded
    }
}

/// Two bf16 values as one word, the first in the low half (as `vdpbf16ps` pairs them).
#[inline(always)]
fn pair(first: f32, second: f32) -> u32 {
    bf16_bits(first) | (bf16_bits(second) << 16)
}

/// A `[d_in, d_out]` weight rounded to bf16 and packed in k-pairs.
pub struct PackedBf16 {
    panels: PackedPanels,
}

impl PackedBf16 {
    /// Packs a row-major `[d_in, d_out]` weight.
    pub fn new(weight: &[f32], d_in: usize, d_out: usize) -> Self {
        assert_eq!(weight.len(), d_in * d_out, "bf16 packing: weight shape");
        let at = |k: usize, c: usize| if k < d_in { weight[k * d_out + c] } else { 0.0 };
        let word = |k, c| pair(at(k, c), at(k + 1, c));
        PackedBf16 {
            panels: PackedPanels::new(d_in, d_out, 2, word),
        }
    }

    /// Packs the `[d_in, d_out]` matrix whose row k is `row(k)` (`d_out` values): a head's
    /// values in p·v. Single-threaded (it runs inside a head's task); only called where
    /// [`available`] holds.
    pub fn from_rows<'a>(d_in: usize, d_out: usize, row: impl Fn(usize) -> &'a [f32]) -> Self {
        assert!(available(), "bf16 packing needs AVX512-BF16");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` was checked above.
        let panels = unsafe { x86::pack_rows(d_in, d_out, &row) };
        #[cfg(not(target_arch = "x86_64"))]
        let panels = pack_rows(d_in, d_out, &row);
        PackedBf16 { panels }
    }

    /// Packs the `[d_in, d_out]` matrix whose column c is `column(c)` (`d_in` values): a head's
    /// keys in q·kᵀ. Single-threaded (it runs inside a head's task); only called where
    /// [`available`] holds.
    pub fn from_columns<'a>(
        d_in: usize,
        d_out: usize,
        column: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        assert!(available(), "bf16 packing needs AVX512-BF16");
        let mut panels = PackedPanels::zeroed(d_in, d_out, 2);
        let mut words = vec![0u32; panels.depth];
        for c in 0..d_out {
            let (panel, j) = (c / PANEL_COLUMNS, c % PANEL_COLUMNS);
            convert_row(column(c), &mut words);
            let out = panels.panel_mut(panel);
            for (w, &word) in words.iter().enumerate() {
                out[w * PANEL_COLUMNS + j] = word;
            }
        }
        PackedBf16 { panels }
    }

    /// Words of depth one activation row needs (`d_in` / 2, rounded up).
    pub fn depth(&self) -> usize {
        self.panels.depth
    }

    /// a·W + b into `rows` rows of `d_out` floats at `out`'s stride, for activations already in
    /// bf16 words ([`convert_row`]; `rows × depth()`), on `threads`. Only called where
    /// [`available`] holds.
    ///
    /// # Safety
    /// `out` covers `rows` rows of `d_out` writable floats at its stride, which nothing else
    /// reads or writes during the call.
    pub unsafe fn multiply_into(
        &self,
        a: &[u32],
        rows: usize,
        bias: &[f32],
        out: Output,
        threads: Threads,
    ) {
        assert!(available(), "bf16 products need AVX512-BF16");
        assert_eq!(bias.len(), self.panels.d_out, "bf16 product: bias length");
        let kernel = Bf16Kernel {
            intrinsics: Intrinsics::Native,
            bias,
        };
        // SAFETY: passed on from the caller.
        unsafe { self.panels.multiply_into(&kernel, a, rows, out, threads) };
    }

    /// x·W + b, `[rows, d_out]`, for x `[rows, d_in]`: x rounded to bf16, products accumulated
    /// in f32. Only called where [`available`] holds.
    pub fn forward(&self, x: &[f32], bias: &[f32], rows: usize) -> Vec<f32> {
        self.forward_on(Intrinsics::Native, x, bias, rows)
    }

    /// [`Self::forward`] by the conversion's and the kernel's code compiled for `intrinsics`.
    fn forward_on(&self, intrinsics: Intrinsics, x: &[f32], bias: &[f32], rows: usize) -> Vec<f32> {
        let PackedPanels {
            d_in, d_out, depth, ..
        } = self.panels;
        assert!(
            intrinsics != Intrinsics::Native || available(),
            "bf16 products need AVX512-BF16"
        );
        assert_eq!(x.len(), rows * d_in, "bf16 product: input shape");
        assert_eq!(bias.len(), d_out, "bf16 product: bias length");
        let mut a = vec![0u32; rows * depth];
        let rows_per_task = (16_384 / depth.max(1)).max(1);
        a.par_chunks_mut(depth * rows_per_task)
            .zip(x.par_chunks(d_in * rows_per_task))
            .for_each(|(words, x)| {
                for (words, x) in words.chunks_exact_mut(depth).zip(x.chunks_exact(d_in)) {
                    convert_row_on(intrinsics, x, words);
                }
            });
        self.panels
            .multiply(&Bf16Kernel { intrinsics, bias }, &a, rows)
    }
}

/// One f32 row as bf16 words (pairs in order, an odd tail padded with 0): `words` holds
/// `x.len()` / 2 rounded up. Only called where [`available`] holds.
pub fn convert_row(x: &[f32], words: &mut [u32]) {
    convert_row_on(Intrinsics::Native, x, words);
}

/// [`convert_row`] by its code compiled for `intrinsics`.
fn convert_row_on(intrinsics: Intrinsics, x: &[f32], words: &mut [u32]) {
    assert!(
        intrinsics != Intrinsics::Native || available(),
        "bf16 conversion needs AVX512-BF16"
    );
    assert_eq!(
        words.len(),
        x.len().div_ceil(2),
        "bf16 conversion: word count"
    );
    match intrinsics {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` and the word count were checked above.
        Intrinsics::Native => unsafe { x86::convert_row(x, words) },
        #[cfg(not(target_arch = "x86_64"))]
        Intrinsics::Native => {
            unreachable!("no AVX512-BF16 off x86-64 ({} / {})", x.len(), words.len())
        }
        #[cfg(test)]
        // SAFETY: the emulation needs no instruction; the word count was checked above.
        Intrinsics::Emulated => unsafe { emulated::convert_row(x, words) },
    }
}

/// [`PackedBf16::from_rows`]'s packing: word w of column c pairs rows 2w and 2w + 1.
#[inline(always)]
fn pack_rows<'a>(d_in: usize, d_out: usize, row: &impl Fn(usize) -> &'a [f32]) -> PackedPanels {
    let mut panels = PackedPanels::zeroed(d_in, d_out, 2);
    let zeros = vec![0f32; d_out];
    for word in 0..panels.depth {
        let first = row(2 * word);
        let second = if 2 * word + 1 < d_in {
            row(2 * word + 1)
        } else {
            &zeros
        };
        for panel in 0..d_out.div_ceil(PANEL_COLUMNS) {
            let columns = panel * PANEL_COLUMNS..((panel + 1) * PANEL_COLUMNS).min(d_out);
            let out = &mut panels.panel_mut(panel)[word * PANEL_COLUMNS..];
            let pairs = first[columns.clone()].iter().zip(&second[columns]);
            for (out, (&a, &b)) in out.iter_mut().zip(pairs) {
                *out = pair(a, b);
            }
        }
    }
    panels
}

/// The tile kernel: accumulators start from the bias (first slice) or the output.
struct Bf16Kernel<'a> {
    intrinsics: Intrinsics,
    bias: &'a [f32],
}

impl TileKernel for Bf16Kernel<'_> {
    unsafe fn tile(&self, tile: &Tile, slice: Slice) {
        let bias = &self.bias[tile.first_column..tile.first_column + tile.columns];
        match self.intrinsics {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as the trait requires of the caller.
            Intrinsics::Native => unsafe { x86::tile(tile, slice, bias) },
            #[cfg(not(target_arch = "x86_64"))]
            Intrinsics::Native => {
                unreachable!("no AVX512-BF16 off x86-64 ({slice:?}, {})", bias.len())
            }
            #[cfg(test)]
            // SAFETY: the emulation needs no instruction; the pointers are as the trait says.
            Intrinsics::Emulated => unsafe { emulated::tile(tile, slice, bias) },
        }
    }
}

/// The conversion's and the tile kernel's code, given their `target_feature` attribute (none
/// for the emulation): one text for the native code ([`x86`]) and the emulated one (`emulated`,
/// in tests), in a module that brings the intrinsics into scope.
macro_rules! conversion_and_tile_kernel {
    ($(#[$feature:meta])*) => {
    use super::super::packed_gemm::{column_masks, with_tile_rows, Slice, Tile, PANEL_COLUMNS};

    /// Converts one f32 row to bf16 words (pairs in order, an odd tail padded with 0).
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 (and F, BW, VL); `words.len() == x.len().div_ceil(2)`.
    $(#[$feature])*
    pub unsafe fn convert_row(x: &[f32], words: &mut [u32]) {
        let mut chunks = x.chunks_exact(16);
        let mut out = words.chunks_exact_mut(8);
        for (chunk, out) in (&mut chunks).zip(&mut out) {
            // SAFETY: 16 floats are read and 8 words written, both in bounds.
            unsafe {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(out.as_mut_ptr().cast(), h);
            }
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mask = (1u16 << tail.len()) - 1;
            // SAFETY: the masked load reads only the tail's floats.
            let h: [u32; 8] = unsafe {
                let v = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
                std::mem::transmute(_mm512_cvtneps_pbh(v))
            };
            let rest = out.into_remainder();
            rest.copy_from_slice(&h[..rest.len()]);
        }
    }

    /// # Safety
    /// As [`super::TileKernel::tile`]; `bias` holds the tile's columns.
    pub unsafe fn tile(tile: &Tile, slice: Slice, bias: &[f32]) {
        // SAFETY: passed on from the caller.
        with_tile_rows!(tile.rows, ROWS => unsafe { tile_rows::<ROWS>(tile, slice, bias) })
    }

    /// out[r][c] = start[r][c] + Σ_w a[r][w] · b[w][c] over the tile's slice, where start is the
    /// bias on the first slice and the output after it.
    ///
    /// # Safety
    /// As [`tile`], with `tile.rows == R`.
    $(#[$feature])*
    unsafe fn tile_rows<const R: usize>(tile: &Tile, slice: Slice, bias: &[f32]) {
        let [low_mask, high_mask] = column_masks(tile.columns);
        // SAFETY: every pointer stays in the tile (see `Tile`); masked loads and stores touch
        // only the valid columns.
        unsafe {
            let mut acc: [[__m512; 2]; R] = if slice.first {
                let low = _mm512_maskz_loadu_ps(low_mask, bias.as_ptr());
                let high = _mm512_maskz_loadu_ps(high_mask, bias.as_ptr().wrapping_add(16));
                [[low, high]; R]
            } else {
                std::array::from_fn(|r| {
                    let out = tile.out.add(r * tile.out_stride);
                    [
                        _mm512_maskz_loadu_ps(low_mask, out),
                        _mm512_maskz_loadu_ps(high_mask, out.wrapping_add(16)),
                    ]
                })
            };
            for w in 0..tile.words {
                let b = tile.b.add(w * PANEL_COLUMNS);
                let b_low: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.cast()));
                let b_high: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16).cast()));
                for (r, row) in acc.iter_mut().enumerate() {
                    let word = tile.a.add(r * tile.a_stride + w).read_unaligned();
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(word as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], a, b_low);
                    row[1] = _mm512_dpbf16_ps(row[1], a, b_high);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let out = tile.out.add(r * tile.out_stride);
                _mm512_mask_storeu_ps(out, low_mask, row[0]);
                _mm512_mask_storeu_ps(out.wrapping_add(16), high_mask, row[1]);
            }
        }
    }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::pack_rows`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pack_rows<'a>(
        d_in: usize,
        d_out: usize,
        row: &impl Fn(usize) -> &'a [f32],
    ) -> super::PackedPanels {
        super::pack_rows(d_in, d_out, row)
    }

    conversion_and_tile_kernel!(#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]);
}

#[cfg(test)]
mod emulated {
    use super::super::avx512_emulation::*;

    conversion_and_tile_kernel!();
}

#[cfg(test)]
mod tests {
    use super::super::packed_gemm::{outputs_within, test_values, worst_scaled_error};
    use super::*;

    #[test]
    fn the_kernel_equals_the_product_of_rounded_operands_on_tiles_slices_and_blocks() {
        // (rows, d_in, d_out): odd depths, partial tiles and panels; several depth slices
        // (> 256 k) and row blocks (> 64 rows).
        let shapes = [(1, 3, 1), (7, 5, 33), (9, 301, 70), (130, 517, 65)];
        let rounded = |v: f32| half::bf16::from_f32(v).to_f32();
        for (rows, d_in, d_out) in shapes {
            let (x, w, bias) = (
                test_values(rows * d_in, 1),
                test_values(d_in * d_out, 2),
                test_values(d_out, 3),
            );
            // Each output with the sum of its terms' magnitudes, which bounds f32's rounding.
            let want: Vec<(f64, f64)> = (0..rows * d_out)
                .map(|i| {
                    let (r, c) = (i / d_out, i % d_out);
                    let terms = (0..d_in).map(|k| {
                        f64::from(rounded(x[r * d_in + k])) * f64::from(rounded(w[k * d_out + c]))
                    });
                    let (dot, magnitude) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                    (
                        dot + f64::from(bias[c]),
                        magnitude + f64::from(bias[c].abs()),
                    )
                })
                .collect();
            let weight = PackedBf16::new(&w, d_in, d_out);
            // A term's magnitude is at most 4 and f32's ε 6e-8: a lost or misplaced term is off
            // by far more than this bound, rounding by far less.
            let case = format!("{rows}×{d_in}×{d_out}");
            let results = outputs_within(available(), &want, 1e-6, &case, |intrinsics| {
                weight.forward_on(intrinsics, &x, &bias, rows)
            });
            if let [emulated, native] = &results[..] {
                let native: Vec<(f64, f64)> = native
                    .iter()
                    .map(|&n| (f64::from(n), f64::from(n.abs())))
                    .collect();
                let worst = worst_scaled_error(emulated, &native);
                assert!(worst < 1e-6, "{case}: emulated vs native {worst}");
            }
        }
    }

    #[test]
    fn the_conversion_rounds_as_the_packing_does() {
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::MAX,
            1.0 + 1.0 / 256.0,
            -3.3e-5,
        ];
        let steps = (0..4_001u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)));
        // Normal numbers and infinities (the instruction reads denormals as zero; `pair` keeps
        // them), odd length for the padded tail.
        let mut x: Vec<f32> = specials
            .into_iter()
            .chain(steps)
            .filter(|v| !v.is_nan() && !v.is_subnormal())
            .collect();
        if x.len().is_multiple_of(2) {
            x.pop();
        }
        let want: Vec<u32> = x
            .chunks(2)
            .map(|pair_values| pair(pair_values[0], pair_values.get(1).copied().unwrap_or(0.0)))
            .collect();
        for intrinsics in Intrinsics::runnable(available()) {
            let mut words = vec![0u32; x.len().div_ceil(2)];
            convert_row_on(intrinsics, &x, &mut words);
            assert_eq!(words, want, "{intrinsics:?}");
        }
    }

    #[test]
    fn pairs_hold_the_even_row_in_the_low_half_rounded_to_nearest_even() {
        assert_eq!(pair(1.0, -2.0), 0x3F80 | (0xC000 << 16));
        // 1 + 2⁻⁸ lies halfway between bf16 1 and 1 + 2⁻⁷: ties go to the even one.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    }

    #[test]
    fn rounding_equals_the_half_crates_for_every_kind_of_value() {
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001), // a signalling NaN
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(1), // the smallest subnormal
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
        ];
        let steps = (0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)));
        for value in specials.into_iter().chain(steps) {
            let want = half::bf16::from_f32(value).to_bits();
            assert_eq!(
                bf16_bits(value),
                u32::from(want),
                "{value:e} ({:#x})",
                value.to_bits()
            );
        }
    }
}
