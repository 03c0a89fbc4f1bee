//! Multi-head attention's core, softmax(q·kᵀ/√d + mask)·v, fused per (batch entry, head) on
//! row-major `f32` slices, forward and backward.
//!
//! Burn's composition splits the heads out of `[batch, seq, hidden]` (a copy of q, k and v),
//! allocates `[batch, heads, seq, seq]` scores, then probabilities, then dropped-out
//! probabilities, and merges the heads back (another copy). Here one rayon task per head reads
//! its q, k, v columns in place, keeps its `seq × seq` block in cache through the product, the
//! softmax, dropout and the second product, and writes its columns of the output. Training keeps
//! only the probabilities (and the dropout mask) for the backward.

use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::bf16_gemm::{self, PackedBf16};
use super::packed_gemm::Output;
use super::product::{product, Threads};
use super::AttentionProducts;

use super::kernels;

/// The attention's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Heads {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements of one head's `seq × seq` probabilities.
    pub fn block(&self) -> usize {
        self.seq * self.seq
    }

    /// Elements of all heads' probabilities, `[batch, heads, seq, seq]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.block()
    }

    fn divisor(&self) -> f32 {
        (self.head_dim as f32).sqrt()
    }

    /// `[batch, seq, hidden]` over `values`.
    fn view<'a>(&self, values: &'a [f32]) -> ArrayView3<'a, f32> {
        ArrayView3::from_shape((self.batch, self.seq, self.hidden()), values)
            .unwrap_or_else(|_| unreachable!("attention: inputs are [batch, seq, hidden]"))
    }

    /// Every (batch entry, head) task's writable `seq × head_dim` columns of `out`, in task
    /// order (batch-major).
    fn columns_mut<'a>(&self, out: &'a mut [f32]) -> Vec<ArrayViewMut2<'a, f32>> {
        let mut rest =
            ndarray::ArrayViewMut3::from_shape((self.batch, self.seq, self.hidden()), out)
                .unwrap_or_else(|_| unreachable!("attention: outputs are [batch, seq, hidden]"));
        let mut columns = Vec::with_capacity(self.batch * self.heads);
        for _ in 0..self.batch {
            let (entry, tail) = rest.split_at(Axis(0), 1);
            rest = tail;
            let mut entry = entry.index_axis_move(Axis(0), 0);
            for _ in 0..self.heads {
                let (head, tail) = entry.split_at(Axis(1), self.head_dim);
                columns.push(head);
                entry = tail;
            }
        }
        columns
    }
}

/// The inputs of one attention: `[batch, seq, hidden]` projections and the key mask.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub query: &'a [f32],
    pub key: &'a [f32],
    pub value: &'a [f32],
    /// `[batch, seq]`: what each key adds to its scores (0, or [`crate::model::MASKED`]).
    pub key_mask: &'a [f32],
    pub dims: Heads,
}

impl Inputs<'_> {
    /// The `seq × head_dim` columns of head `task % heads` of batch entry `task / heads`.
    fn head<'a>(&self, values: &'a [f32], task: usize) -> ArrayView2<'a, f32> {
        let (entry, head) = (task / self.dims.heads, task % self.dims.heads);
        let d = self.dims.head_dim;
        self.dims
            .view(values)
            .slice_move(s![entry, .., head * d..(head + 1) * d])
    }

    fn key_mask_row(&self, task: usize) -> &[f32] {
        let entry = task / self.dims.heads;
        &self.key_mask[entry * self.dims.seq..(entry + 1) * self.dims.seq]
    }
}

/// `probs` · `dropout` (or `probs` itself without dropout) into `scratch`.
fn dropped<'a>(probs: &'a [f32], dropout: Option<&[f32]>, scratch: &'a mut Vec<f32>) -> &'a [f32] {
    match dropout {
        None => probs,
        Some(mask) => {
            scratch.clear();
            scratch.extend(probs.iter().zip(mask).map(|(p, m)| p * m));
            scratch
        }
    }
}

fn square(values: &[f32], seq: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((seq, seq), values)
        .unwrap_or_else(|_| unreachable!("attention: blocks are seq × seq"))
}

fn square_mut(values: &mut [f32], seq: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((seq, seq), values)
        .unwrap_or_else(|_| unreachable!("attention: blocks are seq × seq"))
}

/// The forward pass: returns the `[batch, seq, hidden]` output. `dropout` is the
/// `[batch, heads, seq, seq]` mask (already scaled by 1/(1 − p)); `saved_probs`, when given
/// (`probs_len()` elements), receives the probabilities before dropout for the backward.
///
/// `products` says what q·kᵀ and p·v compute in: bf16 only in inference (no dropout, nothing
/// saved), where the CPU has AVX512-BF16.
pub fn forward(
    inputs: Inputs,
    dropout: Option<&[f32]>,
    saved_probs: Option<&mut [f32]>,
    products: AttentionProducts,
) -> Vec<f32> {
    let dims = inputs.dims;
    let mut out = vec![0f32; dims.batch * dims.seq * dims.hidden()];
    let columns = dims.columns_mut(&mut out);
    let in_bf16 = products == AttentionProducts::Bf16
        && dropout.is_none()
        && saved_probs.is_none()
        && bf16_gemm::available();
    if in_bf16 {
        columns.into_par_iter().enumerate().for_each(|(task, out)| {
            let mut probs = vec![0f32; dims.block()];
            head_in_bf16(inputs, task, &mut probs, out)
        });
        return out;
    }
    let head = |task: usize, probs: &mut [f32], out: ArrayViewMut2<f32>| {
        let mut out = out;
        let (seq, block) = (dims.seq, dims.block());
        product(
            1.0,
            &inputs.head(inputs.query, task),
            &inputs.head(inputs.key, task).t(),
            0.0,
            &mut square_mut(probs, seq),
            Threads::Caller,
        );
        kernels::softmax_rows_one_mask(probs, inputs.key_mask_row(task), dims.divisor());
        let mask = dropout.map(|m| &m[task * block..(task + 1) * block]);
        let mut scratch = Vec::new();
        let weights = dropped(probs, mask, &mut scratch);
        product(
            1.0,
            &square(weights, seq),
            &inputs.head(inputs.value, task),
            0.0,
            &mut out,
            Threads::Caller,
        );
    };
    match saved_probs {
        Some(saved) => saved
            .par_chunks_mut(dims.block())
            .zip(columns)
            .enumerate()
            .for_each(|(task, (probs, out))| head(task, probs, out)),
        None => columns.into_par_iter().enumerate().for_each(|(task, out)| {
            let mut probs = vec![0f32; dims.block()];
            head(task, &mut probs, out)
        }),
    }
    out
}

/// One head's softmax(q·kᵀ/√d + mask)·v with both products on bf16 operands (f32 sums),
/// into `out`; `probs` is its `seq × seq` scratch.
fn head_in_bf16(inputs: Inputs, task: usize, probs: &mut [f32], mut out: ArrayViewMut2<f32>) {
    let Heads { seq, head_dim, .. } = inputs.dims;
    let (query, key, value) = (
        inputs.head(inputs.query, task),
        inputs.head(inputs.key, task),
        inputs.head(inputs.value, task),
    );
    // q·kᵀ: q's rows as bf16 words, kᵀ packed (element (k, c) is key c's k-th value).
    let keys = PackedBf16::from_columns(head_dim, seq, |c| contiguous(key.row(c)));
    let q_words = bf16_rows(seq, keys.depth(), |i| query.row(i));
    let scores = Output {
        start: probs.as_mut_ptr(),
        stride: seq,
    };
    // SAFETY: `probs` is seq × seq floats, borrowed mutably here.
    unsafe { keys.multiply_into(&q_words, seq, &vec![0.0; seq], scores, Threads::Caller) };
    kernels::softmax_rows_one_mask(probs, inputs.key_mask_row(task), inputs.dims.divisor());
    // p·v: p's rows as bf16 words, v packed as it is.
    let values = PackedBf16::from_rows(seq, head_dim, |k| contiguous(value.row(k)));
    let p_words = bf16_rows(seq, values.depth(), |i| {
        square(probs, seq).index_axis_move(Axis(0), i)
    });
    let out_rows = Output {
        start: out.as_mut_ptr(),
        stride: out.strides()[0] as usize,
    };
    // SAFETY: `out` is this task's seq × head_dim columns of the output (row stride `hidden`),
    // borrowed mutably here; no other task writes these columns.
    unsafe {
        values.multiply_into(
            &p_words,
            seq,
            &vec![0.0; head_dim],
            out_rows,
            Threads::Caller,
        )
    };
}

/// A head's row (its `head_dim` values of one position) as a slice.
fn contiguous(row: ndarray::ArrayView1<'_, f32>) -> &[f32] {
    row.to_slice()
        .unwrap_or_else(|| unreachable!("attention: head rows are contiguous"))
}

/// `rows` rows as bf16 words, `depth` words each.
fn bf16_rows<'a>(
    rows: usize,
    depth: usize,
    row: impl Fn(usize) -> ndarray::ArrayView1<'a, f32>,
) -> Vec<u32> {
    let mut words = vec![0u32; rows * depth];
    for (i, words) in words.chunks_exact_mut(depth.max(1)).enumerate() {
        bf16_gemm::convert_row(contiguous(row(i)), words);
    }
    words
}

/// The backward pass: from d loss / d output (`[batch, seq, hidden]`) and what the forward saved,
/// returns d loss / d (query, key, value).
pub fn backward(
    inputs: Inputs,
    grad_out: &[f32],
    probs: &[f32],
    dropout: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dims = inputs.dims;
    let len = dims.batch * dims.seq * dims.hidden();
    let (mut d_query, mut d_key, mut d_value) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    let tasks = dims
        .columns_mut(&mut d_query)
        .into_iter()
        .zip(dims.columns_mut(&mut d_key))
        .zip(dims.columns_mut(&mut d_value))
        .enumerate()
        .collect::<Vec<_>>();
    let scale = 1.0 / dims.divisor();
    tasks
        .into_par_iter()
        .for_each(|(task, ((mut d_query, mut d_key), mut d_value))| {
            let (seq, block) = (dims.seq, dims.block());
            let probs = &probs[task * block..(task + 1) * block];
            let mask = dropout.map(|m| &m[task * block..(task + 1) * block]);
            let grad_out = inputs.head(grad_out, task);
            let mut scratch = Vec::new();
            // out = P'·v with P' = P·mask: d v = P'ᵀ·d out, d P' = d out·vᵀ.
            let weights = dropped(probs, mask, &mut scratch);
            product(
                1.0,
                &square(weights, seq).t(),
                &grad_out,
                0.0,
                &mut d_value,
                Threads::Caller,
            );
            let mut d_probs = vec![0f32; block];
            product(
                1.0,
                &grad_out,
                &inputs.head(inputs.value, task).t(),
                0.0,
                &mut square_mut(&mut d_probs, seq),
                Threads::Caller,
            );
            if let Some(mask) = mask {
                d_probs.iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
            }
            // Through the softmax (and its 1/√d): d scores. Then scores = q·kᵀ/√d.
            kernels::softmax_rows_backward_one_task(&mut d_probs, probs, seq, 1.0);
            let d_scores = square(&d_probs, seq);
            product(
                scale,
                &d_scores,
                &inputs.head(inputs.key, task),
                0.0,
                &mut d_query,
                Threads::Caller,
            );
            product(
                scale,
                &d_scores.t(),
                &inputs.head(inputs.query, task),
                0.0,
                &mut d_key,
                Threads::Caller,
            );
        });
    (d_query, d_key, d_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(v: f32) -> f64 {
        f64::from(half::bf16::from_f32(v).to_f32())
    }

    /// softmax(r(q)·r(k)ᵀ/√d + mask)·r(v) in f64, the probabilities rounded to bf16 before the
    /// second product (r: round to bf16), as the bf16 heads compute it.
    fn reference(inputs: Inputs) -> Vec<f64> {
        let Heads {
            batch,
            seq,
            heads,
            head_dim,
        } = inputs.dims;
        let hidden = heads * head_dim;
        let at = |values: &[f32], b: usize, i: usize, h: usize, d: usize| {
            round(values[(b * seq + i) * hidden + h * head_dim + d])
        };
        let mut out = vec![0f64; batch * seq * hidden];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let scores: Vec<f64> = (0..seq)
                        .map(|j| {
                            let dot: f64 = (0..head_dim)
                                .map(|d| at(inputs.query, b, i, h, d) * at(inputs.key, b, j, h, d))
                                .sum();
                            dot / (head_dim as f64).sqrt() + f64::from(inputs.key_mask[b * seq + j])
                        })
                        .collect();
                    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - top).exp()).sum();
                    for d in 0..head_dim {
                        out[(b * seq + i) * hidden + h * head_dim + d] = (0..seq)
                            .map(|j| {
                                let p = round(((scores[j] - top).exp() / total) as f32);
                                p * at(inputs.value, b, j, h, d)
                            })
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn bf16_heads_equal_the_attention_of_their_rounded_operands() {
        // Sizes that are no multiple of the tile (8 rows), the panel (32 columns) or a word
        // (an odd head size), and a batch entry with masked keys.
        let dims = Heads {
            batch: 2,
            seq: 41,
            heads: 3,
            head_dim: 5,
        };
        let len = dims.batch * dims.seq * dims.hidden();
        let values = |seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 400.0)
                .collect()
        };
        let (query, key, value) = (values(1), values(2), values(3));
        let mut key_mask = vec![0f32; dims.batch * dims.seq];
        key_mask[dims.seq + 30..].fill(crate::model::MASKED);
        let inputs = Inputs {
            query: &query,
            key: &key,
            value: &value,
            key_mask: &key_mask,
            dims,
        };
        let in_f32 = forward(inputs, None, None, AttentionProducts::F32);
        let in_bf16 = forward(inputs, None, None, AttentionProducts::Bf16);
        if !bf16_gemm::available() {
            // Without AVX512-BF16 the heads stay in f32.
            assert_eq!(in_bf16, in_f32);
            return;
        }
        let want = reference(inputs);
        let worst = in_bf16
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f64::max);
        // Only a probability whose f32 value lies within rounding of a bf16 tie can round the
        // other way (one bf16 step of one term).
        assert!(worst < 1e-3, "bf16 attention off by {worst}");
        assert_ne!(in_bf16, in_f32, "the bf16 heads ran");
    }
}
