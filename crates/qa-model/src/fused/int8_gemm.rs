//! u8×i8 matrix products on AVX-512 VNNI (`vpdpbusd`) with the dequantization, zero point and
//! bias fused into the store: y = x·W + b for a weight quantized per output channel and packed
//! once at load, the activations quantized per row by the caller
//! ([`super::low_precision::quantize_rows_into`]).
//!
//! `vpdpbusd` adds, in each i32 lane, the four products of a word of 4 unsigned bytes and a
//! word of 4 signed bytes, exactly (no saturating i16 step, so weights keep all 8 bits): four
//! times the multiply-adds of an f32 FMA per instruction. The weight's words are 4 consecutive
//! k of one column; the blocking is [`super::packed_gemm`]'s. Between depth slices the i32 sums
//! wait in the output's own bytes; the last slice turns them into
//! (Σ code·q − zero·Σ q) · row scale · column scale + bias.
//!
//! CPUs without VNNI are not served here ([`available`]); the caller uses `rten-gemm`. Tests
//! also run the kernel's code against emulated intrinsics ([`super::avx512_emulation`]), so
//! machines without VNNI test it too.

use super::packed_gemm::{has_avx512_base, Intrinsics, PackedPanels, Slice, Tile, TileKernel};

/// Whether this CPU runs [`PackedInt8::forward`] (AVX-512 F/BW/VL and VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx512_base() && std::arch::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Bytes (k values) per word.
pub const PER_WORD: usize = 4;

/// A `[d_in, d_out]` weight's int8 codes packed in words of 4 k, with what the epilogue needs.
pub struct PackedInt8 {
    panels: PackedPanels,
    /// One scale per output column: w ≈ scale · q.
    scales: Vec<f32>,
    /// Σₖ q[k][c] per output column, to take out the activations' zero points.
    column_sums: Vec<i32>,
}

/// Σₖ q[k][c] of row-major `[d_in, d_out]` codes, per column.
pub fn column_sums(codes: &[i8], d_out: usize) -> Vec<i32> {
    let mut sums = vec![0i32; d_out];
    for row in codes.chunks_exact(d_out.max(1)) {
        for (sum, &q) in sums.iter_mut().zip(row) {
            *sum += i32::from(q);
        }
    }
    sums
}

/// One batch of activation rows quantized for [`PackedInt8::forward`]: each row's codes in
/// `depth` words (4 codes a word, the tail padded), x ≈ scale · (code − zero).
pub struct QuantizedWords<'a> {
    pub words: &'a [u32],
    pub scales: &'a [f32],
    pub zero_points: &'a [u8],
}

impl PackedInt8 {
    /// Packs row-major `[d_in, d_out]` codes with their column scales.
    pub fn new(codes: &[i8], scales: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        assert_eq!(codes.len(), d_in * d_out, "int8 packing: weight shape");
        let at = |k: usize, c: usize| {
            if k < d_in {
                u32::from(codes[k * d_out + c] as u8)
            } else {
                0
            }
        };
        let word = |k, c| (0..PER_WORD).fold(0, |word, i| word | (at(k + i, c) << (8 * i)));
        PackedInt8 {
            panels: PackedPanels::new(d_in, d_out, PER_WORD, word),
            scales,
            column_sums: column_sums(codes, d_out),
        }
    }

    /// Words of depth one activation row needs.
    pub fn depth(&self) -> usize {
        self.panels.depth
    }

    /// x·W + b, `[rows, d_out]`. Only called where [`available`] holds.
    pub fn forward(&self, x: QuantizedWords, bias: &[f32], rows: usize) -> Vec<f32> {
        self.forward_on(Intrinsics::Native, x, bias, rows)
    }

    /// [`Self::forward`] by the kernel's code compiled for `intrinsics`.
    fn forward_on(
        &self,
        intrinsics: Intrinsics,
        x: QuantizedWords,
        bias: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        assert!(
            intrinsics != Intrinsics::Native || available(),
            "int8 products through vpdpbusd need AVX-512 VNNI"
        );
        assert_eq!(bias.len(), self.panels.d_out, "int8 product: bias length");
        assert!(
            x.scales.len() == rows && x.zero_points.len() == rows,
            "int8 product: one scale and zero point a row"
        );
        let kernel = Int8Kernel {
            intrinsics,
            bias,
            row_scales: x.scales,
            row_zero_points: x.zero_points,
            weight: self,
        };
        self.panels.multiply(&kernel, x.words, rows)
    }
}

/// The tile kernel: i32 accumulators, dequantized on the last slice.
struct Int8Kernel<'a> {
    intrinsics: Intrinsics,
    bias: &'a [f32],
    row_scales: &'a [f32],
    row_zero_points: &'a [u8],
    weight: &'a PackedInt8,
}

/// One tile's epilogue operands: its rows' quantization and its columns' scales, sums and bias.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Epilogue<'a> {
    row_scales: &'a [f32],
    row_zero_points: &'a [u8],
    column_scales: &'a [f32],
    column_sums: &'a [i32],
    bias: &'a [f32],
}

impl TileKernel for Int8Kernel<'_> {
    unsafe fn tile(&self, tile: &Tile, slice: Slice) {
        let rows = tile.first_row..tile.first_row + tile.rows;
        let columns = tile.first_column..tile.first_column + tile.columns;
        let epilogue = Epilogue {
            row_scales: &self.row_scales[rows.clone()],
            row_zero_points: &self.row_zero_points[rows],
            column_scales: &self.weight.scales[columns.clone()],
            column_sums: &self.weight.column_sums[columns.clone()],
            bias: &self.bias[columns],
        };
        match self.intrinsics {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as the trait requires of the caller.
            Intrinsics::Native => unsafe { x86::tile(tile, slice, &epilogue) },
            #[cfg(not(target_arch = "x86_64"))]
            Intrinsics::Native => {
                unreachable!("no VNNI off x86-64 ({slice:?}, {})", epilogue.bias.len())
            }
            #[cfg(test)]
            // SAFETY: the emulation needs no instruction; the pointers are as the trait says.
            Intrinsics::Emulated => unsafe { emulated::tile(tile, slice, &epilogue) },
        }
    }
}

/// The tile kernel's code, given its `target_feature` attribute (none for the emulation): one
/// text for the native kernel ([`x86`]) and the emulated one (`emulated`, in tests), in a module
/// that brings the intrinsics into scope.
macro_rules! tile_kernel {
    ($(#[$feature:meta])*) => {
    use super::super::packed_gemm::{column_masks, with_tile_rows, Slice, Tile, PANEL_COLUMNS};
    use super::Epilogue;

    /// # Safety
    /// As [`super::TileKernel::tile`]; `epilogue` holds the tile's rows and columns.
    pub unsafe fn tile(tile: &Tile, slice: Slice, epilogue: &Epilogue) {
        // SAFETY: passed on from the caller.
        with_tile_rows!(tile.rows, ROWS => unsafe { tile_rows::<ROWS>(tile, slice, epilogue) })
    }

    /// Σ_w a[r][w] · b[w][c] over the slice, added to the i32 sums the output holds (after the
    /// first slice); on the last slice, dequantized with the epilogue's operands.
    ///
    /// # Safety
    /// As [`tile`], with `tile.rows == R`.
    $(#[$feature])*
    unsafe fn tile_rows<const R: usize>(tile: &Tile, slice: Slice, epilogue: &Epilogue) {
        let [low_mask, high_mask] = column_masks(tile.columns);
        // SAFETY: every pointer stays in the tile (see `Tile`); masked loads and stores touch
        // only the valid columns.
        unsafe {
            let mut acc: [[__m512i; 2]; R] = if slice.first {
                [[_mm512_setzero_si512(); 2]; R]
            } else {
                std::array::from_fn(|r| {
                    let out = tile.out.add(r * tile.out_stride).cast::<i32>();
                    [
                        _mm512_maskz_loadu_epi32(low_mask, out),
                        _mm512_maskz_loadu_epi32(high_mask, out.wrapping_add(16)),
                    ]
                })
            };
            for w in 0..tile.words {
                let b = tile.b.add(w * PANEL_COLUMNS);
                let b_low = _mm512_loadu_si512(b.cast());
                let b_high = _mm512_loadu_si512(b.add(16).cast());
                for (r, row) in acc.iter_mut().enumerate() {
                    let word = tile.a.add(r * tile.a_stride + w).read_unaligned();
                    let a = _mm512_set1_epi32(word as i32);
                    row[0] = _mm512_dpbusd_epi32(row[0], a, b_low);
                    row[1] = _mm512_dpbusd_epi32(row[1], a, b_high);
                }
            }
            if !slice.last {
                for (r, row) in acc.iter().enumerate() {
                    let out = tile.out.add(r * tile.out_stride).cast::<i32>();
                    _mm512_mask_storeu_epi32(out, low_mask, row[0]);
                    _mm512_mask_storeu_epi32(out.wrapping_add(16), high_mask, row[1]);
                }
                return;
            }
            let load_f32 = |values: &[f32], offset: usize, mask| {
                _mm512_maskz_loadu_ps(mask, values.as_ptr().wrapping_add(offset))
            };
            let load_i32 = |values: &[i32], offset: usize, mask| {
                _mm512_maskz_loadu_epi32(mask, values.as_ptr().wrapping_add(offset))
            };
            let scales = [
                load_f32(epilogue.column_scales, 0, low_mask),
                load_f32(epilogue.column_scales, 16, high_mask),
            ];
            let sums = [
                load_i32(epilogue.column_sums, 0, low_mask),
                load_i32(epilogue.column_sums, 16, high_mask),
            ];
            let bias = [
                load_f32(epilogue.bias, 0, low_mask),
                load_f32(epilogue.bias, 16, high_mask),
            ];
            for (r, row) in acc.iter().enumerate() {
                let zero = _mm512_set1_epi32(i32::from(epilogue.row_zero_points[r]));
                let row_scale = _mm512_set1_ps(epilogue.row_scales[r]);
                let out = tile.out.add(r * tile.out_stride);
                for half in 0..2 {
                    let sum = _mm512_sub_epi32(row[half], _mm512_mullo_epi32(zero, sums[half]));
                    let scale = _mm512_mul_ps(row_scale, scales[half]);
                    let value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, bias[half]);
                    let mask = if half == 0 { low_mask } else { high_mask };
                    _mm512_mask_storeu_ps(out.wrapping_add(16 * half), mask, value);
                }
            }
        }
    }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    tile_kernel!(#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]);
}

#[cfg(test)]
mod emulated {
    use super::super::avx512_emulation::*;

    tile_kernel!();
}

#[cfg(test)]
mod tests {
    use super::super::packed_gemm::outputs_within;
    use super::*;

    /// A deterministic spread of integers in `low..=high`.
    fn integers(n: usize, seed: usize, low: i32, high: i32) -> Vec<i32> {
        let span = (high - low + 1) as usize;
        (0..n)
            .map(|i| low + ((i * 7919 + seed * 104_729 + i * i * 31) % span) as i32)
            .collect()
    }

    #[test]
    fn the_kernel_equals_the_integer_product_on_tiles_slices_and_blocks_of_any_size() {
        // (rows, d_in, d_out): partial words, tiles, panels; several depth slices (> 512 k)
        // and row blocks (> 64 rows).
        let shapes = [
            (1, 3, 1),
            (7, 5, 33),
            (9, 601, 70),
            (130, 1030, 65),
            (64, 4, 32),
        ];
        for (rows, d_in, d_out) in shapes {
            let codes: Vec<i8> = integers(d_in * d_out, 1, -127, 127)
                .into_iter()
                .map(|q| q as i8)
                .collect();
            let scales: Vec<f32> = (0..d_out).map(|c| 0.01 + c as f32 * 1e-3).collect();
            let weight = PackedInt8::new(&codes, scales.clone(), d_in, d_out);
            let activations: Vec<u8> = integers(rows * d_in, 2, 0, 255)
                .into_iter()
                .map(|a| a as u8)
                .collect();
            let zero_points: Vec<u8> = integers(rows, 3, 0, 255)
                .into_iter()
                .map(|z| z as u8)
                .collect();
            let row_scales: Vec<f32> = (0..rows).map(|r| 0.02 + r as f32 * 1e-4).collect();
            let bias: Vec<f32> = (0..d_out).map(|c| c as f32 * 0.5 - 3.0).collect();
            // Each row's codes in words of 4, the last one padded with zero bytes.
            let depth = weight.depth();
            let mut words = vec![0u32; rows * depth];
            for (r, row) in activations.chunks_exact(d_in).enumerate() {
                for (k, &a) in row.iter().enumerate() {
                    words[r * depth + k / PER_WORD] |= u32::from(a) << (8 * (k % PER_WORD));
                }
            }
            let want: Vec<(f64, f64)> = (0..rows * d_out)
                .map(|i| {
                    let (r, c) = (i / d_out, i % d_out);
                    let sum: i64 = (0..d_in)
                        .map(|k| {
                            let a = i64::from(activations[r * d_in + k]);
                            let centred = a - i64::from(zero_points[r]);
                            centred * i64::from(codes[k * d_out + c])
                        })
                        .sum();
                    let value = sum as f64 * f64::from(row_scales[r]) * f64::from(scales[c])
                        + f64::from(bias[c]);
                    (value, value.abs())
                })
                .collect();
            let case = format!("{rows}×{d_in}×{d_out}");
            let results = outputs_within(available(), &want, 1e-6, &case, |intrinsics| {
                let x = QuantizedWords {
                    words: &words,
                    scales: &row_scales,
                    zero_points: &zero_points,
                };
                weight.forward_on(intrinsics, x, &bias, rows)
            });
            // The same operations in the same order: the emulation is the kernel, bit for bit.
            if let [emulated, native] = &results[..] {
                assert_eq!(emulated, native, "{case}");
            }
        }
    }
}
