//! `choosing-rule`: the primers' rule itself. CPU-bound work wants parallel workers, blocking
//! I/O wants threads, many slow connections want an event loop: so a program that does all
//! three should put each where it belongs. The same mix runs under each single model, under
//! the rule applied by hand, and under brigade's auto router, which applies it by
//! measurement and says where it put each call site and when.
//!
//! The mix (benchmark A1's "thirds"): equal numbers of CPU tasks (~1 ms of arithmetic),
//! blocking GETs and async GETs (the local server answers after 20 ms), interleaved and
//! submitted at once, each kind from its own line of code. A 1 ms async ticker runs beside
//! them and measures how late the loop wakes it.

use std::net::SocketAddr;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brigade::auto::{Auto, Lane};
use brigade::{EventLoop, Task, ThreadPool};

use super::blocking::percentile;
use super::cpu_bound::chunk_sum;
use crate::lab::outcome::{factor, number};
use crate::lab::record::{Worker, now_ns};
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};
use brigade_http::{blocking_connection, hyper_connection, path};

/// The server's delay for both kinds of GET.
const DELAY_MS: u64 = 20;

/// What every task needs.
#[derive(Clone)]
struct Kit {
    addr: SocketAddr,
    path: Arc<str>,
    /// Kernel elements that take ~1 ms here.
    elements: u64,
}

/// A task's result: its kind, the lane its thread belongs to (auto only), and its span.
type Done = (Kind, &'static str, Span);

fn lane_of_thread() -> &'static str {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    if name.contains("-compute") {
        "compute"
    } else if name.contains("-blocking") {
        "blocking"
    } else if name.contains("-loop") {
        "event loop"
    } else {
        "other"
    }
}

fn cpu(kit: &Kit) -> Done {
    let (_, span) = Span::thread(Kind::Cpu, || {
        std::hint::black_box(chunk_sum(0, kit.elements))
    });
    (Kind::Cpu, lane_of_thread(), span)
}

fn blocking(kit: &Kit) -> Done {
    let (bytes, span) = Span::thread(Kind::Block, || {
        blocking_connection(kit.addr, &kit.path, 1, || {})
    });
    bytes.expect("blocking GET from the lab's server");
    (Kind::Block, lane_of_thread(), span)
}

async fn fetch(addr: SocketAddr, path: Arc<str>) -> Done {
    let begun = now_ns();
    hyper_connection(addr, path.to_string(), 1, || {})
        .await
        .expect("async GET from the lab's server");
    (Kind::Wait, lane_of_thread(), Span::since(Kind::Wait, begun))
}

/// The 1 ms ticker: how late each wake-up was, in µs, until `stop`.
async fn ticker(stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut late = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(deadline).await;
        late.push((tokio::time::Instant::now() - deadline).as_secs_f64() * 1e6);
    }
    late
}

fn threads_now() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the process's thread count every millisecond while a run lasts.
struct Peak {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<usize>,
    baseline: usize,
}

impl Peak {
    fn start() -> Self {
        let baseline = threads_now();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(threads_now());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        Self {
            stop,
            sampler,
            baseline,
        }
    }

    /// Threads added at the peak (the sampler not counted).
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.join().unwrap_or(0);
        peak.saturating_sub(self.baseline + 1)
    }
}

/// One model's run.
struct Run {
    wall: Duration,
    late_us: Vec<f64>,
    threads: usize,
    done: Vec<Done>,
    start_ns: u64,
}

/// The order tasks are submitted in: cpu, blocking, async, cpu, … (`n` of each).
fn order(n: usize) -> impl Iterator<Item = Kind> {
    (0..n).flat_map(|_| [Kind::Cpu, Kind::Block, Kind::Wait])
}

/// Runs the mix: `submit` starts one task of a kind; the ticker runs on `tick_on`.
fn run_mix(
    n: usize,
    tick: impl FnOnce(Arc<AtomicBool>) -> Task<Vec<f64>>,
    mut submit: impl FnMut(Kind) -> Task<Done>,
) -> anyhow::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Peak::start();
    let start_ns = now_ns();
    let started = Instant::now();
    let ticks = tick(stop.clone());
    let tasks: Vec<Task<Done>> = order(n).map(&mut submit).collect();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.push(t.result()?);
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let late_us = ticks.result()?;
    Ok(Run {
        wall,
        late_us,
        threads: peak.finish(),
        done,
        start_ns,
    })
}

fn side_loop() -> anyhow::Result<EventLoop> {
    Ok(EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .thread_name("lab-ticker")
        .build()?)
}

fn pool_model(pool: &ThreadPool, kit: &Kit, n: usize) -> anyhow::Result<Run> {
    // The ticker, and the async client's reactor, on a loop beside the pool.
    let side = side_loop()?;
    run_mix(
        n,
        |stop| side.spawn(ticker(stop)),
        |kind| {
            let kit = kit.clone();
            let side = side.clone();
            match kind {
                Kind::Cpu => pool.submit(move || cpu(&kit)),
                Kind::Block => pool.submit(move || blocking(&kit)),
                // What a thread-pool user does with an async client: block on it.
                _ => pool.submit(move || {
                    side.block_on(fetch(kit.addr, kit.path))
                        .expect("a pool thread is not a loop thread")
                }),
            }
        },
    )
}

fn loop_model(lp: &EventLoop, kit: &Kit, n: usize) -> anyhow::Result<Run> {
    run_mix(
        n,
        |stop| lp.spawn(ticker(stop)),
        |kind| {
            let kit = kit.clone();
            match kind {
                // Naive async code: the work inline in the task.
                Kind::Cpu => lp.spawn(async move { cpu(&kit) }),
                Kind::Block => lp.spawn(async move { blocking(&kit) }),
                _ => lp.spawn(fetch(kit.addr, kit.path)),
            }
        },
    )
}

fn rule_model(kit: &Kit, workers: usize, n: usize) -> anyhow::Result<Run> {
    let compute = ThreadPool::builder().workers(workers).build()?;
    // One thread per blocking call in flight: the best fixed size for a burst.
    let io = ThreadPool::builder().workers(n.clamp(1, 512)).build()?;
    let lp = EventLoop::builder()
        .workers(workers)
        .blocking_threshold(Duration::MAX)
        .build()?;
    run_mix(
        n,
        |stop| lp.spawn(ticker(stop)),
        |kind| {
            let kit = kit.clone();
            match kind {
                Kind::Cpu => compute.submit(move || cpu(&kit)),
                Kind::Block => io.submit(move || blocking(&kit)),
                _ => lp.spawn(fetch(kit.addr, kit.path)),
            }
        },
    )
}

/// Where each kind was submitted from, for reading auto's report.
type Sites = Vec<(Kind, &'static Location<'static>)>;

#[track_caller]
fn submit_at<F>(auto: &Auto, work: F) -> (Task<Done>, &'static Location<'static>)
where
    F: FnOnce() -> Done + Send + 'static,
{
    (auto.submit(work), Location::caller())
}

#[track_caller]
fn spawn_at<F>(auto: &Auto, future: F) -> (Task<Done>, &'static Location<'static>)
where
    F: std::future::Future<Output = Done> + Send + 'static,
{
    (auto.spawn(future), Location::caller())
}

fn auto_model(auto: &Auto, kit: &Kit, n: usize) -> anyhow::Result<(Run, Sites)> {
    let mut sites: Sites = Vec::new();
    let run = run_mix(
        n,
        |stop| auto.spawn(ticker(stop)),
        |kind| {
            let kit = kit.clone();
            let (task, at) = match kind {
                Kind::Cpu => submit_at(auto, move || cpu(&kit)),
                Kind::Block => submit_at(auto, move || blocking(&kit)),
                _ => spawn_at(auto, fetch(kit.addr, kit.path)),
            };
            if !sites.iter().any(|(k, _)| *k == kind) {
                sites.push((kind, at));
            }
            task
        },
    )?;
    Ok((run, sites))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Cpu => "cpu",
        Kind::Block => "blocking GET",
        _ => "async GET",
    }
}

/// auto's timeline by call site: one row per (site, lane) pair, each task on the row of its
/// site and of the lane it ran on.
fn sites_timeline(run: &Run) -> Timeline {
    let mut names: Vec<(Worker, String)> = Vec::new();
    let mut spans = Vec::with_capacity(run.done.len());
    for (kind, lane, span) in &run.done {
        let name = format!("{} site on {lane}", kind_name(*kind));
        let row = match names.iter().find(|(_, n)| *n == name) {
            Some((w, _)) => *w,
            None => {
                let w = Worker::Thread(1_000_000 + names.len() as u32);
                names.push((w, name));
                w
            }
        };
        spans.push(Span {
            worker: row,
            ..*span
        });
    }
    Timeline::new(
        "auto: where each call site ran",
        "site",
        run.start_ns,
        spans,
    )
    .with_row_names(names)
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let n = ctx.size(150, 12);
    let workers = ctx.workers;
    let addr = ctx.server()?;
    let elements = elements_per_ms();
    let kit = Kit {
        addr,
        path: path(DELAY_MS).into(),
        elements,
    };
    let mut outcome = Outcome::new("choosing-rule");
    let mut runs: Vec<(String, Run)> = Vec::new();
    let threads_model = format!("threads ({workers})");
    ctx.step(&threads_model);
    let pool = ThreadPool::builder().workers(workers).build()?;
    runs.push((threads_model, pool_model(&pool, &kit, n)?));
    ctx.step("64 threads");
    let pool64 = ThreadPool::builder().workers(64).build()?;
    runs.push(("64 threads".to_owned(), pool_model(&pool64, &kit, n)?));
    ctx.step("event loop");
    let lp = EventLoop::builder()
        .workers(workers)
        .blocking_threshold(Duration::MAX)
        .build()?;
    runs.push(("event loop".to_owned(), loop_model(&lp, &kit, n)?));
    ctx.step("the rule, by hand");
    runs.push((
        "the rule, by hand".to_owned(),
        rule_model(&kit, workers, n)?,
    ));
    ctx.step("auto");
    let auto = Auto::builder().workers(workers).build()?;
    let (auto_run, sites) = auto_model(&auto, &kit, n)?;
    runs.push(("auto".to_owned(), auto_run));
    let report = auto.report();

    let hand = runs[3].1.wall.as_secs_f64();
    for (model, run) in &runs {
        let ms = run.wall.as_secs_f64() * 1e3;
        outcome.measure(model, "wall", ms, "ms");
        outcome.measure(model, "vs rule", run.wall.as_secs_f64() / hand, "×");
        outcome.measure(
            model,
            "tick p99",
            percentile(&run.late_us, 0.99) / 1e3,
            "ms",
        );
        outcome.measure(model, "threads peak", run.threads as f64, "");
    }
    outcome.notes.push(format!(
        "{n} each of CPU tasks (~1 ms), blocking GETs and async GETs ({DELAY_MS} ms server \
         delay), interleaved and submitted at once, each kind from its own line; a 1 ms async \
         ticker runs beside them (for the thread pools, on a one-thread loop of its own)"
    ));
    // auto's decisions, per site.
    let rule = |kind: Kind| match kind {
        Kind::Cpu => Lane::Compute,
        Kind::Block => Lane::Blocking,
        _ => Lane::Loop,
    };
    let mut followed = true;
    for (kind, at) in &sites {
        let Some(site) = report.sites.iter().find(|s| s.location == *at) else {
            followed = false;
            continue;
        };
        let lane = site.lane.map_or("no".to_owned(), |l| l.to_string());
        followed &= site.lane == Some(rule(*kind));
        outcome.notes.push(match site.moves.first() {
            Some(m) => format!(
                "auto put the {} site on the {lane} lane after {} calls ({} had run): {}",
                kind_name(*kind),
                m.calls,
                m.samples,
                m.reason
            ),
            None => format!(
                "auto kept the {} site on the {lane} lane (no move)",
                kind_name(*kind)
            ),
        });
        if site.moves.len() > 1 {
            outcome.notes.push(format!(
                "the {} site moved {} times in all",
                kind_name(*kind),
                site.moves.len()
            ));
        }
    }

    let secs = |i: usize| runs[i].1.wall.as_secs_f64();
    let (best_single, best_secs) = (0..3)
        .map(|i| (runs[i].0.clone(), secs(i)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three single models");
    let auto_secs = secs(4);
    let p99 = |i: usize| percentile(&runs[i].1.late_us, 0.99) / 1e3;
    let rule_wins = hand <= best_secs * 1.05;
    let text = format!(
        "applying the rule by hand (CPU on {workers} threads, blocking calls on a thread each, \
         async on the loop) took {} ms, {} the best single model ({best_single}, {} ms); auto \
         {} by measurement and took {} ms ({}× the rule) with ticks p99 {} ms — {}",
        number(hand * 1e3),
        if rule_wins {
            format!("{} faster than", factor(best_secs, hand))
        } else {
            format!("no faster than ({})", factor(best_secs, hand))
        },
        number(best_secs * 1e3),
        if followed {
            "put every site where the rule says"
        } else {
            "did not put every site where the rule says"
        },
        number(auto_secs * 1e3),
        number(auto_secs / hand),
        number(p99(4)),
        if rule_wins && followed {
            "agrees with the primers: no single model suits every kind of work, the rule does, \
             and it can be applied by measurement"
        } else if rule_wins {
            "the rule wins, but auto's placement differs from it here"
        } else {
            "a single model did as well here, which differs from the primers"
        }
    );
    outcome.conclude(text, Some(rule_wins && followed));
    let auto_run = &runs[4].1;
    let by_site = sites_timeline(auto_run);
    for (model, run) in &runs {
        let spans = run.done.iter().map(|(_, _, s)| *s).collect();
        outcome
            .timelines
            .push(Timeline::new(model.clone(), "thread", run.start_ns, spans));
    }
    outcome.timelines.push(by_site);
    Ok(outcome)
}

/// Kernel elements that take about 1 ms on this machine (the fastest of a few runs).
fn elements_per_ms() -> u64 {
    let probe = 100_000;
    let fastest = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(chunk_sum(0, std::hint::black_box(probe)));
            started.elapsed()
        })
        .min()
        .expect("five runs");
    ((1e-3 / fastest.as_secs_f64()) * probe as f64).max(1.0) as u64
}
