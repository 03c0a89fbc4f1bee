//! Multi-head attention's core, softmax(q·kᵀ/√d + mask)·v, fused per (batch entry, head) on
//! row-major `f32` slices, forward and backward; with DeBERTa's relative-position terms added to
//! the scores when the inputs carry them ([`Relative`]).
//!
//! Burn's composition splits the heads out of `[batch, seq, hidden]` (a copy of q, k and v),
//! allocates `[batch, heads, seq, seq]` scores, then probabilities, then dropped-out
//! probabilities, and merges the heads back (another copy). Here one rayon task per head reads
//! its q, k, v columns in place, keeps its `seq × seq` block in cache through the product, the
//! softmax, dropout and the second product, and writes its columns of the output. Training keeps
//! only the probabilities (and the dropout mask) for the backward. Inference may run both
//! products on bf16 operands: AVX512-BF16's kernel, or its exact emulation on the f32 products.

use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::bf16_gemm::{self, PackedBf16};
use super::low_precision::{kernels, round_bf16, rounded_bf16, LowPrecisionKernels};
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

/// DeBERTa's disentangled terms (see `crate::deberta_v2`): each score (q, k) adds
/// q·pₖ[row(q, k)] (content → position, `c2p`) and k·p_q[row(q, k)] (position → content,
/// `p2c`), where pₖ and p_q are the relative-position table through the key and query
/// projections.
#[derive(Clone, Copy)]
pub struct Relative<'a> {
    /// `[table_rows, hidden]`: the table through the key projection, for `c2p`.
    pub pos_key: Option<&'a [f32]>,
    /// `[table_rows, hidden]`: the table through the query projection, for `p2c`.
    pub pos_query: Option<&'a [f32]>,
    /// `[seq, seq]`: the table row each (query, key) reads.
    pub rows: &'a [u32],
    pub table_rows: usize,
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
    /// What the scores are divided by: √head_dim (DeBERTa: √(head_dim · terms)).
    pub divisor: f32,
    pub relative: Option<Relative<'a>>,
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

    /// The `table_rows × head_dim` columns of head `task % heads` of a `[table_rows, hidden]`
    /// position table.
    fn table_head<'a>(&self, table: &'a [f32], rows: usize, task: usize) -> ArrayView2<'a, f32> {
        let (head, d) = (task % self.dims.heads, self.dims.head_dim);
        ArrayView2::from_shape((rows, self.dims.hidden()), table)
            .unwrap_or_else(|_| unreachable!("attention: position tables are [rows, hidden]"))
            .slice_move(s![.., head * d..(head + 1) * d])
    }
}

/// `content`'s head (`seq × head_dim`) times the head's columns of `table`, transposed:
/// `seq × table_rows`, each position's product with every row of the table.
fn by_row(
    inputs: &Inputs,
    relative: &Relative,
    content: &[f32],
    table: &[f32],
    task: usize,
) -> Vec<f32> {
    let (seq, rows) = (inputs.dims.seq, relative.table_rows);
    let mut out = vec![0f32; seq * rows];
    let mut view = ArrayViewMut2::from_shape((seq, rows), out.as_mut_slice())
        .unwrap_or_else(|_| unreachable!("attention: seq × rows"));
    product(
        1.0,
        &inputs.head(content, task),
        &inputs.table_head(table, rows, task).t(),
        0.0,
        &mut view,
        Threads::Caller,
    );
    out
}

/// Adds the relative-position terms of head `task` to its `seq × seq` scores.
fn add_relative(inputs: &Inputs, task: usize, scores: &mut [f32]) {
    let Some(relative) = inputs.relative else {
        return;
    };
    let (seq, rows) = (inputs.dims.seq, relative.table_rows);
    let c2p = relative
        .pos_key
        .map(|table| by_row(inputs, &relative, inputs.query, table, task));
    let p2c = relative
        .pos_query
        .map(|table| by_row(inputs, &relative, inputs.key, table, task));
    for (q, (scores, row_of)) in scores
        .chunks_exact_mut(seq)
        .zip(relative.rows.chunks_exact(seq))
        .enumerate()
    {
        if let Some(c2p) = &c2p {
            let query_row = &c2p[q * rows..(q + 1) * rows];
            for (score, &row) in scores.iter_mut().zip(row_of) {
                *score += query_row[row as usize];
            }
        }
        if let Some(p2c) = &p2c {
            for (k, (score, &row)) in scores.iter_mut().zip(row_of).enumerate() {
                *score += p2c[k * rows + row as usize];
            }
        }
    }
}

/// The gradient of each table row's product from d scores: `seq × table_rows`, summing every
/// score of a query (`c2p`, [`Side::Query`]) or of a key (`p2c`, [`Side::Key`]) that read the row.
fn gradient_by_row(d_scores: &[f32], relative: &Relative, seq: usize, side: Side) -> Vec<f32> {
    let rows = relative.table_rows;
    let mut out = vec![0f32; seq * rows];
    for (q, (d_scores, row_of)) in d_scores
        .chunks_exact(seq)
        .zip(relative.rows.chunks_exact(seq))
        .enumerate()
    {
        for (k, (&g, &row)) in d_scores.iter().zip(row_of).enumerate() {
            let position = match side {
                Side::Query => q,
                Side::Key => k,
            };
            out[position * rows + row as usize] += g;
        }
    }
    out
}

/// Which side of a score a relative term's content comes from.
#[derive(Clone, Copy)]
enum Side {
    Query,
    Key,
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
/// saved); by `vdpbf16ps` where the CPU has AVX512-BF16, else (and under
/// `QA_LOW_PRECISION_KERNELS=emulated`) the same arithmetic on the f32 kernels.
pub fn forward(
    inputs: Inputs,
    dropout: Option<&[f32]>,
    saved_probs: Option<&mut [f32]>,
    products: AttentionProducts,
) -> Vec<f32> {
    let inference = dropout.is_none() && saved_probs.is_none();
    let bf16 = (products == AttentionProducts::Bf16 && inference).then(|| {
        if bf16_gemm::available() && kernels() == LowPrecisionKernels::Native {
            Bf16Heads::Kernel
        } else {
            Bf16Heads::Emulated
        }
    });
    forward_in(inputs, dropout, saved_probs, bf16)
}

/// How heads in bf16 run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bf16Heads {
    /// AVX512-BF16's `vdpbf16ps` ([`head_in_bf16`]).
    Kernel,
    /// The same arithmetic on the f32 kernels.
    Emulated,
}

/// [`forward`], its heads in bf16 as `bf16` says (`None`: f32).
fn forward_in(
    inputs: Inputs,
    dropout: Option<&[f32]>,
    saved_probs: Option<&mut [f32]>,
    bf16: Option<Bf16Heads>,
) -> Vec<f32> {
    let dims = inputs.dims;
    let mut out = vec![0f32; dims.batch * dims.seq * dims.hidden()];
    let columns = dims.columns_mut(&mut out);
    if bf16 == Some(Bf16Heads::Kernel) {
        columns.into_par_iter().enumerate().for_each(|(task, out)| {
            let mut probs = vec![0f32; dims.block()];
            head_in_bf16(inputs, task, &mut probs, out)
        });
        return out;
    }
    // The emulation of the bf16 heads: q, k, v and the probabilities rounded to bf16 as
    // `vdpbf16ps` reads them; a product of two bf16 values is exact in f32, so the f32 kernels
    // then compute what the bf16 kernel does (up to the order of the f32 sums).
    let rounded = (bf16 == Some(Bf16Heads::Emulated))
        .then(|| [inputs.query, inputs.key, inputs.value].map(rounded_bf16));
    let operands = match &rounded {
        Some([query, key, value]) => Inputs {
            query,
            key,
            value,
            ..inputs
        },
        None => inputs,
    };
    let head = |task: usize, probs: &mut [f32], out: ArrayViewMut2<f32>| {
        let mut out = out;
        let (seq, block) = (dims.seq, dims.block());
        product(
            1.0,
            &operands.head(operands.query, task),
            &operands.head(operands.key, task).t(),
            0.0,
            &mut square_mut(probs, seq),
            Threads::Caller,
        );
        // The relative terms read the unrounded projections, as the bf16 heads' do.
        add_relative(&inputs, task, probs);
        kernels::softmax_rows_one_mask(probs, inputs.key_mask_row(task), inputs.divisor);
        if rounded.is_some() {
            probs.iter_mut().for_each(|p| *p = round_bf16(*p));
        }
        let mask = dropout.map(|m| &m[task * block..(task + 1) * block]);
        let mut scratch = Vec::new();
        let weights = dropped(probs, mask, &mut scratch);
        product(
            1.0,
            &square(weights, seq),
            &operands.head(operands.value, task),
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
    add_relative(&inputs, task, probs);
    kernels::softmax_rows_one_mask(probs, inputs.key_mask_row(task), inputs.divisor);
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

/// d loss / d each input of [`forward`].
pub struct Gradients {
    pub query: Vec<f32>,
    pub key: Vec<f32>,
    pub value: Vec<f32>,
    /// `[table_rows, hidden]`, when the inputs had [`Relative::pos_key`].
    pub pos_key: Option<Vec<f32>>,
    /// `[table_rows, hidden]`, when the inputs had [`Relative::pos_query`].
    pub pos_query: Option<Vec<f32>>,
}

/// One task's share of a position table's gradient (`table_rows × head_dim`), summed over the
/// batch entries afterwards ([`sum_table_shares`]).
type TableShare<'a> = Option<&'a mut [f32]>;

/// Per-task shares of a table's gradient: one `table_rows × head_dim` chunk each.
fn table_shares(relative: Option<&Relative>, has_table: bool, dims: Heads) -> Option<Vec<f32>> {
    let relative = relative.filter(|_| has_table)?;
    Some(vec![
        0f32;
        dims.batch
            * dims.heads
            * relative.table_rows
            * dims.head_dim
    ])
}

/// Sums each head's shares over the batch entries into a `[table_rows, hidden]` gradient.
fn sum_table_shares(shares: Vec<f32>, rows: usize, dims: Heads) -> Vec<f32> {
    let (d, hidden) = (dims.head_dim, dims.hidden());
    let mut out = vec![0f32; rows * hidden];
    for (task, share) in shares.chunks_exact(rows * d).enumerate() {
        let head = task % dims.heads;
        for (r, values) in share.chunks_exact(d).enumerate() {
            let row = &mut out[r * hidden + head * d..r * hidden + (head + 1) * d];
            row.iter_mut().zip(values).for_each(|(o, v)| *o += v);
        }
    }
    out
}

/// The backward pass: from d loss / d output (`[batch, seq, hidden]`) and what the forward saved,
/// returns d loss / d (query, key, value) and, with relative terms, d loss / d position tables.
pub fn backward(
    inputs: Inputs,
    grad_out: &[f32],
    probs: &[f32],
    dropout: Option<&[f32]>,
) -> Gradients {
    let dims = inputs.dims;
    let len = dims.batch * dims.seq * dims.hidden();
    let (mut d_query, mut d_key, mut d_value) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    let relative = inputs.relative;
    let mut pos_key_shares = table_shares(
        relative.as_ref(),
        relative.is_some_and(|r| r.pos_key.is_some()),
        dims,
    );
    let mut pos_query_shares = table_shares(
        relative.as_ref(),
        relative.is_some_and(|r| r.pos_query.is_some()),
        dims,
    );
    let share_len = relative.map_or(0, |r| r.table_rows * dims.head_dim);
    fn shares(table: &mut Option<Vec<f32>>, share_len: usize, tasks: usize) -> Vec<TableShare<'_>> {
        match table {
            Some(values) => values.chunks_exact_mut(share_len).map(Some).collect(),
            None => (0..tasks).map(|_| None).collect(),
        }
    }
    let task_count = dims.batch * dims.heads;
    let tasks = dims
        .columns_mut(&mut d_query)
        .into_iter()
        .zip(dims.columns_mut(&mut d_key))
        .zip(dims.columns_mut(&mut d_value))
        .zip(shares(&mut pos_key_shares, share_len, task_count))
        .zip(shares(&mut pos_query_shares, share_len, task_count))
        .enumerate()
        .collect::<Vec<_>>();
    let scale = 1.0 / inputs.divisor;
    tasks.into_par_iter().for_each(
        |(task, ((((mut d_query, mut d_key), mut d_value), d_pos_key), d_pos_query))| {
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
            let Some(relative) = relative else {
                return;
            };
            // c2p = q·pₖ[row]: d q += G·pₖ, d pₖ = Gᵀ·q, with G the d scores summed per
            // (query, row); p2c = k·p_q[row] likewise per (key, row).
            let terms = [
                (
                    relative.pos_key,
                    d_pos_key,
                    Side::Query,
                    inputs.query,
                    &mut d_query,
                ),
                (
                    relative.pos_query,
                    d_pos_query,
                    Side::Key,
                    inputs.key,
                    &mut d_key,
                ),
            ];
            for (table, d_table, side, content, d_content) in terms {
                let (Some(table), Some(d_table)) = (table, d_table) else {
                    continue;
                };
                let rows = relative.table_rows;
                let by_row = gradient_by_row(&d_probs, &relative, seq, side);
                let by_row = ArrayView2::from_shape((seq, rows), by_row.as_slice())
                    .unwrap_or_else(|_| unreachable!("attention: seq × rows"));
                product(
                    scale,
                    &by_row,
                    &inputs.table_head(table, rows, task),
                    1.0,
                    d_content,
                    Threads::Caller,
                );
                let mut d_table = ArrayViewMut2::from_shape((rows, dims.head_dim), d_table)
                    .unwrap_or_else(|_| unreachable!("attention: rows × head_dim"));
                product(
                    scale,
                    &by_row.t(),
                    &inputs.head(content, task),
                    0.0,
                    &mut d_table,
                    Threads::Caller,
                );
            }
        },
    );
    let rows = relative.map_or(0, |r| r.table_rows);
    Gradients {
        query: d_query,
        key: d_key,
        value: d_value,
        pos_key: pos_key_shares.map(|s| sum_table_shares(s, rows, dims)),
        pos_query: pos_query_shares.map(|s| sum_table_shares(s, rows, dims)),
    }
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
            divisor: (dims.head_dim as f32).sqrt(),
            relative: None,
        };
        let in_f32 = forward(inputs, None, None, AttentionProducts::F32);
        // The kernel where the CPU has AVX512-BF16, else the emulation; then the emulation.
        let in_bf16 = forward(inputs, None, None, AttentionProducts::Bf16);
        let emulated = forward_in(inputs, None, None, Some(Bf16Heads::Emulated));
        // Probabilities are only saved for a backward, which never runs in bf16: asking for
        // them keeps the heads in f32.
        let mut probs = vec![0f32; dims.probs_len()];
        let saving = forward(inputs, None, Some(&mut probs), AttentionProducts::Bf16);
        assert_eq!(saving, in_f32, "heads that save probabilities stay in f32");
        let want = reference(inputs);
        for (path, got) in [("bf16 heads", &in_bf16), ("their emulation", &emulated)] {
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
                .fold(0.0, f64::max);
            // Only a probability whose f32 value lies within rounding of a bf16 tie can round
            // the other way (one bf16 step of one term).
            assert!(worst < 1e-3, "{path}: bf16 attention off by {worst}");
            assert_ne!(got, &in_f32, "{path}: the bf16 arithmetic ran");
        }
    }
}
