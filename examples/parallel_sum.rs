//! The primers' classic: "sum a huge list across all cores" — cut the list into pieces, sum
//! each piece on its own core, add up the partial sums. Python needs processes for this
//! (its GIL lets one thread compute at a time); Rust's threads run in parallel, and
//! `ThreadPool::scope` lets them read the list in place, without copying it anywhere.
//!
//! ```text
//! cargo run --release --example parallel_sum [-- ELEMENTS]
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use brigade::ThreadPool;

/// Real work per element (eight rounds of splitmix64's mixer), so the sum is limited by the
/// CPU and not by memory bandwidth: the case where more cores mean proportionally less time.
fn heavy(x: u64) -> u64 {
    (0..8).fold(x, |z, _| {
        let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn plain(x: u64) -> u64 {
    x
}

fn serial(numbers: &[u64], f: fn(u64) -> u64) -> u64 {
    numbers.iter().fold(0u64, |acc, &x| acc.wrapping_add(f(x)))
}

fn parallel(pool: &ThreadPool, numbers: &[u64], f: fn(u64) -> u64) -> u64 {
    // A few pieces per core, so a core that finishes early picks up another piece.
    let piece = numbers.len().div_ceil(pool.workers() * 4).max(1);
    pool.scope(|s| {
        let partials: Vec<_> = numbers
            .chunks(piece)
            .map(|part| s.spawn(move || serial(part, f)))
            .collect();
        partials
            .into_iter()
            .map(|t| t.result().expect("summing cannot fail"))
            .fold(0u64, u64::wrapping_add)
    })
}

/// The fastest of three runs: the one least disturbed by whatever else the machine does.
fn best_of_three(mut run: impl FnMut() -> u64) -> (u64, Duration) {
    let mut best = Duration::MAX;
    let mut value = 0;
    for _ in 0..3 {
        let start = Instant::now();
        value = black_box(run());
        best = best.min(start.elapsed());
    }
    (value, best)
}

fn main() {
    let elements: u64 = match std::env::args().nth(1) {
        None => 20_000_000,
        Some(arg) => match arg.replace('_', "").parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("parallel_sum: ELEMENTS must be a positive whole number, not {arg:?}");
                std::process::exit(2);
            }
        },
    };
    let pool = ThreadPool::new();
    let numbers: Vec<u64> = (0..elements).collect();
    println!(
        "Summing {elements} numbers on {} cores ({} MB in place, no copies).\n",
        pool.workers(),
        elements * 8 / 1_000_000
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "", "1 core", "all cores", "speedup"
    );
    let cores = pool.workers() as f64;
    let mut speedups = Vec::new();
    for (label, f) in [
        ("plain sum (memory-bound)", plain as fn(u64) -> u64),
        ("hash each, then sum (CPU)", heavy),
    ] {
        let (expected, one) = best_of_three(|| serial(&numbers, f));
        let (got, all) = best_of_three(|| parallel(&pool, &numbers, f));
        assert_eq!(got, expected, "the parallel sum must equal the serial one");
        let speedup = one.as_secs_f64() / all.as_secs_f64();
        speedups.push(speedup);
        println!(
            "{label:<28} {:>8.1}ms {:>8.1}ms {:>7.2}x",
            one.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3,
            speedup
        );
    }
    println!(
        "\nOn {cores} cores the CPU-bound sum ran {:.2}x faster ({:.0}% of the ideal {cores}x); \
         the plain sum, which mostly waits on memory, {:.2}x.",
        speedups[1],
        100.0 * speedups[1] / cores,
        speedups[0]
    );
}
