//! `race`: threads increment a shared counter, and some ways of doing it lose updates.
//!
//! The racy version is a *logical* race in safe Rust: each increment reads the counter with
//! one atomic load and writes it back with a separate atomic store, so another thread's
//! increment can land in between and be overwritten. The *data* race the primers describe
//! (plain `counter += 1` from several threads) does not compile in Rust:
//!
//! ```compile_fail,E0499
//! let mut counter = 0u64;
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| counter += 1); // error[E0499]: cannot borrow `counter` as mutable more than once
//!     }
//! });
//! ```
//!
//! An event loop races too, at its await points: a task that awaits between its read and its
//! write lets the others run in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use brigade::EventLoop;
use brigade::event_loop::gather;

use crate::lab::outcome::number;
use crate::lab::record::now_ns;
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};

/// How each thread (or task) increments the counter.
#[derive(Clone, Copy)]
enum Increment {
    /// Load, then store the loaded value plus one: two atomic operations, not one.
    ReadThenWrite,
    /// One atomic read-modify-write.
    FetchAdd,
    /// Under a lock.
    Mutex,
}

/// The outcome of one way of counting.
struct Count {
    counted: u64,
    wall: Duration,
    timeline: Timeline,
}

fn threads(model: &str, how: Increment, threads: usize, each: u64) -> Count {
    let atomic = AtomicU64::new(0);
    let locked = Mutex::new(0u64);
    // All threads start incrementing together: a thread that finished before the next one
    // started would race with nobody.
    let start_line = Barrier::new(threads);
    let start_ns = now_ns();
    let started = Instant::now();
    let spans: Vec<Span> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start_line.wait();
                    let ((), span) = Span::thread(Kind::Cpu, || {
                        for _ in 0..each {
                            match how {
                                Increment::ReadThenWrite => {
                                    let seen = atomic.load(Ordering::Relaxed);
                                    atomic.store(seen + 1, Ordering::Relaxed);
                                }
                                Increment::FetchAdd => {
                                    atomic.fetch_add(1, Ordering::Relaxed);
                                }
                                Increment::Mutex => {
                                    *locked.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                                }
                            }
                        }
                    });
                    span
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an increment loop does not panic"))
            .collect()
    });
    let wall = started.elapsed();
    let counted = match how {
        Increment::Mutex => locked.into_inner().unwrap_or_else(|e| e.into_inner()),
        _ => atomic.into_inner(),
    };
    Count {
        counted,
        wall,
        timeline: Timeline::new(model, "thread", start_ns, spans),
    }
}

/// Tasks on a one-thread loop that read, optionally await, then write.
fn event_loop(
    model: &str,
    lp: &EventLoop,
    tasks: usize,
    each: u64,
    await_between: bool,
) -> anyhow::Result<Count> {
    let counter = std::sync::Arc::new(AtomicU64::new(0));
    let start_ns = now_ns();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let counter = counter.clone();
            lp.spawn(async move {
                let begun = now_ns();
                for _ in 0..each {
                    let seen = counter.load(Ordering::Relaxed);
                    if await_between {
                        tokio::task::yield_now().await;
                    }
                    counter.store(seen + 1, Ordering::Relaxed);
                    if !await_between {
                        // Still let the other tasks run, but never between read and write.
                        tokio::task::yield_now().await;
                    }
                }
                Span::since(Kind::Cpu, begun)
            })
        })
        .collect();
    let spans = lp.block_on(gather(handles))??;
    Ok(Count {
        counted: counter.load(Ordering::Relaxed),
        wall: started.elapsed(),
        timeline: Timeline::new(model, "loop thread", start_ns, spans),
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    // More threads than cores, so that threads are also interrupted between read and write
    // (preemption), not only run side by side.
    let n_threads = (2 * ctx.workers).max(4);
    let each: u64 = ctx.size(2_000_000, 20_000);
    let tasks = 8;
    let each_task: u64 = ctx.size(20_000, 1_000);
    let mut outcome = Outcome::new("race");
    let mut counts: Vec<(String, u64, Count)> = Vec::new();
    for (model, how) in [
        ("threads: load, then store", Increment::ReadThenWrite),
        ("threads: fetch_add", Increment::FetchAdd),
        ("threads: Mutex", Increment::Mutex),
    ] {
        ctx.step(model);
        let expected = n_threads as u64 * each;
        counts.push((
            model.to_owned(),
            expected,
            threads(model, how, n_threads, each),
        ));
    }
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .build()?;
    for (model, await_between) in [
        ("event loop: load, await, store", true),
        ("event loop: load, store, await", false),
    ] {
        ctx.step(model);
        let expected = tasks as u64 * each_task;
        counts.push((
            model.to_owned(),
            expected,
            event_loop(model, &lp, tasks, each_task, await_between)?,
        ));
    }
    for (model, expected, count) in &counts {
        anyhow::ensure!(
            count.counted <= *expected,
            "{model} counted {} of {expected} increments: more than happened",
            count.counted
        );
        let lost = expected - count.counted;
        outcome.measure(model, "expected", *expected as f64, "");
        outcome.measure(model, "counted", count.counted as f64, "");
        outcome.measure(model, "lost", lost as f64, "");
        outcome.measure(
            model,
            "lost share",
            100.0 * lost as f64 / *expected as f64,
            "%",
        );
        outcome.measure(model, "wall", count.wall.as_secs_f64() * 1e3, "ms");
    }
    outcome.notes.push(format!(
        "{n_threads} threads × {} increments; {tasks} async tasks × {} on one loop thread",
        number(each as f64),
        number(each_task as f64)
    ));
    outcome.notes.push(
        "the data race itself, `counter += 1` on a plain integer from several threads, does \
         not compile in Rust (error E0499: cannot borrow `counter` as mutable more than once \
         at a time); the racy rows race logically, with two separate atomic operations"
            .to_owned(),
    );
    verdict(&mut outcome, &counts);
    outcome.timelines = counts.into_iter().map(|(_, _, c)| c.timeline).collect();
    Ok(outcome)
}

fn verdict(outcome: &mut Outcome, counts: &[(String, u64, Count)]) {
    let lost = |i: usize| counts[i].1 - counts[i].2.counted;
    let pct = |i: usize| 100.0 * lost(i) as f64 / counts[i].1 as f64;
    let (racy, fetch_add, mutex, loop_racy, loop_safe) = (0, 1, 2, 3, 4);
    let safe_lost = lost(fetch_add) + lost(mutex) + lost(loop_safe);
    let mut text = if lost(racy) > 0 {
        format!(
            "load-then-store lost {} of {} updates ({} %)",
            number(lost(racy) as f64),
            number(counts[racy].1 as f64),
            number(pct(racy))
        )
    } else {
        "load-then-store lost no updates this time: a race is a matter of timing, and this run \
         was lucky (try again, or with more threads)"
            .to_owned()
    };
    text.push_str(&format!(
        "; fetch_add and the Mutex lost {} (the Mutex took {}× as long as fetch_add); on the \
         event loop, awaiting between read and write lost {} ({} %) and not awaiting lost {}",
        number((lost(fetch_add) + lost(mutex)) as f64),
        number(counts[mutex].2.wall.as_secs_f64() / counts[fetch_add].2.wall.as_secs_f64()),
        number(lost(loop_racy) as f64),
        number(pct(loop_racy)),
        number(lost(loop_safe) as f64),
    ));
    // The rule: unsynchronized read-modify-write loses updates, synchronized does not. A run
    // where the racy versions lost nothing does not contradict it, it just did not show it.
    let agrees = if safe_lost > 0 {
        Some(false)
    } else if lost(racy) > 0 || lost(loop_racy) > 0 {
        Some(true)
    } else {
        None
    };
    text.push_str(match agrees {
        Some(true) => " — agrees with the primers: unsynchronized read-then-write races",
        Some(false) => " — a synchronized counter lost updates: that is a bug",
        None => "",
    });
    outcome.conclude(text, agrees);
}
