//! The `threads` suite: brigade's compute lane against rayon, tokio and std threads.

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Instant;

use anyhow::Context;
use brigade::ThreadPool;
use brigade::threads::Scope;
use serde_json::{Value, json};

use crate::measure::{emit, imp};

const SUITE: &str = "threads";
const WORKLOADS: [&str; 5] = [
    "cpu-fanout",
    "tiny-tasks",
    "sum-huge-list",
    "nested",
    "memory",
];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these workloads (repeatable).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    only: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct MemoryProbeArgs {
    #[arg(long)]
    tasks: usize,
    #[arg(long)]
    workers: usize,
}

/// A deterministic integer kernel: a xorshift-multiply chain the optimizer cannot shorten.
#[inline(never)]
pub(crate) fn kernel(seed: u64, iters: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..black_box(iters) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    x
}

/// splitmix64's finalizer: the "hash per element" of the compute-bound sum.
#[inline]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Kernel iterations that take about a millisecond on this machine (the fastest of a few
/// tries, the one least disturbed by neighbours).
pub(crate) fn calibrate_ms() -> u64 {
    let probe = 1 << 18;
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(kernel(black_box(7), probe));
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    ((probe as f64) * 1e-3 / best).round().max(1.0) as u64
}

/// What every workload gets: the pools under test, side by side, and the run's settings.
struct Bench<'a> {
    workers: usize,
    run: crate::measure::Runner,
    brigade: &'a ThreadPool,
    rayon: &'a rayon::ThreadPool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let workers = args.run.workers()?;
    let wants = |w: &str| crate::measure::selected(&args.only, w);
    let scale = if args.run.quick { 100 } else { 1 };
    let brigade = ThreadPool::builder().workers(workers).build()?;
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let bench = Bench {
        workers,
        run: args.run.runner(SUITE, workers),
        brigade: &brigade,
        rayon: &rayon,
    };
    if wants("cpu-fanout") {
        cpu_fanout(&bench, 2_000 / scale)?;
    }
    if wants("tiny-tasks") {
        tiny_tasks(&bench, 200_000 / scale)?;
    }
    if wants("sum-huge-list") {
        sum_huge_list(&bench, 100_000_000 / scale)?;
    }
    if wants("nested") {
        let depth = if args.run.quick { 10 } else { 16 };
        nested(&bench, depth)?;
    }
    if wants("memory") {
        memory(&bench.run.base, workers, 1_000_000 / scale as usize)?;
    }
    Ok(())
}

fn cpu_fanout(bench: &Bench<'_>, tasks: u64) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let Bench {
        brigade,
        rayon,
        workers,
        ..
    } = *bench;
    let iters = calibrate_ms();
    let fold = |acc: u64, x: u64| acc.wrapping_add(x);
    bench.run.compare(
        "cpu-fanout",
        tasks,
        "rayon",
        json!({ "kernel_iters": iters }),
        vec![
            imp("serial", || {
                (0..tasks).map(|i| kernel(i, iters)).fold(0, fold)
            }),
            imp("brigade", || {
                let handles: Vec<_> = (0..tasks)
                    .map(|i| brigade.submit(move || kernel(i, iters)))
                    .collect();
                handles
                    .into_iter()
                    .map(|t| t.result().unwrap())
                    .fold(0, fold)
            }),
            imp("rayon", || {
                rayon.install(|| {
                    (0..tasks)
                        .into_par_iter()
                        .map(|i| kernel(i, iters))
                        .reduce(|| 0, fold)
                })
            }),
            imp("std-threads", || {
                let (tx, rx) = mpsc::channel::<u64>();
                let rx = std::sync::Mutex::new(rx);
                std::thread::scope(|s| {
                    let parts: Vec<_> = (0..workers)
                        .map(|_| {
                            s.spawn(|| {
                                let mut acc = 0u64;
                                while let Ok(i) = { rx.lock().unwrap().recv() } {
                                    acc = fold(acc, kernel(i, iters));
                                }
                                acc
                            })
                        })
                        .collect();
                    (0..tasks).for_each(|i| tx.send(i).unwrap());
                    drop(tx);
                    parts.into_iter().map(|p| p.join().unwrap()).fold(0, fold)
                })
            }),
        ],
    )
}

fn tiny_tasks(bench: &Bench<'_>, tasks: u64) -> anyhow::Result<()> {
    let Bench { brigade, rayon, .. } = *bench;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bench.workers)
        .build()?;
    bench.run.compare(
        "tiny-tasks",
        tasks,
        "rayon-scope",
        json!({}),
        vec![
            imp("brigade", || {
                let handles: Vec<_> = (0..tasks).map(|_| brigade.submit(|| 1u64)).collect();
                handles.into_iter().map(|t| t.result().unwrap()).sum()
            }),
            imp("brigade-scope", || {
                let done = AtomicU64::new(0);
                brigade.scope(|s| {
                    for _ in 0..tasks {
                        drop(s.spawn(|| {
                            done.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                });
                done.into_inner()
            }),
            imp("rayon-spawn", || {
                let remaining = Arc::new(AtomicU64::new(tasks));
                let (tx, rx) = mpsc::sync_channel::<()>(1);
                for _ in 0..tasks {
                    let remaining = Arc::clone(&remaining);
                    let tx = tx.clone();
                    rayon.spawn(move || {
                        if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                            tx.send(()).unwrap();
                        }
                    });
                }
                rx.recv().unwrap();
                tasks
            }),
            imp("rayon-scope", || {
                let done = AtomicU64::new(0);
                rayon.scope(|s| {
                    for _ in 0..tasks {
                        s.spawn(|_| {
                            done.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
                done.into_inner()
            }),
            imp("tokio-spawn", || {
                let handles: Vec<_> = (0..tasks).map(|_| tokio.spawn(async { 1u64 })).collect();
                tokio.block_on(async {
                    let mut sum = 0;
                    for h in handles {
                        sum += h.await.unwrap();
                    }
                    sum
                })
            }),
        ],
    )
}

fn sum_huge_list(bench: &Bench<'_>, len: u64) -> anyhow::Result<()> {
    let data: Vec<u64> = (0..len).collect();
    let chunk = (data.len() / (bench.brigade.workers() * 16)).max(1 << 14);
    // Each kernel is its own type, so every impl's loop over the data is compiled with the
    // kernel inlined. Passed as a `fn` pointer (as this once was), whether a loop called it
    // through the pointer or had it folded in depended on how the compiler happened to split
    // this crate: an edit elsewhere in the bench moved brigade's loop from 1.07× rayon to 0.88×
    // (6 interleaved runs of each binary), with no change to brigade at all.
    sum_with(bench, &data, chunk, "sum-huge-list", |x| x)?;
    sum_with(bench, &data, chunk, "sum-huge-list-hash", mix)
}

/// One `sum-huge-list` workload: `kernel` applied to every element, the results folded.
fn sum_with<K>(
    bench: &Bench<'_>,
    data: &[u64],
    chunk: usize,
    workload: &str,
    kernel: K,
) -> anyhow::Result<()>
where
    K: Fn(u64) -> u64 + Copy + Send + Sync,
{
    use rayon::prelude::*;
    let Bench { brigade, rayon, .. } = *bench;
    let fold = |acc: u64, x: u64| acc.wrapping_add(x);
    let brigade_sum = || {
        brigade.scope(|s| {
            let parts: Vec<_> = data
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().map(|&x| kernel(x)).fold(0, fold)))
                .collect();
            parts.into_iter().map(|t| t.result().unwrap()).fold(0, fold)
        })
    };
    bench.run.compare(
        workload,
        data.len() as u64,
        "rayon",
        json!({ "elements": data.len(), "chunk": chunk }),
        vec![
            imp("serial", || data.iter().map(|&x| kernel(x)).fold(0, fold)),
            imp("brigade", brigade_sum),
            imp("rayon", || {
                rayon.install(|| data.par_iter().map(|&x| kernel(x)).reduce(|| 0, fold))
            }),
        ],
    )
}

const LEAF_ITERS: u64 = 16;
const NESTED_ROUNDS: u64 = 8;

fn nested(bench: &Bench<'_>, depth: u32) -> anyhow::Result<()> {
    let Bench { brigade, rayon, .. } = *bench;
    fn join_brigade(pool: &ThreadPool, depth: u32, seed: u64) -> u64 {
        if depth == 0 {
            return kernel(seed, LEAF_ITERS);
        }
        let (l, r) = pool.join(
            || join_brigade(pool, depth - 1, seed * 2),
            || join_brigade(pool, depth - 1, seed * 2 + 1),
        );
        l.wrapping_add(r)
    }
    fn spawn_wait_brigade<'s>(s: &'s Scope<'s, '_>, depth: u32, seed: u64) -> u64 {
        if depth == 0 {
            return kernel(seed, LEAF_ITERS);
        }
        let left = s.spawn(move || spawn_wait_brigade(s, depth - 1, seed * 2));
        let right = spawn_wait_brigade(s, depth - 1, seed * 2 + 1);
        left.result().unwrap().wrapping_add(right)
    }
    fn submit_brigade(pool: &ThreadPool, depth: u32, seed: u64) -> u64 {
        if depth == 0 {
            return kernel(seed, LEAF_ITERS);
        }
        let inner = pool.clone();
        let left = pool.submit(move || submit_brigade(&inner, depth - 1, seed * 2));
        let right = submit_brigade(pool, depth - 1, seed * 2 + 1);
        left.result().unwrap().wrapping_add(right)
    }
    fn join_rayon(depth: u32, seed: u64) -> u64 {
        if depth == 0 {
            return kernel(seed, LEAF_ITERS);
        }
        let (l, r) = rayon::join(
            || join_rayon(depth - 1, seed * 2),
            || join_rayon(depth - 1, seed * 2 + 1),
        );
        l.wrapping_add(r)
    }
    fn scope_rayon<'s>(s: &rayon::Scope<'s>, total: &'s AtomicU64, depth: u32, seed: u64) {
        if depth == 0 {
            total.fetch_add(kernel(seed, LEAF_ITERS), Ordering::Relaxed);
            return;
        }
        s.spawn(move |s| scope_rayon(s, total, depth - 1, seed * 2));
        s.spawn(move |s| scope_rayon(s, total, depth - 1, seed * 2 + 1));
    }
    fn scope_brigade<'s>(s: &'s Scope<'s, '_>, total: &'s AtomicU64, depth: u32, seed: u64) {
        if depth == 0 {
            total.fetch_add(kernel(seed, LEAF_ITERS), Ordering::Relaxed);
            return;
        }
        drop(s.spawn(move || scope_brigade(s, total, depth - 1, seed * 2)));
        drop(s.spawn(move || scope_brigade(s, total, depth - 1, seed * 2 + 1)));
    }
    let leaves = 1u64 << depth;
    // Each timed run does several fan-outs back to back: one fan-out takes about as long as
    // waking a sleeping thread on a virtual machine, which would otherwise be what we time.
    fn rounds<'a>(mut once: impl FnMut() -> u64 + 'a) -> impl FnMut() -> u64 + 'a {
        move || {
            (0..NESTED_ROUNDS)
                .map(|_| once())
                .fold(0u64, u64::wrapping_add)
        }
    }
    bench.run.compare(
        "nested",
        leaves * NESTED_ROUNDS,
        "rayon",
        json!({ "leaves": leaves, "rounds": NESTED_ROUNDS, "leaf_kernel_iters": LEAF_ITERS }),
        vec![
            imp("brigade", rounds(|| join_brigade(brigade, depth, 1))),
            imp(
                "brigade-scope-wait",
                rounds(|| brigade.scope(|s| spawn_wait_brigade(s, depth, 1))),
            ),
            imp(
                "brigade-submit",
                rounds(|| {
                    let pool = brigade.clone();
                    brigade
                        .submit(move || submit_brigade(&pool, depth, 1))
                        .result()
                        .unwrap()
                }),
            ),
            imp(
                "brigade-scope",
                rounds(|| {
                    let total = AtomicU64::new(0);
                    brigade.scope(|s| scope_brigade(s, &total, depth, 1));
                    total.into_inner()
                }),
            ),
            imp("rayon", rounds(|| rayon.install(|| join_rayon(depth, 1)))),
            imp(
                "rayon-scope",
                rounds(|| {
                    let total = AtomicU64::new(0);
                    rayon.scope(|s| scope_rayon(s, &total, depth, 1));
                    total.into_inner()
                }),
            ),
        ],
    )
}

/// Runs the memory probe in a child process, so that the peak RSS is the probe's alone and
/// not the sum-huge-list vector's.
fn memory(base: &Value, workers: usize, tasks: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the benchmark's own executable")?;
    let output = Command::new(exe)
        .args(["memory-probe", "--tasks", &tasks.to_string()])
        .args(["--workers", &workers.to_string()])
        .output()
        .context("running the memory probe")?;
    anyhow::ensure!(
        output.status.success(),
        "memory probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut line: Value = serde_json::from_slice(&output.stdout).context("memory probe output")?;
    crate::measure::merge(&mut line, base);
    emit(&line);
    Ok(())
}

/// The peak resident set of this process image, from `VmHWM`. (`getrusage`'s `ru_maxrss`
/// would do on its own, but Linux carries it over from the parent across fork and exec, so a
/// probe started by a parent holding the 800 MB list would report that list.)
fn peak_rss_kb() -> u64 {
    proc_status_kb("VmHWM:")
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

fn current_rss_kb() -> u64 {
    proc_status_kb("VmRSS:")
}

/// The child side: blocks every worker, queues `tasks` no-op tasks (keeping their handles),
/// then releases the workers and awaits everything.
pub(crate) fn memory_probe(args: &MemoryProbeArgs) -> anyhow::Result<()> {
    let pool = ThreadPool::builder().workers(args.workers).build()?;
    let baseline = current_rss_kb();
    let gate = Arc::new(Barrier::new(args.workers + 1));
    let (started_tx, started) = mpsc::channel();
    let blockers: Vec<_> = (0..args.workers)
        .map(|_| {
            let gate = Arc::clone(&gate);
            let started_tx = started_tx.clone();
            pool.submit(move || {
                started_tx.send(()).unwrap();
                gate.wait();
            })
        })
        .collect();
    for _ in 0..args.workers {
        started.recv()?;
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.tasks).map(|_| pool.submit(|| ())).collect();
    let queue_ms = start.elapsed().as_secs_f64() * 1e3;
    let queued_rss = current_rss_kb();
    let ran_before_release = tasks.iter().filter(|t| t.is_done()).count();
    gate.wait();
    for t in blockers {
        t.result()?;
    }
    let mut ran = 0;
    for t in tasks {
        t.result()?;
        ran += 1;
    }
    anyhow::ensure!(ran == args.tasks, "not every task ran");
    let peak = peak_rss_kb();
    emit(&json!({
        "suite": SUITE,
        "workload": "memory",
        "impl": "brigade",
        "tasks": args.tasks,
        "peak_rss_kb": peak,
        "baseline_rss_kb": baseline,
        "queued_rss_kb": queued_rss,
        "bytes_per_queued_task": ((queued_rss.saturating_sub(baseline)) * 1024) as f64 / args.tasks as f64,
        "ran_before_release": ran_before_release,
        "queue_ms": crate::measure::round3(queue_ms),
        "target_kb": 256 * 1024,
    }));
    Ok(())
}
