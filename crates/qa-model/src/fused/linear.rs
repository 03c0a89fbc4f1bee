//! A linear layer, y = x·W + b, and its backward as strided matrix products on row-major `f32`
//! slices.
//!
//! Burn's NdArray matmul copies any operand that is not in standard layout, so its backward
//! (x·Wᵀ-style products with a transposed operand) copied x or W at every step; [`product`]
//! reads the transposed views in place. The bias is added by starting the product from it.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::product::{product, Threads};

/// The sizes of one linear layer applied to `rows` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
}

fn matrix(values: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), values)
        .unwrap_or_else(|_| unreachable!("linear: operands match their shapes"))
}

fn matrix_mut(values: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), values)
        .unwrap_or_else(|_| unreachable!("linear: operands match their shapes"))
}

/// `[rows, d_out]` = x `[rows, d_in]` · weight `[d_in, d_out]` + bias `[d_out]`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], shape: Shape) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(shape.rows * shape.d_out);
    for _ in 0..shape.rows {
        y.extend_from_slice(bias);
    }
    product(
        1.0,
        &matrix(x, shape.rows, shape.d_in),
        &matrix(weight, shape.d_in, shape.d_out),
        1.0,
        &mut matrix_mut(&mut y, shape.rows, shape.d_out),
        Threads::Pool,
    );
    y
}

/// d loss / d x = grad · Wᵀ, `[rows, d_in]`.
pub fn input_grad(grad: &[f32], weight: &[f32], shape: Shape) -> Vec<f32> {
    let mut d_x = vec![0f32; shape.rows * shape.d_in];
    product(
        1.0,
        &matrix(grad, shape.rows, shape.d_out),
        &matrix(weight, shape.d_in, shape.d_out).t(),
        0.0,
        &mut matrix_mut(&mut d_x, shape.rows, shape.d_in),
        Threads::Pool,
    );
    d_x
}

/// d loss / d W = xᵀ · grad, `[d_in, d_out]`.
pub fn weight_grad(grad: &[f32], x: &[f32], shape: Shape) -> Vec<f32> {
    let mut d_weight = vec![0f32; shape.d_in * shape.d_out];
    product(
        1.0,
        &matrix(x, shape.rows, shape.d_in).t(),
        &matrix(grad, shape.rows, shape.d_out),
        0.0,
        &mut matrix_mut(&mut d_weight, shape.d_in, shape.d_out),
        Threads::Pool,
    );
    d_weight
}

/// d loss / d b = grad summed over rows, `[d_out]`.
pub fn bias_grad(grad: &[f32], shape: Shape) -> Vec<f32> {
    matrix(grad, shape.rows, shape.d_out)
        .sum_axis(Axis(0))
        .to_vec()
}
