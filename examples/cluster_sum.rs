//! The primers' "sum a huge list" once more, split across machines: a client cuts the list
//! into pieces and submits one task per piece to a Redis queue; worker processes (on this
//! machine or others) sum the pieces; the client adds up the partial sums as they arrive.
//!
//! ```text
//! # all in one: a throwaway redis-server, two workers, the client
//! cargo run --release -p brigade-cluster --example cluster_sum
//!
//! # or by hand, each in its own terminal (any machines that reach the Redis server):
//! redis-server --appendonly yes
//! cargo run --release -p brigade-cluster --example cluster_sum -- worker --broker redis://127.0.0.1:6379 --queue sums
//! cargo run --release -p brigade-cluster --example cluster_sum -- worker --broker redis://127.0.0.1:6379 --queue sums
//! cargo run --release -p brigade-cluster --example cluster_sum -- client --broker 'redis://127.0.0.1:6379/?queue=sums'
//! ```
//!
//! The list is the numbers `0..N` (so pieces travel as ranges, not as data), and each number
//! costs real work (splitmix64's mixer, eight rounds): the sum is CPU-bound, the case where
//! more workers mean proportionally less time.

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitCode};
use std::time::Instant;

use brigade_cluster::{Client, Function, Functions, LocalRedis};

fn heavy(x: u64) -> u64 {
    (0..8).fold(x, |z, _| {
        let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Sums one piece, `from..to`; says which process did it.
fn sum_piece((from, to): (u64, u64)) -> (u64, u32) {
    let sum = (from..to).fold(0u64, |acc, x| acc.wrapping_add(heavy(x)));
    (sum, std::process::id())
}

/// What the client and the workers share: a name and a version, never code.
const SUM_PIECE: Function<(u64, u64), (u64, u32)> = Function::new("sum_piece", 1, sum_piece);

fn functions() -> Functions {
    Functions::new().register(&SUM_PIECE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // `worker --broker URL --queue Q …`: the flags of brigade_cluster::worker_main.
        Some("worker") => brigade_cluster::worker_main_from(&args[1..], functions()),
        Some("client") => match flag(&args, "--broker") {
            Some(url) => report(client(&url, elements(&args))),
            None => usage(),
        },
        None | Some("demo") => report(demo(elements(&args))),
        _ => usage(),
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn elements(args: &[String]) -> u64 {
    flag(args, "--elements")
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000_000)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cluster_sum [demo] [--elements N]\n       \
         cluster_sum worker --broker URL --queue Q [--concurrency N] [--lane threads|processes]\n       \
         cluster_sum client --broker URL?queue=Q [--elements N]"
    );
    ExitCode::from(2)
}

fn report(outcome: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster_sum: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Submits the pieces, adds up the partial sums, and checks the total against one local
/// piece-by-piece sum.
fn client(url: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(url)?;
    let pieces = 64;
    let step = n.div_ceil(pieces);
    let ranges: Vec<(u64, u64)> = (0..pieces)
        .map(|i| (i * step, ((i + 1) * step).min(n)))
        .filter(|(a, b)| a < b)
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = ranges
        .iter()
        .map(|&r| client.submit(&SUM_PIECE, r))
        .collect();
    let mut total = 0u64;
    let mut by_worker: BTreeMap<u32, usize> = BTreeMap::new();
    for task in tasks {
        let (sum, pid) = task.result()?;
        total = total.wrapping_add(sum);
        *by_worker.entry(pid).or_default() += 1;
    }
    let took = start.elapsed();
    println!(
        "sum of {n} heavy numbers in {} pieces: {total:#x}, {took:.2?} on the cluster",
        ranges.len()
    );
    for (pid, count) in &by_worker {
        println!("  worker process {pid}: {count} pieces");
    }
    let start = Instant::now();
    let local = ranges
        .iter()
        .fold(0u64, |acc, &r| acc.wrapping_add(sum_piece(r).0));
    println!("one local thread: {:.2?}", start.elapsed());
    if local != total {
        return Err(format!("the cluster summed {total:#x}, one thread {local:#x}").into());
    }
    Ok(())
}

/// A throwaway redis-server, two workers (this program again), and the client.
fn demo(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let redis = LocalRedis::start()?;
    let exe = std::env::current_exe()?;
    let url = redis.url();
    println!("redis-server on {url} (appendonly yes); starting two workers");
    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "worker",
                    "--broker",
                    &url,
                    "--queue",
                    "sums",
                    "--concurrency",
                    "1",
                ])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let outcome = client(&redis.url_with_queue("sums"), n);
    for w in &mut workers {
        // SIGTERM drains a worker: it finishes what it runs and exits.
        let pid = rustix::process::Pid::from_raw(w.id() as i32).ok_or("no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        w.wait()?;
    }
    outcome
}
