//! `--device`: which burn backend a command runs on, and the dispatch from a command to its backend type.
//!
//! * `cpu`: burn's Flex with the bitnet-kernels SIMD kernels (always built);
//! * `wgpu`: burn-wgpu (Vulkan, Metal, DX12; `--features wgpu`), the CubeCL kernels;
//! * `cuda`: burn-cuda (`--features cuda`), the same CubeCL kernels.

use super::UsageError;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use clap::{Args, ValueEnum};

/// The backends a command can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU (burn Flex + the bitnet-kernels SIMD kernels).
    Cpu,
    /// A GPU through burn-wgpu (build with `--features wgpu`).
    Wgpu,
    /// An NVIDIA GPU through burn-cuda (build with `--features cuda`).
    Cuda,
}

impl Device {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_built(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// A usage error unless this binary was built with the backend.
    pub fn check_built(self) -> Result<()> {
        if !self.is_built() {
            let name = self.name();
            return Err(UsageError(format!("--device {name} needs a bitnet built with `--features {name}`")).into());
        }
        Ok(())
    }
}

/// The `--device` option.
#[derive(Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Where the model runs: cpu, wgpu (a GPU through Vulkan/Metal/DX12) or cuda (an NVIDIA GPU); the GPU
    /// backends need a binary built with `--features wgpu` or `--features cuda`.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
}

/// Work that runs on any backend: the command's body, generic over the backend type.
pub trait OnDevice {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and its default device.
    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<Self::Output>;
}

/// Runs `work` on the backend `device` names.
pub fn on_device<W: OnDevice>(device: Device, work: W) -> Result<W::Output> {
    device.check_built()?;
    match device {
        Device::Cpu => work.run::<burn::backend::Flex>(&Default::default()),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => work.run::<burn::backend::Wgpu>(&Default::default()),
        #[cfg(feature = "cuda")]
        Device::Cuda => work.run::<burn::backend::Cuda>(&Default::default()),
        #[allow(unreachable_patterns)]
        _ => unreachable!("check_built refused it"),
    }
}
