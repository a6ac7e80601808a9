//! The cluster suite's `latency` workload: one task at a time on an idle queue, timed from
//! submit to start and to result, against Celery, RQ and brigade's local process pool.

use std::time::Instant;

use anyhow::Context;
use brigade::ProcessPool;
use brigade_cluster::Client;
use serde_json::{Value, json};

use super::workers::{STARTED, Workers, mono_ns, started};
use super::{Bench, Run, Sample, median_of};
use crate::measure::{emit, round3};

impl Bench<'_> {
    /// One task at a time on an idle queue: submit→start and submit→result.
    pub(super) fn latency(&mut self, tasks: u64) -> anyhow::Result<()> {
        let mut impls: Vec<(&str, Run<'_>)> = vec![
            (
                "brigade",
                Box::new(move |b: &mut Bench<'_>| b.brigade_latency(tasks, "threads")),
            ),
            (
                "brigade-process-lane",
                Box::new(move |b: &mut Bench<'_>| b.brigade_latency(tasks, "processes")),
            ),
            (
                "local-process-pool",
                Box::new(move |_: &mut Bench<'_>| pool_latency(tasks)),
            ),
        ];
        if self.python.is_some() {
            for (name, kind) in [
                ("celery-prefork", "celery-prefork"),
                ("celery-solo", "celery-solo"),
                ("rq-simple", "rq"),
            ] {
                impls.push((
                    name,
                    Box::new(move |b: &mut Bench<'_>| b.python_latency(kind, tasks)),
                ));
            }
        }
        let samples = self.interleave(&mut impls)?;
        let p = |s: &[Sample], q: f64, f: fn(&Sample) -> &Vec<f64>| {
            let mut all: Vec<f64> = s.iter().flat_map(|x| f(x).iter().copied()).collect();
            percentile(&mut all, q)
        };
        let anchor = samples
            .iter()
            .find(|(n, _)| *n == "celery-solo")
            .map(|(_, s)| p(s, 0.5, |x| &x.start_ms));
        let pool_p50 = samples
            .iter()
            .find(|(n, _)| *n == "local-process-pool")
            .map(|(_, s)| p(s, 0.5, |x| &x.result_ms));
        for (name, s) in &samples {
            let tasks = s[0].tasks;
            let ms = median_of(s, |x| x.ms);
            let start50 = p(s, 0.5, |x| &x.start_ms);
            let result50 = p(s, 0.5, |x| &x.result_ms);
            let mut line = self.base("latency", tasks);
            crate::measure::merge(
                &mut line,
                &json!({
                    "impl": name,
                    "wall_ms": round3(ms),
                    "min_ms": round3(s.iter().map(|x| x.ms).fold(f64::INFINITY, f64::min)),
                    "per_task_ns": round3(ms * 1e6 / tasks as f64),
                    "start_p50_ms": round3(start50),
                    "start_p99_ms": round3(p(s, 0.99, |x| &x.start_ms)),
                    "result_p50_ms": (!s[0].result_ms.is_empty()).then(|| round3(result50)),
                    "result_p99_ms": (!s[0].result_ms.is_empty())
                        .then(|| round3(p(s, 0.99, |x| &x.result_ms))),
                    "result_p50_over_local_pool_us": (name.starts_with("brigade") && !s[0].result_ms.is_empty())
                        .then(|| pool_p50.map(|pp| ((result50 - pp) * 1e3).round()))
                        .flatten(),
                    "anchor": "celery-solo",
                    "vs_anchor": anchor.map(|a| round3(a / start50)),
                }),
            );
            emit(&line);
        }
        Ok(())
    }

    fn brigade_latency(&mut self, tasks: u64, lane: &str) -> anyhow::Result<Sample> {
        let queue = self.queue("lat");
        let url = self.redis.url();
        let _procs = Workers::spawn(&url, &queue, 1, &["--concurrency", "1", "--lane", lane])?;
        let client = Client::builder(&url).queue(&queue).connect()?;
        one_at_a_time(tasks, || Ok(client.submit(&STARTED, ()).result()?))
    }

    fn python_latency(&mut self, kind: &str, tasks: u64) -> anyhow::Result<Sample> {
        // RQ takes milliseconds per task: a quarter of the count.
        let tasks = if kind == "rq" {
            (tasks / 4).max(50)
        } else {
            tasks
        };
        let out = self.run_python(kind, "latency", &["--tasks", &tasks.to_string()])?;
        let list = |k: &str| -> Vec<f64> {
            out[k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        Ok(Sample {
            tasks,
            ms: out["ms"].as_f64().context("ms")?,
            steady_ms: None,
            start_ms: list("start_ms"),
            result_ms: list("result_ms"),
        })
    }
}

/// brigade's local process pool, one task at a time: the floor a cluster round trip adds to.
fn pool_latency(tasks: u64) -> anyhow::Result<Sample> {
    let pool = ProcessPool::builder().workers(1).build()?;
    one_at_a_time(tasks, || Ok(pool.submit(started, ()).result()?))
}

/// Warms up with 20 calls (the worker is up, its connections open), then times `tasks` calls
/// of `call`, one at a time: each returns when its task started (the worker's clock), and
/// gives the submit→start and submit→result latencies.
fn one_at_a_time(
    tasks: u64,
    mut call: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<Sample> {
    for _ in 0..20 {
        call()?;
    }
    let mut sample = Sample {
        tasks,
        ..Sample::default()
    };
    let begin = Instant::now();
    for _ in 0..tasks {
        let t0 = mono_ns();
        let at = call()?;
        let t1 = mono_ns();
        sample.start_ms.push(at.saturating_sub(t0) as f64 / 1e6);
        sample.result_ms.push(t1.saturating_sub(t0) as f64 / 1e6);
    }
    sample.ms = begin.elapsed().as_secs_f64() * 1e3;
    Ok(sample)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}
