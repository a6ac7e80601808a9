//! The `event-loop` suite: brigade's event loop against raw tokio, threads and Python's
//! asyncio, on a real HTTP/1.1 server (hyper, on 127.0.0.1, in this process on its own
//! threads); blocking inside async code; and the cost of a spawn.
//!
//! The I/O workloads report requests per second; `blocking-in-async` reports how late 1 ms
//! async sleeps wake up while other tasks block their worker. As in the threads suite, impls
//! run side by side with their repetitions interleaved and medians reported, and `vs_anchor`
//! is above 1 when an impl beats its anchor.

mod scheduling;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade::event_loop::gather;
use brigade::{EventLoop, ThreadPool};
use serde_json::{Value, json};

use crate::measure::{emit, median, merge, round3};
use brigade_http::{Server, blocking_connection, hyper_connection, path, share};
use scheduling::Blocking;

const SUITE: &str = "event-loop";
const WORKLOADS: [&str; 4] = [
    "io-slow-many",
    "io-fast-few",
    "blocking-in-async",
    "tiny-async",
];
const PYTHON_CLIENT: &str = include_str!("asyncio_client.py");

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these workloads (repeatable).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    only: Vec<String>,
    /// Worker threads of the HTTP server's own runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Tasks per `tiny-async` run (default 200,000; 2,000 with --quick): two sizes under
    /// `valgrind --tool=callgrind` give the instructions per task.
    #[arg(long)]
    tiny_tasks: Option<u64>,
    /// brigade's blocking threshold in ms (default: the loop's own, 10 ms). Polls are timed
    /// whatever it is; a huge value keeps a slow host (valgrind) from flagging sites.
    #[arg(long)]
    blocking_threshold_ms: Option<u64>,
}

/// One impl's run: what it measured, and a checksum every impl must agree on.
struct Sample {
    checksum: u64,
    /// Seconds the measured part took.
    secs: f64,
    /// Lateness samples in microseconds (`blocking-in-async` only).
    lateness_us: Vec<f64>,
}

impl Sample {
    fn timed(start: Instant, checksum: u64) -> Self {
        Self {
            checksum,
            secs: start.elapsed().as_secs_f64(),
            lateness_us: Vec::new(),
        }
    }
}

/// An impl's name, why it was skipped (if it was), and its samples.
type Outcome = (&'static str, Option<String>, Vec<Sample>);

type Run<'a> = Box<dyn FnMut() -> anyhow::Result<Option<Sample>> + 'a>;

/// An impl; a run that returns `None` is skipped (its line says why).
struct Impl<'a> {
    name: &'static str,
    run: Run<'a>,
    skipped: Option<String>,
}

fn imp<'a>(name: &'static str, run: impl FnMut() -> anyhow::Result<Sample> + 'a) -> Impl<'a> {
    let mut run = run;
    Impl {
        name,
        run: Box::new(move || run().map(Some)),
        skipped: None,
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let workers = args.run.workers()?;
    let wants = |w: &str| crate::measure::selected(&args.only, w);
    let base = args.run.base(workers);
    let server = Server::start(args.server_threads)?;
    let suite = Suite {
        threshold: args.blocking_threshold_ms.map_or(
            brigade::event_loop::DEFAULT_BLOCKING_THRESHOLD,
            Duration::from_millis,
        ),
        reps: args.run.reps,
        workers,
        base,
        server: &server,
    };
    if wants("io-slow-many") {
        let (requests, connections, delay) = if args.run.quick {
            (200, 50, 5)
        } else {
            (5_000, 1_000, 50)
        };
        suite.io_slow_many(requests, connections, delay)?;
    }
    if wants("io-fast-few") {
        let requests = if args.run.quick { 400 } else { 20_000 };
        suite.io_fast_few(requests, 8)?;
    }
    if wants("blocking-in-async") {
        let shape = if args.run.quick {
            Blocking {
                blockers: 4,
                block_ms: 30,
                sleepers: 100,
                sleeps: 5,
            }
        } else {
            Blocking {
                blockers: 20,
                block_ms: 50,
                sleepers: 2_000,
                sleeps: 10,
            }
        };
        suite.blocking_in_async(&shape)?;
    }
    if wants("tiny-async") {
        let default = if args.run.quick { 2_000 } else { 200_000 };
        suite.tiny_async(args.tiny_tasks.unwrap_or(default))?;
    }
    Ok(())
}

struct Suite<'a> {
    threshold: Duration,
    reps: usize,
    workers: usize,
    base: Value,
    server: &'a Server,
}

impl Suite<'_> {
    fn tokio(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.workers)
            .enable_all()
            .build()?)
    }

    fn brigade(&self) -> anyhow::Result<EventLoop> {
        Ok(EventLoop::builder()
            .workers(self.workers)
            .blocking_threshold(self.threshold)
            .build()?)
    }

    /// Many slow requests over many connections: what an event loop is for.
    fn io_slow_many(
        &self,
        requests: usize,
        connections: usize,
        delay_ms: u64,
    ) -> anyhow::Result<()> {
        let addr = self.server.addr;
        let lp = self.brigade()?;
        // The same loop with the detector unable to fire: what a false alarm costs, if any.
        let undetected = EventLoop::builder()
            .workers(self.workers)
            .blocking_threshold(Duration::MAX)
            .build()?;
        let tokio = self.tokio()?;
        let threads = ThreadPool::builder().workers(64).build()?;
        let path = path(delay_ms);
        let extra =
            json!({ "requests": requests, "connections": connections, "delay_ms": delay_ms });
        let python = python_impl(addr, path.clone(), requests, connections);
        let impls = vec![
            imp("brigade", || {
                brigade_http(&lp, addr, &path, requests, connections, Wait::Gather)
            }),
            imp("brigade-detection-off", || {
                brigade_http(
                    &undetected,
                    addr,
                    &path,
                    requests,
                    connections,
                    Wait::Gather,
                )
            }),
            // The tokio client's own shape (await each handle in turn) on the same loop: what
            // `gather` costs here. It watches every task, so each of the thousand completions
            // wakes the thread in `block_on` (a context switch on a 2-core machine), where
            // awaiting in order sleeps until the oldest connection is done, by which time most
            // of the others are too.
            imp("brigade-await-in-order", || {
                brigade_http(&lp, addr, &path, requests, connections, Wait::InOrder)
            }),
            imp("tokio-hyper", || {
                tokio_http(&tokio, addr, &path, requests, connections)
            }),
            imp("brigade-threads-64", || {
                threads_http(&threads, addr, &path, requests, 64.min(connections))
            }),
            python,
        ];
        self.compare_rate("io-slow-many", requests, "tokio-hyper", &extra, impls)?;
        self.detector_line("io-slow-many", &lp);
        Ok(())
    }

    /// What brigade's blocking detector made of a workload, over all its repetitions: a
    /// flagged site here is a false alarm (nothing in these clients blocks), and its tasks
    /// then ran on the blocking lane.
    fn detector_line(&self, workload: &str, lp: &EventLoop) {
        let report = lp.blocking_report();
        let mut line = self.line(workload, "brigade", 0);
        merge(
            &mut line,
            &json!({
                "detector": true,
                "sites": report.len(),
                "flagged_sites": report.iter().filter(|s| s.flagged).count(),
                "polls": report.iter().map(|s| s.polls).sum::<u64>(),
                "slow_polls": report.iter().map(|s| s.slow_polls).sum::<u64>(),
                "worst_poll_ms": report.iter().map(|s| s.worst.as_secs_f64() * 1e3).fold(0.0, f64::max),
            }),
        );
        emit(&line);
    }

    /// Many fast requests over a few keep-alive connections: threads are fine here too.
    fn io_fast_few(&self, requests: usize, connections: usize) -> anyhow::Result<()> {
        let addr = self.server.addr;
        let lp = self.brigade()?;
        let tokio = self.tokio()?;
        let threads = ThreadPool::builder().workers(connections).build()?;
        let path = path(0);
        let extra = json!({ "requests": requests, "connections": connections, "delay_ms": 0 });
        let impls = vec![
            imp("brigade", || {
                brigade_http(&lp, addr, &path, requests, connections, Wait::Gather)
            }),
            imp("tokio-hyper", || {
                tokio_http(&tokio, addr, &path, requests, connections)
            }),
            imp("brigade-threads-8", || {
                threads_http(&threads, addr, &path, requests, connections)
            }),
        ];
        self.compare_rate("io-fast-few", requests, "tokio-hyper", &extra, impls)?;
        self.detector_line("io-fast-few", &lp);
        Ok(())
    }

    /// Interleaved repetitions, medians, one line per impl with `req_per_s`.
    fn compare_rate(
        &self,
        workload: &str,
        requests: usize,
        anchor: &str,
        extra: &Value,
        impls: Vec<Impl<'_>>,
    ) -> anyhow::Result<()> {
        let results = self.interleave(workload, impls)?;
        let rate = |secs: &[f64]| requests as f64 / median(&mut secs.to_vec());
        let anchor_rate = results
            .iter()
            .find(|(name, _, runs)| *name == anchor && !runs.is_empty())
            .map(|(_, _, runs)| rate(&secs(runs)));
        for (name, skipped, runs) in &results {
            let mut line = self.line(workload, name, requests);
            if let Some(why) = skipped {
                merge(&mut line, &json!({ "skipped": why }));
            } else {
                let secs = secs(runs);
                let req_per_s = rate(&secs);
                merge(
                    &mut line,
                    &json!({
                        "wall_ms": round3(median(&mut secs.clone()) * 1e3),
                        "min_ms": round3(secs.iter().copied().fold(f64::INFINITY, f64::min) * 1e3),
                        "req_per_s": req_per_s.round(),
                        "anchor": anchor,
                        "vs_anchor": anchor_rate.map(|a| round3(req_per_s / a)),
                    }),
                );
            }
            merge(&mut line, extra);
            emit(&line);
        }
        Ok(())
    }

    fn line(&self, workload: &str, name: &str, tasks: usize) -> Value {
        let mut line = json!({
            "suite": SUITE,
            "workload": workload,
            "impl": name,
            "tasks": tasks,
            "reps": self.reps,
        });
        merge(&mut line, &self.base);
        line
    }

    /// See [`interleave`].
    fn interleave(&self, workload: &str, impls: Vec<Impl<'_>>) -> anyhow::Result<Vec<Outcome>> {
        interleave(workload, self.reps, impls)
    }
}

/// Runs every impl `reps` times, interleaved (each repetition in its own order, see
/// [`rep_order`](crate::measure::rep_order)); checks the checksums agree. Gives each impl's
/// samples (none for a skipped impl, with the reason).
///
/// A warm-up round runs every impl once, untimed, first. The suite's first run pays for things
/// that belong to no impl (the shared server's first thousand connections, its threads' first
/// allocations), and that first run was always the same impl: the gather client in
/// `io-slow-many`, which then measured ~2 % behind the same loop awaiting in order.
fn interleave(
    workload: &str,
    reps: usize,
    mut impls: Vec<Impl<'_>>,
) -> anyhow::Result<Vec<Outcome>> {
    if let Ok(keep) = std::env::var("BRIGADE_BENCH_IMPL") {
        impls.retain(|i| keep.split(',').any(|k| k == i.name));
    }
    let mut samples: Vec<Vec<Sample>> = impls.iter().map(|_| Vec::new()).collect();
    for imp in impls.iter_mut() {
        run_once(workload, imp)?;
    }
    for rep in 0..reps {
        for i in crate::measure::rep_order(impls.len(), rep) {
            if let Some(sample) = run_once(workload, &mut impls[i])? {
                samples[i].push(sample);
            }
        }
    }
    let reference = samples.iter().find_map(|s| s.first()).map(|s| s.checksum);
    for (imp, runs) in impls.iter().zip(&samples) {
        for run in runs {
            anyhow::ensure!(
                Some(run.checksum) == reference,
                "{workload}: {} computed {}, expected {reference:?}",
                imp.name,
                run.checksum
            );
        }
    }
    Ok(impls
        .into_iter()
        .zip(samples)
        .map(|(imp, runs)| (imp.name, imp.skipped, runs))
        .collect())
}

/// One run of `imp`, after a pause that lets the previous impl's threads and sockets settle;
/// `None`, without running it, once it is skipped (a missing `python3`, say).
fn run_once(workload: &str, imp: &mut Impl<'_>) -> anyhow::Result<Option<Sample>> {
    if imp.skipped.is_some() {
        return Ok(None);
    }
    std::thread::sleep(Duration::from_millis(50));
    let sample = (imp.run)().with_context(|| format!("{workload}/{}", imp.name))?;
    if sample.is_none() {
        imp.skipped = Some("skipped".into());
    }
    Ok(sample)
}

fn secs(runs: &[Sample]) -> Vec<f64> {
    runs.iter().map(|r| r.secs).collect()
}

/// How the brigade HTTP client waits for its connections' tasks.
#[derive(Clone, Copy)]
enum Wait {
    /// `gather`, the event loop's own way to await many tasks.
    Gather,
    /// Each task in turn, as the tokio client awaits its handles.
    InOrder,
}

fn brigade_http(
    lp: &EventLoop,
    addr: std::net::SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
    wait: Wait,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            lp.spawn(hyper_connection(
                addr,
                path.to_owned(),
                share(requests, connections, i),
                || (),
            ))
        })
        .collect();
    let bytes = match wait {
        Wait::Gather => lp
            .block_on(gather(tasks))??
            .into_iter()
            .collect::<std::io::Result<Vec<u64>>>()?
            .iter()
            .sum(),
        Wait::InOrder => lp.block_on(async {
            let mut bytes = 0;
            for task in tasks {
                bytes += task.await??;
            }
            anyhow::Ok(bytes)
        })??,
    };
    Ok(Sample::timed(start, bytes))
}

fn tokio_http(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            rt.spawn(hyper_connection(
                addr,
                path.to_owned(),
                share(requests, connections, i),
                || (),
            ))
        })
        .collect();
    let bytes = rt.block_on(async {
        let mut bytes = 0;
        for handle in handles {
            bytes += handle.await??;
        }
        anyhow::Ok(bytes)
    })?;
    Ok(Sample::timed(start, bytes))
}

fn threads_http(
    pool: &ThreadPool,
    addr: std::net::SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let path = path.to_owned();
            let n = share(requests, connections, i);
            pool.submit(move || blocking_connection(addr, &path, n, || ()))
        })
        .collect();
    let mut bytes = 0;
    for task in tasks {
        bytes += task.result()??;
    }
    Ok(Sample::timed(start, bytes))
}

/// Python's asyncio with standard-library streams, as a child process; its own clock, so that
/// the interpreter's start-up is not counted. Skipped when `python3` is missing.
fn python_impl<'a>(
    addr: std::net::SocketAddr,
    path: String,
    requests: usize,
    connections: usize,
) -> Impl<'a> {
    let available = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut python = Impl {
        name: "python-asyncio",
        run: Box::new(move || {
            let out = Command::new("python3")
                .arg("-c")
                .arg(PYTHON_CLIENT)
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string())
                .arg(&path)
                .arg(requests.to_string())
                .arg(connections.to_string())
                .output()
                .context("running python3")?;
            anyhow::ensure!(
                out.status.success(),
                "python3 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let result: Value = serde_json::from_slice(&out.stdout)?;
            Ok(Some(Sample {
                checksum: result["bytes"].as_u64().context("bytes")?,
                secs: result["elapsed_s"].as_f64().context("elapsed_s")?,
                lateness_us: Vec::new(),
            }))
        }),
        skipped: None,
    };
    if !available {
        python.skipped = Some("python3 not found".into());
    }
    python
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_impl_is_never_run_not_even_to_warm_up() {
        let mut ran = 0;
        let counted = imp("counted", || {
            ran += 1;
            Ok(Sample::timed(Instant::now(), 7))
        });
        // Skipped up front, as the Python client is without `python3`: running it would fail.
        let missing = Impl {
            name: "missing",
            run: Box::new(|| anyhow::bail!("ran a skipped impl")),
            skipped: Some("python3 not found".into()),
        };
        let outcomes = interleave("test", 2, vec![counted, missing]).unwrap();
        assert_eq!(outcomes[0].2.len(), 2);
        assert_eq!(outcomes[1].1.as_deref(), Some("python3 not found"));
        assert!(outcomes[1].2.is_empty());
        drop(outcomes);
        assert_eq!(ran, 3, "a warm-up run and two timed ones");
    }

    #[test]
    fn an_impl_that_skips_itself_runs_no_more() {
        let mut calls = 0;
        let skipping = Impl {
            name: "skipping",
            run: Box::new(|| {
                calls += 1;
                Ok(None)
            }),
            skipped: None,
        };
        let outcomes = interleave("test", 3, vec![skipping]).unwrap();
        assert_eq!(outcomes[0].1.as_deref(), Some("skipped"));
        drop(outcomes);
        assert_eq!(calls, 1);
    }
}
