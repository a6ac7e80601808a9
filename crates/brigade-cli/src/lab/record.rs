//! Timelines: when each task started and ended, and on which worker.
//!
//! A task records its own span (two clock reads) and hands it back with its result, so
//! recording takes no lock and no shared memory: nothing that could serialize the workers
//! whose overlap the timeline is meant to show. The clock is `CLOCK_MONOTONIC`, which every
//! process on the machine shares, so spans taken inside worker processes (and by the Python
//! scripts, whose `time.monotonic_ns()` reads the same clock) land on the parent's time axis.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Nanoseconds on the machine-wide monotonic clock.
pub(crate) fn now_ns() -> u64 {
    clock_ns(rustix::time::ClockId::Monotonic)
}

/// `clock` read in nanoseconds (the monotonic clock, or a thread's or the process's CPU time).
pub(crate) fn clock_ns(clock: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Where a span ran: a thread of this process, or a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Worker {
    /// A thread of this process, numbered in the order threads first recorded a span.
    Thread(u32),
    /// A process, by pid.
    Process(u32),
}

impl Worker {
    /// The calling thread.
    pub(crate) fn thread() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        thread_local! {
            static ID: Cell<u32> = const { Cell::new(0) };
        }
        Worker::Thread(ID.with(|id| {
            if id.get() == 0 {
                id.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            id.get()
        }))
    }

    /// The calling process.
    pub(crate) fn process() -> Self {
        Worker::Process(std::process::id())
    }
}

/// What a span was doing, which the report colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// Computing.
    Cpu,
    /// Waiting without holding a thread (an async sleep or request).
    Wait,
    /// Holding a thread while waiting (a blocking call, a blocking request).
    Block,
    /// A short task whose lateness is measured.
    Tick,
}

impl Kind {
    /// The name the report and the JSON use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Wait => "wait",
            Kind::Block => "block",
            Kind::Tick => "tick",
        }
    }
}

/// One task (or one request) from start to end, on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Span {
    pub(crate) worker: Worker,
    pub(crate) kind: Kind,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
}

impl Span {
    /// Runs `work` on this thread and records it.
    pub(crate) fn thread<T>(kind: Kind, work: impl FnOnce() -> T) -> (T, Span) {
        Self::on(Worker::thread(), kind, work)
    }

    /// Runs `work` in this (worker) process and records it.
    pub(crate) fn process<T>(kind: Kind, work: impl FnOnce() -> T) -> (T, Span) {
        Self::on(Worker::process(), kind, work)
    }

    fn on<T>(worker: Worker, kind: Kind, work: impl FnOnce() -> T) -> (T, Span) {
        let start_ns = now_ns();
        let value = work();
        let end_ns = now_ns();
        (
            value,
            Span {
                worker,
                kind,
                start_ns,
                end_ns,
            },
        )
    }

    /// A span of `kind` that started at `start_ns` and ends now, on this thread (for async
    /// code, whose start and end are on either side of an `.await`).
    pub(crate) fn since(kind: Kind, start_ns: u64) -> Span {
        Span {
            worker: Worker::thread(),
            kind,
            start_ns,
            end_ns: now_ns(),
        }
    }
}

/// One model's run of an experiment, drawn as one row per worker and one bar per span.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// The model, as named in the experiment's table.
    pub(crate) model: String,
    /// What one row is: "thread", "process", "loop thread".
    pub(crate) row_kind: &'static str,
    /// When the run started and ended (`now_ns`); spans lie within.
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) spans: Vec<Span>,
    /// Rows with a name of their own instead of `row_kind` and a number (a timeline whose
    /// rows are not workers: one per call site and lane, say).
    pub(crate) row_names: Vec<(Worker, String)>,
}

impl Timeline {
    /// A timeline of spans taken between `start_ns` and now.
    pub(crate) fn new(
        model: impl Into<String>,
        row_kind: &'static str,
        start_ns: u64,
        spans: Vec<Span>,
    ) -> Self {
        let end_ns = spans
            .iter()
            .map(|s| s.end_ns)
            .max()
            .unwrap_or(start_ns)
            .max(now_ns());
        Timeline {
            model: model.into(),
            row_kind,
            start_ns,
            end_ns,
            spans,
            row_names: Vec::new(),
        }
    }

    /// Names the rows: `worker`'s row is labelled with its name.
    pub(crate) fn with_row_names(mut self, names: Vec<(Worker, String)>) -> Self {
        self.row_names = names;
        self
    }

    /// The workers, in the order they first started a span: the rows, top to bottom.
    pub(crate) fn rows(&self) -> Vec<Worker> {
        let mut first: Vec<(u64, Worker)> = Vec::new();
        for span in &self.spans {
            match first.iter_mut().find(|(_, w)| *w == span.worker) {
                Some((t, _)) => *t = (*t).min(span.start_ns),
                None => first.push((span.start_ns, span.worker)),
            }
        }
        first.sort();
        first.into_iter().map(|(_, w)| w).collect()
    }

    /// What recording cost, as a share of the run in percent, at `span_cost_ns` per span:
    /// counted as if every span had been recorded on one thread, so it bounds the real share.
    pub(crate) fn overhead_pct(&self, span_cost_ns: f64) -> f64 {
        let wall_ns = (self.end_ns - self.start_ns).max(1) as f64;
        self.spans.len() as f64 * span_cost_ns / wall_ns * 100.0
    }
}

/// What recording one span costs, measured on this machine: two clock reads and a
/// thread-local read, as a task pays them.
pub(crate) fn span_cost_ns() -> f64 {
    const SPANS: u32 = 200_000;
    let started = Instant::now();
    let mut sink = 0u64;
    for _ in 0..SPANS {
        let ((), span) = Span::thread(Kind::Cpu, || ());
        sink = sink.wrapping_add(span.end_ns - span.start_ns);
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / f64::from(SPANS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_workers_in_order_of_first_start() {
        let span = |worker, start_ns| Span {
            worker,
            kind: Kind::Cpu,
            start_ns,
            end_ns: start_ns + 5,
        };
        let t = Timeline::new(
            "threads",
            "thread",
            0,
            vec![
                span(Worker::Thread(7), 30),
                span(Worker::Thread(3), 10),
                span(Worker::Thread(7), 20),
                span(Worker::Process(9), 25),
            ],
        );
        assert_eq!(
            t.rows(),
            vec![Worker::Thread(3), Worker::Thread(7), Worker::Process(9)]
        );
    }

    #[test]
    fn threads_get_distinct_stable_ids() {
        let here = Worker::thread();
        assert_eq!(here, Worker::thread());
        let there = std::thread::spawn(Worker::thread).join().unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn spans_are_on_one_clock_and_ordered() {
        let (v, span) = Span::thread(Kind::Cpu, || 41 + 1);
        assert_eq!(v, 42);
        assert!(span.start_ns <= span.end_ns);
        assert!(span.end_ns <= now_ns());
        assert!(span_cost_ns() > 0.0);
    }
}
