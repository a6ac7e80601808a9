//! `python`: the cpu-bound and I/O work again in Python, with threading, multiprocessing and
//! asyncio, beside Rust's threads on the same chunks, so that the GIL shows.
//!
//! The Python side is `python/lab.py`, embedded in the binary and run with `python3 -c`: the
//! installed binary needs no file beside it. It prints one JSON line per model (see the
//! script's docstring); this side checks its sums against Rust's, measures, and computes the
//! verdict.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

use super::cpu_bound::{chunk_sum, split};
use crate::lab::outcome::{factor, number};
use crate::lab::record::{Worker, now_ns};
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};
use brigade_http as http;

/// The script, shipped inside the binary.
const SCRIPT: &str = include_str!("../../../../python/lab.py");

/// The longest one script run may take before it is killed: several times what a full run
/// needs on a slow machine, so only a stuck run reaches it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A model counts as faster than another only by at least this factor (and as slower below
/// its inverse): a shared machine's noise moves a ratio of equals by a few percent, while
/// the effects under test (parallel cores, overlapping waits) are 1.5× and up.
const FASTER: f64 = 1.25;

/// Chunks per worker: enough that a worker finishing early finds another chunk, few enough
/// that each chunk is a visible bar.
const CHUNKS_PER_WORKER: usize = 4;

/// The Python models, in the order the script runs them and the table shows them.
const MODELS: [&str; 4] = ["sequential", "threads", "processes", "asyncio"];

pub(crate) fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let Some(python) = find_on_path("python3") else {
        return Ok(Outcome::skipped("python", "python3 is not on PATH".into()));
    };
    let workers = ctx.workers;
    // About 2.6 s of CPython per model (2.6 µs an element) in a full run.
    let elements: u64 = ctx.size(1_000_000, 40_000);
    let chunks = CHUNKS_PER_WORKER * workers;
    // The Rust rows take about 1% of the Python ones' time, so a preempted run would skew
    // them: best of several.
    let rust_runs = ctx.size(5, 1);
    let io = IoSize {
        delay_ms: ctx.size(20, 10),
        rounds: ctx.size(40, 4),
        connections: ctx.size(16, 8),
        processes: workers,
    };
    let addr = ctx.server()?;

    ctx.step("rust sequential and threads");
    let rust = rust_cpu(elements, chunks, workers, rust_runs)?;
    let expected = chunk_sum(0, elements);
    ensure!(
        rust.iter().all(|r| r.checksum == expected),
        "Rust's chunked sum differs from chunk_sum(0, {elements})"
    );

    ctx.step("python cpu");
    let cpu_args = [
        "cpu".to_owned(),
        elements.to_string(),
        workers.to_string(),
        chunks.to_string(),
    ];
    let cpu = run_script(ctx, &python, SCRIPT, &cpu_args, TIMEOUT)?;
    let cpu = Models::of(cpu, "cpu")?;
    for run in &cpu.runs {
        ensure!(
            run.cpu_ns.is_some(),
            "python {}: no CPU time in its cpu run",
            run.model
        );
        ensure!(
            run.checksum == expected,
            "python {} summed {} over 0..{elements} where Rust sums {expected}: the script's \
             kernel differs from Rust's",
            run.model,
            run.checksum
        );
    }

    ctx.step("python io");
    let io_args = [
        "io".to_owned(),
        addr.ip().to_string(),
        addr.port().to_string(),
        io.delay_ms.to_string(),
        io.rounds.to_string(),
        io.connections.to_string(),
        io.processes.to_string(),
    ];
    let io_runs = run_script(ctx, &python, SCRIPT, &io_args, TIMEOUT)?;
    let io_runs = Models::of(io_runs, "io")?;
    for run in &io_runs.runs {
        let requests = io.requests(&run.model);
        ensure!(
            run.spans.len() as u64 == requests
                && run.checksum == requests * http::BODY.len() as u64,
            "python {} (io) answered {} requests with {} body bytes, expected {requests} \
             with {} each",
            run.model,
            run.spans.len(),
            run.checksum,
            http::BODY.len()
        );
    }

    let mut outcome = Outcome::new("python");
    let machine = Machine {
        cores: ctx.cores,
        workers,
        rust_runs,
    };
    record(&mut outcome, &cpu, &io_runs, &rust, &io);
    let (text, agrees) = verdict(&outcome, &machine, cpu.ready.gil, &io);
    outcome.conclude(text, agrees);
    outcome.notes = notes(&cpu, &io_runs, &rust, &io, elements, chunks, rust_runs);
    Ok(outcome)
}

/// `name`'s path in a directory of `PATH`, if it is an executable file there.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The I/O run's shape.
struct IoSize {
    delay_ms: u64,
    /// Requests per connection.
    rounds: u64,
    /// Connections for threads (one thread each) and asyncio.
    connections: u64,
    /// Processes (one connection each).
    processes: usize,
}

impl IoSize {
    /// The requests `model` sends.
    fn requests(&self, model: &str) -> u64 {
        let connections = match model {
            "sequential" => 1,
            "processes" => self.processes as u64,
            _ => self.connections,
        };
        connections * self.rounds
    }
}

/// What limits parallel speedup here, and how the Rust rows were taken.
struct Machine {
    cores: usize,
    workers: usize,
    /// The Rust rows are the best of this many runs.
    rust_runs: usize,
}

/// One model's run, from the script or from the Rust side.
#[derive(Debug, Clone, PartialEq)]
struct ModelRun {
    model: String,
    /// What a span's worker is: "thread" or "process".
    unit: &'static str,
    start_ns: u64,
    end_ns: u64,
    /// Starting the pool or loop, before `start_ns`.
    setup_ns: u64,
    /// CPU time the chunks consumed, summed over workers (CPU runs).
    cpu_ns: Option<u64>,
    /// The kernel sum (CPU runs) or body bytes received (I/O runs).
    checksum: u64,
    spans: Vec<Span>,
}

impl ModelRun {
    fn wall_s(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// Cores kept busy on average: CPU time over wall time.
    fn busy(&self) -> Option<f64> {
        let wall_ns = self.end_ns.saturating_sub(self.start_ns).max(1);
        self.cpu_ns.map(|cpu| cpu as f64 / wall_ns as f64)
    }

    fn timeline(&self, name: String) -> Timeline {
        let row_kind = match (self.unit, self.model.as_str()) {
            ("process", _) => "process",
            (_, "asyncio") => "loop thread",
            _ => "thread",
        };
        let mut timeline = Timeline::new(name, row_kind, self.start_ns, self.spans.clone());
        // `Timeline::new` ends a timeline now, which for the script's runs is after all of
        // them: the run's own end is the right one.
        timeline.end_ns = self
            .spans
            .iter()
            .map(|s| s.end_ns)
            .fold(self.end_ns, u64::max);
        timeline
    }
}

/// CPU time this thread has run, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    crate::lab::record::clock_ns(rustix::time::ClockId::ThreadCPUTime)
}

/// One chunk on the calling thread: (sum, CPU ns, span).
fn rust_chunk(start: u64, end: u64) -> (u64, u64, Span) {
    let cpu = thread_cpu_ns();
    let (sum, span) = Span::thread(Kind::Cpu, || chunk_sum(start, end));
    (sum, thread_cpu_ns() - cpu, span)
}

/// The same chunks as the script's (same formula), summed sequentially and on a brigade
/// [`ThreadPool`](brigade::ThreadPool) of `workers`; the fastest of `runs` runs of each.
fn rust_cpu(
    elements: u64,
    chunks: usize,
    workers: usize,
    runs: usize,
) -> anyhow::Result<[ModelRun; 2]> {
    let bounds = split(elements, chunks as u64);
    let pool = brigade::ThreadPool::builder()
        .workers(workers)
        .thread_name("lab-python")
        .build()
        .context("starting Rust's thread pool")?;
    let fold = |model: &str, start_ns: u64, parts: Vec<(u64, u64, Span)>| ModelRun {
        model: model.to_owned(),
        unit: "thread",
        start_ns,
        end_ns: now_ns(),
        setup_ns: 0,
        cpu_ns: Some(parts.iter().map(|p| p.1).sum()),
        checksum: parts.iter().map(|p| p.0).sum(),
        spans: parts.into_iter().map(|p| p.2).collect(),
    };
    let mut best: [Option<ModelRun>; 2] = [None, None];
    for _ in 0..runs {
        let start_ns = now_ns();
        let parts = bounds.iter().map(|&(a, b)| rust_chunk(a, b)).collect();
        let sequential = fold("sequential", start_ns, parts);

        let start_ns = now_ns();
        let tasks = bounds
            .iter()
            .map(|&(a, b)| pool.submit(move || rust_chunk(a, b)))
            .collect::<Vec<_>>();
        let parts = tasks
            .into_iter()
            .map(|t| t.result().context("a chunk on Rust's pool"))
            .collect::<anyhow::Result<_>>()?;
        let threads = fold("threads", start_ns, parts);

        for (slot, run) in best.iter_mut().zip([sequential, threads]) {
            if slot.as_ref().is_none_or(|b| run.wall_s() < b.wall_s()) {
                *slot = Some(run);
            }
        }
    }
    let [Some(sequential), Some(threads)] = best else {
        bail!("no Rust run (runs = 0)");
    };
    Ok([sequential, threads])
}

/// Records the table and the timelines.
fn record(outcome: &mut Outcome, cpu: &Models, io: &Models, rust: &[ModelRun; 2], size: &IoSize) {
    let py_sequential = cpu.get("sequential").wall_s();
    let io_sequential = io.get("sequential");
    let io_rate = |r: &ModelRun| size.requests(&r.model) as f64 / r.wall_s();
    for model in MODELS {
        let name = format!("python {model}");
        let run = cpu.get(model);
        outcome.measure(&name, "cpu wall", run.wall_s(), "s");
        outcome.measure(&name, "cpu speedup", py_sequential / run.wall_s(), "×");
        if let Some(busy) = run.busy() {
            outcome.measure(&name, "busy", busy, "cores");
        }
        let run = io.get(model);
        outcome.measure(&name, "io", io_rate(run), "req/s");
        outcome.measure(
            &name,
            "io speedup",
            io_rate(run) / io_rate(io_sequential),
            "×",
        );
    }
    let rust_sequential = rust[0].wall_s();
    for run in rust {
        let name = format!("rust {}", run.model);
        outcome.measure(&name, "cpu wall", run.wall_s(), "s");
        outcome.measure(&name, "cpu speedup", rust_sequential / run.wall_s(), "×");
        if let Some(busy) = run.busy() {
            outcome.measure(&name, "busy", busy, "cores");
        }
    }
    for (runs, what) in [(cpu, "cpu"), (io, "io")] {
        for run in &runs.runs {
            let timeline = run.timeline(format!("python {} ({what})", run.model));
            outcome.timelines.push(timeline);
        }
    }
    for run in rust {
        let timeline = run.timeline(format!("rust {} (cpu)", run.model));
        outcome.timelines.push(timeline);
    }
}

/// How `ratio` reads beside 1.
fn pace(ratio: f64) -> &'static str {
    if ratio >= FASTER {
        "faster"
    } else if ratio <= 1.0 / FASTER {
        "slower"
    } else {
        "no faster"
    }
}

/// The verdict, from the measurements in `o`.
///
/// Whether threads computed in parallel is read from their busy cores (CPU time over wall
/// time), not from their speedup: a speedup ratio also moves with whatever else loads the
/// machine, while one thread at a time can never keep more than one core busy.
fn verdict(o: &Outcome, machine: &Machine, gil: bool, io: &IoSize) -> (String, Option<bool>) {
    let value = |model: &str, metric: &str| {
        o.get(model, metric)
            .expect("every model's metrics are recorded")
    };
    let times = |x: f64| format!("{}×", number(x));
    let [threads, processes, asyncio, rust] = [
        "python threads",
        "python processes",
        "python asyncio",
        "rust threads",
    ]
    .map(|m| value(m, "cpu speedup"));
    let [threads_busy, processes_busy, rust_busy] =
        ["python threads", "python processes", "rust threads"].map(|m| value(m, "busy"));
    let parallel = machine.cores.min(machine.workers);

    let mut text = format!(
        "CPU: Python threads ran at {} sequential ({}, {} cores busy), processes at {} ({}, {} \
         cores busy), asyncio at {} ({})",
        times(threads),
        pace(threads),
        number(threads_busy),
        times(processes),
        pace(processes),
        number(processes_busy),
        times(asyncio),
        pace(asyncio),
    );
    if parallel < 2 {
        let why = if machine.cores < 2 {
            "on 1 core"
        } else {
            "with 1 worker"
        };
        text.push_str(&format!(": {why}, nothing can speed up CPU work"));
    } else if threads_busy >= FASTER {
        text.push_str(": Python threads computed in parallel");
        if !gil {
            text.push_str(", as this Python has no GIL");
        }
    } else if processes_busy >= FASTER {
        // A second core was there (processes used it), and threads did not use it.
        text.push_str(if gil {
            ": the GIL let one Python thread compute at a time"
        } else {
            ": Python threads computed one at a time although this Python has no GIL"
        });
    } else {
        text.push_str(
            ": neither Python threads nor processes got a second core, so this run cannot \
             show the GIL",
        );
    }
    text.push_str(&format!(
        "; Rust threads ran the same chunks at {} Rust sequential ({}, {} cores busy)",
        times(rust),
        pace(rust),
        number(rust_busy),
    ));
    if parallel >= 2 && rust_busy >= FASTER && threads_busy < FASTER {
        if processes_busy >= FASTER {
            text.push_str(
                ": Rust has no GIL, so its threads computed in parallel where Python's did not",
            );
        } else {
            // Python's processes could not use a second core either, so the difference is
            // the machine's load, not the GIL: Rust's runs are short enough to find a quiet
            // moment.
            text.push_str(&format!(
                ": its runs, {} shorter than Python's and best of {}, found a second core free",
                factor(
                    value("python threads", "cpu wall"),
                    value("rust threads", "cpu wall")
                ),
                machine.rust_runs,
            ));
        }
    }
    let [io_threads, io_processes, io_asyncio] =
        ["python threads", "python processes", "python asyncio"].map(|m| value(m, "io speedup"));
    text.push_str(&format!(
        ". I/O: Python threads {} sequential ({}), asyncio {} ({}), processes {} ({}; {} \
         process{}, a connection each, where threads and asyncio had {} connections)",
        times(io_threads),
        pace(io_threads),
        times(io_asyncio),
        pace(io_asyncio),
        times(io_processes),
        pace(io_processes),
        io.processes,
        if io.processes == 1 { "" } else { "es" },
        io.connections,
    ));

    let cpu_agrees = processes / threads >= FASTER;
    let io_agrees = io_threads >= FASTER && io_asyncio >= FASTER;
    let mut against = Vec::new();
    let io_laggards: Vec<&str> = [("threads", io_threads), ("asyncio", io_asyncio)]
        .into_iter()
        .filter(|&(_, x)| x < FASTER)
        .map(|(model, _)| model)
        .collect();
    if !cpu_agrees && parallel >= 2 {
        let mut reason = format!(
            "processes ran CPU work at {} threads' pace, not faster",
            factor(processes, threads)
        );
        // Processes share no lock, so a process with chunks left that is off the CPU is
        // waiting for a core: too little busy time means other work held the cores.
        if let Some(held) = o
            .get("python processes", "busy")
            .filter(|&b| b < parallel as f64 / FASTER)
        {
            reason.push_str(&format!(
                " (they kept only {} of {parallel} cores busy: other work on this machine \
                 held the rest)",
                number(held)
            ));
        }
        against.push(reason);
    }
    if !io_agrees {
        against.push(format!(
            "{} no faster than sequential for I/O",
            io_laggards.join(" and ")
        ));
    }
    let agrees = (parallel >= 2).then_some(cpu_agrees && io_agrees);
    match agrees {
        Some(true) => text.push_str(" — agrees with the rule"),
        Some(false) => text.push_str(&format!(
            " — disagrees with the rule: {}",
            against.join("; ")
        )),
        None if io_agrees => {
            text.push_str(" — the CPU half cannot test the rule here; the I/O half agrees")
        }
        None => text.push_str(&format!(
            " — the CPU half cannot test the rule here; the I/O half disagrees: {}",
            against.join("; ")
        )),
    }
    (text, agrees)
}

/// The table's footnotes: what was excluded and how the runs were shaped.
fn notes(
    cpu: &Models,
    io: &Models,
    rust: &[ModelRun; 2],
    size: &IoSize,
    elements: u64,
    chunks: usize,
    rust_runs: usize,
) -> Vec<String> {
    let ms = |ns: u64| number(ns as f64 / 1e6);
    let setups = |m: &Models| {
        m.runs
            .iter()
            .filter(|r| r.model != "sequential")
            .map(|r| format!("{} {} ms", r.model, ms(r.setup_ns)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let per_element = cpu.get("sequential").wall_s() / rust[0].wall_s();
    vec![
        format!(
            "Python {} ({}). Excluded from every wall time: the interpreter's start-up ({} ms \
             and {} ms to the script's first line) and each pool's or loop's (cpu: {}; io: \
             {}).",
            cpu.ready.version,
            if cpu.ready.gil {
                "with the GIL"
            } else {
                "free-threaded, no GIL"
            },
            ms(cpu.startup_ns),
            ms(io.startup_ns),
            setups(cpu),
            setups(io),
        ),
        format!(
            "CPU: {} elements in {chunks} chunks; speedups are over the same language's \
             sequential run. The Rust rows sum the same chunks, best of {rust_runs} run{}; \
             Rust's sequential run was {} faster than Python's.",
            number(elements as f64),
            if rust_runs == 1 { "" } else { "s" },
            factor(per_element, 1.0),
        ),
        format!(
            "I/O: each request waits {} ms at the local server; sequential is 1 connection, \
             threads and asyncio {} (a thread each, or one loop), processes {} (one each); \
             every connection sends {} requests, and req/s compares the models.",
            size.delay_ms, size.connections, size.processes, size.rounds,
        ),
        "Python's CPU bars break where a thread was off the CPU for over 1 ms (waiting for \
         the GIL or for a core); the break is drawn as blocked."
            .to_owned(),
    ]
}

mod script;
#[cfg(test)]
mod tests;

use script::{Models, run_script};
