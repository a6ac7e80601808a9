//! The `cluster` suite: brigade-cluster on a loopback Redis against Celery (Redis broker,
//! prefork and solo pools) and RQ (`SimpleWorker`), and `redis-benchmark`'s XADD rate as the
//! broker's own ceiling.
//!
//! Workers are this benchmark binary re-run as a cluster worker (the hidden `cluster-worker`
//! subcommand). Every impl gets a fresh queue per repetition and its own worker processes.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade::ProcessPool;
use brigade_cluster::{Admin, Client, LocalRedis};
use serde_json::{Value, json};

use crate::measure::{emit, median, round3};

mod latency;
mod python;
mod redelivery;
mod workers;
use python::Python;
use workers::{NOOP, STARTED, Workers, mono_ns, started};
pub(crate) use workers::{WorkerArgs, worker};

const SUITE: &str = "cluster";
const WORKLOADS: [&str; 6] = [
    "throughput-1w",
    "throughput-2w",
    "pipelined",
    "latency",
    "redelivery",
    "broker-ceiling",
];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these workloads (repeatable).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    only: Vec<String>,
    /// Skip the Python anchors (Celery, RQ) even in a full run.
    #[arg(long)]
    no_python: bool,
}

/// One impl's repetition.
type Run<'b> = Box<dyn FnMut(&mut Bench<'_>) -> anyhow::Result<Sample> + 'b>;

/// What one repetition of an impl measured.
#[derive(Default, Clone)]
struct Sample {
    /// Tasks run (the slow anchors run fewer).
    tasks: u64,
    ms: f64,
    /// From the first task's start to the last outcome (throughput once started).
    steady_ms: Option<f64>,
    /// Per-task latencies, ms.
    start_ms: Vec<f64>,
    result_ms: Vec<f64>,
}

struct Bench<'a> {
    args: &'a Args,
    redis: LocalRedis,
    python: Option<Python>,
    rep: usize,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    args.run.workers()?;
    let wants = |w: &str| crate::measure::selected(&args.only, w);
    let redis = match LocalRedis::start() {
        Ok(r) => r,
        Err(brigade_cluster::LocalRedisError::NotInstalled) => {
            emit(
                &json!({ "suite": SUITE, "skipped": "all", "reason": "redis-server is not installed" }),
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let python = if args.run.quick || args.no_python {
        emit(&json!({ "suite": SUITE, "skipped": "python", "reason": "--quick or --no-python" }));
        None
    } else {
        match Python::setup() {
            Ok(p) => Some(p),
            Err(e) => {
                emit(&json!({ "suite": SUITE, "skipped": "python", "reason": format!("{e:#}") }));
                None
            }
        }
    };
    let mut bench = Bench {
        args,
        redis,
        python,
        rep: 0,
    };
    let quick = args.run.quick;
    let tasks = if quick { 500 } else { 20_000 };
    if wants("throughput-1w") {
        bench.throughput("throughput-1w", 1, tasks)?;
    }
    if wants("throughput-2w") {
        bench.throughput("throughput-2w", 2, tasks)?;
    }
    if wants("pipelined") {
        bench.pipelined(tasks)?;
    }
    if wants("latency") {
        bench.latency(if quick { 100 } else { 2_000 })?;
    }
    if wants("redelivery") {
        bench.redelivery()?;
    }
    if wants("broker-ceiling") {
        bench.ceiling(if quick { 10_000 } else { 200_000 })?;
    }
    Ok(())
}

impl Bench<'_> {
    fn queue(&mut self, what: &str) -> String {
        self.rep += 1;
        format!("bench-{what}-{}", self.rep)
    }

    fn base(&self, workload: &str, tasks: u64) -> Value {
        json!({
            "suite": SUITE,
            "workload": workload,
            "tasks": tasks,
            "reps": self.args.run.reps,
            "quick": self.args.run.quick,
        })
    }

    /// `tasks` no-ops queued first; then `workers` worker processes start, and the clock runs
    /// until every outcome is back.
    fn throughput(&mut self, workload: &str, workers: usize, tasks: u64) -> anyhow::Result<()> {
        let mut impls: Vec<(&str, Run<'_>)> = vec![(
            "brigade",
            Box::new(move |b: &mut Bench<'_>| b.brigade_throughput(workers, tasks)),
        )];
        if self.python.is_some() {
            for (name, kind) in [
                ("celery-prefork", "celery-prefork"),
                ("celery-solo", "celery-solo"),
                ("rq-simple", "rq"),
            ] {
                impls.push((
                    name,
                    Box::new(move |b: &mut Bench<'_>| b.python_throughput(kind, workers, tasks)),
                ));
            }
        }
        let samples = self.interleave(&mut impls)?;
        // Rates, not times: the slow anchors run fewer tasks.
        let anchor = samples
            .iter()
            .find(|(n, _)| *n == "celery-prefork")
            .map(|(_, s)| s[0].tasks as f64 / median_of(s, |x| x.ms));
        for (name, s) in &samples {
            let tasks = s[0].tasks;
            let ms = median_of(s, |x| x.ms);
            let steady = s.iter().filter_map(|x| x.steady_ms).collect::<Vec<_>>();
            let mut line = self.base(workload, tasks);
            crate::measure::merge(
                &mut line,
                &json!({
                    "impl": name,
                    "worker_processes": workers,
                    "wall_ms": round3(ms),
                    "min_ms": round3(s.iter().map(|x| x.ms).fold(f64::INFINITY, f64::min)),
                    "per_task_ns": round3(ms * 1e6 / tasks as f64),
                    "tasks_per_s": (tasks as f64 / (ms / 1e3)).round(),
                    "steady_tasks_per_s": (!steady.is_empty())
                        .then(|| (tasks as f64 / (median(&mut steady.clone()) / 1e3)).round()),
                    "anchor": "celery-prefork",
                    "vs_anchor": anchor.map(|a| round3(tasks as f64 / ms / a)),
                }),
            );
            emit(&line);
        }
        Ok(())
    }

    /// Runs every impl `reps` times, interleaved (rep 1 of each, then rep 2…, each in its own
    /// order: see [`rep_order`](crate::measure::rep_order)).
    fn interleave<'b>(
        &mut self,
        impls: &mut [(&'b str, Run<'_>)],
    ) -> anyhow::Result<Vec<(&'b str, Vec<Sample>)>> {
        let mut out: Vec<(&str, Vec<Sample>)> =
            impls.iter().map(|(n, _)| (*n, Vec::new())).collect();
        for rep in 0..self.args.run.reps {
            for i in crate::measure::rep_order(impls.len(), rep) {
                let (name, run) = &mut impls[i];
                std::thread::sleep(Duration::from_millis(50));
                let sample = run(self).with_context(|| name.to_string())?;
                out[i].1.push(sample);
            }
        }
        Ok(out)
    }

    fn brigade_throughput(&mut self, workers: usize, tasks: u64) -> anyhow::Result<Sample> {
        let queue = self.queue("tp");
        let url = self.redis.url();
        let client = Client::builder(&url).queue(&queue).connect()?;
        let handles: Vec<_> = (0..tasks).map(|i| client.submit(&NOOP, i)).collect();
        // Every task queued before the workers start: the clock measures the workers.
        let mut admin = Admin::connect(&url, Some(&queue))?;
        while admin.status()?.waiting < tasks {
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = Instant::now();
        let start_ns = mono_ns();
        let extra = std::env::var("BRIGADE_BENCH_WORKER_FLAGS").unwrap_or_default();
        let extra: Vec<&str> = extra.split_whitespace().collect();
        let procs = Workers::spawn(&url, &queue, workers, &extra)?;
        let mut first = u64::MAX;
        let mut sum = 0u64;
        for h in handles {
            let (x, at) = h.result()?;
            sum = sum.wrapping_add(x);
            first = first.min(at);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let end_ns = mono_ns();
        drop(procs);
        anyhow::ensure!(sum == tasks * (tasks - 1) / 2, "wrong checksum");
        let _ = start_ns;
        Ok(Sample {
            tasks,
            ms,
            steady_ms: Some((end_ns.saturating_sub(first)) as f64 / 1e6),
            ..Sample::default()
        })
    }

    fn python_throughput(
        &mut self,
        kind: &str,
        workers: usize,
        tasks: u64,
    ) -> anyhow::Result<Sample> {
        // RQ runs a few hundred tasks a second at best: a tenth of the count keeps the run in
        // minutes (rates are compared, not times).
        let tasks = if kind == "rq" {
            (tasks / 10).max(200)
        } else {
            tasks
        };
        let out = self.run_python(
            kind,
            "throughput",
            &[
                "--tasks",
                &tasks.to_string(),
                "--workers",
                &workers.to_string(),
            ],
        )?;
        Ok(Sample {
            tasks,
            ms: out["ms"].as_f64().context("ms")?,
            steady_ms: out["steady_ms"].as_f64(),
            ..Sample::default()
        })
    }

    /// Runs the Python anchor `kind` on `workload` with `args`, against a Redis database of
    /// its own for each run (Celery and RQ keep state in theirs).
    fn run_python(&mut self, kind: &str, workload: &str, args: &[&str]) -> anyhow::Result<Value> {
        self.rep += 1;
        let url = format!(
            "redis://127.0.0.1:{}/{}",
            self.redis.port(),
            1 + self.rep % 15
        );
        let python = self.python.as_ref().expect("python is set up");
        let mut all = vec![workload, "--url", &url];
        all.extend_from_slice(args);
        python.run(kind, &all)
    }

    /// `tasks` no-ops submitted at once and awaited, on one warm worker process: what the
    /// cluster adds per task over brigade's local process pool when calls are pipelined.
    fn pipelined(&mut self, tasks: u64) -> anyhow::Result<()> {
        let mut impls: Vec<(&str, Run<'_>)> = vec![
            (
                "brigade",
                Box::new(move |b: &mut Bench<'_>| b.brigade_pipelined(tasks)),
            ),
            (
                "local-process-pool",
                Box::new(move |_: &mut Bench<'_>| pool_pipelined(tasks)),
            ),
        ];
        let samples = self.interleave(&mut impls)?;
        let pool_ms = samples
            .iter()
            .find(|(n, _)| *n == "local-process-pool")
            .map(|(_, s)| median_of(s, |x| x.ms));
        for (name, s) in &samples {
            let ms = median_of(s, |x| x.ms);
            let mut line = self.base("pipelined", tasks);
            crate::measure::merge(
                &mut line,
                &json!({
                    "impl": name,
                    "wall_ms": round3(ms),
                    "min_ms": round3(s.iter().map(|x| x.ms).fold(f64::INFINITY, f64::min)),
                    "per_task_ns": round3(ms * 1e6 / tasks as f64),
                    "tasks_per_s": (tasks as f64 / (ms / 1e3)).round(),
                    "over_local_pool_us_per_task": pool_ms
                        .map(|p| round3((ms - p) * 1e3 / tasks as f64)),
                    "anchor": "local-process-pool",
                    "vs_anchor": pool_ms.map(|p| round3(p / ms)),
                }),
            );
            emit(&line);
        }
        Ok(())
    }

    fn brigade_pipelined(&mut self, tasks: u64) -> anyhow::Result<Sample> {
        let queue = self.queue("pipe");
        let url = self.redis.url();
        let _procs = Workers::spawn(&url, &queue, 1, &["--concurrency", "1"])?;
        let client = Client::builder(&url).queue(&queue).connect()?;
        for _ in 0..20 {
            client.submit(&STARTED, ()).result()?;
        }
        let begin = Instant::now();
        let handles: Vec<_> = (0..tasks).map(|i| client.submit(&NOOP, i)).collect();
        let mut sum = 0u64;
        for h in handles {
            sum = sum.wrapping_add(h.result()?.0);
        }
        let ms = begin.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(sum == tasks * (tasks - 1) / 2, "wrong checksum");
        Ok(Sample {
            tasks,
            ms,
            ..Sample::default()
        })
    }

    /// `redis-benchmark` XADD: 50 connections, and 50 connections pipelining 16.
    fn ceiling(&mut self, requests: u64) -> anyhow::Result<()> {
        let Some(bin) = LocalRedis::binary().map(|p| p.with_file_name("redis-benchmark")) else {
            return Ok(());
        };
        if !bin.is_file() {
            emit(
                &json!({ "suite": SUITE, "skipped": "broker-ceiling", "reason": "redis-benchmark not installed" }),
            );
            return Ok(());
        }
        for (name, pipeline) in [
            ("redis-benchmark-xadd-c50", 1),
            ("redis-benchmark-xadd-c50-p16", 16),
        ] {
            let mut rates = Vec::new();
            for _ in 0..self.args.run.reps {
                let out = Command::new(&bin)
                    .args([
                        "-p",
                        &self.redis.port().to_string(),
                        "-c",
                        "50",
                        "-q",
                        "--csv",
                    ])
                    .args(["-n", &requests.to_string(), "-P", &pipeline.to_string()])
                    .args([
                        "XADD",
                        "bench-ceiling",
                        "MAXLEN",
                        "~",
                        "100000",
                        "*",
                        "p",
                        "x",
                    ])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                let rate: f64 = text
                    .lines()
                    .filter_map(|l| l.split(',').nth(1))
                    .filter_map(|v| v.trim_matches('"').parse().ok())
                    .next()
                    .with_context(|| format!("redis-benchmark said: {text}"))?;
                rates.push(rate);
            }
            let rate = median(&mut rates);
            let mut line = self.base("broker-ceiling", requests);
            crate::measure::merge(
                &mut line,
                &json!({
                    "impl": name,
                    "wall_ms": round3(requests as f64 / rate * 1e3),
                    "per_task_ns": round3(1e9 / rate),
                    "tasks_per_s": rate.round(),
                    "anchor": null,
                    "vs_anchor": null,
                }),
            );
            emit(&line);
        }
        Ok(())
    }
}

/// brigade's local process pool, one worker process, every task submitted then awaited.
fn pool_pipelined(tasks: u64) -> anyhow::Result<Sample> {
    let pool = ProcessPool::builder().workers(1).build()?;
    for _ in 0..20 {
        pool.submit(started, ()).result()?;
    }
    let begin = Instant::now();
    let handles: Vec<_> = (0..tasks).map(|i| pool.submit(workers::noop, i)).collect();
    let mut sum = 0u64;
    for h in handles {
        sum = sum.wrapping_add(h.result()?.0);
    }
    let ms = begin.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(sum == tasks * (tasks - 1) / 2, "wrong checksum");
    Ok(Sample {
        tasks,
        ms,
        ..Sample::default()
    })
}

fn median_of(s: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut v: Vec<f64> = s.iter().map(f).collect();
    median(&mut v)
}
