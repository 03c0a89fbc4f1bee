//! Linear layers in int8 and bf16 on the host, for inference (`--precision int8|bf16`).
//!
//! **int8** is dynamic quantization as PyTorch's `quantize_dynamic` and ONNX Runtime's
//! `quantize_dynamic(per_channel=True)` do it:
//! - each weight column (output channel) symmetric int8, scale = max |w| / 127, once at load;
//! - each activation row (token) asymmetric u8 on the fly: its range [min(0, x), max(0, x)]
//!   spread over 0..=255 with a zero point, so 0 stays exact;
//! - Σ a·w accumulated in i32: on AVX-512 VNNI by our `vpdpbusd` kernel
//!   ([`super::int8_gemm`]), which takes the zero point out (− zero · Σ w per column),
//!   dequantizes (row scale × column scale) and adds the bias as it stores each tile; elsewhere
//!   by `rten-gemm`'s u8×i8 kernels (AVX2 `vpmaddubsw`, else portable), followed by that
//!   epilogue as one parallel pass over the i32 product;
//! - the products that contract (d_in > d_out: the feed-forward's second product, the published
//!   outlier layer) in bf16 where the CPU has AVX512-BF16, else in f32.
//!
//! AVX2's `vpmaddubsw` adds two u8×i8 products in a saturating i16: with 8-bit weights
//! 2·255·127 overflows it. When the chosen kernel may saturate, weights get 7 bits (±63, as
//! ONNX Runtime's `reduce_range` does for the same instruction) and activations keep 8, so the
//! sum fits and the result is never wrong.
//!
//! **bf16** rounds the weights to bf16 once at load and each activation row per product
//! (round to nearest even) and accumulates the products in f32: by `vdpbf16ps` where the CPU has
//! AVX512-BF16 ([`super::bf16_gemm`]), else exactly emulated on the f32 kernels (a bf16·bf16
//! product is exact in f32).
//!
//! `QA_LOW_PRECISION_KERNELS=emulated` ([`kernels`]) makes any CPU compute what the AVX-512
//! VNNI + BF16 kernels compute, on the f32 kernels (slower than f32): int8 with 8-bit weights
//! and exact integer sums, the contracting products in bf16. The accuracy measured on such a
//! CPU can then be reproduced, and int8 variants screened, on one without those instructions.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions, PackedBMatrix};
use rten_tensor::NdTensorView;

use super::bf16_gemm::{self, PackedBf16};
use super::int8_gemm::{self, PackedInt8, QuantizedWords};
use super::kernels::{multiversioned, LANES};
use super::linear::{self as dense, Shape};

thread_local! {
    /// The u8×i8→i32 product. Its kernel is a fact of the CPU (every thread detects the same
    /// one, so weights packed on one thread multiply on any); one per thread because the
    /// executor is `Sync` but not `Send`.
    static INT8_GEMM: GemmExecutor<u8, i8, i32> = GemmExecutor::default();
}

fn with_int8_gemm<R>(f: impl FnOnce(&GemmExecutor<u8, i8, i32>) -> R) -> R {
    INT8_GEMM.with(f)
}

/// The largest activation code (u8, so 0..=255).
const ACTIVATION_LEVELS: u8 = 255;

/// The largest weight code for `rten-gemm`'s kernel: 127, or 63 where it adds two u8×i8
/// products in a saturating i16 (AVX2's `vpmaddubsw`: 2·255·63 fits, 2·255·127 does not).
/// Weights lose the bit rather than activations, as ONNX Runtime's `reduce_range` does: each
/// weight column has its own scale, while activations carry the outliers.
fn rten_weight_levels() -> f32 {
    if with_int8_gemm(|gemm| gemm.may_saturate()) {
        63.0
    } else {
        FULL_WEIGHT_LEVELS
    }
}

/// The largest weight code where products never saturate (`vpdpbusd` sums in i32).
const FULL_WEIGHT_LEVELS: f32 = 127.0;

/// Whose arithmetic the host's int8 and bf16 products follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowPrecisionKernels {
    /// This CPU's fastest kernels: ours on AVX-512 VNNI / BF16, else `rten-gemm`'s int8 (7-bit
    /// weights where its kernel may saturate) and f32 for int8's contracting products.
    Native,
    /// The AVX-512 VNNI + BF16 kernels' results on the f32 kernels of any CPU: int8 sums exact
    /// with 8-bit weights (every partial sum below 2²⁴ is exact in f32: 255·127·d_in stays
    /// below it up to d_in = 518, MiniLM's 384 included; beyond, rare sums that large are
    /// rounded as f32), bf16 operands rounded as `vdpbf16ps` reads them, in the linear layers
    /// and attention's two products alike.
    Emulated,
}

/// The variable that picks [`LowPrecisionKernels::Emulated`].
pub const KERNELS_VARIABLE: &str = "QA_LOW_PRECISION_KERNELS";

/// This process's [`LowPrecisionKernels`], from [`KERNELS_VARIABLE`] (read once).
pub fn kernels() -> LowPrecisionKernels {
    static KERNELS: std::sync::OnceLock<LowPrecisionKernels> = std::sync::OnceLock::new();
    *KERNELS
        .get_or_init(|| LowPrecisionKernels::from_variable(std::env::var(KERNELS_VARIABLE).ok()))
}

impl LowPrecisionKernels {
    /// `emulated` picks the emulation; unset, empty or `native` the native kernels; anything
    /// else is warned about and runs native.
    pub fn from_variable(value: Option<String>) -> Self {
        match value.as_deref() {
            Some("emulated") => LowPrecisionKernels::Emulated,
            None | Some("" | "native") => LowPrecisionKernels::Native,
            Some(other) => {
                tracing::warn!(
                    "{KERNELS_VARIABLE}={other:?} is neither native nor emulated: using native"
                );
                LowPrecisionKernels::Native
            }
        }
    }
}

/// A linear layer's weight `[d_in, d_out]` prepared once for one precision.
pub struct PreparedWeight {
    d_in: usize,
    d_out: usize,
    values: Prepared,
}

enum Prepared {
    /// Packed for our `vpdpbusd` kernel.
    Int8Vnni(Int8Layer<PackedInt8>),
    /// Packed for `rten-gemm` (CPUs without AVX-512 VNNI).
    Int8(Int8Layer<Int8Weight>),
    /// Kept in f32 (row-major `[d_in, d_out]`).
    F32(Vec<f32>),
    /// Packed for AVX512-BF16's `vdpbf16ps`.
    Bf16(PackedBf16),
    /// Row-major `[d_in, d_out]`, each value rounded to bf16, for CPUs without AVX512-BF16:
    /// multiplied on the f32 kernels with the activations rounded too, the same products.
    Bf16Emulated(Vec<f32>),
    /// int8 codes as f32, multiplied on the f32 kernels ([`LowPrecisionKernels::Emulated`]).
    Int8Emulated(Int8Layer<EmulatedInt8>),
}

/// An int8 weight for the emulation of `vpdpbusd` on the f32 kernels: its codes, row-major
/// `[d_in, d_out]` as f32, and one scale per output column.
struct EmulatedInt8 {
    codes: Vec<f32>,
    scales: Vec<f32>,
}

/// An int8 layer: its weight, packed for one kernel, and what each input channel is multiplied
/// by before quantization (1/s, undoing the [`smoothing`] folded into the weight).
struct Int8Layer<W> {
    weight: W,
    channel_scale: Vec<f32>,
}

/// SmoothQuant's per-input-channel factors (α = ½; Xiao et al., 2023): row k of a layer's weight
/// is multiplied by s_k = √(max|x_k| / max_c |w_kc|) and channel k of its input divided by it,
/// so x·W is unchanged while the few input channels with large values (LayerNorm outputs have
/// them) no longer set every token's quantization step alone. max|x_k| is what the load's
/// discovery pass saw (`input_max`); without it, and for empty channels, s = 1.
pub fn smoothing(weight: &[f32], d_in: usize, d_out: usize, input_max: Option<&[f32]>) -> Vec<f32> {
    let Some(input_max) = input_max.filter(|m| m.len() == d_in) else {
        return vec![1.0; d_in];
    };
    weight
        .chunks_exact(d_out.max(1))
        .take(d_in)
        .zip(input_max)
        .map(|(row, &x)| {
            let w = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if w > 0.0 && x > 0.0 {
                (x / w).sqrt().clamp(SMOOTHING_RANGE.0, SMOOTHING_RANGE.1)
            } else {
                1.0
            }
        })
        .collect()
}

/// The largest |value| of each column of row-major `[rows, width]` values (what [`smoothing`]
/// takes as `input_max`).
pub fn column_max_abs(values: &[f32], width: usize) -> Vec<f32> {
    let mut max = vec![0f32; width];
    for row in values.chunks_exact(width.max(1)) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    max
}

/// The smallest and largest smoothing factor (a bound on what one channel may move).
const SMOOTHING_RANGE: (f32, f32) = (1e-3, 1e3);

/// The weight with row k multiplied by `factors[k]`, and the inverses (the input's channel
/// scales).
fn smoothed(weight: &[f32], d_out: usize, factors: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let rows = weight.chunks_exact(d_out.max(1)).zip(factors);
    let scaled = rows
        .flat_map(|(row, &s)| row.iter().map(move |w| w * s))
        .collect();
    (scaled, factors.iter().map(|s| 1.0 / s).collect())
}

/// A weight's int8 codes and per-column scales after SmoothQuant's factors are folded into its
/// rows, with what each input channel is then multiplied by (1/s).
struct SmoothedCodes {
    codes: Vec<i8>,
    scales: Vec<f32>,
    channel_scale: Vec<f32>,
}

/// Smooths row-major `[d_in, d_out]` `weight` by its inputs' per-channel maxima (when known)
/// and quantizes each column onto -`levels`..=`levels`: what every int8 path packs.
fn smoothed_codes(
    weight: &[f32],
    d_in: usize,
    d_out: usize,
    input_max: Option<&[f32]>,
    levels: f32,
) -> SmoothedCodes {
    let factors = smoothing(weight, d_in, d_out, input_max);
    let (weight, channel_scale) = smoothed(weight, d_out, &factors);
    let (codes, scales) = quantize_columns(&weight, d_in, d_out, levels);
    SmoothedCodes {
        codes,
        scales,
        channel_scale,
    }
}

/// A weight quantized per output channel and packed for the int8 kernel.
pub struct Int8Weight {
    packed: PackedBMatrix<i8>,
    /// One scale per output column: w ≈ scale · q.
    scales: Vec<f32>,
    /// Σₖ q[k][c] per output column: the activations' zero points are taken out with these
    /// (Σ (a − z)·q = Σ a·q − z·Σ q) rather than by `rten-gemm`, whose packing of per-row
    /// zero points (0.27) gives every row panel after a block's first the first panel's.
    column_sums: Vec<i32>,
}

/// Symmetric int8 codes in -top..=top and scales, per column of a row-major `[d_in, d_out]`
/// weight.
pub fn quantize_columns(
    weight: &[f32],
    d_in: usize,
    d_out: usize,
    top: f32,
) -> (Vec<i8>, Vec<f32>) {
    let mut max_abs = vec![0f32; d_out];
    for row in weight.chunks_exact(d_out).take(d_in) {
        for (m, &w) in max_abs.iter_mut().zip(row) {
            *m = m.max(w.abs());
        }
    }
    let scales: Vec<f32> = max_abs
        .iter()
        .map(|&m| if m > 0.0 { m / top } else { 1.0 })
        .collect();
    let codes = weight
        .chunks_exact(d_out)
        .flat_map(|row| {
            row.iter()
                .zip(&scales)
                .map(|(&w, &s)| (w / s).round().clamp(-top, top) as i8)
        })
        .collect();
    (codes, scales)
}

/// Activation rows quantized to u8 with a scale and zero point each.
pub struct QuantizedRows {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<u8>,
}

/// Quantizes each row of `x` (`[rows, width]`), its channels times `channel_scale`, onto
/// 0..=`levels`: x · channel_scale ≈ scale · (code − zero).
pub fn quantize_rows(x: &[f32], width: usize, channel_scale: &[f32], levels: u8) -> QuantizedRows {
    let mut codes = vec![0u8; x.len()];
    let (scales, zero_points) =
        quantize_rows_into(x, width, channel_scale, &mut codes, width, levels);
    QuantizedRows {
        codes,
        scales,
        zero_points,
    }
}

/// Quantizes each row of `x` (`[rows, width]`), its channels times `channel_scale`, onto
/// 0..=`levels` into `codes`, row r at `r · stride` (bytes past `width` in a row are left as
/// they are); returns each row's scale and zero point.
pub fn quantize_rows_into(
    x: &[f32],
    width: usize,
    channel_scale: &[f32],
    codes: &mut [u8],
    stride: usize,
    levels: u8,
) -> (Vec<f32>, Vec<u8>) {
    let width = width.max(1);
    let rows = x.len() / width;
    assert!(
        stride >= width && codes.len() == rows * stride && channel_scale.len() == width,
        "quantize_rows_into: shapes"
    );
    let mut params = vec![(1f32, 0u8); rows];
    let rows_per_task = (TASK_ELEMENTS / width).max(1);
    codes
        .par_chunks_mut(stride * rows_per_task)
        .zip(x.par_chunks(width * rows_per_task))
        .zip(params.par_chunks_mut(rows_per_task))
        .for_each(|((out, rows), params)| {
            for ((out, row), param) in out
                .chunks_exact_mut(stride)
                .zip(rows.chunks_exact(width))
                .zip(params)
            {
                *param = quantize_row(row, channel_scale, &mut out[..width], f32::from(levels));
            }
        });
    params.into_iter().unzip()
}

/// Elements (or whole rows of about this many) handed to one rayon task.
const TASK_ELEMENTS: usize = 16_384;

/// Rounds to the nearest integer, ties to even, for |v| < 2²²: adding 1.5·2²³ leaves no
/// fraction bits, so the FPU's own rounding does it (and the loop vectorises, where `round` is a
/// libm call on baseline x86-64).
#[inline(always)]
fn round_small(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (v + SHIFT) - SHIFT
}

multiversioned!(fn quantize_row = quantize_row_generic(
    row: &[f32], channel_scale: &[f32], out: &mut [u8], top: f32
) -> (f32, u8));

/// One row, each value times its channel's scale, onto 0..=top; returns its (scale, zero point).
/// The range always holds 0, so 0 is exact (padding and ReLU-like zeros stay zero).
#[inline(always)]
fn quantize_row_generic(row: &[f32], channel_scale: &[f32], out: &mut [u8], top: f32) -> (f32, u8) {
    // Comparisons written as selects, so the loops vectorise (`f32::min` also orders NaNs).
    let (mut low, mut high) = ([0f32; LANES], [0f32; LANES]);
    let chunks = row.chunks_exact(LANES);
    let scale_chunks = channel_scale.chunks_exact(LANES);
    let (mut tail_low, mut tail_high) = (0f32, 0f32);
    for (&v, &s) in chunks.remainder().iter().zip(scale_chunks.remainder()) {
        let v = v * s;
        tail_low = if v < tail_low { v } else { tail_low };
        tail_high = if v > tail_high { v } else { tail_high };
    }
    for (chunk, scales) in chunks.zip(scale_chunks) {
        for (((l, h), &v), &s) in low.iter_mut().zip(high.iter_mut()).zip(chunk).zip(scales) {
            let v = v * s;
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
        }
    }
    let low = low.iter().fold(tail_low, |m, &v| m.min(v));
    let high = high.iter().fold(tail_high, |m, &v| m.max(v));
    let scale = if high > low { (high - low) / top } else { 1.0 };
    let inverse = 1.0 / scale;
    let zero = round_small(-low * inverse).clamp(0.0, top);
    for ((code, &v), &s) in out.iter_mut().zip(row).zip(channel_scale) {
        *code = small_code((v * s * inverse + zero).clamp(0.0, top));
    }
    (scale, zero as u8)
}

/// `round(v)` as a byte, for 0 ≤ v ≤ 255: after adding 1.5·2²³ the integer part is the low
/// mantissa bits (ties to even), read with no float-to-int conversion.
#[inline(always)]
fn small_code(v: f32) -> u8 {
    (v + 12_582_912.0).to_bits() as u8
}

/// One activation row's quantization: x ≈ scale · (code − zero).
#[derive(Clone, Copy)]
struct RowParams {
    scale: f32,
    zero: i32,
}

multiversioned!(fn dequantize_row = dequantize_row_generic(
    row: &mut [f32], params: RowParams, weight: &Int8Weight, bias: &[f32]
));

/// One row of the product, which holds the i32 sums Σ code·q in its bytes, turned in place
/// into (Σ code·q − zero·Σ q) · row scale · column scale + bias.
#[inline(always)]
fn dequantize_row_generic(row: &mut [f32], params: RowParams, weight: &Int8Weight, bias: &[f32]) {
    for (((o, &s), &column_sum), &b) in row
        .iter_mut()
        .zip(&weight.scales)
        .zip(&weight.column_sums)
        .zip(bias)
    {
        let sum = o.to_bits() as i32 - params.zero * column_sum;
        *o = sum as f32 * (params.scale * s) + b;
    }
}

/// `value` rounded to the nearest bf16 (ties to even), as an f32.
pub fn round_bf16(value: f32) -> f32 {
    half::bf16::from_f32(value).to_f32()
}

/// Every value rounded to bf16, in parallel.
pub fn rounded_bf16(values: &[f32]) -> Vec<f32> {
    values.par_iter().map(|&v| round_bf16(v)).collect()
}

impl PreparedWeight {
    /// int8 codes packed for this CPU's kernel (ours on AVX-512 VNNI, else `rten-gemm`'s), with
    /// their per-column scales, smoothed by the inputs' per-channel maxima when known.
    pub fn int8(weight: &[f32], d_in: usize, d_out: usize, input_max: Option<&[f32]>) -> Self {
        if kernels() == LowPrecisionKernels::Emulated {
            return Self::int8_emulated(weight, d_in, d_out, input_max);
        }
        if !int8_gemm::available() {
            return Self::int8_rten(weight, d_in, d_out, input_max);
        }
        let smoothed = smoothed_codes(weight, d_in, d_out, input_max, FULL_WEIGHT_LEVELS);
        let layer = Int8Layer {
            weight: PackedInt8::new(&smoothed.codes, smoothed.scales, d_in, d_out),
            channel_scale: smoothed.channel_scale,
        };
        PreparedWeight {
            d_in,
            d_out,
            values: Prepared::Int8Vnni(layer),
        }
    }

    /// int8 codes packed for `rten-gemm`'s kernel, whatever the CPU (the path CPUs without
    /// AVX-512 VNNI take; tests run it beside ours).
    pub fn int8_rten(weight: &[f32], d_in: usize, d_out: usize, input_max: Option<&[f32]>) -> Self {
        let smoothed = smoothed_codes(weight, d_in, d_out, input_max, rten_weight_levels());
        let column_sums = int8_gemm::column_sums(&smoothed.codes, d_out);
        let view = NdTensorView::from_data([d_in, d_out], smoothed.codes.as_slice());
        let values = Prepared::Int8(Int8Layer {
            weight: Int8Weight {
                packed: with_int8_gemm(|gemm| gemm.prepack_b(view)),
                scales: smoothed.scales,
                column_sums,
            },
            channel_scale: smoothed.channel_scale,
        });
        PreparedWeight {
            d_in,
            d_out,
            values,
        }
    }

    /// The int8 codes (8-bit weights, as for `vpdpbusd`) kept as f32 for the exact emulation
    /// on the f32 kernels, whatever the CPU ([`LowPrecisionKernels::Emulated`]; tests run it
    /// beside the other paths).
    pub fn int8_emulated(
        weight: &[f32],
        d_in: usize,
        d_out: usize,
        input_max: Option<&[f32]>,
    ) -> Self {
        let smoothed = smoothed_codes(weight, d_in, d_out, input_max, FULL_WEIGHT_LEVELS);
        let layer = Int8Layer {
            weight: EmulatedInt8 {
                codes: smoothed.codes.into_iter().map(f32::from).collect(),
                scales: smoothed.scales,
            },
            channel_scale: smoothed.channel_scale,
        };
        PreparedWeight {
            d_in,
            d_out,
            values: Prepared::Int8Emulated(layer),
        }
    }

    /// For int8 inference, a product that contracts (d_in > d_out): in bf16 where the CPU has
    /// AVX512-BF16 (twice the f32 rate) or the kernels are emulated, else in f32 (the emulation
    /// would be slower than f32).
    pub fn int8_contracting(weight: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        if bf16_gemm::available() || kernels() == LowPrecisionKernels::Emulated {
            Self::bf16(&weight, d_in, d_out)
        } else {
            Self::f32(weight, d_in, d_out)
        }
    }

    /// The weight as it is, in f32.
    pub fn f32(weight: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        let values = Prepared::F32(weight);
        PreparedWeight {
            d_in,
            d_out,
            values,
        }
    }

    /// The weight rounded to bf16: packed for `vdpbf16ps` where the CPU has AVX512-BF16, else
    /// for the exact emulation on the f32 kernels.
    pub fn bf16(weight: &[f32], d_in: usize, d_out: usize) -> Self {
        let native = kernels() == LowPrecisionKernels::Native;
        let values = if native && bf16_gemm::available() {
            Prepared::Bf16(PackedBf16::new(weight, d_in, d_out))
        } else {
            Prepared::Bf16Emulated(rounded_bf16(weight))
        };
        PreparedWeight {
            d_in,
            d_out,
            values,
        }
    }

    /// The weight rounded to bf16 for the emulation on the f32 kernels, whatever the CPU (the
    /// path CPUs without AVX512-BF16 take; tests hold the kernel equal to it).
    pub fn bf16_emulated(weight: &[f32], d_in: usize, d_out: usize) -> Self {
        let values = Prepared::Bf16Emulated(rounded_bf16(weight));
        PreparedWeight {
            d_in,
            d_out,
            values,
        }
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// x·W + b, `[rows, d_out]`, for x `[rows, d_in]`.
    pub fn forward(&self, x: &[f32], bias: &[f32], shape: Shape) -> Vec<f32> {
        match &self.values {
            Prepared::Int8Vnni(layer) => vnni_forward(layer, x, bias, shape),
            Prepared::Int8(layer) => int8_forward(layer, x, bias, shape),
            Prepared::F32(weight) => dense::forward(x, weight, bias, shape),
            Prepared::Bf16(weight) => weight.forward(x, bias, shape.rows),
            Prepared::Bf16Emulated(weight) => dense::forward(&rounded_bf16(x), weight, bias, shape),
            Prepared::Int8Emulated(layer) => emulated_int8_forward(layer, x, bias, shape),
        }
    }
}

/// `vpdpbusd`'s product on the f32 kernels: each row quantized as for the kernel, its codes
/// less its zero point as f32 (|value| ≤ 255) times the weight codes, summed exactly while the
/// sums stay below 2²⁴, then dequantized as the kernel's epilogue does.
fn emulated_int8_forward(
    layer: &Int8Layer<EmulatedInt8>,
    x: &[f32],
    bias: &[f32],
    shape: Shape,
) -> Vec<f32> {
    let Shape { rows, d_in, d_out } = shape;
    if rows == 0 || d_out == 0 {
        return Vec::new();
    }
    let weight = &layer.weight;
    let rows_q = quantize_rows(x, d_in, &layer.channel_scale, ACTIVATION_LEVELS);
    let mut centred = vec![0f32; rows * d_in];
    centred
        .par_chunks_mut(d_in.max(1))
        .zip(rows_q.codes.par_chunks(d_in.max(1)))
        .zip(&rows_q.zero_points)
        .for_each(|((out, codes), &zero)| {
            for (o, &code) in out.iter_mut().zip(codes) {
                *o = f32::from(code) - f32::from(zero);
            }
        });
    let mut y = dense::forward(&centred, &weight.codes, &vec![0.0; d_out], shape);
    y.par_chunks_mut(d_out)
        .zip(&rows_q.scales)
        .for_each(|(row, &row_scale)| {
            for ((o, &column_scale), &b) in row.iter_mut().zip(&weight.scales).zip(bias) {
                *o = *o * (row_scale * column_scale) + b;
            }
        });
    y
}

fn vnni_forward(layer: &Int8Layer<PackedInt8>, x: &[f32], bias: &[f32], shape: Shape) -> Vec<f32> {
    let weight = &layer.weight;
    let depth = weight.depth();
    let mut words = vec![0u32; shape.rows * depth];
    let bytes = as_bytes_mut(&mut words);
    let stride = depth * int8_gemm::PER_WORD;
    let (scales, zero_points) = quantize_rows_into(
        x,
        shape.d_in,
        &layer.channel_scale,
        bytes,
        stride,
        ACTIVATION_LEVELS,
    );
    let rows = QuantizedWords {
        words: &words,
        scales: &scales,
        zero_points: &zero_points,
    };
    weight.forward(rows, bias, shape.rows)
}

/// The bytes of `words`, to write codes into.
fn as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirement, and the new slice covers exactly
    // the memory of `words`, borrowed mutably for the result's lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

fn int8_forward(layer: &Int8Layer<Int8Weight>, x: &[f32], bias: &[f32], shape: Shape) -> Vec<f32> {
    let weight = &layer.weight;
    let Shape { rows, d_in, d_out } = shape;
    if rows == 0 || d_out == 0 {
        return Vec::new();
    }
    let rows_q = quantize_rows(x, d_in, &layer.channel_scale, ACTIVATION_LEVELS);
    let a = NdTensorView::from_data([rows, d_in], rows_q.codes.as_slice());
    // The i32 product is written into the output's own (uninitialised) buffer and dequantized
    // in place: one allocation of `rows × d_out`, and no pass that only zeroes or copies it.
    let mut y: Vec<f32> = Vec::with_capacity(rows * d_out);
    let spare = &mut y.spare_capacity_mut()[..rows * d_out];
    // SAFETY: `MaybeUninit<f32>` and `MaybeUninit<i32>` have the same size and alignment and
    // no validity requirement, and the new slice covers exactly the spare capacity borrowed.
    let sums = unsafe {
        std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<MaybeUninit<i32>>(), spare.len())
    };
    with_int8_gemm(|gemm| {
        gemm.gemm_uninit(
            sums,
            GemmInputA::Unpacked(a),
            GemmInputB::Packed(&weight.packed),
            GemmUninitOptions::default(),
        )
        .map(|_| ())
    })
    .unwrap_or_else(|e| unreachable!("int8 product of checked shapes: {e:?}"));
    // SAFETY: `gemm_uninit` returned Ok, so it initialised all `rows × d_out` elements, and
    // every bit pattern is a valid f32 (these hold i32 sums until dequantized below).
    unsafe { y.set_len(rows * d_out) };
    let rows_per_task = (TASK_ELEMENTS / d_out).max(1);
    y.par_chunks_mut(d_out * rows_per_task)
        .zip(rows_q.scales.par_chunks(rows_per_task))
        .zip(rows_q.zero_points.par_chunks(rows_per_task))
        .for_each(|((block, row_scales), zero_points)| {
            for ((row, &row_scale), &zero) in block
                .chunks_exact_mut(d_out)
                .zip(row_scales)
                .zip(zero_points)
            {
                let row_params = RowParams {
                    scale: row_scale,
                    zero: i32::from(zero),
                };
                dequantize_row(row, row_params, weight, bias);
            }
        });
    y
}

#[cfg(test)]
mod tests {
    use super::super::packed_gemm::{test_values as values, worst_scaled_error};
    use super::*;

    /// x·W + b in f64 from the same operands.
    fn reference(x: &[f32], w: &[f32], b: &[f32], shape: Shape) -> Vec<f64> {
        let Shape { rows, d_in, d_out } = shape;
        let mut y = vec![0f64; rows * d_out];
        for r in 0..rows {
            for c in 0..d_out {
                let dot: f64 = (0..d_in)
                    .map(|k| f64::from(x[r * d_in + k]) * f64::from(w[k * d_out + c]))
                    .sum();
                y[r * d_out + c] = dot + f64::from(b[c]);
            }
        }
        y
    }

    /// x `[rows, d_in]`, W `[d_in, d_out]` and b `[d_out]` of one shape, from `seed`.
    fn operands(shape: Shape, seed: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            values(shape.rows * shape.d_in, seed),
            values(shape.d_in * shape.d_out, seed + 1),
            values(shape.d_out, seed + 2),
        )
    }

    /// The largest |got − want| / (1 + |want|).
    fn worst_relative(got: &[f32], want: &[f64]) -> f64 {
        let scaled: Vec<(f64, f64)> = want.iter().map(|&w| (w, w.abs())).collect();
        worst_scaled_error(got, &scaled)
    }

    /// Shapes that are not multiples of any tile size, a single row and a single column.
    const SHAPES: [Shape; 4] = [
        Shape {
            rows: 37,
            d_in: 70,
            d_out: 45,
        },
        Shape {
            rows: 1,
            d_in: 33,
            d_out: 17,
        },
        Shape {
            rows: 130,
            d_in: 129,
            d_out: 1,
        },
        Shape {
            rows: 9,
            d_in: 3,
            d_out: 66,
        },
    ];

    /// How an int8 path prepares a weight (with the inputs' per-channel maxima, if known).
    type Prepare = fn(&[f32], usize, usize, Option<&[f32]>) -> PreparedWeight;

    /// Every int8 path this CPU runs: its name, how it prepares a weight, its weight levels.
    fn int8_paths() -> Vec<(&'static str, Prepare, f32)> {
        let mut paths: Vec<(&str, Prepare, f32)> = vec![
            ("rten-gemm", PreparedWeight::int8_rten, rten_weight_levels()),
            (
                "f32 emulation",
                PreparedWeight::int8_emulated,
                FULL_WEIGHT_LEVELS,
            ),
        ];
        if int8_gemm::available() {
            paths.push(("vpdpbusd", PreparedWeight::int8, FULL_WEIGHT_LEVELS));
        }
        paths
    }

    /// x with channel 0 `factor` times larger: the outlier channel LayerNorm outputs have.
    fn with_outlier_channel(mut x: Vec<f32>, width: usize, factor: f32) -> Vec<f32> {
        for row in x.chunks_exact_mut(width) {
            row[0] *= factor;
        }
        x
    }

    #[test]
    fn int8_products_equal_the_dequantized_operands_product() {
        // Beyond the shared shapes: several panels, depth slices (> 512 k), row blocks.
        let large = Shape {
            rows: 150,
            d_in: 601,
            d_out: 70,
        };
        for (path, prepare, levels) in int8_paths() {
            for shape in SHAPES.into_iter().chain([large]) {
                let (x, w, b) = operands(shape, 1);
                let x = with_outlier_channel(x, shape.d_in, 20.0);
                // Unsmoothed, and smoothed by the inputs' own channel maxima.
                for input_max in [None, Some(column_max_abs(&x, shape.d_in))] {
                    let input_max = input_max.as_deref();
                    let got =
                        prepare(&w, shape.d_in, shape.d_out, input_max).forward(&x, &b, shape);
                    // The exact product of the operands as the kernel sees them (scale · (code −
                    // zero), the smoothing folded in), so only the i32 sum and the epilogue are
                    // under test, exactly.
                    let factors = smoothing(&w, shape.d_in, shape.d_out, input_max);
                    let (w_smoothed, channel_scale) = smoothed(&w, shape.d_out, &factors);
                    let (codes, scales) =
                        quantize_columns(&w_smoothed, shape.d_in, shape.d_out, levels);
                    let w_seen: Vec<f32> = codes
                        .iter()
                        .enumerate()
                        .map(|(i, &q)| f32::from(q) * scales[i % shape.d_out])
                        .collect();
                    let rows_q = quantize_rows(&x, shape.d_in, &channel_scale, ACTIVATION_LEVELS);
                    let x_seen: Vec<f32> = rows_q
                        .codes
                        .iter()
                        .enumerate()
                        .map(|(i, &q)| {
                            let r = i / shape.d_in;
                            (f32::from(q) - f32::from(rows_q.zero_points[r])) * rows_q.scales[r]
                        })
                        .collect();
                    let want = reference(&x_seen, &w_seen, &b, shape);
                    let worst = worst_relative(&got, &want);
                    let smoothed = input_max.is_some();
                    assert!(
                        worst < 1e-5,
                        "{shape:?} ({path}, smoothed {smoothed}): off by {worst}"
                    );
                    if !smoothed {
                        // The outlier channel sets every row's step: the next test measures it.
                        continue;
                    }
                    // Smoothed, the quantization stays close to the f32 product.
                    let exact = reference(&x, &w, &b, shape);
                    let scale = exact.iter().map(|v| v.abs()).fold(1.0, f64::max);
                    let error = got
                        .iter()
                        .zip(&exact)
                        .map(|(&g, &e)| (f64::from(g) - e).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        error < 0.05 * scale,
                        "{shape:?} ({path}, smoothed): int8 off by {error} of {scale}"
                    );
                }
            }
        }
    }

    #[test]
    fn smoothing_shrinks_the_error_an_outlier_channel_causes() {
        let shape = Shape {
            rows: 64,
            d_in: 96,
            d_out: 40,
        };
        let (x, w, b) = operands(shape, 11);
        let x = with_outlier_channel(x, shape.d_in, 50.0);
        let exact = reference(&x, &w, &b, shape);
        let rms_error = |got: &[f32]| {
            let squares: f64 = got
                .iter()
                .zip(&exact)
                .map(|(&g, &e)| (f64::from(g) - e).powi(2))
                .sum();
            (squares / got.len() as f64).sqrt()
        };
        let input_max = column_max_abs(&x, shape.d_in);
        let factors = smoothing(&w, shape.d_in, shape.d_out, Some(&input_max));
        assert!(factors[0] > 2.0 * factors[1..].iter().fold(0f32, |m, &f| m.max(f)));
        for (path, prepare, _) in int8_paths() {
            let plain = prepare(&w, shape.d_in, shape.d_out, None).forward(&x, &b, shape);
            let smoothed =
                prepare(&w, shape.d_in, shape.d_out, Some(&input_max)).forward(&x, &b, shape);
            let (plain, smoothed) = (rms_error(&plain), rms_error(&smoothed));
            assert!(
                smoothed < 0.7 * plain,
                "{path}: rms error {smoothed} smoothed, {plain} not"
            );
        }
    }

    #[test]
    fn the_kernels_variable_picks_the_emulation_only_when_it_says_so() {
        let parse = |v: Option<&str>| LowPrecisionKernels::from_variable(v.map(String::from));
        assert_eq!(parse(Some("emulated")), LowPrecisionKernels::Emulated);
        for value in [
            None,
            Some(""),
            Some("native"),
            Some("Emulated"),
            Some("vnni"),
        ] {
            assert_eq!(parse(value), LowPrecisionKernels::Native, "{value:?}");
        }
    }

    #[test]
    fn rows_quantize_onto_their_range_with_zero_exact() {
        let x = [
            -1.0, 0.0, 3.0, 0.5, /* all positive */ 2.0, 4.0, 1.0, 3.0,
        ];
        for levels in [127u8, 255] {
            let q = quantize_rows(&x, 4, &[1.0; 4], levels);
            for r in 0..2 {
                let row = &x[r * 4..r * 4 + 4];
                let zero = q.zero_points[r];
                for (k, &v) in row.iter().enumerate() {
                    let code = q.codes[r * 4 + k];
                    assert!(code <= levels);
                    let back = (f32::from(code) - f32::from(zero)) * q.scales[r];
                    assert!(
                        (back - v).abs() <= q.scales[r] / 2.0 + 1e-6,
                        "{v} -> {back}"
                    );
                }
            }
            // The second row is all positive: its range starts at 0, so its zero point is 0.
            assert_eq!(q.zero_points[1], 0);
        }
    }

    #[test]
    fn a_zero_row_and_a_zero_column_stay_zero() {
        let shape = Shape {
            rows: 2,
            d_in: 5,
            d_out: 3,
        };
        let mut x = values(10, 4);
        x[..5].fill(0.0);
        let mut w = values(15, 5);
        for k in 0..5 {
            w[k * 3 + 1] = 0.0;
        }
        let b = [0.0; 3];
        for (path, prepare, _) in int8_paths() {
            let y = prepare(&w, 5, 3, None).forward(&x, &b, shape);
            assert_eq!(&y[..3], &[0.0; 3], "{path}");
            assert_eq!((y[1], y[4]), (0.0, 0.0), "{path}");
        }
    }

    #[test]
    fn bf16_products_equal_the_rounded_operands_product() {
        // Beyond the shared shapes: several panels, k-slices, row blocks and an odd width.
        let large = Shape {
            rows: 150,
            d_in: 301,
            d_out: 70,
        };
        type PrepareBf16 = fn(&[f32], usize, usize) -> PreparedWeight;
        let prepare: [(&str, PrepareBf16); 2] = [
            ("emulated", PreparedWeight::bf16_emulated),
            ("this CPU's", PreparedWeight::bf16),
        ];
        for shape in SHAPES.into_iter().chain([large]) {
            let (x, w, b) = operands(shape, 6);
            let rounded = |v: &[f32]| -> Vec<f32> {
                v.iter()
                    .map(|&v| half::bf16::from_f32(v).to_f32())
                    .collect()
            };
            let want = reference(&rounded(&x), &rounded(&w), &b, shape);
            for (path, prepare) in prepare {
                let got = prepare(&w, shape.d_in, shape.d_out).forward(&x, &b, shape);
                let worst = worst_relative(&got, &want);
                assert!(
                    worst < 1e-5,
                    "{shape:?}, {path} bf16 (kernel {}): off by {worst}",
                    bf16_gemm::available()
                );
            }
            // The rounding is real: some operand changed.
            assert_ne!(rounded(&x), x);
        }
    }
}
