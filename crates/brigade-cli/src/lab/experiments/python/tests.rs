//! The script's kernel against Rust's, its output parsing, and its clean-up.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::script::*;
use super::*;

fn python() -> Option<PathBuf> {
    let found = find_on_path("python3");
    if found.is_none() {
        eprintln!("skipped: python3 is not on PATH");
    }
    found
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs the script with the plain parser.
fn script(python: &Path, list: &[&str]) -> anyhow::Result<Output> {
    run_script_with(python, SCRIPT, &args(list), TIMEOUT, parse_line)
}

#[test]
fn the_script_computes_rusts_kernel() {
    let Some(python) = python() else { return };
    let out = Command::new(&python)
        .args([
            "-c", SCRIPT, "sum", "0", "1", "1", "2", "12345", "12346", "0", "1000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sums: Vec<u64> = serde_json::from_slice(&out.stdout).unwrap();
    let rust = [(0, 1), (1, 2), (12345, 12346), (0, 1000)].map(|(a, b)| chunk_sum(a, b));
    assert_eq!(sums, rust);
}

#[test]
fn a_small_cpu_run_sums_like_rust_under_every_model() {
    let Some(python) = python() else { return };
    let models = Models::of(script(&python, &["cpu", "3000", "2", "4"]).unwrap(), "cpu").unwrap();
    for run in &models.runs {
        assert_eq!(run.checksum, chunk_sum(0, 3000), "{}", run.model);
        assert!(run.cpu_ns.is_some() && !run.spans.is_empty());
    }
    let processes = models.get("processes");
    assert!(
        processes
            .spans
            .iter()
            .all(|s| matches!(s.worker, Worker::Process(pid) if pid != std::process::id()))
    );
}

#[test]
fn a_small_io_run_answers_every_request() {
    let Some(python) = python() else { return };
    let server = http::Server::start(1).unwrap();
    let (ip, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let out = script(&python, &["io", &ip, &port, "1", "2", "3", "2"]).unwrap();
    let models = Models::of(out, "io").unwrap();
    let size = IoSize {
        delay_ms: 1,
        rounds: 2,
        connections: 3,
        processes: 2,
    };
    for run in &models.runs {
        let requests = size.requests(&run.model);
        assert_eq!(run.spans.len() as u64, requests, "{}", run.model);
        assert_eq!(run.checksum, requests * http::BODY.len() as u64);
    }
}

#[test]
fn lines_parse_into_runs_on_the_right_workers() {
    let line = r#"{"type":"run","model":"processes","unit":"process","start_ns":10,
        "end_ns":50,"setup_ns":3,"cpu_ns":60,"checksum":7,
        "spans":[[4242,"cpu",11,30],[4242,"block",30,49]]}"#;
    let Line::Run(run) = parse_line(&line.replace('\n', "")).unwrap() else {
        panic!("not a run");
    };
    assert_eq!(run.model, "processes");
    assert_eq!(run.spans[1].worker, Worker::Process(4242));
    assert_eq!(run.spans[1].kind, Kind::Block);
    assert_eq!(run.busy(), Some(60.0 / 40.0));
    let ready = r#"{"type":"ready","ready_ns":5,"version":"3.13.0","gil":false}"#;
    assert!(matches!(
        parse_line(ready).unwrap(),
        Line::Ready(Ready { gil: false, .. })
    ));
}

#[test]
fn malformed_lines_are_errors() {
    let bad = [
        "not json",
        r#"{"type":"run","model":"threads"}"#,
        r#"{"type":"walk","ready_ns":5}"#,
        r#"{"type":"run","model":"x","unit":"fiber","start_ns":1,"end_ns":2,"setup_ns":0,"checksum":0,"spans":[]}"#,
        r#"{"type":"run","model":"x","unit":"thread","start_ns":1,"end_ns":2,"setup_ns":0,"checksum":0,"spans":[[1,"nap",1,2]]}"#,
        r#"{"type":"run","model":"x","unit":"thread","start_ns":3,"end_ns":2,"setup_ns":0,"checksum":0,"spans":[]}"#,
    ];
    for line in bad {
        assert!(parse_line(line).is_err(), "{line}");
    }
}

#[test]
fn a_python_error_is_an_error_that_names_python() {
    let Some(python) = python() else { return };
    let err = run_script_with(
        &python,
        "raise ValueError('boom')",
        &[],
        TIMEOUT,
        parse_line,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("python3") && err.contains("ValueError: boom"),
        "{err}"
    );
}

#[test]
fn an_error_here_kills_the_script_and_its_children() {
    let Some(python) = python() else { return };
    // A forked child, like a pool's worker, that would outlive the script if only the
    // script's own process were killed.
    let source = "import os, time\n\
                  pid = os.fork()\n\
                  if pid:\n    print(pid, flush=True)\n\
                  time.sleep(30)\n";
    let started = Instant::now();
    let mut child = None;
    let err = run_script_with(&python, source, &[], TIMEOUT, |line| {
        child = Some(line.trim().parse::<u32>()?);
        bail!("a parse error, say")
    });
    assert!(err.is_err());
    let child = child.expect("the script printed its child's pid");
    // Gone, or a zombie that nobody reaped: not running either way.
    let running = || {
        std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    };
    while running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the script's child {child} still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_script_past_its_deadline_is_killed() {
    let Some(python) = python() else { return };
    let started = Instant::now();
    let err = run_script_with(
        &python,
        "import time; time.sleep(30)",
        &args(&["sleep"]),
        Duration::from_millis(300),
        parse_line,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ran longer than"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
