//! Isolation: run a batch through a process pool where some inputs crash the code that
//! handles them (think of a native parser that segfaults on malformed files). Each crash costs
//! one worker process, which the pool replaces; every other result arrives, and the crashed
//! inputs are reported by name. With threads, the first segfault would end the program.
//!
//! ```text
//! cargo run --release --example isolate_crashy
//! ```

use std::time::Instant;

use brigade::{Error, ProcessPool};

/// A stand-in for fragile native code: "parses" a record, and dies outright (as a segfault or
/// an abort would kill the process) on the inputs it cannot handle.
fn parse(record: String) -> usize {
    if record.contains("corrupt") {
        // What a bad pointer in a C library does to the process.
        std::process::abort();
    }
    if record.contains("bug") {
        panic!("unexpected field in {record}");
    }
    record.split(',').count()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: Vec<String> = (0..40)
        .map(|i| match i {
            7 | 23 => format!("id={i},corrupt header"),
            31 => format!("id={i},bug"),
            _ => format!("id={i},name=item{i},price={}", i * 3),
        })
        .collect();

    let pool = ProcessPool::builder().workers(2).build()?;
    let started = Instant::now();
    let (mut fields, mut crashed, mut panicked) = (0, Vec::new(), Vec::new());
    for (record, outcome) in records.iter().zip(pool.map(records.clone(), parse)) {
        match outcome {
            Ok(n) => fields += n,
            Err(e @ Error::WorkerCrashed { .. }) => crashed.push(format!("  {record:<24} {e}")),
            Err(e) => panicked.push(format!("  {record:<24} {e}")),
        }
    }
    let ok = records.len() - crashed.len() - panicked.len();
    println!(
        "{ok} of {} records parsed ({fields} fields) in {:.1?}",
        records.len(),
        started.elapsed()
    );
    println!("crashed their worker (replaced, the rest went on):");
    crashed.iter().for_each(|line| println!("{line}"));
    println!("panicked (the worker survived):");
    panicked.iter().for_each(|line| println!("{line}"));
    Ok(())
}
