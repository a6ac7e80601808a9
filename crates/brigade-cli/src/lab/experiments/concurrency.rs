//! `concurrency-vs-parallelism`: the same number of tasks, sleeping on one thread
//! (concurrent, not parallel) and computing on all cores (parallel), timelines side by side.
//!
//! "Overlap" is the tasks' summed duration over the wall time: how many were in progress at
//! once on average. "Cores used" is the process's CPU time over the wall time: how many were
//! actually computing at once. Concurrency raises the first; only parallelism raises both.

use std::time::{Duration, Instant};

use brigade::event_loop::gather;
use brigade::{EventLoop, ThreadPool};

use super::cpu_bound::chunk_sum;
use super::finish;
use crate::lab::outcome::number;
use crate::lab::record::now_ns;
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};

/// CPU time this process has used, all threads together.
fn cpu_ns() -> u64 {
    crate::lab::record::clock_ns(rustix::time::ClockId::ProcessCPUTime)
}

/// How many kernel elements take about `duration` on this machine, measured.
fn elements_for(duration: Duration) -> u64 {
    let probe = 200_000;
    let started = Instant::now();
    std::hint::black_box(chunk_sum(0, probe));
    let per_element = started.elapsed().as_secs_f64() / probe as f64;
    ((duration.as_secs_f64() / per_element) as u64).max(1)
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let tasks = 8;
    let each = ctx.size(Duration::from_millis(60), Duration::from_millis(5));
    let elements = elements_for(each);
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .build()?;
    let pool = ThreadPool::builder().workers(ctx.cores).build()?;

    type Model<'a> = Box<dyn FnMut() -> anyhow::Result<Vec<Span>> + 'a>;
    let models: Vec<(&str, &'static str, Model<'_>)> = vec![
        (
            "sleeping tasks, one thread, one by one",
            "thread",
            Box::new(|| {
                Ok((0..tasks)
                    .map(|_| Span::thread(Kind::Block, || std::thread::sleep(each)).1)
                    .collect())
            }),
        ),
        (
            "sleeping tasks, one thread, async",
            "loop thread",
            Box::new(|| {
                let spawned: Vec<_> = (0..tasks)
                    .map(|_| {
                        lp.spawn(async move {
                            let begun = now_ns();
                            tokio::time::sleep(each).await;
                            Span::since(Kind::Wait, begun)
                        })
                    })
                    .collect();
                Ok(lp.block_on(gather(spawned))??)
            }),
        ),
        (
            "CPU tasks, one thread, async",
            "loop thread",
            Box::new(|| {
                let spawned: Vec<_> = (0..tasks)
                    .map(|i| {
                        lp.spawn(async move {
                            Span::thread(Kind::Cpu, || chunk_sum(i * elements, (i + 1) * elements))
                                .1
                        })
                    })
                    .collect();
                Ok(lp.block_on(gather(spawned))??)
            }),
        ),
        (
            "CPU tasks, threads on all cores",
            "thread",
            Box::new(|| {
                let submitted = (0..tasks)
                    .map(|i| {
                        pool.submit(move || {
                            Span::thread(Kind::Cpu, || chunk_sum(i * elements, (i + 1) * elements))
                        })
                    })
                    .collect::<Vec<_>>();
                Ok(finish(submitted)?.1)
            }),
        ),
    ];
    let mut outcome = Outcome::new("concurrency-vs-parallelism");
    for (model, row_kind, mut run) in models {
        ctx.step(model);
        let start_ns = now_ns();
        let cpu_before = cpu_ns();
        let spans = run()?;
        let cpu = (cpu_ns() - cpu_before) as f64;
        let timeline = Timeline::new(model, row_kind, start_ns, spans);
        let wall = (timeline.end_ns - start_ns) as f64;
        let busy: u64 = timeline.spans.iter().map(|s| s.end_ns - s.start_ns).sum();
        outcome.measure(model, "wall", wall / 1e6, "ms");
        outcome.measure(model, "task time", busy as f64 / 1e6, "ms");
        outcome.measure(model, "overlap", busy as f64 / wall, "×");
        outcome.measure(model, "cores used", cpu / wall, "");
        outcome.measure(model, "threads", timeline.rows().len() as f64, "");
        outcome.timelines.push(timeline);
    }
    outcome.notes.push(format!(
        "{tasks} tasks of about {} ms each; overlap = summed task time / wall time, cores used \
         = CPU time / wall time",
        each.as_millis()
    ));
    let get = |model: &str, metric: &str| outcome.get(model, metric).unwrap_or(f64::NAN);
    let sleep_overlap = get("sleeping tasks, one thread, async", "overlap");
    let sleep_cores = get("sleeping tasks, one thread, async", "cores used");
    let cpu_one = get("CPU tasks, one thread, async", "overlap");
    let cpu_all = get("CPU tasks, threads on all cores", "overlap");
    let cpu_all_cores = get("CPU tasks, threads on all cores", "cores used");
    let concurrent = sleep_overlap >= tasks as f64 / 2.0 && sleep_cores < 0.5 && cpu_one < 1.3;
    let parallel = cpu_all >= 1.5 && cpu_all_cores >= 1.5;
    let mut text = format!(
        "{tasks} sleeping tasks on one thread overlapped {}× while using {} cores (concurrent, \
         not parallel); CPU tasks on one thread overlapped {}×; on {} cores they overlapped \
         {}× using {} cores",
        number(sleep_overlap),
        number(sleep_cores),
        number(cpu_one),
        ctx.cores,
        number(cpu_all),
        number(cpu_all_cores),
    );
    let agrees = if ctx.cores < 2 {
        text.push_str(" — with one core nothing can run in parallel here");
        Some(concurrent).filter(|c| !c)
    } else {
        let agrees = concurrent && parallel;
        text.push_str(if agrees {
            " (parallel) — agrees with the primers: one thread gives concurrency, only \
             several cores give parallelism"
        } else {
            " — differs from the primers' picture"
        });
        Some(agrees)
    };
    outcome.conclude(text, agrees);
    Ok(outcome)
}
