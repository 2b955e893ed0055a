//! The error every public function of [`crate::geometry`] returns on bad input.

use std::fmt;

/// Why a geometry computation could not be carried out.
#[derive(Clone, Debug, PartialEq)]
pub enum GeometryError {
    /// Fewer manifolds (classes) than the analysis needs.
    TooFewManifolds {
        /// How many were given.
        found: usize,
        /// How many are needed at least.
        needed: usize,
    },
    /// A manifold (class) without any point.
    EmptyManifold {
        /// Index of the manifold in the input.
        index: usize,
    },
    /// Shapes that do not fit together.
    DimensionMismatch(String),
    /// A NaN or infinite value in the input.
    NonFinite(String),
    /// An option out of its range.
    InvalidOption(String),
    /// Input for which the quantity is undefined (for example a manifold whose center is
    /// at the global mean, so that it cannot be normalized).
    Degenerate(String),
    /// An iterative solver that did not reach its tolerance.
    NotConverged(String),
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::TooFewManifolds { found, needed } => {
                write!(f, "need at least {needed} manifolds (classes), got {found}")
            }
            GeometryError::EmptyManifold { index } => write!(f, "manifold {index} has no points"),
            GeometryError::DimensionMismatch(what) => write!(f, "dimension mismatch: {what}"),
            GeometryError::NonFinite(what) => write!(f, "non-finite value: {what}"),
            GeometryError::InvalidOption(what) => write!(f, "invalid option: {what}"),
            GeometryError::Degenerate(what) => write!(f, "degenerate input: {what}"),
            GeometryError::NotConverged(what) => write!(f, "did not converge: {what}"),
        }
    }
}

impl std::error::Error for GeometryError {}

/// Checks that every entry of a matrix is finite; `what` names it in the error.
pub(crate) fn check_finite(
    m: faer::MatRef<'_, f64>,
    what: impl Fn() -> String,
) -> Result<(), GeometryError> {
    let mut bad = None;
    super::columns::for_each_column(m, |j, col| {
        if bad.is_none() && !col.iter().all(|v| v.is_finite()) {
            bad = col.iter().position(|v| !v.is_finite()).map(|i| (i, j));
        }
    });
    match bad {
        Some((i, j)) => Err(GeometryError::NonFinite(format!(
            "{} at row {i}, column {j}",
            what()
        ))),
        None => Ok(()),
    }
}
