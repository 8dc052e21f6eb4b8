//! Run-time choice of the CPU kernel: feature detection plus the `BITNET_KERNEL` override.
//!
//! `BITNET_KERNEL` takes `scalar`, `avx2`, `avx512` (VNNI when present, else BW), `avx512bw`,
//! `avx512vnni`, `neon` (dotprod when present, else plain), `neon-plain`, `neon-dotprod`.

use crate::error::{KernelError, Result};
use std::sync::OnceLock;

/// Environment variable that forces a kernel.
pub const KERNEL_ENV: &str = "BITNET_KERNEL";

/// One implementation of the ternary (and int8) dot-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable scalar reference; every other kernel must match it bit for bit.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512BW without VNNI: 512-bit `vpmaddubsw` + `vpmaddwd`.
    Avx512Bw,
    /// x86-64 AVX-512 VNNI: `vpdpbusd`.
    Avx512Vnni,
    /// AArch64 NEON without dot-product instructions: `smull` + `sadalp`.
    Neon,
    /// AArch64 NEON with the dot-product extension: `sdot`.
    NeonDotprod,
}

impl Kernel {
    /// Every kernel, fastest first within each architecture.
    pub const ALL: [Kernel; 6] =
        [Kernel::Avx512Vnni, Kernel::Avx512Bw, Kernel::Avx2, Kernel::NeonDotprod, Kernel::Neon, Kernel::Scalar];

    /// The name `BITNET_KERNEL` uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Bw => "avx512bw",
            Kernel::Avx512Vnni => "avx512vnni",
            Kernel::Neon => "neon-plain",
            Kernel::NeonDotprod => "neon-dotprod",
        }
    }

    /// Whether this CPU (and this build's target architecture) can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bw => std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The kernel itself if this CPU can run it, else [`KernelError::KernelUnavailable`] (what every entry point
    /// that takes an explicit kernel checks first).
    pub fn checked(self) -> Result<Kernel> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(KernelError::KernelUnavailable(self.name()))
        }
    }

    /// The kernels this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Self::ALL.into_iter().find(|k| k.is_available()).unwrap_or(Kernel::Scalar)
    }

    /// Parses a `BITNET_KERNEL` name and checks that this CPU can run it.
    pub fn parse(name: &str) -> Result<Kernel> {
        let first_available = |candidates: &[Kernel], label: &'static str| {
            candidates.iter().copied().find(|k| k.is_available()).ok_or(KernelError::KernelUnavailable(label))
        };
        let kernel = match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Kernel::Scalar,
            "avx2" => Kernel::Avx2,
            "avx512" => return first_available(&[Kernel::Avx512Vnni, Kernel::Avx512Bw], "avx512"),
            "avx512bw" => Kernel::Avx512Bw,
            "avx512vnni" => Kernel::Avx512Vnni,
            "neon" => return first_available(&[Kernel::NeonDotprod, Kernel::Neon], "neon"),
            "neon-plain" => Kernel::Neon,
            "neon-dotprod" => Kernel::NeonDotprod,
            other => return Err(KernelError::UnknownKernel(other.to_string())),
        };
        kernel.checked()
    }

    /// The kernel `BITNET_KERNEL` asks for, `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Kernel>> {
        match std::env::var(KERNEL_ENV) {
            Ok(v) if !v.trim().is_empty() => Kernel::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The process-wide kernel: `BITNET_KERNEL` if set and valid, else [`Kernel::best`]. Resolved once.
    /// An invalid override is reported once on stderr and ignored; applications that want a hard error
    /// call [`Kernel::from_env`] at start-up.
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| match Kernel::from_env() {
            Ok(Some(k)) => k,
            Ok(None) => Kernel::best(),
            Err(e) => {
                eprintln!("warning: ignoring {KERNEL_ENV}: {e}; using {}", Kernel::best().name());
                Kernel::best()
            }
        })
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_names_round_trip() {
        assert!(Kernel::Scalar.is_available());
        for k in Kernel::available() {
            assert_eq!(Kernel::parse(k.name()).unwrap(), k);
        }
        assert!(matches!(Kernel::parse("sse9"), Err(KernelError::UnknownKernel(_))));
    }

    #[test]
    fn foreign_architecture_kernels_are_unavailable() {
        #[cfg(target_arch = "x86_64")]
        assert!(Kernel::parse("neon-plain").is_err());
        #[cfg(target_arch = "aarch64")]
        assert!(Kernel::parse("avx2").is_err());
    }
}
