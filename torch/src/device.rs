//! The `device` parameter: `auto`, `cpu`, `cuda` or `cuda:N`.

use tch::{Cuda, Device};

/// Resolves a device name on this machine, or says why it cannot be used.
pub fn resolve(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        _ => {
            let index = if name == "cuda" {
                Some(0)
            } else {
                name.strip_prefix("cuda:")
                    .and_then(|n| n.parse::<usize>().ok())
            };
            let Some(n) = index else {
                return Err(format!(
                    "device \"{name}\" is not one of auto, cpu, cuda, cuda:N"
                ));
            };
            let count = if Cuda::is_available() {
                Cuda::device_count() as usize
            } else {
                0
            };
            if n >= count {
                return Err(format!(
                    "device \"{name}\" is not available: this machine has {count} CUDA device{}; use device = \"cpu\" or \"auto\"",
                    if count == 1 { "" } else { "s" }
                ));
            }
            Ok(Device::Cuda(n))
        }
    }
}
