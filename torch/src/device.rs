//! The `device` parameter: `auto`, `cpu`, `cuda` or `cuda:N`.
//!
//! On a GPU, cuDNN's benchmark mode is off (it picks convolution algorithms by timing them,
//! so two runs could differ); `pipe` starts workers with `CUBLAS_WORKSPACE_CONFIG=:4096:8`
//! (cuBLAS's deterministic workspaces). The Rust binding exposes no switch for PyTorch's
//! deterministic algorithms, so a GPU run may still differ from another in the last bits
//! where kernels add with atomics (some convolution backward passes).

use tch::{Cuda, Device};

/// Resolves a device name on this machine, or says why it cannot be used.
pub fn resolve(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(gpu_settings(Device::cuda_if_available())),
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
            Ok(gpu_settings(Device::Cuda(n)))
        }
    }
}

/// Turns cuDNN's benchmark mode off for a CUDA device (see the module docs).
fn gpu_settings(device: Device) -> Device {
    if device.is_cuda() {
        Cuda::cudnn_set_benchmark(false);
    }
    device
}
