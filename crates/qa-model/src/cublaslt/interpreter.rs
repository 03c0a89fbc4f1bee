//! A CPU interpreter of `cublasLtMatmul`'s documented semantics, for testing the planner: it
//! executes a [`Plan`] on host buffers exactly as cuBLASLt reads its parameters (column-major
//! layouts, `op(A)`/`op(B)`, leading dimensions, strided batches, the `BIAS` epilogue), and
//! refuses what cuBLASLt refuses (`CUBLAS_STATUS_INVALID_VALUE`). Reads and writes outside a
//! buffer are errors too, where the GPU would read garbage. Products are in f64 so that the
//! comparison measures layout, not rounding.
//!
//! <https://docs.nvidia.com/cuda/cublas/#cublasltmatmul>

use super::plan::{Call, Layout, Op, Plan};

/// What cuBLASLt (or the memory behind it) would do with a wrong plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `CUBLAS_STATUS_INVALID_VALUE`: inconsistent sizes or a leading dimension < rows.
    InvalidValue(&'static str),
    /// A read or write past the end of a buffer.
    OutOfBounds(&'static str),
}

fn check_layout(layout: &Layout) -> Result<(), Refused> {
    if layout.ld < layout.rows.max(1) as i64 {
        return Err(Refused::InvalidValue("leading dimension below rows"));
    }
    if layout.batch_count < 1 {
        return Err(Refused::InvalidValue("batch count below 1"));
    }
    Ok(())
}

/// `(rows, cols)` of `op(X)` for a stored layout.
fn op_shape(op: Op, layout: &Layout) -> (u64, u64) {
    match op {
        Op::None => (layout.rows, layout.cols),
        Op::Transpose => (layout.cols, layout.rows),
    }
}

/// Element `(i, j)` of `op(X)` where `X` starts at `base` of `buffer`.
fn read(
    buffer: &[f32],
    base: i64,
    layout: &Layout,
    op: Op,
    i: u64,
    j: u64,
    what: &'static str,
) -> Result<f64, Refused> {
    let (row, col) = match op {
        Op::None => (i, j),
        Op::Transpose => (j, i),
    };
    let at = base + row as i64 + col as i64 * layout.ld;
    usize::try_from(at)
        .ok()
        .and_then(|at| buffer.get(at))
        .map(|&v| f64::from(v))
        .ok_or(Refused::OutOfBounds(what))
}

/// One `cublasLtMatmul` call of `call` with A, B, D at these element offsets (β = 0).
fn matmul(
    call: &Call,
    a: (&[f32], usize),
    b: (&[f32], usize),
    bias: Option<&[f32]>,
    d: (&mut [f32], usize),
) -> Result<(), Refused> {
    for layout in [&call.a, &call.b, &call.d] {
        check_layout(layout)?;
    }
    let (m, k) = op_shape(call.trans_a, &call.a);
    let (k_b, n) = op_shape(call.trans_b, &call.b);
    if k != k_b {
        return Err(Refused::InvalidValue(
            "op(A) columns differ from op(B) rows",
        ));
    }
    if (call.d.rows, call.d.cols) != (m, n) {
        return Err(Refused::InvalidValue("D is not m × n"));
    }
    if call.a.batch_count != call.b.batch_count || call.a.batch_count != call.d.batch_count {
        return Err(Refused::InvalidValue("batch counts differ"));
    }
    if call.a.element != call.b.element {
        return Err(Refused::InvalidValue("A and B types differ"));
    }
    let bias = match (call.bias, bias) {
        (true, Some(bias)) => Some(bias),
        (false, _) => None,
        (true, None) => {
            return Err(Refused::InvalidValue(
                "BIAS epilogue without a bias pointer",
            ))
        }
    };
    let (a, a_start) = a;
    let (b, b_start) = b;
    let (d, d_start) = d;
    for batch in 0..i64::from(call.d.batch_count) {
        let a_base = a_start as i64 + batch * call.a.batch_stride;
        let b_base = b_start as i64 + batch * call.b.batch_stride;
        let d_base = d_start as i64 + batch * call.d.batch_stride;
        for j in 0..n {
            for i in 0..m {
                let mut sum = 0f64;
                for p in 0..k {
                    sum += read(a, a_base, &call.a, call.trans_a, i, p, "A")?
                        * read(b, b_base, &call.b, call.trans_b, p, j, "B")?;
                }
                if let Some(bias) = bias {
                    sum += f64::from(*bias.get(i as usize).ok_or(Refused::OutOfBounds("bias"))?);
                }
                let at = d_base + i as i64 + j as i64 * call.d.ld;
                let slot = usize::try_from(at)
                    .ok()
                    .and_then(|at| d.get_mut(at))
                    .ok_or(Refused::OutOfBounds("D"))?;
                *slot = sum as f32;
            }
        }
    }
    Ok(())
}

/// Executes every call of `plan`: A reads `rhs`, B reads `lhs`, D writes `out` (the planner's
/// mapping), each at its call's offsets.
pub fn execute(
    plan: &Plan,
    lhs: &[f32],
    rhs: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), Refused> {
    for offsets in &plan.offsets {
        matmul(
            &plan.call,
            (rhs, offsets.rhs),
            (lhs, offsets.lhs),
            bias,
            (&mut *out, offsets.out),
        )?;
    }
    Ok(())
}
