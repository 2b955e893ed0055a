//! A workaround for a cost that faer's x86 kernels leave behind.

/// Marks the upper halves of the thread's vector registers clean (`vzeroupper`).
///
/// faer's x86 matrix-product kernels (crate `private-gemm-x86`, hand-written AVX and
/// AVX-512 assembly) return without `vzeroupper`. Until something clears them, every SSE
/// instruction the thread runs pays for the dirty upper halves (on the Xeon this was
/// written on, the bandwidth search after a faer product ran 29 times slower). Called after
/// faer's work and at the start of each parallel task, since rayon's threads may have run
/// faer for someone else. Changes no value.
pub(crate) fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, checked just above.
        unsafe { zero_upper() }
    }
}

/// `vzeroupper`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}
