//! Matrix products on strided host views through the `gemm` crate, with the threading chosen
//! per call: per-head products inside the attention's rayon tasks stay on their own thread, and
//! the big products of linear layers split over rayon's pool. (ndarray's `general_mat_mul` is
//! matrixmultiply, whose own thread pool took half of every per-head product from inside a
//! rayon task, so the two pools fought over the cores.)

use ndarray::{ArrayView2, ArrayViewMut2};

/// Which threads one product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only: the caller is already one of many parallel tasks.
    Caller,
    /// Every thread of the current rayon pool.
    Pool,
}

/// c = alpha · a · b + beta · c, reading each operand in place whatever its strides.
///
/// # Shapes
///
/// - a: `[m, k]`, b: `[k, n]`, c: `[m, n]`
pub fn product(
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ArrayViewMut2<f32>,
    threads: Threads,
) {
    let ((m, k), (k_b, n)) = (a.dim(), b.dim());
    assert!(
        k == k_b && c.dim() == (m, n),
        "product: [{m}, {k}] · [{k_b}, {n}] into {:?}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.mapv_inplace(|v| beta * v);
        return;
    }
    let parallelism = match threads {
        Threads::Caller => gemm::Parallelism::None,
        Threads::Pool => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    let (a_rows, a_cols) = (a.strides()[0], a.strides()[1]);
    let (b_rows, b_cols) = (b.strides()[0], b.strides()[1]);
    let (c_rows, c_cols) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers and strides come from live ndarray views whose shapes were checked
    // above to be [m, k], [k, n] and [m, n]; `c` is borrowed mutably, so nothing aliases it.
    // gemm's `alpha` scales the destination and its `beta` the product (the BLAS names swapped).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cols,
            c_rows,
            beta != 0.0,
            a.as_ptr(),
            a_cols,
            a_rows,
            b.as_ptr(),
            b_cols,
            b_rows,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The product in f64, element by element.
    fn reference(
        alpha: f32,
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        beta: f32,
        c: &Array2<f32>,
    ) -> Array2<f64> {
        Array2::from_shape_fn(c.dim(), |(i, j)| {
            let dot: f64 = (0..a.ncols())
                .map(|p| f64::from(a[(i, p)]) * f64::from(b[(p, j)]))
                .sum();
            f64::from(alpha) * dot + f64::from(beta) * f64::from(c[(i, j)])
        })
    }

    #[test]
    fn products_of_transposed_and_strided_views_match_the_definition() {
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 25.0;
        let a = Array2::from_shape_fn((70, 33), |(i, j)| value(i * 33 + j));
        let b = Array2::from_shape_fn((70, 45), |(i, j)| value(i * 45 + j + 7));
        let start = Array2::from_shape_fn((33, 45), |(i, j)| value(i + 3 * j));
        for threads in [Threads::Caller, Threads::Pool] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                // aᵀ·b: a transposed view, as the weight gradient reads x.
                let mut c = start.clone();
                product(alpha, &a.t(), &b.view(), beta, &mut c.view_mut(), threads);
                let want = reference(alpha, &a.t(), &b.view(), beta, &start);
                let worst = c
                    .iter()
                    .zip(&want)
                    .map(|(&got, &want)| (f64::from(got) - want).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst < 1e-4,
                    "{threads:?} α {alpha} β {beta}: off by {worst}"
                );
            }
        }
        // Column blocks of a wider matrix (a head's columns) as operand and destination.
        let wide = Array2::from_shape_fn((20, 64), |(i, j)| value(i * 64 + j));
        let head = wide.slice(ndarray::s![.., 32..48]);
        let mut out = Array2::<f32>::zeros((20, 64));
        product(
            1.0,
            &wide.slice(ndarray::s![.., 0..20]).t(),
            &head,
            0.0,
            &mut out.slice_mut(ndarray::s![.., 16..32]),
            Threads::Caller,
        );
        let want = reference(
            1.0,
            &wide.slice(ndarray::s![.., 0..20]).t(),
            &head,
            0.0,
            &Array2::zeros((20, 16)),
        );
        for ((i, j), &w) in want.indexed_iter() {
            assert!((f64::from(out[(i, j + 16)]) - w).abs() < 1e-4);
        }
        assert!(out.slice(ndarray::s![.., ..16]).iter().all(|&v| v == 0.0));
    }
}
