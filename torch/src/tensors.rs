//! 1-D tensors as vectors, on the CPU.

use tch::{Device, Kind, TchError, Tensor};

/// A 1-D tensor as a vector of f64.
pub fn to_f64(t: &Tensor) -> Result<Vec<f64>, TchError> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous())
}

/// A 1-D tensor as a vector of i64.
pub fn to_i64(t: &Tensor) -> Result<Vec<i64>, TchError> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).to_device(Device::Cpu).contiguous())
}

/// A 1-D tensor as a vector of bool.
pub fn to_bool(t: &Tensor) -> Result<Vec<bool>, TchError> {
    Vec::<bool>::try_from(t.to_kind(Kind::Bool).to_device(Device::Cpu).contiguous())
}
