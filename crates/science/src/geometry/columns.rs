//! Column access to faer matrices of any layout.

use faer::MatRef;

/// Calls `f(j, column j)` for every column of `m`, as a contiguous slice (copied into a
/// buffer when `m` is not column-major).
pub(crate) fn for_each_column(m: MatRef<'_, f64>, mut f: impl FnMut(usize, &[f64])) {
    if let Some(c) = m.try_as_col_major() {
        for j in 0..m.ncols() {
            f(j, c.col(j).as_slice());
        }
    } else {
        let mut buf = vec![0.0; m.nrows()];
        for j in 0..m.ncols() {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = m[(i, j)];
            }
            f(j, &buf);
        }
    }
}
