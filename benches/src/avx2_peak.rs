//! The AVX2 integer-multiply ceiling that the prefill GEMM is measured against.
//!
//! The AVX2 GEMM spends one `vpmaddubsw` (32 products of an unsigned code byte and a signed activation byte,
//! summed in pairs to 16 i16 lanes) and one `vpaddw` (the i16 running sum) per 32 multiply-accumulates, and
//! loads 0.75 vectors per `vpmaddubsw`. These loops run exactly that instruction mix without the kernel's
//! addressing, unpacking or spills, so their rate is what a kernel of that shape can reach on the core at hand:
//! [`maddubs_add`] with all operands in registers, [`maddubs_load_add`] with one 32-byte L1 load per multiply.
//!
//! They are written in assembly because the same loop in intrinsics is not a measurement: with loop-invariant
//! operands the compiler hoists the multiplies out of the loop and times the additions alone.

/// Multiply-accumulates per `vpmaddubsw`.
pub const MACS_PER_MADDUBS: u64 = 32;

/// `vpmaddubsw` instructions per loop iteration of both probes.
pub const MADDUBS_PER_ITERATION: u64 = 8;

/// Runs `iterations` iterations of 8 independent `vpmaddubsw` + `vpaddw` pairs on registers (8 accumulators).
/// `None` if the CPU has no AVX2.
pub fn maddubs_add(iterations: u64) -> Option<()> {
    if !std::arch::is_x86_feature_detected!("avx2") || iterations == 0 {
        return None;
    }
    // SAFETY: AVX2 is present (checked above); the loop touches registers only.
    unsafe { maddubs_add_avx2(iterations) };
    Some(())
}

/// As [`maddubs_add`], with the signed operand of each `vpmaddubsw` loaded from a 256-byte L1-resident buffer.
pub fn maddubs_load_add(iterations: u64) -> Option<()> {
    if !std::arch::is_x86_feature_detected!("avx2") || iterations == 0 {
        return None;
    }
    let buffer = [1u8; 256];
    // SAFETY: AVX2 is present (checked above); the loop reads `buffer[0..256]` only.
    unsafe { maddubs_load_add_avx2(iterations, buffer.as_ptr()) };
    Some(())
}

/// The loop both probes run: `vpmaddubsw` into `ymm0..ymm7` from `ymm8` (all bytes 1) and the eight given signed
/// operands, each result added into one of six i16 accumulators, `{n}` times.
macro_rules! maddubs_add_loop {
    ($s0:literal, $s1:literal, $s2:literal, $s3:literal, $s4:literal, $s5:literal, $s6:literal, $s7:literal; $($operands:tt)*) => {
        std::arch::asm!(
            "vpcmpeqb ymm8, ymm8, ymm8",
            "vpabsb ymm8, ymm8",
            "vmovdqa ymm9, ymm8",
            "2:",
            concat!("vpmaddubsw ymm0, ymm8, ", $s0),
            concat!("vpmaddubsw ymm1, ymm8, ", $s1),
            concat!("vpmaddubsw ymm2, ymm8, ", $s2),
            concat!("vpmaddubsw ymm3, ymm8, ", $s3),
            "vpaddw ymm10, ymm10, ymm0",
            "vpaddw ymm11, ymm11, ymm1",
            "vpaddw ymm12, ymm12, ymm2",
            "vpaddw ymm13, ymm13, ymm3",
            concat!("vpmaddubsw ymm4, ymm8, ", $s4),
            concat!("vpmaddubsw ymm5, ymm8, ", $s5),
            concat!("vpmaddubsw ymm6, ymm8, ", $s6),
            concat!("vpmaddubsw ymm7, ymm8, ", $s7),
            "vpaddw ymm14, ymm14, ymm4",
            "vpaddw ymm15, ymm15, ymm5",
            "vpaddw ymm10, ymm10, ymm6",
            "vpaddw ymm11, ymm11, ymm7",
            "dec {n}",
            "jnz 2b",
            $($operands)*
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
            out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        )
    };
}

/// # Safety
/// AVX2 present; `iterations > 0`.
#[target_feature(enable = "avx2")]
unsafe fn maddubs_add_avx2(iterations: u64) {
    // SAFETY: register-only arithmetic; every register written is declared clobbered.
    unsafe {
        maddubs_add_loop!("ymm9", "ymm9", "ymm9", "ymm9", "ymm9", "ymm9", "ymm9", "ymm9";
            n = inout(reg) iterations => _, options(nostack, nomem),);
    }
}

/// # Safety
/// AVX2 present; `iterations > 0`; `buffer` readable for 256 bytes.
#[target_feature(enable = "avx2")]
unsafe fn maddubs_load_add_avx2(iterations: u64, buffer: *const u8) {
    // SAFETY: reads `buffer[0..256]` (the caller's contract); every register written is declared clobbered.
    unsafe {
        maddubs_add_loop!("[{p}]", "[{p} + 32]", "[{p} + 64]", "[{p} + 96]",
            "[{p} + 128]", "[{p} + 160]", "[{p} + 192]", "[{p} + 224]";
            n = inout(reg) iterations => _, p = in(reg) buffer, options(nostack, readonly),);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probes_run_where_avx2_is_and_refuse_zero_iterations() {
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        assert_eq!(maddubs_add(1000).is_some(), avx2);
        assert_eq!(maddubs_load_add(1000).is_some(), avx2);
        assert!(maddubs_add(0).is_none() && maddubs_load_add(0).is_none());
    }
}
