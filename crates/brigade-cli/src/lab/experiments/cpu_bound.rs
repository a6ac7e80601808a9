//! `cpu-bound`: the primers' "sum of all elements of a huge list", cut into chunks and
//! summed under each model.
//!
//! The list is `0..n` with a per-element kernel, as Python's `sum(f(x) for x in range(n))`:
//! generating it costs nothing, so the experiment measures the computation, and the process
//! model ships each chunk as its bounds, the way one would write it by hand.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use brigade::event_loop::gather;
use brigade::{EventLoop, ProcessPool, ThreadPool};

use super::{compared, finish};
use crate::lab::outcome::{factor, number};
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};

/// Rounds of the per-element kernel: enough arithmetic that the sum is bound by the CPU, not
/// by memory bandwidth.
pub(crate) const ROUNDS: u32 = 16;

/// The per-element work: an LCG step and a xor-shift, `ROUNDS` times, folded to 16 bits.
/// `python/lab.py` computes the same function, so both languages' sums can be checked
/// against each other.
pub(crate) fn kernel(element: u64) -> u64 {
    let mut x = element;
    for _ in 0..ROUNDS {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x & 0xffff
}

/// The sum of `kernel` over `start..end`: one chunk of the list.
pub(crate) fn chunk_sum(start: u64, end: u64) -> u64 {
    (start..end).map(kernel).sum()
}

/// `chunk_sum` as a process-pool task (a plain `fn`), recording its span in the worker.
fn process_chunk((start, end): (u64, u64)) -> (u64, Span) {
    Span::process(Kind::Cpu, || chunk_sum(start, end))
}

/// `0..n` cut into `chunks` ranges that differ in length by at most one.
pub(crate) fn split(n: u64, chunks: u64) -> Vec<(u64, u64)> {
    (0..chunks)
        .map(|i| (n * i / chunks, n * (i + 1) / chunks))
        .collect()
}

/// One model's run: its wall time, its sum, its timeline.
struct Run {
    wall: Duration,
    sum: u64,
    timeline: Timeline,
}

fn timed(
    model: &str,
    row_kind: &'static str,
    work: impl FnOnce() -> anyhow::Result<(Vec<u64>, Vec<Span>)>,
) -> anyhow::Result<Run> {
    let start_ns = crate::lab::record::now_ns();
    let started = Instant::now();
    let (sums, spans) = work().with_context(|| format!("the {model} run"))?;
    let wall = started.elapsed();
    Ok(Run {
        wall,
        sum: sums.iter().sum(),
        timeline: Timeline::new(model, row_kind, start_ns, spans),
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let n: u64 = ctx.size(120_000_000, 400_000);
    let workers = ctx.workers;
    // A few chunks per worker, so that a worker that finishes early takes another and the
    // timeline shows how the work spread.
    let chunks = split(n, 4 * workers as u64);
    let mut outcome = Outcome::new("cpu-bound");
    let mut runs: Vec<(&str, Run)> = Vec::new();

    ctx.step("sequential");
    runs.push((
        "sequential",
        timed("sequential", "thread", || {
            Ok(chunks
                .iter()
                .map(|&(a, b)| Span::thread(Kind::Cpu, || chunk_sum(a, b)))
                .unzip())
        })?,
    ));

    ctx.step("threads");
    let pool = ThreadPool::builder().workers(workers).build()?;
    runs.push((
        "threads",
        timed("threads", "thread", || {
            let tasks = chunks
                .iter()
                .map(|&(a, b)| pool.submit(move || Span::thread(Kind::Cpu, || chunk_sum(a, b))))
                .collect::<Vec<_>>();
            finish(tasks)
        })?,
    ));
    drop(pool);

    ctx.step("processes (starting workers)");
    // Started before the clock runs: the startup-cost experiment prices a start; this one
    // measures the computation on warm workers, as a long-lived pool would.
    let processes = ProcessPool::builder().workers(workers).build()?;
    ctx.step("processes");
    runs.push((
        "processes",
        timed("processes", "process", || {
            let tasks = chunks
                .iter()
                .map(|&range| processes.submit(process_chunk, range))
                .collect::<Vec<_>>();
            finish(tasks)
        })?,
    ));
    drop(processes);

    // The primers' event loop: one thread, and brigade's blocking detection off, so that the
    // loop is what asyncio is. The next row turns detection on.
    ctx.step("event loop");
    let plain = EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .build()?;
    runs.push((
        "event loop (1 thread)",
        timed("event loop (1 thread)", "loop thread", || {
            event_loop_sums(&plain, &chunks)
        })?,
    ));
    drop(plain);

    ctx.step("event loop with detection");
    let detecting = EventLoop::builder().workers(1).build()?;
    runs.push((
        "event loop + detection",
        timed("event loop + detection", "thread", || {
            event_loop_sums(&detecting, &chunks)
        })?,
    ));
    drop(detecting);

    let expected = runs[0].1.sum;
    for (model, run) in &runs {
        anyhow::ensure!(
            run.sum == expected,
            "{model} summed to {} where sequential summed to {expected}",
            run.sum
        );
    }
    let sequential = runs[0].1.wall.as_secs_f64();
    for (model, run) in &runs {
        let wall = run.wall.as_secs_f64();
        outcome.measure(model, "wall", wall, "s");
        outcome.measure(model, "speedup", sequential / wall, "×");
        outcome.measure(model, "per element", wall * 1e9 / n as f64, "ns");
    }
    outcome.timelines = runs.into_iter().map(|(_, r)| r.timeline).collect();
    outcome.notes.push(format!(
        "the list: {} elements in {} chunks, {workers} workers; process workers were started \
         before timing (startup-cost prices a start)",
        number(n as f64),
        chunks.len()
    ));
    verdict(&mut outcome, workers.min(ctx.cores));
    Ok(outcome)
}

/// The chunks as async tasks that never await: each holds the loop's thread while it sums.
fn event_loop_sums(lp: &EventLoop, chunks: &[(u64, u64)]) -> anyhow::Result<(Vec<u64>, Vec<Span>)> {
    let tasks: Vec<_> = chunks
        .iter()
        .map(|&(a, b)| lp.spawn(async move { Span::thread(Kind::Cpu, || chunk_sum(a, b)) }))
        .collect();
    let done = lp.block_on(gather(tasks))??;
    Ok(done.into_iter().unzip())
}

fn verdict(outcome: &mut Outcome, parallel: usize) {
    let get = |model: &str| outcome.get(model, "speedup").unwrap_or(f64::NAN);
    let (threads, processes, lp, detected) = (
        get("threads"),
        get("processes"),
        get("event loop (1 thread)"),
        get("event loop + detection"),
    );
    let mut text = format!(
        "threads ran {}× and processes {}× as fast as sequential, the one-thread event loop {}×",
        number(threads),
        number(processes),
        number(lp)
    );
    let agrees =
        if parallel < 2 {
            text.push_str(
                "; with one core (or one worker) nothing runs in parallel, so no model can speed \
             up CPU work here: run with more cores to test the rule",
            );
            None
        } else {
            let best = threads.max(processes);
            let agrees = best >= 1.2 && lp < 1.1 && best > lp * 1.2;
            text.push_str(&format!(
            " — {} the rule (CPU-bound work wants parallel workers: {} of an ideal {parallel}×). \
             Rust threads {} processes ({}) without copying data between processes, because \
             Rust has no GIL",
            if agrees { "agrees with" } else { "differs from" },
            factor(best, 1.0),
            compared(threads, processes),
            factor(threads, processes),
        ));
            Some(agrees)
        };
    if detected > lp * 1.2 {
        text.push_str(&format!(
            "; brigade's blocking detection moved the CPU-heavy tasks off the loop ({}×)",
            number(detected)
        ));
    }
    outcome.conclude(text, agrees);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_matches_the_python_twin() {
        // Values computed with Python's arbitrary-precision integers, masked to 64 bits.
        assert_eq!(kernel(0), 27951);
        assert_eq!(kernel(1), 17869);
        assert_eq!(kernel(12345), 55286);
        assert_eq!(chunk_sum(0, 1000), 33_363_109);
    }

    fn judged(threads: f64, processes: f64, lp: f64, parallel: usize) -> Outcome {
        let mut o = Outcome::new("cpu-bound");
        for (model, speedup) in [
            ("threads", threads),
            ("processes", processes),
            ("event loop (1 thread)", lp),
            ("event loop + detection", lp),
        ] {
            o.measure(model, "speedup", speedup, "×");
        }
        verdict(&mut o, parallel);
        o
    }

    #[test]
    fn the_verdict_follows_the_measurements() {
        let good = judged(1.9, 1.8, 1.0, 2);
        assert_eq!(good.verdict.agrees, Some(true));
        assert!(
            good.verdict.text.contains("threads ran 1.90×"),
            "{}",
            good.verdict.text
        );
        assert!(good.verdict.text.contains("Rust threads beat processes"));

        // Threads no faster than sequential on two cores: the rule is not borne out.
        let flat = judged(1.02, 1.01, 1.0, 2);
        assert_eq!(flat.verdict.agrees, Some(false));
        assert!(
            flat.verdict.text.contains("differs from"),
            "{}",
            flat.verdict.text
        );

        // One core: nothing can run in parallel, so no rule is tested.
        let single = judged(1.0, 0.98, 1.0, 1);
        assert_eq!(single.verdict.agrees, None);
        assert!(
            single.verdict.text.contains("one core"),
            "{}",
            single.verdict.text
        );
    }

    #[test]
    fn chunks_cover_the_list_once() {
        let chunks = split(1003, 8);
        assert_eq!(chunks.first().unwrap().0, 0);
        assert_eq!(chunks.last().unwrap().1, 1003);
        assert!(chunks.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(chunks.iter().all(|&(a, b)| b - a == 125 || b - a == 126));
    }
}
