//! brigade's benchmarks against rayon, tokio and std: one JSON object per line on stdout.
//!
//! ```text
//! cargo run --release -p brigade-bench -- threads [--reps N] [--only WORKLOAD]... [--quick]
//! cargo run --release -p brigade-bench -- processes [--reps N] [--only WORKLOAD]... [--quick]
//! cargo run --release -p brigade-bench -- event-loop [--reps N] [--only WORKLOAD]... [--quick]
//! cargo run --release -p brigade-bench -- cluster [--reps N] [--only WORKLOAD]... [--quick]
//! cargo run --release -p brigade-bench -- auto [--reps N] [--only MIX]... [--quick] [--sleep]
//! cargo run --release -p brigade-bench -- scaling [--reps N] [--only LANE]... [--quick]
//! ```
//!
//! Every workload measures brigade and its anchors in the same run, interleaving the
//! repetitions (rep 1 of every impl, then rep 2, …) so that drift on a shared machine hits all
//! of them alike, and reports the median. The first repetition runs the impls as listed, each
//! later one in its own fixed shuffle, so that what one impl leaves behind does not land on the
//! same successor every time. Each line carries `vs_anchor`: the anchor's median
//! wall time divided by this impl's (above 1 means faster than the anchor).

mod auto;
mod cluster;
mod event_loop;
mod measure;
mod processes;
mod scaling;
mod threads;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "brigade-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// The compute lane against rayon, tokio and std threads.
    Threads(threads::Args),
    /// The process lane against procspawn and Python's ProcessPoolExecutor.
    Processes(processes::Args),
    /// The event loop against tokio, threads and Python's asyncio, over real HTTP.
    EventLoop(event_loop::Args),
    /// brigade-cluster on a loopback Redis against Celery, RQ and redis-benchmark.
    Cluster(cluster::Args),
    /// Internal: a cluster worker (this binary serving a queue).
    #[command(hide = true)]
    ClusterWorker(cluster::WorkerArgs),
    /// Benchmark A1: the auto router against every fixed choice, on mixes of CPU, blocking,
    /// async and tiny tasks.
    Auto(auto::Args),
    /// Per-task cost of every lane as the task count and the worker count grow.
    Scaling(scaling::Args),
    /// Internal: the memory probe, run as a child process so its peak RSS is its own.
    #[command(hide = true)]
    MemoryProbe(threads::MemoryProbeArgs),
}

fn main() -> ExitCode {
    // procspawn's workers are this binary too; they take over here. (brigade's own workers
    // never get this far: they start before `main`.)
    procspawn::init();
    let cli = Cli::parse();
    let outcome = match cli.suite {
        Suite::Threads(args) => threads::run(&args),
        Suite::Processes(args) => processes::run(&args),
        Suite::EventLoop(args) => event_loop::run(&args),
        Suite::Cluster(args) => cluster::run(&args),
        Suite::ClusterWorker(args) => return cluster::worker(&args),
        Suite::Auto(args) => auto::run(&args),
        Suite::Scaling(args) => scaling::run(&args),
        Suite::MemoryProbe(args) => threads::memory_probe(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brigade-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--features mimalloc` measures every impl under mimalloc instead of the system allocator
/// (the default, and what brigade's users get unless they choose otherwise).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
