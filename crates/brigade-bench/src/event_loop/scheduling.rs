//! The workloads of the event-loop suite that need no network: blocking inside async code,
//! and the cost of a spawn.

use std::time::{Duration, Instant};

use brigade::EventLoop;
use brigade::event_loop::gather;
use serde_json::json;

use super::{Sample, Suite, imp, secs};
use crate::measure::{emit, median, merge, round3};

/// The shape of `blocking-in-async`.
pub(super) struct Blocking {
    /// Tasks that call `std::thread::sleep(block_ms)` inside async code.
    pub(super) blockers: usize,
    pub(super) block_ms: u64,
    /// Tasks that each do `sleeps` async sleeps of 1 ms, measuring how late each wakes.
    pub(super) sleepers: usize,
    pub(super) sleeps: usize,
}

/// One sleeper: how late each of its 1 ms sleeps woke up, in microseconds.
async fn sleeper(sleeps: usize) -> Vec<f64> {
    let mut late = Vec::with_capacity(sleeps);
    for _ in 0..sleeps {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(deadline).await;
        late.push((tokio::time::Instant::now() - deadline).as_secs_f64() * 1e6);
    }
    late
}

/// The naive blocker: blocking code inside async code, as people write it.
async fn naive_blocker(block_ms: u64) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(block_ms));
    Vec::new()
}

impl Suite<'_> {
    /// Blockers are spawned spread evenly among the sleepers, so that some land while
    /// sleepers are waiting, as in a real service.
    pub(super) fn blocking_in_async(&self, shape: &Blocking) -> anyhow::Result<()> {
        let &Blocking {
            blockers,
            block_ms,
            sleepers,
            sleeps,
        } = shape;
        let every = (sleepers / blockers.max(1)).max(1);
        let is_blocker_after = move |i: usize| i.is_multiple_of(every) && i / every < blockers;
        let checksum = (sleepers * sleeps) as u64;
        let flatten = |start: Instant, lists: Vec<Vec<f64>>| {
            let lateness_us: Vec<f64> = lists.into_iter().flatten().collect();
            Sample {
                checksum: lateness_us.len() as u64,
                secs: start.elapsed().as_secs_f64(),
                lateness_us,
            }
        };
        // brigade: one loop for every repetition, so that from the second on its detector
        // knows the blocking site from the start (what it learns is the point); and a fresh loop
        // per repetition, to show the first encounter too.
        let learned = EventLoop::builder().workers(2).build()?;
        let brigade = |lp: &EventLoop| -> anyhow::Result<Sample> {
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(sleepers + blockers);
            for i in 0..sleepers {
                tasks.push(lp.spawn(sleeper(sleeps)));
                if is_blocker_after(i) {
                    tasks.push(lp.spawn(naive_blocker(block_ms)));
                }
            }
            Ok(flatten(start, lp.block_on(gather(tasks))??))
        };
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let tokio_run = |spawn_blocking: bool| -> anyhow::Result<Sample> {
            let start = Instant::now();
            let mut handles = Vec::with_capacity(sleepers + blockers);
            for i in 0..sleepers {
                handles.push(tokio.spawn(sleeper(sleeps)));
                if is_blocker_after(i) {
                    handles.push(if spawn_blocking {
                        tokio.spawn(async move {
                            tokio::task::spawn_blocking(move || {
                                std::thread::sleep(Duration::from_millis(block_ms))
                            })
                            .await
                            .unwrap();
                            Vec::new()
                        })
                    } else {
                        tokio.spawn(naive_blocker(block_ms))
                    });
                }
            }
            let lists = tokio.block_on(async {
                let mut lists = Vec::new();
                for h in handles {
                    lists.push(h.await?);
                }
                anyhow::Ok(lists)
            })?;
            Ok(flatten(start, lists))
        };
        let impls = vec![
            imp("brigade", || brigade(&learned)),
            imp("brigade-first-encounter", || {
                brigade(&EventLoop::builder().workers(2).build()?)
            }),
            imp("tokio-naive", || tokio_run(false)),
            imp("tokio-spawn_blocking", || tokio_run(true)),
        ];
        let results = self.interleave("blocking-in-async", impls)?;
        let anchor = "tokio-spawn_blocking";
        let p99 = |runs: &[Sample]| {
            let mut p99s: Vec<f64> = runs
                .iter()
                .map(|r| percentile(&r.lateness_us, 0.99))
                .collect();
            median(&mut p99s)
        };
        let anchor_p99 = results.iter().find(|r| r.0 == anchor).map(|r| p99(&r.2));
        for (name, _, runs) in &results {
            let mut p50s: Vec<f64> = runs
                .iter()
                .map(|r| percentile(&r.lateness_us, 0.50))
                .collect();
            let mut maxes: Vec<f64> = runs
                .iter()
                .map(|r| percentile(&r.lateness_us, 1.0))
                .collect();
            let impl_p99 = p99(runs);
            let mut line = self.line("blocking-in-async", name, sleepers * sleeps);
            merge(
                &mut line,
                &json!({
                    "wall_ms": round3(median(&mut secs(runs)) * 1e3),
                    "lateness_p50_ms": round3(median(&mut p50s) / 1e3),
                    "lateness_p99_ms": round3(impl_p99 / 1e3),
                    "lateness_max_ms": round3(median(&mut maxes) / 1e3),
                    "first_rep_p99_ms": runs.first().map(|r| round3(percentile(&r.lateness_us, 0.99) / 1e3)),
                    "anchor": anchor,
                    "vs_anchor": anchor_p99.map(|a| round3(a / impl_p99)),
                    "blockers": blockers,
                    "block_ms": block_ms,
                    "sleepers": sleepers,
                    "sleeps_each": sleeps,
                    "loop_workers": 2,
                    "checksum_samples": checksum,
                }),
            );
            emit(&line);
        }
        Ok(())
    }

    /// The cost of one spawn and one await, with blocking detection on: 200,000 trivial
    /// tasks spawned from a `block_on`, then awaited in order.
    pub(super) fn tiny_async(&self, tasks: u64) -> anyhow::Result<()> {
        let lp = self.brigade()?;
        let tokio = self.tokio()?;
        // Both spawn from `block_on` on this thread and await in order: the same code, and
        // no single poll long enough for brigade's detector to move anything.
        let brigade_run = || -> anyhow::Result<Sample> {
            let start = Instant::now();
            let sum = lp.block_on(async {
                let handles: Vec<_> = (0..tasks).map(|i| lp.spawn(async move { i })).collect();
                let mut sum = 0u64;
                for h in handles {
                    sum += h.await.unwrap();
                }
                sum
            })?;
            Ok(Sample::timed(start, sum))
        };
        let tokio_run = || -> anyhow::Result<Sample> {
            let start = Instant::now();
            let sum = tokio.block_on(async {
                let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(async move { i })).collect();
                let mut sum = 0u64;
                for h in handles {
                    sum += h.await.unwrap();
                }
                sum
            });
            Ok(Sample::timed(start, sum))
        };
        let results = self.interleave(
            "tiny-async",
            vec![imp("brigade", brigade_run), imp("tokio", tokio_run)],
        )?;
        let anchor = "tokio";
        let anchor_ms = results
            .iter()
            .find(|r| r.0 == anchor)
            .map(|r| median(&mut secs(&r.2)) * 1e3);
        for (name, _, runs) in &results {
            let mut all = secs(runs);
            let ms = median(&mut all) * 1e3;
            let mut line = self.line("tiny-async", name, tasks as usize);
            merge(
                &mut line,
                &json!({
                    "wall_ms": round3(ms),
                    "min_ms": round3(all.iter().copied().fold(f64::INFINITY, f64::min) * 1e3),
                    "per_task_ns": round3(ms * 1e6 / tasks as f64),
                    "anchor": anchor,
                    "vs_anchor": anchor_ms.map(|a| round3(a / ms)),
                }),
            );
            emit(&line);
        }
        Ok(())
    }
}

/// The `q` quantile (0..=1) of `samples`, nearest rank.
fn percentile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
