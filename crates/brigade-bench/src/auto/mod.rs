//! The `auto` suite, benchmark A1: four unlabelled kinds of task, each submitted from its own
//! line of code, in several mixes, under brigade's auto router and under every fixed choice a
//! user could make by hand.
//!
//! Kinds: **cpu** (~1 ms of arithmetic), **blocking** (a blocking GET from the local HTTP
//! server, which answers after 20 ms), **async** (the same GET with an async client), **tiny**
//! (a no-op). Mixes: each kind alone, equal thirds (cpu, blocking, async interleaved), and a
//! mix that shifts between a cpu-heavy, a blocking-heavy and an async-heavy phase. Each phase
//! is submitted at once and awaited before the next.
//!
//! Impls (each built fresh for every repetition, outside the timed part, so that auto learns
//! every site from scratch each time):
//!
//! | impl | cpu | blocking | async | tiny |
//! |---|---|---|---|---|
//! | `auto` | `auto.submit` | `auto.submit` | `auto.spawn` | `auto.submit` |
//! | `threads-only` | compute lane (cores) | compute lane | compute lane, `block_on` | compute lane |
//! | `blocking-64` | 64-thread pool | 64-thread pool | 64-thread pool, `block_on` | 64-thread pool |
//! | `loop-only` | event loop (naive async code) | event loop (naive) | event loop | event loop |
//! | `tokio-default` | `spawn_blocking` | `spawn_blocking` | `tokio::spawn` | `spawn_blocking` |
//! | `hand-picked` | compute lane | a pool of B threads (B from a grid search) | event loop | compute lane |
//!
//! Every run also runs a 1 ms async ticker on the impl's event loop (or, for impls without
//! one, on a one-thread tokio runtime beside them) and reports the p99 of how late it woke;
//! and a sampler reads the process's thread count every millisecond and reports the peak above
//! what the process had before the run. `--quick` shrinks every mix for a smoke test.

mod labelled;
mod work;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brigade::auto::{Auto, Lane, Work};
use brigade::{EventLoop, Task, ThreadPool};
use serde_json::{Value, json};

use crate::measure::{emit, median, merge, round3};
use brigade_http::{Server, path};
use work::{
    Kind, Kit, Mix, ThreadPeak, async_work, blocking_work, calibrate, cpu_work, mixes, ticker,
};

const SUITE: &str = "auto";
const MIXES: [&str; 7] = [
    "cpu", "blocking", "async", "tiny", "thirds", "shifting", "labelled",
];
const IMPLS: [&str; 6] = [
    "auto",
    "threads-only",
    "blocking-64",
    "loop-only",
    "tokio-default",
    "hand-picked",
];
/// The server's delay for the I/O kinds.
const DELAY_MS: u64 = 20;
/// The blocking pool sizes the grid search tries for `hand-picked`.
const GRID: [usize; 5] = [16, 64, 128, 256, 512];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these mixes (repeatable); `labelled` is the classifier's labelled set.
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(MIXES))]
    only: Vec<String>,
    /// Worker threads of the HTTP server's own runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Use `thread::sleep(20 ms)` for the blocking kind instead of a blocking GET.
    #[arg(long)]
    sleep: bool,
}

/// One run of one impl over one mix.
struct Sample {
    secs: f64,
    checksum: u64,
    lateness_us: Vec<f64>,
    threads: usize,
    /// auto only: the report after the run.
    report: Option<brigade::auto::Report>,
}

/// The part of a run between building the impl and tearing it down.
struct Timed {
    start: Instant,
    peak: ThreadPeak,
}

impl Timed {
    fn start() -> Self {
        let peak = ThreadPeak::start();
        Self {
            start: Instant::now(),
            peak,
        }
    }

    fn stop(self, checksum: u64, lateness_us: Vec<f64>) -> Sample {
        let secs = self.start.elapsed().as_secs_f64();
        Sample {
            secs,
            checksum,
            lateness_us,
            threads: self.peak.finish(),
            report: None,
        }
    }
}

fn sum_tasks(tasks: Vec<Task<u64>>) -> anyhow::Result<u64> {
    let mut sum = 0u64;
    for t in tasks {
        sum = sum.wrapping_add(t.result()?);
    }
    Ok(sum)
}

fn tokio_runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("bench-tokio")
        .enable_all()
        .build()?)
}

/// A loop for the ticker (and for `block_on` of async work) beside impls that have none.
fn side_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio_runtime(1)
}

fn run_auto(mix: &Mix, kit: &Kit, workers: usize) -> anyhow::Result<Sample> {
    run_auto_on(&Auto::builder().workers(workers).build()?, mix, kit)
}

/// auto once every site is placed: the mix runs once untimed, then the timed run (same lines
/// of code, so the same sites).
fn run_auto_warm(mix: &Mix, kit: &Kit, workers: usize) -> anyhow::Result<Sample> {
    let auto = Auto::builder().workers(workers).build()?;
    run_auto_on(&auto, mix, kit)?;
    run_auto_on(&auto, mix, kit)
}

fn run_auto_on(auto: &Auto, mix: &Mix, kit: &Kit) -> anyhow::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let timed = Timed::start();
    let tick = auto.spawn(ticker(stop.clone()));
    let mut checksum = 0u64;
    for phase in &mix.phases {
        let tasks: Vec<Task<u64>> = phase
            .iter()
            .map(|kind| {
                let kit = kit.clone();
                match kind {
                    Kind::Cpu => auto.submit(move || cpu_work(kit.cpu_iters)),
                    Kind::Blocking => auto.submit(move || blocking_work(&kit)),
                    Kind::Async => auto.spawn(async_work(kit.addr, kit.path)),
                    Kind::Tiny => auto.submit(|| 1),
                }
            })
            .collect();
        checksum = checksum.wrapping_add(sum_tasks(tasks)?);
    }
    stop.store(true, Ordering::Relaxed);
    let late = tick.result()?;
    let mut sample = timed.stop(checksum, late);
    sample.report = Some(auto.report());
    Ok(sample)
}

fn run_pool(mix: &Mix, kit: &Kit, threads: usize) -> anyhow::Result<Sample> {
    let pool = ThreadPool::builder().workers(threads).build()?;
    let side = side_runtime()?;
    let handle = side.handle().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let timed = Timed::start();
    let tick = side.spawn(ticker(stop.clone()));
    let mut checksum = 0u64;
    for phase in &mix.phases {
        let tasks: Vec<Task<u64>> = phase
            .iter()
            .map(|kind| {
                let kit = kit.clone();
                let handle = handle.clone();
                match kind {
                    Kind::Cpu => pool.submit(move || cpu_work(kit.cpu_iters)),
                    Kind::Blocking => pool.submit(move || blocking_work(&kit)),
                    // What a thread-pool user does with an async client: block on it.
                    Kind::Async => {
                        pool.submit(move || handle.block_on(async_work(kit.addr, kit.path)))
                    }
                    Kind::Tiny => pool.submit(|| 1),
                }
            })
            .collect();
        checksum = checksum.wrapping_add(sum_tasks(tasks)?);
    }
    stop.store(true, Ordering::Relaxed);
    let late = side.block_on(tick)?;
    Ok(timed.stop(checksum, late))
}

fn run_loop_only(mix: &Mix, kit: &Kit, workers: usize) -> anyhow::Result<Sample> {
    let lp = EventLoop::builder()
        .workers(workers)
        .blocking_threshold(Duration::MAX)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let timed = Timed::start();
    let tick = lp.spawn(ticker(stop.clone()));
    let mut checksum = 0u64;
    for phase in &mix.phases {
        let tasks: Vec<Task<u64>> = phase
            .iter()
            .map(|kind| {
                let kit = kit.clone();
                match kind {
                    // Naive async code: the work inline in the task.
                    Kind::Cpu => lp.spawn(async move { cpu_work(kit.cpu_iters) }),
                    Kind::Blocking => lp.spawn(async move { blocking_work(&kit) }),
                    Kind::Async => lp.spawn(async_work(kit.addr, kit.path)),
                    Kind::Tiny => lp.spawn(async { 1 }),
                }
            })
            .collect();
        checksum = checksum.wrapping_add(sum_tasks(tasks)?);
    }
    stop.store(true, Ordering::Relaxed);
    let late = tick.result()?;
    Ok(timed.stop(checksum, late))
}

fn run_tokio(mix: &Mix, kit: &Kit, workers: usize) -> anyhow::Result<Sample> {
    let rt = tokio_runtime(workers)?;
    let stop = Arc::new(AtomicBool::new(false));
    let timed = Timed::start();
    let tick = rt.spawn(ticker(stop.clone()));
    let mut checksum = 0u64;
    for phase in &mix.phases {
        let handles: Vec<tokio::task::JoinHandle<u64>> = phase
            .iter()
            .map(|kind| {
                let kit = kit.clone();
                match kind {
                    Kind::Cpu => rt.spawn_blocking(move || cpu_work(kit.cpu_iters)),
                    Kind::Blocking => rt.spawn_blocking(move || blocking_work(&kit)),
                    Kind::Async => rt.spawn(async_work(kit.addr, kit.path)),
                    Kind::Tiny => rt.spawn_blocking(|| 1),
                }
            })
            .collect();
        let sum = rt.block_on(async {
            let mut sum = 0u64;
            for h in handles {
                sum = sum.wrapping_add(h.await?);
            }
            Ok::<u64, tokio::task::JoinError>(sum)
        })?;
        checksum = checksum.wrapping_add(sum);
    }
    stop.store(true, Ordering::Relaxed);
    let late = rt.block_on(tick)?;
    let sample = timed.stop(checksum, late);
    rt.shutdown_background();
    Ok(sample)
}

fn run_hand_picked(
    mix: &Mix,
    kit: &Kit,
    workers: usize,
    blocking: usize,
) -> anyhow::Result<Sample> {
    let compute = ThreadPool::builder().workers(workers).build()?;
    let io = ThreadPool::builder().workers(blocking).build()?;
    let lp = EventLoop::builder()
        .workers(workers)
        .blocking_threshold(Duration::MAX)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let timed = Timed::start();
    let tick = lp.spawn(ticker(stop.clone()));
    let mut checksum = 0u64;
    for phase in &mix.phases {
        let tasks: Vec<Task<u64>> = phase
            .iter()
            .map(|kind| {
                let kit = kit.clone();
                match kind {
                    Kind::Cpu => compute.submit(move || cpu_work(kit.cpu_iters)),
                    Kind::Blocking => io.submit(move || blocking_work(&kit)),
                    Kind::Async => lp.spawn(async_work(kit.addr, kit.path)),
                    Kind::Tiny => compute.submit(|| 1),
                }
            })
            .collect();
        checksum = checksum.wrapping_add(sum_tasks(tasks)?);
    }
    stop.store(true, Ordering::Relaxed);
    let late = tick.result()?;
    Ok(timed.stop(checksum, late))
}

fn p99(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * 0.99).ceil() as usize).clamp(1, s.len()) - 1]
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let workers = args.run.workers()?;
    let wants = |m: &str| crate::measure::selected(&args.only, m);
    let base = args.run.base(workers);
    let server = Server::start(args.server_threads)?;
    let kit = Kit {
        addr: server.addr,
        path: path(DELAY_MS).into(),
        cpu_iters: calibrate(),
        sleep: args.sleep,
    };
    let mut calibration = base.clone();
    merge(
        &mut calibration,
        &json!({ "suite": SUITE, "calibration": { "cpu_iters_per_ms": kit.cpu_iters },
                 "blocking_kind": if kit.sleep { "thread::sleep" } else { "blocking GET" },
                 "delay_ms": DELAY_MS }),
    );
    emit(&calibration);
    for mix in mixes(args.run.quick) {
        if wants(mix.name) {
            run_mix(&mix, &kit, workers, args.run.reps, &base)?;
        }
    }
    if wants("labelled") {
        labelled::run(&kit, workers, args.run.reps, args.run.quick, &base)?;
    }
    Ok(())
}

/// The grid search for `hand-picked`: each blocking pool size once, the fastest wins.
fn grid_search(mix: &Mix, kit: &Kit, workers: usize, base: &Value) -> anyhow::Result<usize> {
    if !mix.has(Kind::Blocking) {
        return Ok(GRID[0]);
    }
    let mut tried = Vec::new();
    for &size in &GRID {
        let sample = run_hand_picked(mix, kit, workers, size)?;
        tried.push((size, sample.secs));
    }
    let best = tried
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(GRID[0], |t| t.0);
    let mut line = base.clone();
    merge(
        &mut line,
        &json!({
            "suite": SUITE, "workload": mix.name, "grid": "hand-picked blocking pool size",
            "tried_ms": tried.iter().map(|(s, t)| json!({ "threads": s, "wall_ms": round3(t * 1e3) })).collect::<Vec<_>>(),
            "chosen": best,
        }),
    );
    emit(&line);
    Ok(best)
}

fn run_mix(mix: &Mix, kit: &Kit, workers: usize, reps: usize, base: &Value) -> anyhow::Result<()> {
    let blocking = grid_search(mix, kit, workers, base)?;
    let mut impls: Vec<&str> = IMPLS.to_vec();
    if mix.name == "tiny" {
        // The steady-state cost of routing a tiny call: the site placed before timing.
        impls.insert(1, "auto-warm");
    }
    if let Ok(keep) = std::env::var("BRIGADE_BENCH_IMPL") {
        impls.retain(|i| keep.split(',').any(|k| k == *i));
    }
    let mut runs: Vec<Vec<Sample>> = impls.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for i in crate::measure::rep_order(impls.len(), rep) {
            let name = &impls[i];
            std::thread::sleep(Duration::from_millis(50));
            let sample = match *name {
                "auto" => run_auto(mix, kit, workers),
                "auto-warm" => run_auto_warm(mix, kit, workers),
                "threads-only" => run_pool(mix, kit, workers),
                "blocking-64" => run_pool(mix, kit, 64),
                "loop-only" => run_loop_only(mix, kit, workers),
                "tokio-default" => run_tokio(mix, kit, workers),
                "hand-picked" => run_hand_picked(mix, kit, workers, blocking),
                other => anyhow::bail!("unknown impl {other}"),
            }
            .with_context(|| format!("{}/{name}", mix.name))?;
            runs[i].push(sample);
        }
    }
    let expected: u64 = mix
        .phases
        .iter()
        .flatten()
        .fold(0u64, |s, k| s.wrapping_add(kit.expected(*k)));
    let medians: Vec<f64> = runs
        .iter()
        .map(|r| median(&mut r.iter().map(|s| s.secs).collect::<Vec<_>>()))
        .collect();
    let anchor = impls
        .iter()
        .position(|n| *n == "hand-picked")
        .map(|i| medians[i]);
    let best_fixed = impls
        .iter()
        .zip(&medians)
        .filter(|(n, _)| !n.starts_with("auto"))
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(n, m)| (*n, *m));
    for (i, name) in impls.iter().enumerate() {
        let samples = &runs[i];
        for s in samples {
            anyhow::ensure!(
                s.checksum == expected,
                "{}/{name}: checksum {} (expected {expected})",
                mix.name,
                s.checksum
            );
        }
        let secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
        let p99s: Vec<f64> = samples.iter().map(|s| p99(&s.lateness_us) / 1e3).collect();
        let mut line = base.clone();
        merge(
            &mut line,
            &json!({
                "suite": SUITE,
                "workload": mix.name,
                "impl": name,
                "tasks": mix.tasks(),
                "reps": reps,
                "wall_ms": round3(medians[i] * 1e3),
                "min_ms": round3(secs.iter().copied().fold(f64::INFINITY, f64::min) * 1e3),
                "max_ms": round3(secs.iter().copied().fold(0.0, f64::max) * 1e3),
                "anchor": "hand-picked",
                "vs_anchor": anchor.map(|a| round3(a / medians[i])),
                "time_vs_hand_picked": anchor.map(|a| round3(medians[i] / a)),
                "tick_p99_ms": round3(median(&mut p99s.clone())),
                "tick_p99_ms_max": round3(p99s.iter().copied().fold(0.0, f64::max)),
                "threads_peak": samples.iter().map(|s| s.threads).max().unwrap_or(0),
                "blocking_pool": (*name == "hand-picked").then_some(blocking),
            }),
        );
        if *name == "auto-warm"
            && let Some(compute) = impls.iter().position(|n| *n == "threads-only")
        {
            let per_task = |secs: f64| secs * 1e9 / mix.tasks() as f64;
            let fastest = |r: &[Sample]| r.iter().map(|s| s.secs).fold(f64::INFINITY, f64::min);
            merge(
                &mut line,
                &json!({
                    "overhead_ns_per_task_vs_compute_lane":
                        round3(per_task(medians[i] - medians[compute])),
                    // The fastest runs are the least disturbed by the machine's other work.
                    "overhead_ns_per_task_vs_compute_lane_fastest":
                        round3(per_task(fastest(&runs[i]) - fastest(&runs[compute]))),
                }),
            );
        }
        if *name == "auto" {
            if let Some((fixed, best)) = best_fixed {
                merge(
                    &mut line,
                    &json!({ "best_fixed": fixed, "time_vs_best_fixed": round3(medians[i] / best) }),
                );
            }
            if let Some(report) = samples.last().and_then(|s| s.report.as_ref()) {
                merge(&mut line, &json!({ "sites": sites(report) }));
            }
        }
        emit(&line);
    }
    Ok(())
}

/// auto's decisions, per site: lane, calls, and after how many calls it was first placed.
fn sites(report: &brigade::auto::Report) -> Vec<Value> {
    report
        .sites
        .iter()
        .filter(|s| s.calls > 1)
        .map(|s| {
            json!({
                "site": format!("{}:{}", s.location.line(), s.location.column()),
                "work": match s.work { Work::Calls => "calls", _ => "futures" },
                "lane": s.lane.map(|l: Lane| l.to_string()),
                "calls": s.calls,
                "samples": s.samples,
                "placed_after_calls": s.moves.first().map(|m| m.calls),
                // Of those, the calls that had run (been probed): in a burst, far fewer.
                "placed_after_runs": s.moves.first().map(|m| m.samples),
                "moves": s.moves.len(),
                "cpu_ratio": round3(s.cpu_ratio),
            })
        })
        .collect()
}
