//! The `scaling` suite: what one task costs on each lane as the number of tasks grows and as
//! the number of workers grows. A per-task cost that climbs with the task count is a hidden
//! super-linear cost (a queue that slows as it grows, a list scanned per task); one that climbs
//! with the worker count is contention.
//!
//! Two sweeps, each over every lane:
//!
//! * `tasks`: 10³, 10⁴, … 10⁷ tasks (the process lane stops at 10⁵, see [`PROCESS_CAP`]) on
//!   as many workers as cores;
//! * `workers`: 1, 2, 4, … cores, then 4 × cores (oversubscribed), at a fixed task count.
//!
//! A lane's impls and its anchor run side by side at each point with their repetitions
//! interleaved, as in the other suites. Each line carries `flat`: this point's per-task cost
//! over the same impl's at the sweep's first point (the fewest tasks, or one worker), so 1.0
//! means it scales flat. Small points repeat their batch (`rounds`) until a repetition covers
//! at least [`MIN_TASKS_PER_REP`] tasks (the process lane: [`PROCESS_CAP`]), so that every
//! point times enough work to be read;
//! every batch still starts from idle workers and ends with every result taken, so its
//! wake-ups are part of the per-task cost.

use std::sync::atomic::{AtomicU64, Ordering};

use brigade::{EventLoop, ProcessPool, ThreadPool};
use serde_json::json;

use crate::measure::{Impl, Measured, emit, imp, measure, merge, round3};

const SUITE: &str = "scaling";
const LANES: [&str; 3] = ["threads", "processes", "event-loop"];
const SWEEPS: [&str; 2] = ["tasks", "workers"];

/// The process lane's largest task count: each task is a round trip through a socket to
/// another process (microseconds, not nanoseconds), so 10⁵ already takes a second or more.
const PROCESS_CAP: u64 = 100_000;
/// The fewest tasks one timed repetition covers (full runs; `--quick` divides by 100).
const MIN_TASKS_PER_REP: u64 = 1_000_000;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these lanes (repeatable).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(LANES))]
    only: Vec<String>,
    /// Run only this sweep (repeatable).
    #[arg(long = "sweep", value_parser = clap::builder::PossibleValuesParser::new(SWEEPS))]
    sweeps: Vec<String>,
    /// Task counts of the `tasks` sweep (default: 10³ … 10⁷, `--quick`: 10³, 10⁴).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<u64>,
    /// Task count of the `workers` sweep (default 10⁵, `--quick` 10³).
    #[arg(long)]
    workers_sweep_tasks: Option<u64>,
    /// Batches per repetition at every point, instead of enough to cover 10⁶ tasks (for
    /// counting one point's instructions under callgrind, say).
    #[arg(long)]
    rounds: Option<u64>,
}

/// One point of a sweep.
#[derive(Clone, Copy)]
struct Point {
    tasks: u64,
    workers: usize,
    /// Batches of `tasks` per timed repetition.
    rounds: u64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let cores = args.run.workers()?;
    let quick = args.run.quick;
    let lane = |l: &str| crate::measure::selected(&args.only, l);
    let sweep = |s: &str| crate::measure::selected(&args.sweeps, s);
    let per_rep = if quick {
        MIN_TASKS_PER_REP / 100
    } else {
        MIN_TASKS_PER_REP
    };
    // A repetition covers `per_rep` tasks, or the lane's cap: the process lane's tasks cost
    // microseconds each, so its small points repeat less.
    let point = |tasks: u64, workers: usize, cap: u64| Point {
        tasks,
        workers,
        rounds: args
            .rounds
            .unwrap_or(per_rep.min(cap).div_ceil(tasks))
            .max(1),
    };
    let sizes: Vec<u64> = if !args.tasks.is_empty() {
        args.tasks.clone()
    } else if quick {
        vec![1_000, 10_000]
    } else {
        (3..=7).map(|e| 10u64.pow(e)).collect()
    };
    let mut worker_counts: Vec<usize> = std::iter::successors(Some(1usize), |w| Some(w * 2))
        .take_while(|&w| w < cores)
        .collect();
    worker_counts.extend([cores, 4 * cores]);
    let sweep_tasks = args
        .workers_sweep_tasks
        .unwrap_or(if quick { 1_000 } else { 100_000 });
    let ctx = Ctx {
        reps: args.run.reps,
        quick,
    };
    for name in LANES.into_iter().filter(|l| lane(l)) {
        let cap = if name == "processes" {
            PROCESS_CAP
        } else {
            u64::MAX
        };
        if sweep("tasks") {
            let points: Vec<Point> = sizes
                .iter()
                .filter(|&&n| n <= cap)
                .map(|&n| point(n, cores, cap))
                .collect();
            ctx.sweep(name, "tasks", &points)?;
        }
        if sweep("workers") {
            let points: Vec<Point> = worker_counts
                .iter()
                .map(|&w| point(sweep_tasks.min(cap), w, cap))
                .collect();
            ctx.sweep(name, "workers", &points)?;
        }
    }
    Ok(())
}

struct Ctx {
    reps: usize,
    quick: bool,
}

impl Ctx {
    /// Measures `lane` at every point and prints a line per impl and point.
    fn sweep(&self, lane: &str, sweep: &str, points: &[Point]) -> anyhow::Result<()> {
        let workload = format!("{lane}-{sweep}");
        // Per impl: the per-task cost at the sweep's first point.
        let mut first: Vec<(&'static str, f64)> = Vec::new();
        for &p in points {
            let (anchor, measured) = match lane {
                "threads" => threads(&workload, self.reps, p)?,
                "processes" => processes(&workload, self.reps, p)?,
                "event-loop" => event_loop(&workload, self.reps, p)?,
                _ => unreachable!("clap checks the lane"),
            };
            let total = p.tasks * p.rounds;
            let anchor_ms = anchor.and_then(|a| measured.iter().find(|m| m.name == a));
            for m in &measured {
                let per_task = m.per_task_ns(total);
                let base = match first.iter().find(|(name, _)| *name == m.name) {
                    Some(&(_, base)) => base,
                    None => {
                        first.push((m.name, per_task));
                        per_task
                    }
                };
                let mut line = json!({
                    "suite": SUITE,
                    "workload": workload,
                    "impl": m.name,
                    "tasks": p.tasks,
                    "workers": p.workers,
                    "rounds": p.rounds,
                    "reps": self.reps,
                    "quick": self.quick,
                    "anchor": anchor,
                    "vs_anchor": anchor_ms.map(|a| round3(a.median_ms / m.median_ms)),
                    "flat": round3(per_task / base),
                });
                // Times are per repetition (all rounds), per-task figures per task.
                merge(&mut line, &m.fields(total));
                emit(&line);
            }
        }
        Ok(())
    }
}

/// `rounds` batches of `run(tasks)`, the checksums added up.
fn batches(p: Point, mut run: impl FnMut(u64) -> u64) -> impl FnMut() -> u64 {
    move || {
        (0..p.rounds)
            .map(|_| run(p.tasks))
            .fold(0, u64::wrapping_add)
    }
}

/// The compute lane: `submit` + `result` of no-op tasks (all submitted, then all awaited, a
/// handle each) and `scope` + `spawn`, against rayon's `scope` + `spawn`.
fn threads(
    workload: &str,
    reps: usize,
    p: Point,
) -> anyhow::Result<(Option<&'static str>, Vec<Measured>)> {
    let brigade = ThreadPool::builder().workers(p.workers).build()?;
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(p.workers)
        .build()?;
    let impls: Vec<Impl<'_>> = vec![
        imp(
            "brigade-submit",
            batches(p, |n| {
                let handles: Vec<_> = (0..n).map(|_| brigade.submit(|| 1u64)).collect();
                handles.into_iter().map(|t| t.result().unwrap()).sum()
            }),
        ),
        imp(
            "brigade-scope",
            batches(p, |n| {
                let done = AtomicU64::new(0);
                brigade.scope(|s| {
                    for _ in 0..n {
                        drop(s.spawn(|| {
                            done.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                });
                done.into_inner()
            }),
        ),
        imp(
            "rayon-scope",
            batches(p, |n| {
                let done = AtomicU64::new(0);
                rayon.scope(|s| {
                    for _ in 0..n {
                        s.spawn(|_| {
                            done.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
                done.into_inner()
            }),
        ),
    ];
    Ok((Some("rayon-scope"), measure(workload, reps, impls)?))
}

fn echo(x: u64) -> u64 {
    x
}

/// The process lane: `submit` + `result` of a function of a `u64`, all submitted, then all
/// awaited. No anchor: nothing else in the bench runs a call in another process in
/// microseconds (procspawn takes tens of them per call, see the `processes` suite).
fn processes(
    workload: &str,
    reps: usize,
    p: Point,
) -> anyhow::Result<(Option<&'static str>, Vec<Measured>)> {
    let pool = ProcessPool::builder().workers(p.workers).build()?;
    // Workers start warm: the first batch would otherwise time their first round trips.
    pool.submit(echo, 0).result()?;
    let impls = vec![imp(
        "brigade-submit",
        batches(p, |n| {
            let handles: Vec<_> = (0..n).map(|i| pool.submit(echo, i)).collect();
            handles
                .into_iter()
                .map(|t| t.result().unwrap())
                .fold(0, u64::wrapping_add)
        }),
    )];
    Ok((None, measure(workload, reps, impls)?))
}

/// The event loop: `spawn` + `.await` of trivial futures from a `block_on`, against tokio's
/// `spawn` + awaiting the `JoinHandle`.
fn event_loop(
    workload: &str,
    reps: usize,
    p: Point,
) -> anyhow::Result<(Option<&'static str>, Vec<Measured>)> {
    let lp = EventLoop::builder().workers(p.workers).build()?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.workers)
        .build()?;
    let impls = vec![
        imp(
            "brigade-spawn",
            batches(p, |n| {
                lp.block_on(async {
                    let handles: Vec<_> = (0..n).map(|i| lp.spawn(async move { i })).collect();
                    let mut sum = 0u64;
                    for h in handles {
                        sum = sum.wrapping_add(h.await.unwrap());
                    }
                    sum
                })
                .expect("not inside a loop")
            }),
        ),
        imp(
            "tokio-spawn",
            batches(p, |n| {
                tokio.block_on(async {
                    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i })).collect();
                    let mut sum = 0u64;
                    for h in handles {
                        sum = sum.wrapping_add(h.await.unwrap());
                    }
                    sum
                })
            }),
        ),
    ];
    Ok((Some("tokio-spawn"), measure(workload, reps, impls)?))
}
