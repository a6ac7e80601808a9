//! The worker's command line, and `worker_main`: any binary becomes a worker.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::Worker;
use crate::function::Functions;

/// Where a worker runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LaneKind {
    /// A thread pool: the fastest; a panic fails its task, but a crash (a segfault in native
    /// code, an abort) takes the worker down (its tasks are then redelivered elsewhere).
    #[default]
    Threads,
    /// A process pool: a task that crashes its process fails one delivery and goes back to
    /// the queue, and the worker lives on; a deadline kills a running task.
    Processes,
    /// Accepted for forward compatibility: brigade's measuring router does not exist yet,
    /// so `auto` runs on threads.
    Auto,
}

/// A worker's flags, for a binary that parses its own command line (flatten them into
/// yours with `#[command(flatten)]`) and then calls [`worker_main_with`].
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The broker, e.g. redis://127.0.0.1:6379/0 (the query may name the queue: ?queue=jobs).
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// The queue to serve (if --broker does not name one).
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Tasks run at once (default: available parallelism).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: Option<u16>,
    /// Where tasks run: threads, processes (crash isolation) or auto (threads, for now).
    #[arg(long, value_enum, default_value_t = LaneKind::Threads)]
    pub lane: LaneKind,
    /// Tasks fetched ahead of the running ones (default: adaptive, about 10 ms of work per
    /// running task, at most 64).
    #[arg(long, value_name = "N")]
    pub prefetch: Option<usize>,
    /// Seconds a stopping worker waits for its running tasks before giving them back.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub drain_timeout: u64,
}

#[derive(Debug, Parser)]
#[command(about = "A brigade cluster worker: serves a queue with this binary's functions.")]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

/// Runs this binary as a worker: parses `--broker`, `--queue`, `--concurrency`, `--lane`,
/// `--prefetch` and `--drain-timeout` from the command line, serves the queue with
/// `functions`, and returns after SIGTERM or SIGINT has drained it (exit code 0), or on a
/// setup error (1; bad flags: 2).
///
/// ```no_run
/// use std::process::ExitCode;
/// use brigade_cluster::{Function, Functions};
///
/// fn sum((from, to): (u64, u64)) -> u64 { (from..to).sum() }
/// const SUM: Function<(u64, u64), u64> = Function::new("sum", 1, sum);
///
/// // my-worker --broker redis://127.0.0.1:6379 --queue jobs --concurrency 8 --lane processes
/// fn main() -> ExitCode {
///     brigade_cluster::worker_main(Functions::new().register(&SUM))
/// }
/// ```
pub fn worker_main(functions: Functions) -> ExitCode {
    worker_main_from(std::env::args_os(), functions)
}

/// [`worker_main`] with these arguments (the first is the program's name).
pub fn worker_main_from<I, T>(args: I, functions: Functions) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => worker_main_with(&cli.args, functions),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Runs a worker from parsed [`WorkerArgs`]: SIGTERM and SIGINT drain it.
pub fn worker_main_with(args: &WorkerArgs, functions: Functions) -> ExitCode {
    let mut builder = Worker::builder(&args.broker)
        .functions(functions)
        .lane(args.lane)
        .drain_timeout(Duration::from_secs(args.drain_timeout));
    if let Some(q) = &args.queue {
        builder = builder.queue(q);
    }
    if let Some(n) = args.concurrency {
        builder = builder.concurrency(n.into());
    }
    if let Some(n) = args.prefetch {
        builder = builder.prefetch(n);
    }
    let worker = match builder.build() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("brigade worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = worker.stop_handle().flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("brigade worker: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    match worker.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brigade worker: {e}");
            ExitCode::FAILURE
        }
    }
}
