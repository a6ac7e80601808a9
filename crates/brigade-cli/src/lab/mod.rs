//! `brigade lab`: the primers' claims, run as experiments under every model on this machine.
//!
//! Each experiment runs the same work sequentially, on threads, on processes and on an event
//! loop (where the model makes sense), prints a table and a verdict computed from what it
//! measured, and adds its timelines to a self-contained HTML report.

mod experiments;
mod outcome;
mod progress;
mod record;
mod report;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

pub(crate) use outcome::Outcome;
use progress::Progress;
pub(crate) use record::{Kind, Span, Timeline};

/// An experiment: a claim from the primers and the code that tests it.
pub(crate) struct Experiment {
    /// The name on the command line.
    pub(crate) name: &'static str,
    /// A heading.
    pub(crate) title: &'static str,
    /// The primers' claim under test, in a sentence.
    pub(crate) claim: &'static str,
    run: fn(&mut Ctx) -> anyhow::Result<Outcome>,
}

/// Every experiment, in the order a full run takes them.
pub(crate) static EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "cpu-bound",
        title: "CPU-bound work: split a huge sum across workers",
        claim: "CPU-bound work wants parallel workers, about one per core; an event loop \
                gives it no speedup.",
        run: experiments::cpu_bound::run,
    },
    Experiment {
        name: "io-few-fast",
        title: "I/O-bound work with a few fast connections",
        claim: "Threads speed up I/O-bound work, even on one CPU: a thread waiting for a \
                response leaves the CPU to another.",
        run: experiments::io::few_fast,
    },
    Experiment {
        name: "io-many-slow",
        title: "I/O-bound work with many slow connections",
        claim: "Thousands of slow requests want an event loop: it serves them all on a few \
                threads, where threads need one each and processes cost more.",
        run: experiments::io::many_slow,
    },
    Experiment {
        name: "blocking-in-async",
        title: "A blocking call inside async code",
        claim: "Async only works while waiting is non-blocking: a blocking call freezes the \
                loop and every task on it.",
        run: experiments::blocking::run,
    },
    Experiment {
        name: "race",
        title: "A race condition and its fixes",
        claim: "Threads that read and then write shared data lose updates; an atomic \
                operation or a lock does not.",
        run: experiments::race::run,
    },
    Experiment {
        name: "startup-cost",
        title: "What starting a worker costs",
        claim: "Processes cost extra setup time; keep workers warm.",
        run: experiments::startup::run,
    },
    Experiment {
        name: "concurrency-vs-parallelism",
        title: "Concurrency is not parallelism",
        claim: "One thread can keep many waiting tasks in progress (concurrency), but only \
                several cores run computations at the same instant (parallelism).",
        run: experiments::concurrency::run,
    },
    Experiment {
        name: "choosing-rule",
        title: "The choosing rule, applied by hand and by measurement",
        claim: "No single model suits every kind of work: CPU-bound work wants parallel \
                workers, blocking I/O wants threads, many slow connections want an event loop; \
                and the rule can be applied by measuring each call site.",
        run: experiments::choosing_rule::run,
    },
    Experiment {
        name: "python",
        title: "The same experiments in Python",
        claim: "In Python the GIL lets only one thread compute at a time, so CPU-bound work \
                needs multiprocessing; threads and asyncio still help I/O.",
        run: experiments::python::run,
    },
];

/// The experiment named `name`.
pub(crate) fn experiment(name: &str) -> Option<&'static Experiment> {
    EXPERIMENTS.iter().find(|e| e.name == name)
}

/// `brigade lab`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Experiments to run (default: all); see --list.
    #[arg(value_name = "EXPERIMENT")]
    pub experiments: Vec<String>,
    /// List the experiments and exit.
    #[arg(long)]
    pub list: bool,
    /// Shrink every experiment to a few seconds in all: a smoke test, not a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per measurement (and per verdict) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Workers per pool (default: the machine's available parallelism).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Where to write the HTML report.
    #[arg(long, value_name = "DIR", default_value = "brigade-lab")]
    pub out: PathBuf,
}

/// What every experiment may use: the run's settings and the shared HTTP server.
pub(crate) struct Ctx {
    pub(crate) quick: bool,
    /// Workers per pool.
    pub(crate) workers: usize,
    /// CPUs this process may run on.
    pub(crate) cores: usize,
    server: Option<brigade_http::Server>,
    pub(crate) done: Vec<Outcome>,
    progress: Progress,
}

impl Ctx {
    /// `full` in a full run, `quick` under `--quick`.
    pub(crate) fn size<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// The embedded HTTP server, started on first use and shared by the experiments after.
    pub(crate) fn server(&mut self) -> anyhow::Result<std::net::SocketAddr> {
        if self.server.is_none() {
            self.server =
                Some(brigade_http::Server::start(1).context("starting the local HTTP server")?);
        }
        Ok(self.server.as_ref().expect("just started").addr)
    }

    /// Shows what the experiment is doing now (`model`, say).
    pub(crate) fn step(&self, what: &str) {
        self.progress.step(what);
    }
}

/// Facts about the run that the report shows.
pub(crate) struct RunInfo {
    pub(crate) version: &'static str,
    pub(crate) workers: usize,
    pub(crate) cores: usize,
    pub(crate) quick: bool,
    pub(crate) cpu: String,
    /// What recording one span costs on this machine.
    pub(crate) span_cost_ns: f64,
}

/// A mistake in the arguments: one line, exit code 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs `brigade lab`.
pub fn run(args: LabArgs) -> ExitCode {
    let names: Vec<&str> = EXPERIMENTS.iter().map(|e| e.name).collect();
    if args.list {
        let mut out = std::io::stdout().lock();
        for e in EXPERIMENTS {
            // A closed pipe (`brigade lab --list | head -1`) ends the listing, not the program.
            if writeln!(out, "{:<28} {}", e.name, e.title).is_err() {
                break;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut chosen: Vec<&'static Experiment> = Vec::new();
    for name in &args.experiments {
        match experiment(name) {
            Some(e) if !chosen.iter().any(|c| c.name == e.name) => chosen.push(e),
            Some(_) => {}
            None => {
                return usage_error(&format!(
                    "unknown experiment '{name}' (choose from: {})",
                    names.join(", ")
                ));
            }
        }
    }
    if chosen.is_empty() {
        chosen = EXPERIMENTS.iter().collect();
    }
    // Found out now, not after the experiments have run.
    if let Err(e) = report::check_writable(&args.out) {
        return usage_error(&format!("--out: {e:#}"));
    }
    match run_chosen(&args, &chosen) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `chosen`, printing as it goes; `Ok(false)` when an experiment failed (the others
/// still ran and are reported).
fn run_chosen(args: &LabArgs, chosen: &[&'static Experiment]) -> anyhow::Result<bool> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.map_or(cores, usize::from);
    let interactive = std::io::stdout().is_terminal() && !args.json;
    let info = RunInfo {
        version: env!("CARGO_PKG_VERSION"),
        workers,
        cores,
        quick: args.quick,
        cpu: cpu_model(),
        span_cost_ns: record::span_cost_ns(),
    };
    let mut out = Output::new(args.json);
    out.text(&format!(
        "brigade lab: {} experiment{}, {workers} worker{} per pool on {cores} core{}{}\n",
        chosen.len(),
        plural(chosen.len()),
        plural(workers),
        plural(cores),
        if args.quick {
            " (--quick: not a measurement)"
        } else {
            ""
        },
    ));
    let mut ctx = Ctx {
        quick: args.quick,
        workers,
        cores,
        server: None,
        done: Vec::new(),
        progress: Progress::new(chosen.len(), interactive),
    };
    let mut all_ok = true;
    for (i, e) in chosen.iter().enumerate() {
        ctx.progress.start(i, e.name);
        let outcome = (e.run)(&mut ctx);
        ctx.progress.finish();
        match outcome {
            Ok(outcome) => {
                ctx.progress
                    .suspend(|| out.outcome(e, &outcome, info.span_cost_ns));
                ctx.done.push(outcome);
            }
            Err(err) => {
                all_ok = false;
                ctx.progress
                    .suspend(|| eprintln!("error: experiment {} failed: {err:#}", e.name));
                // The report and the JSON still say what happened to it.
                let failed = Outcome::skipped(e.name, format!("it failed: {err:#}"));
                ctx.progress
                    .suspend(|| out.outcome(e, &failed, info.span_cost_ns));
                ctx.done.push(failed);
            }
        }
    }
    ctx.progress.clear();
    drop(ctx.server.take());
    let path = report::write(&args.out, &info, &ctx.done)?;
    out.report(&path);
    Ok(all_ok)
}

/// Tables or JSON lines on stdout; a closed stdout stops the printing, not the run.
struct Output {
    json: bool,
    closed: bool,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            closed: false,
        }
    }

    fn print(&mut self, text: &str) {
        if self.closed {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            self.closed = true;
        }
    }

    fn text(&mut self, text: &str) {
        if !self.json {
            self.print(text);
        }
    }

    fn outcome(&mut self, e: &Experiment, o: &Outcome, span_cost_ns: f64) {
        if self.json {
            let mut lines = String::new();
            for m in &o.measurements {
                lines.push_str(&serde_json::to_string(m).expect("plain data serializes"));
                lines.push('\n');
            }
            for t in &o.timelines {
                let line = serde_json::json!({
                    "experiment": o.experiment,
                    "model": t.model,
                    "metric": "recording_overhead",
                    "value": t.overhead_pct(span_cost_ns),
                    "unit": "%",
                });
                lines.push_str(&line.to_string());
                lines.push('\n');
            }
            let verdict = serde_json::json!({
                "experiment": o.experiment,
                "verdict": o.verdict.text,
                "agrees": o.verdict.agrees,
                "skipped": o.skipped,
            });
            lines.push_str(&verdict.to_string());
            lines.push('\n');
            self.print(&lines);
            return;
        }
        let mut text = format!("\n== {}: {}\n", e.name, e.title);
        if let Some(reason) = &o.skipped {
            text.push_str(&format!("  skipped: {reason}\n"));
            self.print(&text);
            return;
        }
        text.push_str(&o.table().to_text());
        for note in &o.notes {
            text.push_str(&format!("  note: {note}\n"));
        }
        text.push_str(&format!("  verdict: {}\n", o.verdict.text));
        self.print(&text);
    }

    fn report(&mut self, path: &std::path::Path) {
        if self.json {
            let line = serde_json::json!({ "report": path.display().to_string() });
            self.print(&format!("{line}\n"));
        } else {
            self.print(&format!("\nreport: {}\n", path.display()));
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The CPU's model name, for the report's header.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
