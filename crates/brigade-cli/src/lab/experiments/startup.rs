//! `startup-cost`: what it costs to start a thread, a process, an async task, and a round
//! trip to a worker that is already running, each timed many times on this machine.

use std::process::{Command, Stdio};

use anyhow::Context as _;
use brigade::{EventLoop, ProcessPool, ThreadPool};

use super::blocking::percentile;
use crate::lab::outcome::{factor, number};
use crate::lab::record::now_ns;
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};

/// The process-pool task of a round trip: nothing to do.
fn nothing((): ()) {}

/// Times `op` `times` times, one span each.
fn time(times: usize, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Span>> {
    let mut spans = Vec::with_capacity(times);
    for _ in 0..times {
        let (done, span) = Span::thread(Kind::Cpu, &mut op);
        done?;
        spans.push(span);
    }
    Ok(spans)
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let scale = ctx.size(1, 20);
    let exe = std::env::current_exe().context("finding this program to start it")?;
    let threads = ThreadPool::builder().workers(1).build()?;
    let lp = EventLoop::builder().workers(1).build()?;
    ctx.step("warming the process pool");
    let processes = ProcessPool::builder().workers(1).build()?;
    // Warm every worker once, so that the round trips time warm workers only.
    threads.submit(|| ()).result()?;
    processes.submit(nothing, ()).result()?;

    // Each series times `n` operations and gives one span per operation.
    type Series<'a> = Box<dyn FnMut(usize) -> anyhow::Result<Vec<Span>> + 'a>;
    let series: Vec<(&str, usize, Series<'_>)> = vec![
        (
            "start a thread (spawn + join)",
            2000 / scale,
            Box::new(|n| {
                time(n, || {
                    std::thread::spawn(|| ())
                        .join()
                        .map_err(|_| anyhow::anyhow!("an empty thread panicked"))
                })
            }),
        ),
        (
            "start a process (this program, --version)",
            (100 / scale).max(3),
            Box::new(|n| {
                time(n, || {
                    let status = Command::new(&exe)
                        .arg("--version")
                        .stdout(Stdio::null())
                        .status()?;
                    anyhow::ensure!(status.success(), "{} --version: {status}", exe.display());
                    Ok(())
                })
            }),
        ),
        (
            "start a process worker (pool of 1)",
            (20 / scale).max(2),
            Box::new(|n| {
                time(n, || {
                    let pool = ProcessPool::builder().workers(1).build()?;
                    pool.submit(nothing, ()).result()?;
                    Ok(())
                })
            }),
        ),
        (
            "start an async task (spawn + await)",
            20_000 / scale,
            // Spawned and awaited by a task on the loop, as async code does; a `block_on`
            // around each would also time the trip into the loop from outside.
            Box::new(|n| {
                let inner = lp.clone();
                Ok(lp.block_on(lp.spawn(async move {
                    let mut spans = Vec::with_capacity(n);
                    for _ in 0..n {
                        let begun = now_ns();
                        inner.spawn(async {}).await?;
                        spans.push(Span::since(Kind::Cpu, begun));
                    }
                    Ok::<_, brigade::Error>(spans)
                }))???)
            }),
        ),
        (
            "round trip to a warm thread",
            20_000 / scale,
            Box::new(|n| {
                time(n, || {
                    threads.submit(|| ()).result()?;
                    Ok(())
                })
            }),
        ),
        (
            "round trip to a warm process",
            5_000 / scale,
            Box::new(|n| {
                time(n, || {
                    processes.submit(nothing, ()).result()?;
                    Ok(())
                })
            }),
        ),
    ];
    let mut outcome = Outcome::new("startup-cost");
    let mut medians = Vec::new();
    for (model, times, mut timed) in series {
        ctx.step(model);
        let start_ns = now_ns();
        let spans = timed(times).with_context(|| format!("timing '{model}'"))?;
        let us: Vec<f64> = spans
            .iter()
            .map(|s| (s.end_ns - s.start_ns) as f64 / 1e3)
            .collect();
        let median = percentile(&us, 0.5);
        outcome.measure(model, "times", times as f64, "");
        outcome.measure(model, "median", median, "µs");
        outcome.measure(model, "p90", percentile(&us, 0.9), "µs");
        medians.push(median);
        // The first few dozen are enough to see the bars' lengths; thousands of identical
        // bars add nothing but bytes.
        let shown: Vec<Span> = spans.into_iter().take(50).collect();
        let end = shown.last().map_or(start_ns, |s| s.end_ns);
        let mut timeline = Timeline::new(model, "thread", start_ns, shown);
        timeline.end_ns = end;
        outcome.timelines.push(timeline);
    }
    let [thread, process, worker, task, warm_thread, warm_process] = medians[..] else {
        unreachable!("six operations were timed")
    };
    let warm_rule = worker / warm_process;
    let agrees = warm_rule >= 10.0;
    outcome.conclude(
        format!(
            "starting a process worker cost {} µs, {} a round trip to a warm one ({} µs); a \
             bare process start {} µs, {} a thread start ({} µs); an async task {} µs; a \
             round trip to a warm thread {} µs — {}",
            number(worker),
            factor(worker, warm_process),
            number(warm_process),
            number(process),
            factor(process, thread),
            number(thread),
            number(task),
            number(warm_thread),
            if agrees {
                "agrees with the primers: processes cost extra setup time, so keep workers warm"
            } else {
                "a process start cost less than 10 round trips here, which differs from the \
                 primers"
            }
        ),
        Some(agrees),
    );
    Ok(outcome)
}
