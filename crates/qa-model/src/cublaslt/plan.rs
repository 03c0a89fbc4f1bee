//! The layout planner: how one product of row-major (or strided) tensors is asked of cuBLASLt,
//! a column-major library. Plain Rust with no CUDA in it, so that the CPU machines test every
//! choice it makes (`super::interpreter` executes a plan by cuBLASLt's documented semantics).
//!
//! Our product is `out[b] = lhs[b] · rhs[b]` (+ `bias` on every row), `lhs[b]` `m × k`,
//! `rhs[b]` `k × n`, `out[b]` `m × n` row-major and contiguous, where every operand is a strided
//! view: element `(b, r, c)` of `lhs` sits at `b·batch + r·row + c·col` elements from its start
//! (Burn's transposes and `swap_dims` are such views, never copies).
//!
//! cuBLASLt computes `D = α·op(A)·op(B) + β·C` on column-major matrices (element `(i, j)` at
//! `i + j·ld`). A row-major `m × n` matrix is the column-major `n × m` matrix of its transpose,
//! so we ask for `outᵀ = rhsᵀ · lhsᵀ`: cuBLASLt's **A is our `rhs`**, its **B is our `lhs`**,
//! its `m, n, k` are our `n, m, k`, and each operand is passed untransposed when its columns are
//! contiguous (`col` stride 1: the leading dimension is its row stride) and transposed when its
//! rows are (`row` stride 1: the leading dimension is its column stride). An operand with
//! neither stride 1 has no cuBLASLt layout: [`PlanError::NeedsContiguous`] says which, and the
//! engine copies that one operand first.
//!
//! Batch dimensions (attention's `[batch, heads]`) fold into one strided batch where their
//! strides nest (contiguous `[batch, heads, seq, d]`); dimensions that do not nest (the
//! `[batch, seq, heads, d]` views attention reads its heads from) become a short list of calls,
//! each a strided batch at its own offsets, so no head is ever copied out.
//! The bias of cuBLASLt's `BIAS` epilogue has one entry per row of `D`, which is one per column
//! of our `out`: exactly a linear layer's bias.

/// The element types a product reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    F32,
    Bf16,
    F16,
}

impl Element {
    /// Size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Element::F32 => 4,
            Element::Bf16 | Element::F16 => 2,
        }
    }
}

/// What cuBLASLt accumulates in (`cublasComputeType_t`). Always f32: half-precision inputs
/// accumulate in f32; f32 inputs use TF32 tensor cores only when asked
/// ([`crate::cublaslt::Tf32`]), since TF32 rounds the inputs to 10 mantissa bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compute {
    /// `CUBLAS_COMPUTE_32F`: exact f32 (f32 inputs) or f32 accumulation (half inputs).
    F32,
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`: f32 inputs on TF32 tensor cores.
    F32FastTf32,
}

/// cuBLASLt's `cublasOperation_t` for one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `CUBLAS_OP_N`
    None,
    /// `CUBLAS_OP_T`
    Transpose,
}

/// A strided matrix (or batch of matrices) in a flat buffer, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct View {
    pub rows: usize,
    pub cols: usize,
    /// Elements between `(r, c)` and `(r + 1, c)`.
    pub row_stride: usize,
    /// Elements between `(r, c)` and `(r, c + 1)`.
    pub col_stride: usize,
}

impl View {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        View {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same elements read as the transposed matrix (Burn's `transpose`, a view).
    pub fn transposed(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// One batch dimension of a product: its size and each operand's stride along it (0 where an
/// operand is broadcast over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchDim {
    pub size: usize,
    pub lhs: usize,
    pub rhs: usize,
    pub out: usize,
}

/// The product the model asks for: `out = lhs · rhs (+ bias)` over `batch` (outermost first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Product {
    pub batch: Vec<BatchDim>,
    pub lhs: View,
    pub rhs: View,
    /// Element type of `lhs` and `rhs` (cuBLASLt needs them equal).
    pub inputs: Element,
    /// Element type of `out` (f32 from half inputs keeps the accumulator's precision).
    pub output: Element,
    pub compute: Compute,
    /// A bias of `n` entries (in the output's type) added to every row of `out`.
    pub bias: bool,
}

impl Product {
    /// A product of contiguous row-major operands sharing `batch` (outermost first).
    pub fn contiguous(batch: &[usize], m: usize, k: usize, n: usize) -> Self {
        let mut dims = Vec::with_capacity(batch.len());
        let (mut lhs, mut rhs, mut out) = (m * k, k * n, m * n);
        for &size in batch.iter().rev() {
            dims.push(BatchDim {
                size,
                lhs,
                rhs,
                out,
            });
            lhs *= size;
            rhs *= size;
            out *= size;
        }
        dims.reverse();
        Product {
            batch: dims,
            lhs: View::row_major(m, k),
            rhs: View::row_major(k, n),
            inputs: Element::F32,
            output: Element::F32,
            compute: Compute::F32,
            bias: false,
        }
    }

    /// `(m, k, n)` of one matrix of the batch.
    pub fn mkn(&self) -> (usize, usize, usize) {
        (self.lhs.rows, self.lhs.cols, self.rhs.cols)
    }
}

/// A tensor as it lies in memory: its dimensions and each one's stride in elements (Burn's
/// `shape` and `strides`).
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub dims: &'a [usize],
    pub strides: &'a [usize],
}

/// `[batch…, m, n]` of `lhs · rhs` for `[batch…, m, k]` and `[batch…, k, n]`, batch dimensions
/// broadcast (each equal, or 1 on one side).
pub fn output_dims(lhs: &[usize], rhs: &[usize]) -> Vec<usize> {
    let rank = lhs.len();
    let mut dims: Vec<usize> = (0..rank - 2).map(|i| lhs[i].max(rhs[i])).collect();
    dims.extend([lhs[rank - 2], rhs[rank - 1]]);
    dims
}

impl Product {
    /// The product of two tensors of equal rank ≥ 2 as they lie in memory, into a contiguous
    /// output; a batch dimension of size 1 against a larger one is broadcast (stride 0).
    pub fn of_tensors(
        lhs: Strided<'_>,
        rhs: Strided<'_>,
        inputs: Element,
        output: Element,
        compute: Compute,
        bias: bool,
    ) -> Self {
        let rank = lhs.dims.len();
        let out = output_dims(lhs.dims, rhs.dims);
        let mut out_stride = out[rank - 2] * out[rank - 1];
        let mut batch: Vec<BatchDim> = Vec::with_capacity(rank - 2);
        for i in (0..rank - 2).rev() {
            let stride = |t: Strided<'_>| match t.dims[i] == out[i] {
                true => t.strides[i],
                false => 0,
            };
            batch.push(BatchDim {
                size: out[i],
                lhs: stride(lhs),
                rhs: stride(rhs),
                out: out_stride,
            });
            out_stride *= out[i];
        }
        batch.reverse();
        let view = |t: Strided<'_>| View {
            rows: t.dims[rank - 2],
            cols: t.dims[rank - 1],
            row_stride: t.strides[rank - 2],
            col_stride: t.strides[rank - 1],
        };
        Product {
            batch,
            lhs: view(lhs),
            rhs: view(rhs),
            inputs,
            output,
            // Half inputs always accumulate in plain f32; TF32 concerns f32 inputs only.
            compute: match inputs {
                Element::F32 => compute,
                Element::Bf16 | Element::F16 => Compute::F32,
            },
            bias,
        }
    }
}

/// One cuBLASLt matrix layout (`cublasLtMatrixLayoutCreate` + its batch attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub element: Element,
    pub rows: u64,
    pub cols: u64,
    /// Leading dimension: elements between consecutive columns.
    pub ld: i64,
    /// `CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT`.
    pub batch_count: i32,
    /// `CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET`, in elements.
    pub batch_stride: i64,
}

/// The cuBLASLt parameters of one `cublasLtMatmul` call shape (the cacheable part: descriptors
/// and the heuristic's algorithm depend on this alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Call {
    pub trans_a: Op,
    pub trans_b: Op,
    pub compute: Compute,
    /// Layout of A, which points at our `rhs`.
    pub a: Layout,
    /// Layout of B, which points at our `lhs`.
    pub b: Layout,
    /// Layout of C and D (`C` is `D`, with β = 0): our `out`.
    pub d: Layout,
    /// `CUBLASLT_EPILOGUE_BIAS` with a bias of `d.rows` entries, else `CUBLASLT_EPILOGUE_DEFAULT`.
    pub bias: bool,
}

/// Element offsets of one call's operands from the starts of `lhs`, `rhs` and `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub lhs: usize,
    pub rhs: usize,
    pub out: usize,
}

/// A product as cuBLASLt calls: one call shape, issued at each of `offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub call: Call,
    pub offsets: Vec<Offsets>,
}

/// The largest power of two, at most 256, dividing every address in `addresses`: what the
/// heuristic is told to expect of an operand (`CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES`).
/// Heads read in place start 2·head_dim bytes apart in bf16, which is less than the 256 bytes
/// cuBLASLt otherwise assumes.
pub fn alignment(addresses: impl Iterator<Item = u64>) -> u32 {
    addresses.fold(256, |align, address| {
        align.min(1u32 << address.trailing_zeros().min(8))
    })
}

/// Which operand of a product has no cuBLASLt layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Lhs,
    Rhs,
}

/// Why a product cannot be planned as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the {0:?} operand has neither contiguous rows nor contiguous columns")]
    NeedsContiguous(Operand),
    #[error("a dimension exceeds cuBLASLt's 32-bit batch count or 64-bit leading dimension")]
    TooLarge,
    #[error("the product's inner dimensions differ (lhs {lhs_cols} columns, rhs {rhs_rows} rows)")]
    Mismatch { lhs_cols: usize, rhs_rows: usize },
}

/// cuBLASLt's (transpose, stored rows, stored cols, ld) for a matrix whose transpose it must
/// read as `op(X)`, i.e. for our `view` read as `viewᵀ` (`view.cols × view.rows`).
fn layout_of_transpose(view: View, which: Operand) -> Result<(Op, usize, usize, usize), PlanError> {
    // A dimension of size 1 has no stride to speak of: give it the one that makes the layout
    // valid (cuBLASLt requires ld ≥ stored rows, and ≥ 1).
    let row_stride = if view.rows == 1 {
        view.cols.max(1)
    } else {
        view.row_stride
    };
    let col_stride = if view.cols == 1 {
        view.rows.max(1)
    } else {
        view.col_stride
    };
    // viewᵀ(i, j) = view(j, i) at j·row_stride + i·col_stride.
    if col_stride == 1 && row_stride >= view.cols.max(1) {
        // Stored untransposed: X(i, j) at i + j·ld, X = viewᵀ of view.cols × view.rows.
        Ok((Op::None, view.cols, view.rows, row_stride))
    } else if row_stride == 1 && col_stride >= view.rows.max(1) {
        // Stored as view itself (view.rows × view.cols, ld = col_stride), read transposed.
        Ok((Op::Transpose, view.rows, view.cols, col_stride))
    } else {
        Err(PlanError::NeedsContiguous(which))
    }
}

/// Folds batch dimensions whose strides nest (drops those of size 1), outermost first.
fn fold(batch: &[BatchDim]) -> Vec<BatchDim> {
    let mut folded: Vec<BatchDim> = Vec::new();
    for &dim in batch.iter().filter(|d| d.size != 1) {
        match folded.last_mut() {
            Some(outer)
                if outer.lhs == dim.lhs * dim.size
                    && outer.rhs == dim.rhs * dim.size
                    && outer.out == dim.out * dim.size =>
            {
                *outer = BatchDim {
                    size: outer.size * dim.size,
                    ..dim
                };
            }
            _ => folded.push(dim),
        }
    }
    folded
}

/// Plans `product` as cuBLASLt calls (see the module docs for the mapping).
pub fn plan(product: &Product) -> Result<Plan, PlanError> {
    let (m, k, n) = product.mkn();
    if product.rhs.rows != k {
        return Err(PlanError::Mismatch {
            lhs_cols: k,
            rhs_rows: product.rhs.rows,
        });
    }
    // cuBLASLt's A = rhsᵀ-as-stored, B = lhsᵀ-as-stored.
    let (trans_a, a_rows, a_cols, lda) = layout_of_transpose(product.rhs, Operand::Rhs)?;
    let (trans_b, b_rows, b_cols, ldb) = layout_of_transpose(product.lhs, Operand::Lhs)?;
    let folded = fold(&product.batch);
    let (inner, outer) = match folded.split_last() {
        Some((inner, outer)) => (*inner, outer),
        None => (
            BatchDim {
                size: 1,
                lhs: 0,
                rhs: 0,
                out: 0,
            },
            &[][..],
        ),
    };
    let count = i32::try_from(inner.size).map_err(|_| PlanError::TooLarge)?;
    let to_i64 = |v: usize| i64::try_from(v).map_err(|_| PlanError::TooLarge);
    let layout = |element, rows: usize, cols: usize, ld: usize, stride: usize| {
        Ok(Layout {
            element,
            rows: rows as u64,
            cols: cols as u64,
            ld: to_i64(ld)?,
            batch_count: count,
            batch_stride: to_i64(stride)?,
        })
    };
    let call = Call {
        trans_a,
        trans_b,
        compute: product.compute,
        a: layout(product.inputs, a_rows, a_cols, lda, inner.rhs)?,
        b: layout(product.inputs, b_rows, b_cols, ldb, inner.lhs)?,
        d: layout(product.output, n, m, n.max(1), inner.out)?,
        bias: product.bias,
    };
    // The outer dimensions that did not fold: one call per index, row-major over them.
    let mut offsets = vec![Offsets {
        lhs: 0,
        rhs: 0,
        out: 0,
    }];
    for dim in outer {
        offsets = offsets
            .iter()
            .flat_map(|base| {
                (0..dim.size).map(move |i| Offsets {
                    lhs: base.lhs + i * dim.lhs,
                    rhs: base.rhs + i * dim.rhs,
                    out: base.out + i * dim.out,
                })
            })
            .collect();
    }
    Ok(Plan { call, offsets })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::interpreter::{execute, Refused};
    use super::*;

    /// Each family's base-size widths: (family, hidden, intermediate, heads, embedding width).
    const FAMILIES: &[(&str, usize, usize, usize, usize)] = &[
        ("bert-base", 768, 3072, 12, 768),
        ("minilm-l6", 384, 1536, 12, 384),
        ("distilbert-base", 768, 3072, 12, 768),
        ("roberta-base / xlm-roberta-base", 768, 3072, 12, 768),
        ("electra-small", 256, 1024, 4, 128),
        ("albert-base-v2", 768, 3072, 12, 128),
        ("deberta-v3-base", 768, 3072, 12, 768),
    ];
    const ROWS: usize = 5;
    const BATCH: usize = 2;
    const SEQ: usize = 7;

    /// One more than the largest element offset an operand reaches.
    fn span(batch: &[BatchDim], stride: impl Fn(&BatchDim) -> usize, view: View) -> usize {
        batch
            .iter()
            .map(|d| (d.size - 1) * stride(d))
            .sum::<usize>()
            + (view.rows - 1) * view.row_stride
            + (view.cols - 1) * view.col_stride
            + 1
    }

    fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// The product computed straight from the views' definition.
    fn direct(product: &Product, lhs: &[f32], rhs: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (m, k, n) = product.mkn();
        let out_len = span(&product.batch, |d| d.out, View::row_major(m, n));
        let mut out = vec![0f32; out_len];
        let count: usize = product.batch.iter().map(|d| d.size).product();
        for flat in 0..count {
            let (mut rest, mut l0, mut r0, mut o0) = (flat, 0, 0, 0);
            for dim in product.batch.iter().rev() {
                let i = rest % dim.size;
                rest /= dim.size;
                l0 += i * dim.lhs;
                r0 += i * dim.rhs;
                o0 += i * dim.out;
            }
            for r in 0..m {
                for c in 0..n {
                    let mut sum = bias.map_or(0f64, |b| f64::from(b[c]));
                    for p in 0..k {
                        let l = lhs[l0 + r * product.lhs.row_stride + p * product.lhs.col_stride];
                        let x = rhs[r0 + p * product.rhs.row_stride + c * product.rhs.col_stride];
                        sum += f64::from(l) * f64::from(x);
                    }
                    out[o0 + r * n + c] = sum as f32;
                }
            }
        }
        out
    }

    struct Case {
        lhs: Vec<f32>,
        rhs: Vec<f32>,
        bias: Option<Vec<f32>>,
        expected: Vec<f32>,
    }

    fn case(product: &Product, seed: u64) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let lhs = random(span(&product.batch, |d| d.lhs, product.lhs), &mut rng);
        let rhs = random(span(&product.batch, |d| d.rhs, product.rhs), &mut rng);
        let bias = product.bias.then(|| random(product.rhs.cols, &mut rng));
        let expected = direct(product, &lhs, &rhs, bias.as_deref());
        Case {
            lhs,
            rhs,
            bias,
            expected,
        }
    }

    /// The largest difference between `plan` run by the interpreter and the direct product.
    fn error_of(plan: &Plan, case: &Case, swap_operands: bool) -> Result<f32, Refused> {
        let mut out = vec![f32::NAN; case.expected.len()];
        let (lhs, rhs) = match swap_operands {
            true => (&case.rhs, &case.lhs),
            false => (&case.lhs, &case.rhs),
        };
        execute(plan, lhs, rhs, case.bias.as_deref(), &mut out)?;
        Ok(out
            .iter()
            .zip(&case.expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |worst, e| {
                if e.is_nan() {
                    f32::INFINITY
                } else {
                    worst.max(e)
                }
            }))
    }

    const TOLERANCE: f32 = 1e-4;

    /// Plans `product`, runs the plan through the interpreter and compares with the product.
    fn check(name: &str, product: &Product) -> Plan {
        let plan = plan(product).unwrap_or_else(|e| panic!("{name}: {e}"));
        let case = case(product, 7);
        let error = error_of(&plan, &case, false).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(error <= TOLERANCE, "{name}: error {error}");
        plan
    }

    fn linear(d_in: usize, d_out: usize) -> [(String, Product); 3] {
        let x = View::row_major(ROWS, d_in);
        let w = View::row_major(d_in, d_out);
        let g = View::row_major(ROWS, d_out);
        let of = |lhs: View, rhs: View, bias| Product {
            lhs,
            rhs,
            bias,
            ..Product::contiguous(&[], 1, 1, 1)
        };
        [
            (format!("{d_in}→{d_out} forward"), of(x, w, true)),
            (
                format!("{d_in}→{d_out} dX = dY·Wᵀ"),
                of(g, w.transposed(), false),
            ),
            (
                format!("{d_in}→{d_out} dW = Xᵀ·dY"),
                of(x.transposed(), g, false),
            ),
        ]
    }

    /// Heads read in place from `[batch, seq, heads·head_dim]`: `(batch dims' strides, view)`.
    fn heads_view(heads: usize, head_dim: usize) -> ([usize; 2], View) {
        let hidden = heads * head_dim;
        let view = View {
            rows: SEQ,
            cols: head_dim,
            row_stride: hidden,
            col_stride: 1,
        };
        ([SEQ * hidden, head_dim], view)
    }

    /// A contiguous `[batch, heads, rows, cols]`: `(batch dims' strides, view)`.
    fn contiguous_heads(heads: usize, rows: usize, cols: usize) -> ([usize; 2], View) {
        (
            [heads * rows * cols, rows * cols],
            View::row_major(rows, cols),
        )
    }

    fn batched(
        heads: usize,
        (lhs_strides, lhs): ([usize; 2], View),
        (rhs_strides, rhs): ([usize; 2], View),
    ) -> Product {
        let (m, n) = (lhs.rows, rhs.cols);
        let out = [heads * m * n, m * n];
        let dims = [BATCH, heads];
        Product {
            batch: (0..2)
                .map(|i| BatchDim {
                    size: dims[i],
                    lhs: lhs_strides[i],
                    rhs: rhs_strides[i],
                    out: out[i],
                })
                .collect(),
            lhs,
            rhs,
            ..Product::contiguous(&[], 1, 1, 1)
        }
    }

    /// Attention's forward and backward products, heads read in place where the model does.
    fn attention(heads: usize, head_dim: usize) -> Vec<(String, Product)> {
        let qkv = heads_view(heads, head_dim);
        let transposed = |(strides, view): ([usize; 2], View)| (strides, view.transposed());
        let scores = contiguous_heads(heads, SEQ, SEQ);
        let context = contiguous_heads(heads, SEQ, head_dim);
        vec![
            ("scores = Q·Kᵀ".into(), batched(heads, qkv, transposed(qkv))),
            ("context = P·V".into(), batched(heads, scores, qkv)),
            (
                "dP = dC·Vᵀ".into(),
                batched(heads, context, transposed(qkv)),
            ),
            (
                "dV = Pᵀ·dC".into(),
                batched(heads, transposed(scores), context),
            ),
            ("dQ = dS·K".into(), batched(heads, scores, qkv)),
            ("dK = dSᵀ·Q".into(), batched(heads, transposed(scores), qkv)),
            (
                "contiguous Q·Kᵀ".into(),
                batched(heads, context, transposed(context)),
            ),
        ]
    }

    #[test]
    fn every_linear_product_of_every_family_matches_the_interpreter() {
        for &(family, hidden, intermediate, _, embedding) in FAMILIES {
            let mut shapes = vec![
                (hidden, hidden),
                (hidden, intermediate),
                (intermediate, hidden),
            ];
            shapes.push((hidden, 2)); // the QA head
            if embedding != hidden {
                shapes.push((embedding, hidden));
            }
            for (d_in, d_out) in shapes {
                for (name, product) in linear(d_in, d_out) {
                    check(&format!("{family} {name}"), &product);
                }
            }
        }
    }

    #[test]
    fn every_attention_product_of_every_family_matches_the_interpreter() {
        for &(family, hidden, _, heads, _) in FAMILIES {
            for (name, product) in attention(heads, hidden / heads) {
                check(&format!("{family} {name}"), &product);
            }
        }
    }

    #[test]
    fn heads_read_in_place_take_one_call_per_sequence_and_contiguous_heads_one_call() {
        let in_place = plan(&attention(12, 64)[0].1).unwrap();
        assert_eq!(in_place.offsets.len(), BATCH);
        assert_eq!(in_place.call.a.batch_count, 12);
        assert_eq!(in_place.call.b.ld, 768, "Q rows are hidden apart");
        let contiguous = plan(&attention(12, 64)[6].1).unwrap();
        assert_eq!(contiguous.offsets.len(), 1);
        assert_eq!(contiguous.call.d.batch_count, (BATCH * 12) as i32);
    }

    #[test]
    fn transposes_and_types_reach_the_call() {
        let [forward, input_grad, weight_grad] = linear(384, 1536);
        let call = |p: &Product| plan(p).unwrap().call;
        // Row-major operands need no transpose: the swap does it.
        assert_eq!(
            (call(&forward.1).trans_a, call(&forward.1).trans_b),
            (Op::None, Op::None)
        );
        assert_eq!(call(&input_grad.1).trans_a, Op::Transpose);
        assert_eq!(call(&weight_grad.1).trans_b, Op::Transpose);
        let half = Product {
            inputs: Element::Bf16,
            output: Element::F32,
            compute: Compute::F32,
            ..forward.1
        };
        let c = call(&half);
        assert_eq!(
            (c.a.element, c.b.element, c.d.element),
            (Element::Bf16, Element::Bf16, Element::F32)
        );
        assert!(c.bias);
    }

    #[test]
    fn broadcast_operands_and_unit_dimensions_match_the_interpreter() {
        // DeBERTa's c2p: one position-key table for every sequence of the batch.
        let mut c2p = batched(12, heads_view(12, 64), contiguous_heads(12, 64, 2 * SEQ));
        c2p.batch[0].rhs = 0;
        check("broadcast over the batch", &c2p);
        for (m, k, n) in [(1, 8, 5), (5, 8, 1), (5, 1, 6), (1, 1, 1)] {
            check(
                &format!("{m}×{k}·{k}×{n}"),
                &Product::contiguous(&[3], m, k, n),
            );
            let transposed = Product {
                lhs: View::row_major(k, m).transposed(),
                rhs: View::row_major(n, k).transposed(),
                ..Product::contiguous(&[], m, k, n)
            };
            check(&format!("{m}×{k}·{k}×{n} transposed"), &transposed);
        }
    }

    /// Row-major strides of `dims`.
    fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
        let mut strides = vec![1; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        strides
    }

    /// What Burn hands the engine for attention: `[batch, seq, heads, d]` with heads and
    /// sequence swapped (a view), and keys transposed on top (another view); a position table
    /// broadcast over the batch (DeBERTa).
    #[test]
    fn burn_views_become_the_products_they_stand_for() {
        let (heads, d) = (4, 8);
        let stored = [BATCH, SEQ, heads, d];
        let strides = contiguous_strides(&stored);
        // swap_dims(1, 2): [batch, heads, seq, d], strides swapped alike.
        let q_dims = [BATCH, heads, SEQ, d];
        let q_strides = [strides[0], strides[2], strides[1], strides[3]];
        // transpose(): [batch, heads, d, seq].
        let k_dims = [BATCH, heads, d, SEQ];
        let k_strides = [strides[0], strides[2], strides[3], strides[1]];
        let q = Strided {
            dims: &q_dims,
            strides: &q_strides,
        };
        let k = Strided {
            dims: &k_dims,
            strides: &k_strides,
        };
        let scores = Product::of_tensors(q, k, Element::F32, Element::F32, Compute::F32, false);
        assert_eq!(scores.batch, attention(heads, d)[0].1.batch);
        assert_eq!(
            (scores.lhs, scores.rhs),
            (attention(heads, d)[0].1.lhs, attention(heads, d)[0].1.rhs)
        );
        check("Burn's Q·Kᵀ views", &scores);
        // A table of one batch entry against the whole batch: broadcast, stride 0.
        let table_dims = [1, heads, d, 2 * SEQ];
        let table_strides = contiguous_strides(&table_dims);
        let table = Strided {
            dims: &table_dims,
            strides: &table_strides,
        };
        let c2p = Product::of_tensors(
            q,
            table,
            Element::Bf16,
            Element::F32,
            Compute::F32FastTf32,
            false,
        );
        assert_eq!(c2p.batch[0].rhs, 0);
        assert_eq!(
            output_dims(&q_dims, &table_dims),
            vec![BATCH, heads, SEQ, 2 * SEQ]
        );
        assert_eq!(
            c2p.compute,
            Compute::F32,
            "half inputs accumulate in plain f32"
        );
        check("broadcast table", &c2p);
    }

    #[test]
    fn alignment_is_that_of_the_least_aligned_address() {
        assert_eq!(alignment([0x7f00_0000_0000u64].into_iter()), 256);
        // bf16 heads of 64 at offsets 0, 128, 256… bytes from an aligned base.
        let heads = (0..12u64).map(|h| 0x7f00_0000_0000 + h * 128);
        assert_eq!(alignment(heads), 128);
        assert_eq!(alignment([4096u64, 4098].into_iter()), 2);
    }

    #[test]
    fn operands_without_a_contiguous_dimension_are_refused() {
        let mut product = Product::contiguous(&[], 4, 6, 5);
        product.lhs = View {
            rows: 4,
            cols: 6,
            row_stride: 14,
            col_stride: 2,
        };
        assert_eq!(
            plan(&product),
            Err(PlanError::NeedsContiguous(Operand::Lhs))
        );
        product.lhs = View::row_major(4, 6);
        product.rhs.rows = 7;
        assert!(matches!(plan(&product), Err(PlanError::Mismatch { .. })));
    }

    /// The interpreter must catch a wrong plan: every mutation of a right one (a leading
    /// dimension off by one, a flipped transpose, swapped operands, a wrong batch stride, the
    /// bias dropped) is refused or computes something else.
    #[test]
    fn wrong_leading_dimensions_transposes_operands_or_strides_fail() {
        let mut products: Vec<(String, Product)> = linear(24, 40).into();
        products.extend(attention(4, 16));
        for (name, product) in &products {
            let right = check(name, product);
            let case = case(product, 11);
            type Mutation = fn(&mut Call);
            let mutations: [(&str, Mutation); 8] = [
                ("lda + 1", |c| c.a.ld += 1),
                ("ldb + 1", |c| c.b.ld += 1),
                ("ldd + 1", |c| c.d.ld += 1),
                ("trans_a flipped", |c| c.trans_a = flip(c.trans_a)),
                ("trans_b flipped", |c| c.trans_b = flip(c.trans_b)),
                ("A batch stride + 1", |c| c.a.batch_stride += 1),
                ("B batch stride + 1", |c| c.b.batch_stride += 1),
                ("bias dropped", |c| c.bias = !c.bias),
            ];
            for (what, mutate) in mutations {
                let mut wrong = right.clone();
                mutate(&mut wrong.call);
                if wrong.call.a.batch_count == 1 && what.contains("batch stride") {
                    continue; // one matrix: no stride is read
                }
                if what == "bias dropped" && !product.bias {
                    continue;
                }
                assert_detected(&format!("{name}: {what}"), error_of(&wrong, &case, false));
            }
            assert_detected(
                &format!("{name}: operands swapped"),
                error_of(&right, &case, true),
            );
        }
    }

    fn flip(op: Op) -> Op {
        match op {
            Op::None => Op::Transpose,
            Op::Transpose => Op::None,
        }
    }

    fn assert_detected(name: &str, outcome: Result<f32, Refused>) {
        if let Ok(error) = outcome {
            assert!(error > TOLERANCE, "{name} went unnoticed (error {error})");
        }
    }
}
