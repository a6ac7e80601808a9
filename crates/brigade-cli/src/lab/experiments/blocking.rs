//! `blocking-in-async`: a blocking call inside async code freezes the loop, and every other
//! task on it wakes late; brigade's detection moves the blocking call site off the loop.
//!
//! Tickers sleep 1 ms again and again on a one-thread loop (the primers' event loop) and
//! measure how late each wake-up is. Meanwhile blockers arrive every few tens of
//! milliseconds and call `std::thread::sleep`, as blocking code written inside `async` does.

use std::time::{Duration, Instant};

use brigade::EventLoop;
use brigade::event_loop::gather;

use crate::lab::outcome::number;
use crate::lab::record::now_ns;
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};

/// The experiment's shape.
struct Shape {
    tickers: usize,
    /// How long the tickers tick.
    run: Duration,
    blockers: usize,
    /// One blocker arrives every `every`...
    every: Duration,
    /// ...and blocks for `block`.
    block: Duration,
}

/// How the blockers block.
#[derive(Clone, Copy, PartialEq)]
enum Blockers {
    /// None are sent: the baseline.
    None,
    /// `std::thread::sleep` inside the async task.
    Inline,
    /// `EventLoop::to_thread`, the manual fix.
    ToThread,
}

/// One ticker: its lateness per tick (µs) and one span per tick.
async fn ticker(until: Instant) -> (Vec<f64>, Vec<Span>) {
    let mut late = Vec::new();
    let mut spans = Vec::new();
    while Instant::now() < until {
        let begun = now_ns();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(deadline).await;
        late.push((tokio::time::Instant::now() - deadline).as_secs_f64() * 1e6);
        spans.push(Span::since(Kind::Tick, begun));
    }
    (late, spans)
}

/// One model's run: every tick's lateness, and the timeline.
struct Run {
    late_us: Vec<f64>,
    timeline: Timeline,
    flagged: bool,
}

fn run_model(model: &str, lp: &EventLoop, shape: &Shape, how: Blockers) -> anyhow::Result<Run> {
    let start_ns = now_ns();
    let until = Instant::now() + shape.run;
    let tickers: Vec<_> = (0..shape.tickers)
        .map(|_| lp.spawn(ticker(until)))
        .collect();
    let mut blockers = Vec::new();
    if how != Blockers::None {
        for _ in 0..shape.blockers {
            // Blockers arrive while the tickers run, as requests do in a service. This thread
            // is not a loop thread, so sleeping here freezes nothing.
            std::thread::sleep(shape.every);
            let block = shape.block;
            blockers.push(match how {
                Blockers::Inline => lp.spawn(async move {
                    let ((), span) = Span::thread(Kind::Block, || std::thread::sleep(block));
                    span
                }),
                _ => {
                    let to_thread = lp.to_thread(move || {
                        let ((), span) = Span::thread(Kind::Block, || std::thread::sleep(block));
                        span
                    });
                    lp.spawn(async move { to_thread.await.expect("a sleep does not panic") })
                }
            });
        }
    }
    let mut spans = lp.block_on(gather(blockers))??;
    let mut late_us = Vec::new();
    for (late, ticks) in lp.block_on(gather(tickers))?? {
        late_us.extend(late);
        spans.extend(ticks);
    }
    let flagged = lp.blocking_report().iter().any(|site| site.flagged);
    Ok(Run {
        late_us,
        timeline: Timeline::new(model, "thread", start_ns, spans),
        flagged,
    })
}

/// The `q` quantile (0..=1) of `samples`, nearest rank.
pub(crate) fn percentile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let shape = Shape {
        tickers: 10,
        run: ctx.size(Duration::from_millis(700), Duration::from_millis(120)),
        blockers: ctx.size(5, 2),
        every: ctx.size(Duration::from_millis(80), Duration::from_millis(20)),
        block: ctx.size(Duration::from_millis(100), Duration::from_millis(30)),
    };
    // One loop thread, as in the primers (asyncio): the loop *is* the thread the blocking
    // call takes.
    let off = || {
        EventLoop::builder()
            .workers(1)
            .blocking_threshold(Duration::MAX)
            .build()
    };
    let models: [(&str, EventLoop, Blockers); 4] = [
        ("no blocking call", off()?, Blockers::None),
        ("blocking call, detection off", off()?, Blockers::Inline),
        (
            "blocking call, brigade detection",
            EventLoop::builder().workers(1).build()?,
            Blockers::Inline,
        ),
        ("blocking call via to_thread", off()?, Blockers::ToThread),
    ];
    let mut outcome = Outcome::new("blocking-in-async");
    let mut runs = Vec::new();
    for (model, lp, how) in &models {
        ctx.step(model);
        let run = run_model(model, lp, &shape, *how)?;
        let ms = |q| percentile(&run.late_us, q) / 1e3;
        outcome.measure(model, "ticks", run.late_us.len() as f64, "");
        outcome.measure(model, "late p50", ms(0.5), "ms");
        outcome.measure(model, "late p99", ms(0.99), "ms");
        outcome.measure(model, "late max", ms(1.0), "ms");
        runs.push(run);
    }
    outcome.notes.push(format!(
        "{} tickers sleep 1 ms at a time for {} ms on one loop thread; {} blockers arrive \
         every {} ms and each calls std::thread::sleep({} ms)",
        shape.tickers,
        shape.run.as_millis(),
        shape.blockers,
        shape.every.as_millis(),
        shape.block.as_millis()
    ));
    if runs[2].flagged {
        outcome.notes.push(
            "brigade's detector flagged the blockers' spawn site after its first slow poll: \
             later blockers ran off the loop (the first one still froze it once)"
                .to_owned(),
        );
    }
    let p99 = |i: usize| outcome.get(models[i].0, "late p99").unwrap_or(f64::NAN);
    let max = |i: usize| outcome.get(models[i].0, "late max").unwrap_or(f64::NAN);
    let (base, naive, detected, to_thread) = (p99(0), p99(1), p99(2), p99(3));
    let block_ms = shape.block.as_secs_f64() * 1e3;
    // The primers' claim holds when the blocking call made ticks late by a good part of the
    // blocking time, far beyond the baseline.
    let froze = max(1) >= block_ms / 2.0 && naive > 5.0 * base.max(0.1);
    let text = format!(
        "with a blocking call inside async code the loop froze: ticks were up to {} ms late \
         (p99 {} ms, against {} ms with no blocking call); brigade's detection brought p99 to \
         {} ms{}, to_thread to {} ms — {}",
        number(max(1)),
        number(naive),
        number(base),
        number(detected),
        if runs[2].flagged {
            ""
        } else {
            " (it flagged nothing)"
        },
        number(to_thread),
        if froze {
            "agrees with the primers: blocking calls freeze the loop"
        } else {
            "the loop did not freeze noticeably here, which differs from the primers"
        }
    );
    outcome.conclude(text, Some(froze));
    outcome.timelines = runs.into_iter().map(|r| r.timeline).collect();
    Ok(outcome)
}
