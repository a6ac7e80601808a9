//! Running `python/lab.py` in its own process group, and reading what it prints.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;

use super::*;

/// What the script says about itself before its runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ready {
    pub(super) ready_ns: u64,
    pub(super) version: String,
    pub(super) gil: bool,
}

/// One line of the script's output, as printed.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum RawLine {
    Ready(Ready),
    Run(RawRun),
}

/// A run line, as printed: spans are `[worker, kind, start_ns, end_ns]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    pub(super) model: String,
    pub(super) unit: String,
    pub(super) start_ns: u64,
    pub(super) end_ns: u64,
    pub(super) setup_ns: u64,
    #[serde(default)]
    pub(super) cpu_ns: Option<u64>,
    pub(super) checksum: u64,
    pub(super) spans: Vec<(u32, String, u64, u64)>,
}

/// One line of the script's output, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Line {
    Ready(Ready),
    Run(ModelRun),
}

/// Parses and checks one line of the script's output.
pub(super) fn parse_line(text: &str) -> anyhow::Result<Line> {
    let raw: RawLine = serde_json::from_str(text).with_context(|| {
        let shown: String = text.chars().take(120).collect();
        format!("unreadable line from the python script: {shown:?}")
    })?;
    let RawRun {
        model,
        unit,
        start_ns,
        end_ns,
        setup_ns,
        cpu_ns,
        checksum,
        spans,
    } = match raw {
        RawLine::Ready(ready) => return Ok(Line::Ready(ready)),
        RawLine::Run(run) => run,
    };
    let (unit, worker): (&'static str, fn(u32) -> Worker) = match unit.as_str() {
        "thread" => ("thread", Worker::Thread),
        "process" => ("process", Worker::Process),
        other => bail!("python {model}: unknown worker unit {other:?}"),
    };
    ensure!(
        start_ns <= end_ns,
        "python {model}: its run ends before it starts"
    );
    let spans = spans
        .into_iter()
        .map(|(id, kind, start_ns, end_ns)| {
            let kind = [Kind::Cpu, Kind::Wait, Kind::Block, Kind::Tick]
                .into_iter()
                .find(|k| k.name() == kind)
                .with_context(|| format!("python {model}: unknown span kind {kind:?}"))?;
            ensure!(
                start_ns <= end_ns,
                "python {model}: a span ends before it starts"
            );
            Ok(Span {
                worker: worker(id),
                kind,
                start_ns,
                end_ns,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Line::Run(ModelRun {
        model,
        unit,
        start_ns,
        end_ns,
        setup_ns,
        cpu_ns,
        checksum,
        spans,
    }))
}

/// A script run's lines: its ready line, its runs, and when it was started.
#[derive(Debug)]
pub(super) struct Output {
    pub(super) spawned_ns: u64,
    pub(super) lines: Vec<Line>,
}

/// One script run's models, checked to be the four expected.
pub(super) struct Models {
    pub(super) ready: Ready,
    /// From spawning `python3` to the script's first line.
    pub(super) startup_ns: u64,
    /// In [`MODELS`] order.
    pub(super) runs: Vec<ModelRun>,
}

impl Models {
    pub(super) fn of(output: Output, mode: &str) -> anyhow::Result<Self> {
        let mut ready = None;
        let mut runs = Vec::new();
        for line in output.lines {
            match line {
                Line::Ready(r) => ready = Some(r),
                Line::Run(r) => runs.push(r),
            }
        }
        let ready = ready.with_context(|| format!("python {mode}: no ready line"))?;
        let names: Vec<&str> = runs.iter().map(|r| r.model.as_str()).collect();
        ensure!(
            names == MODELS,
            "python {mode}: ran {names:?}, expected {MODELS:?}"
        );
        Ok(Models {
            startup_ns: ready.ready_ns.saturating_sub(output.spawned_ns),
            ready,
            runs,
        })
    }

    pub(super) fn get(&self, model: &str) -> &ModelRun {
        self.runs
            .iter()
            .find(|r| r.model == model)
            .expect("checked in Models::of")
    }
}

/// A `python3` process group that is killed, with every process it started, unless it was
/// waited for: an error or a timeout on this side must not leave workers running.
pub(super) struct Group {
    pub(super) child: Child,
    pub(super) reaped: bool,
}

impl Group {
    /// Kills the group. Safe while the leader is unreaped: its pid (the group's id) cannot
    /// have been reused.
    pub(super) fn kill(&mut self) {
        if !self.reaped {
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&self.child),
                rustix::process::Signal::KILL,
            );
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Waits for the leader until `deadline`; `None` if it is still running then.
    pub(super) fn wait_until(&mut self, deadline: Instant) -> anyhow::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for python3")? {
                self.reaped = true;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `python -c source args...` and parses its lines, killing it (and every process it
/// started) after `timeout`. A non-zero exit is an error that quotes its stderr.
pub(super) fn run_script(
    ctx: &Ctx,
    python: &Path,
    source: &str,
    args: &[String],
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mode = args.first().map_or("", String::as_str);
    run_script_with(python, source, args, timeout, |line| {
        let parsed = parse_line(line)?;
        if let Line::Run(run) = &parsed {
            ctx.step(&format!("python {mode}: {} done", run.model));
        }
        Ok(parsed)
    })
}

/// [`run_script`] with the line handler given: tests use it with handlers of their own.
pub(super) fn run_script_with(
    python: &Path,
    source: &str,
    args: &[String],
    timeout: Duration,
    mut on_line: impl FnMut(&str) -> anyhow::Result<Line>,
) -> anyhow::Result<Output> {
    // Errors name the command as run, less the script's source.
    let what = std::iter::once("python3")
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let spawned_ns = now_ns();
    let deadline = Instant::now() + timeout;
    let child = Command::new(python)
        .arg("-c")
        .arg(source)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a kill reaches the pool's worker processes too.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut group = Group {
        child,
        reaped: false,
    };
    let stdout = group.child.stdout.take().expect("piped");
    let mut stderr = group.child.stderr.take().expect("piped");
    // Both pipes are drained on threads of their own, so a full pipe never stalls Python,
    // and the lines arrive on a channel that this thread can wait on with a deadline.
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut parsed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let line = line.context("reading python3's output")?;
                parsed.push(on_line(&line)?);
            }
            // The pipe closed: the script (and every worker holding the pipe) is done.
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                group.kill();
                bail!("{what} ran longer than {timeout:?}: killed it and its workers");
            }
        }
    }
    let Some(status) = group.wait_until(deadline)? else {
        group.kill();
        bail!("{what} ran longer than {timeout:?}: killed it and its workers");
    };
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = errors.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(Output {
        spawned_ns,
        lines: parsed,
    })
}
