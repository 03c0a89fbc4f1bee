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

use super::product::{product, Threads};

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
pub fn forward(
    inputs: Inputs,
    dropout: Option<&[f32]>,
    saved_probs: Option<&mut [f32]>,
) -> Vec<f32> {
    let dims = inputs.dims;
    let mut out = vec![0f32; dims.batch * dims.seq * dims.hidden()];
    let columns = dims.columns_mut(&mut out);
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
