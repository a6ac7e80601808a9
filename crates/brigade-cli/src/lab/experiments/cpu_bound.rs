//! `cpu-bound`: the primers' "sum of all elements of a huge list", cut into chunks and
//! summed under each model.

use crate::lab::{Ctx, Outcome};

/// Rounds of the per-element kernel: enough arithmetic that the sum is bound by the CPU, not
/// by memory bandwidth.
pub(crate) const ROUNDS: u32 = 16;

/// The per-element work: an LCG step and a xor-shift, `ROUNDS` times, folded to 16 bits.
/// `python/lab.py` computes the same function, so both languages' sums can be checked
/// against each other.
pub(crate) fn kernel(element: u64) -> u64 {
    let mut x = element;
    for _ in 0..ROUNDS {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x & 0xffff
}

/// The sum of `kernel` over `start..end`: one chunk of the list.
pub(crate) fn chunk_sum(start: u64, end: u64) -> u64 {
    (start..end).map(kernel).sum()
}

pub(crate) fn run(_ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    anyhow::bail!("not written yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_matches_the_python_twin() {
        // Values computed with Python's arbitrary-precision integers, masked to 64 bits.
        assert_eq!(kernel(0), 27951);
        assert_eq!(kernel(1), 17869);
        assert_eq!(kernel(12345), 55286);
        assert_eq!(chunk_sum(0, 1000), 33_363_109);
    }
}
