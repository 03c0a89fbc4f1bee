//! The fused kernels' arithmetic on row-major `f32` slices: pure functions, shared by inference
//! and autodiff, split over rayon tasks, each task's loop compiled for AVX-512 or AVX2+FMA when
//! the CPU has them ([`multiversioned!`]).
//!
//! Loops are written to vectorise: sums and maxima run on [`LANES`] independent accumulators
//! (IEEE order would otherwise forbid it), and `exp`/`erf` are branch-free polynomials instead
//! of libm calls (`exp` within a few units in the last place, `erf` within 10⁻⁶).

use rayon::prelude::*;

use super::AdamWStep;

/// Independent accumulators in reductions: two AVX-512 or four AVX2 registers' worth.
pub(super) const LANES: usize = 32;

/// Elements (or whole rows of about this many) handed to one rayon task: enough work to amortise
/// the task, small enough to balance the cores.
const TASK_ELEMENTS: usize = 16_384;

fn rows_per_task(width: usize) -> usize {
    (TASK_ELEMENTS / width.max(1)).max(1)
}

/// Defines `fn $name(args) = $generic`: `$generic` (an `#[inline(always)]` function) compiled
/// for AVX-512, for AVX2+FMA and for the baseline, the widest the CPU has chosen at each call.
/// The workspace builds for baseline x86-64, where these loops would be 4 lanes wide and `floor`
/// a libm call.
macro_rules! multiversioned {
    ($(#[$doc:meta])* fn $name:ident = $generic:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA), detected just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, detected just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

pub(super) use multiversioned;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a·b.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((s, x), y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (x − mean)².
#[inline(always)]
fn squared_deviation(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// eˣ for x ≤ 88 (Cephes `expf`): 2ⁿ·eʳ with n = round(x / ln 2), |r| ≤ ln 2 / 2, and eʳ a
/// degree-7 polynomial; inputs below −87.3 give about 1e-38 instead of 0.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to the nearest integer, which the low mantissa bits then hold.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    // ln 2 in two parts, so n · ln 2 is exact to f32 precision.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 0.166_666_65)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    let exponent = (shifted.to_bits() as i32 - ROUNDER.to_bits() as i32) + 127;
    p * f32::from_bits((exponent as u32) << 23)
}

/// erf(x), Abramowitz & Stegun 7.1.26: absolute error 1.5·10⁻⁷ in exact arithmetic, under
/// 10⁻⁶ in `f32`.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// In place: each `keys`-wide row of `scores` becomes softmax(row / divisor + mask), where the
/// mask row is `mask[(row / rows_per_mask) · keys ..][..keys]`.
pub fn softmax_rows(
    scores: &mut [f32],
    mask: &[f32],
    keys: usize,
    rows_per_mask: usize,
    divisor: f32,
) {
    let task = rows_per_task(keys);
    scores
        .par_chunks_mut(task * keys)
        .enumerate()
        .for_each(|(t, block)| {
            let masks = MaskRows {
                mask,
                keys,
                rows_per_mask,
                first_row: t * task,
            };
            softmax_block(block, masks, divisor)
        });
}

/// [`softmax_rows`] on the calling thread, every row with the same mask row: one head of one
/// batch entry, inside a task of its own.
pub fn softmax_rows_one_mask(scores: &mut [f32], mask: &[f32], divisor: f32) {
    let masks = MaskRows {
        mask,
        keys: mask.len(),
        rows_per_mask: usize::MAX,
        first_row: 0,
    };
    softmax_block(scores, masks, divisor)
}

/// Where the rows of one block find their mask rows.
#[derive(Clone, Copy)]
struct MaskRows<'a> {
    mask: &'a [f32],
    keys: usize,
    rows_per_mask: usize,
    first_row: usize,
}

multiversioned!(fn softmax_block = softmax_block_generic(block: &mut [f32], masks: MaskRows, divisor: f32));

#[inline(always)]
fn softmax_block_generic(block: &mut [f32], masks: MaskRows, divisor: f32) {
    let keys = masks.keys;
    let scale = 1.0 / divisor;
    for (r, row) in block.chunks_exact_mut(keys).enumerate() {
        let mask_row = (masks.first_row + r) / masks.rows_per_mask;
        let mask = &masks.mask[mask_row * keys..(mask_row + 1) * keys];
        // Three passes over the row (it stays in L1): scores and their maximum, exponentials
        // and their sum, the normalisation.
        let top = scaled_masked_max(row, mask, scale);
        let inverse = 1.0 / exp_sum(row, top);
        for s in row.iter_mut() {
            *s *= inverse;
        }
    }
}

/// Each score becomes score · `scale` + mask, in place; returns their maximum.
#[inline(always)]
fn scaled_masked_max(row: &mut [f32], mask: &[f32], scale: f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    let mut masks = mask.chunks_exact(LANES);
    for (chunk, mask) in (&mut chunks).zip(&mut masks) {
        for ((s, &m), a) in chunk.iter_mut().zip(mask).zip(acc.iter_mut()) {
            let v = *s * scale + m;
            *s = v;
            *a = if v > *a { v } else { *a };
        }
    }
    let mut top = acc.iter().fold(f32::NEG_INFINITY, |t, &v| t.max(v));
    for (s, &m) in chunks.into_remainder().iter_mut().zip(masks.remainder()) {
        *s = *s * scale + m;
        top = top.max(*s);
    }
    top
}

/// Each value v becomes exp(v − `top`), in place; returns their sum.
#[inline(always)]
fn exp_sum(row: &mut [f32], top: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, a) in chunk.iter_mut().zip(acc.iter_mut()) {
            *s = exp(*s - top);
            *a += *s;
        }
    }
    let mut total: f32 = acc.iter().sum();
    for s in chunks.into_remainder() {
        *s = exp(*s - top);
        total += *s;
    }
    total
}

/// In place: `grad` (d loss / d probs) becomes d loss / d scores for [`softmax_rows`]:
/// p · (g − Σ g·p) / divisor, row by row.
pub fn softmax_rows_backward(grad: &mut [f32], probs: &[f32], keys: usize, divisor: f32) {
    let task = rows_per_task(keys) * keys;
    grad.par_chunks_mut(task)
        .zip(probs.par_chunks(task))
        .for_each(|(grad, probs)| softmax_backward_block(grad, probs, keys, divisor));
}

/// [`softmax_rows_backward`] on the calling thread.
pub fn softmax_rows_backward_one_task(grad: &mut [f32], probs: &[f32], keys: usize, divisor: f32) {
    softmax_backward_block(grad, probs, keys, divisor)
}

multiversioned!(fn softmax_backward_block = softmax_backward_block_generic(
    grad: &mut [f32], probs: &[f32], keys: usize, divisor: f32
));

#[inline(always)]
fn softmax_backward_block_generic(grad: &mut [f32], probs: &[f32], keys: usize, divisor: f32) {
    for (g, p) in grad.chunks_exact_mut(keys).zip(probs.chunks_exact(keys)) {
        let g_dot_p = dot(g, p);
        for (g, p) in g.iter_mut().zip(p) {
            *g = p * (*g - g_dot_p) / divisor;
        }
    }
}

/// γ, β and ε of one LayerNorm.
#[derive(Clone, Copy)]
pub struct NormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub epsilon: f32,
}

/// Normalises each `width`-wide row of `x` in place: (x − mean) · rstd · γ + β, with
/// rstd = 1/√(var + ε). When `saved` is given it receives each row's x̂ = (x − mean) · rstd and
/// its rstd, which the backward reads.
pub fn layer_norm_rows(x: &mut [f32], norm: NormParams, saved: Option<(&mut [f32], &mut [f32])>) {
    let width = norm.gamma.len();
    let task = rows_per_task(width);
    match saved {
        Some((xhat, rstd)) => x
            .par_chunks_mut(task * width)
            .zip(xhat.par_chunks_mut(task * width))
            .zip(rstd.par_chunks_mut(task))
            .for_each(|((x, xhat), rstd)| layer_norm_saving_block(x, xhat, rstd, norm)),
        None => x
            .par_chunks_mut(task * width)
            .for_each(|x| layer_norm_block(x, norm)),
    }
}

/// A row's mean and 1/√(var + ε).
#[inline(always)]
fn row_statistics(row: &[f32], epsilon: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = squared_deviation(row, mean) / n;
    (mean, 1.0 / (var + epsilon).sqrt())
}

multiversioned!(fn layer_norm_block = layer_norm_block_generic(x: &mut [f32], norm: NormParams));

#[inline(always)]
fn layer_norm_block_generic(x: &mut [f32], norm: NormParams) {
    for row in x.chunks_exact_mut(norm.gamma.len()) {
        let (mean, r) = row_statistics(row, norm.epsilon);
        for ((v, g), b) in row.iter_mut().zip(norm.gamma).zip(norm.beta) {
            *v = (*v - mean) * r * g + b;
        }
    }
}

multiversioned!(fn layer_norm_saving_block = layer_norm_saving_block_generic(
    x: &mut [f32], xhat: &mut [f32], rstd: &mut [f32], norm: NormParams
));

#[inline(always)]
fn layer_norm_saving_block_generic(
    x: &mut [f32],
    xhat: &mut [f32],
    rstd: &mut [f32],
    norm: NormParams,
) {
    let width = norm.gamma.len();
    for ((row, xhat), rstd) in x
        .chunks_exact_mut(width)
        .zip(xhat.chunks_exact_mut(width))
        .zip(rstd.iter_mut())
    {
        let (mean, r) = row_statistics(row, norm.epsilon);
        *rstd = r;
        for (((v, h), g), b) in row.iter_mut().zip(xhat).zip(norm.gamma).zip(norm.beta) {
            *h = (*v - mean) * r;
            *v = *h * g + b;
        }
    }
}

/// The backward of [`layer_norm_rows`]: `grad` (d loss / d y) becomes d loss / d x in place,
/// and the returned pair is (d loss / d γ, d loss / d β), summed over rows.
pub fn layer_norm_rows_backward(
    grad: &mut [f32],
    xhat: &[f32],
    rstd: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let width = gamma.len();
    let task = rows_per_task(width);
    grad.par_chunks_mut(task * width)
        .zip(xhat.par_chunks(task * width))
        .zip(rstd.par_chunks(task))
        .map(|((grad, xhat), rstd)| {
            let mut sums = (vec![0f32; width], vec![0f32; width]);
            layer_norm_backward_block(grad, xhat, rstd, gamma, &mut sums);
            sums
        })
        .reduce(
            || (vec![0f32; width], vec![0f32; width]),
            |(mut gamma_a, mut beta_a), (gamma_b, beta_b)| {
                gamma_a.iter_mut().zip(gamma_b).for_each(|(a, b)| *a += b);
                beta_a.iter_mut().zip(beta_b).for_each(|(a, b)| *a += b);
                (gamma_a, beta_a)
            },
        )
}

multiversioned!(fn layer_norm_backward_block = layer_norm_backward_block_generic(
    grad: &mut [f32], xhat: &[f32], rstd: &[f32], gamma: &[f32], sums: &mut (Vec<f32>, Vec<f32>)
));

/// One block of rows; adds the block's d γ and d β into `sums`.
#[inline(always)]
fn layer_norm_backward_block_generic(
    grad: &mut [f32],
    xhat: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    sums: &mut (Vec<f32>, Vec<f32>),
) {
    let width = gamma.len();
    let n = width as f32;
    let (d_gamma, d_beta) = sums;
    for ((g, h), r) in grad
        .chunks_exact_mut(width)
        .zip(xhat.chunks_exact(width))
        .zip(rstd)
    {
        for (((dg, db), g), h) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(&*g).zip(h) {
            *dg += g * h;
            *db += g;
        }
        // d x̂ = g·γ; d x = rstd · (d x̂ − mean(d x̂) − x̂ · mean(d x̂ · x̂)).
        for (g, gm) in g.iter_mut().zip(gamma) {
            *g *= gm;
        }
        let mean_dxhat = sum(g) / n;
        let mean_dxhat_xhat = dot(g, h) / n;
        for (g, h) in g.iter_mut().zip(h) {
            *g = r * (*g - mean_dxhat - h * mean_dxhat_xhat);
        }
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_of(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// In place: x ↦ x/2 · (1 + erf(x/√2)).
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(TASK_ELEMENTS).for_each(gelu_block);
}

multiversioned!(fn gelu_block = gelu_block_generic(x: &mut [f32]));

#[inline(always)]
fn gelu_block_generic(x: &mut [f32]) {
    for v in x {
        *v = gelu_of(*v);
    }
}

/// `out` = x/2 · (1 + erf(x/√2)), keeping `x` for the backward.
pub fn gelu_into(x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS))
        .for_each(|(out, x)| gelu_into_block(x, out));
}

multiversioned!(fn gelu_into_block = gelu_into_block_generic(x: &[f32], out: &mut [f32]));

#[inline(always)]
fn gelu_into_block_generic(x: &[f32], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = gelu_of(*v);
    }
}

/// In place: `grad` (d loss / d y) becomes d loss / d x = grad · (Φ(x) + x·φ(x)).
pub fn gelu_backward(grad: &mut [f32], x: &[f32]) {
    grad.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS))
        .for_each(|(grad, x)| gelu_backward_block(grad, x));
}

multiversioned!(fn gelu_backward_block = gelu_backward_block_generic(grad: &mut [f32], x: &[f32]));

#[inline(always)]
fn gelu_backward_block_generic(grad: &mut [f32], x: &[f32]) {
    for (g, v) in grad.iter_mut().zip(x) {
        let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
        *g *= cdf + v * pdf;
    }
}

/// AdamW in place: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p·(1 − lr·wd),
/// p ← p − m / (√v / √(1−β₂ᵗ) + ε) · lr/(1−β₁ᵗ), with g = grad · grad_scale.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep) {
    param
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(grad.par_chunks(TASK_ELEMENTS))
        .zip(m.par_chunks_mut(TASK_ELEMENTS))
        .zip(v.par_chunks_mut(TASK_ELEMENTS))
        .for_each(|(((param, grad), m), v)| adamw_block(param, grad, m, v, step));
}

multiversioned!(fn adamw_block = adamw_block_generic(
    param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep
));

#[inline(always)]
fn adamw_block_generic(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: AdamWStep,
) {
    for (((p, g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        let g = g * step.grad_scale;
        *m = *m * step.beta1 + g * step.one_minus_beta1;
        *v = *v * step.beta2 + g * g * step.one_minus_beta2;
        if let Some(decay) = step.decay {
            *p *= decay;
        }
        let denom = v.sqrt() / step.sqrt_bias2 + step.epsilon;
        *p -= *m / denom * step.step_size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_libm_to_a_few_ulp() {
        let mut worst_exp = 0f32;
        let mut worst_erf = 0f32;
        for i in -200_000..=20_000 {
            let x = i as f32 * 4e-4; // −80 … 8
            let want = x.exp();
            worst_exp = worst_exp.max((exp(x) - want).abs() / want);
            let y = i as f32 * 1e-4; // −20 … 2
            worst_erf = worst_erf.max((erf(y) - libm::erff(y)).abs());
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp:e}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf:e}");
        assert!(exp(-10_000.0) < 1e-37);
        assert!(erf(0.0).abs() < 1e-6);
    }

    #[test]
    fn reductions_cover_every_element() {
        let x: Vec<f32> = (0..77).map(|i| (i as f32 - 40.0) * 0.5).collect();
        let y: Vec<f32> = (0..77).map(|i| i as f32 * 0.25).collect();
        assert_eq!(sum(&x), x.iter().sum::<f32>());
        // The softmax's fused passes, over 2 full chunks and a tail.
        let mask: Vec<f32> = (0..77)
            .map(|i| if i % 5 == 0 { -10_000.0 } else { 0.0 })
            .collect();
        let mut row = x.clone();
        let top = scaled_masked_max(&mut row, &mask, 0.5);
        let scaled: Vec<f32> = x.iter().zip(&mask).map(|(v, m)| v * 0.5 + m).collect();
        assert_eq!(row, scaled);
        assert_eq!(top, 9.0); // 18 · 0.5, at i = 76 (not masked)
        let total = exp_sum(&mut row, top);
        let exps: Vec<f32> = scaled.iter().map(|v| exp(v - top)).collect();
        assert_eq!(row, exps);
        assert!((total - exps.iter().sum::<f32>()).abs() < 1e-5);
        let want_dot: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((dot(&x, &y) - want_dot).abs() < 1e-3);
        let mean = sum(&x) / 77.0;
        let want_sq: f32 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
        assert!((squared_deviation(&x, mean) - want_sq).abs() < 1e-2);
    }
}
