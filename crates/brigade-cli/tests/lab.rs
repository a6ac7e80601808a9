//! `brigade lab` as a user (or a script) meets it: arguments, the `--quick --json` output, the
//! report file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Runs `brigade ARGS`, killing it if it has not finished within `limit`: a hung lab fails
/// the test instead of hanging the suite.
fn brigade(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the brigade binary starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("waiting for brigade"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("brigade {args:?} ran longer than {limit:?}");
        }
    }
}

fn short(args: &[&str]) -> Output {
    brigade(args, Duration::from_secs(30))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brigade-lab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const EXPERIMENTS: [&str; 9] = [
    "cpu-bound",
    "io-few-fast",
    "io-many-slow",
    "blocking-in-async",
    "race",
    "startup-cost",
    "concurrency-vs-parallelism",
    "choosing-rule",
    "python",
];

#[test]
fn list_names_every_experiment_in_order() {
    let out = short(&["lab", "--list"]);
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(listed, EXPERIMENTS);
}

#[test]
fn an_unknown_experiment_is_one_line_naming_the_choices() {
    let out = short(&["lab", "cpu-bound", "gpu-bound"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: unknown experiment 'gpu-bound'"),
        "{err}"
    );
    for name in EXPERIMENTS {
        assert!(err.contains(name), "{err}");
    }
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_code_2() {
    for args in [
        &["lab", "--workers", "0"][..],
        &["lab", "--workers", "many"],
        &["lab", "--frobnicate"],
    ] {
        let out = short(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The whole lab, shrunk: every line of stdout is a JSON object; measurements carry the
/// documented fields; every experiment has a verdict; the report exists.
#[test]
fn quick_json_covers_every_experiment() {
    let dir = temp_dir("json");
    let out = brigade(
        &["lab", "--quick", "--json", "--out", dir.to_str().unwrap()],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}\nstdout:\n{stdout}");

    let mut measurements: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut verdicts: BTreeMap<String, Value> = BTreeMap::new();
    let mut report = None;
    for line in stdout.lines() {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let object = object.as_object().expect("each line is an object").clone();
        if let Some(path) = object.get("report") {
            report = Some(PathBuf::from(
                path.as_str().expect("the report path is text"),
            ));
        } else if object.contains_key("verdict") {
            let name = object["experiment"].as_str().unwrap().to_owned();
            assert!(
                object["verdict"].as_str().is_some_and(|v| !v.is_empty()),
                "{line}"
            );
            assert!(
                object["agrees"].is_boolean() || object["agrees"].is_null(),
                "{line}"
            );
            assert!(
                verdicts.insert(name, Value::Object(object)).is_none(),
                "two verdicts: {line}"
            );
        } else {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["experiment", "metric", "model", "unit", "value"],
                "{line}"
            );
            assert!(
                object["value"].as_f64().is_some_and(f64::is_finite),
                "{line}"
            );
            assert!(!object["model"].as_str().unwrap().is_empty(), "{line}");
            let name = object["experiment"].as_str().unwrap().to_owned();
            measurements
                .entry(name)
                .or_default()
                .push(Value::Object(object));
        }
    }
    let verdict_names: Vec<&str> = verdicts.keys().map(String::as_str).collect();
    let mut expected = EXPERIMENTS.to_vec();
    expected.sort_unstable();
    assert_eq!(verdict_names, expected);
    for name in EXPERIMENTS {
        let skipped = verdicts[name]["skipped"].is_string();
        assert!(
            skipped || measurements.get(name).is_some_and(|m| !m.is_empty()),
            "{name} measured nothing and was not skipped"
        );
    }

    // Spot checks that the numbers are the experiments' own.
    let value = |experiment: &str, model: &str, metric: &str| -> f64 {
        measurements[experiment]
            .iter()
            .find(|m| m["model"] == model && m["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} for {model} in {experiment}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(value("cpu-bound", "sequential", "speedup"), 1.0);
    for model in [
        "threads: fetch_add",
        "threads: Mutex",
        "event loop: load, store, await",
    ] {
        assert_eq!(value("race", model, "lost"), 0.0, "{model}");
        assert_eq!(
            value("race", model, "counted"),
            value("race", model, "expected")
        );
    }
    // Awaiting between read and write on one loop thread loses all but one task's updates
    // in every round: deterministic, unlike the threads' race.
    assert!(value("race", "event loop: load, await, store", "lost") > 0.0);
    assert_eq!(value("io-few-fast", "threads", "connections"), 4.0);

    let report = report.expect("a report line");
    let html = std::fs::read_to_string(&report).expect("the report was written");
    assert!(html.contains("<svg"), "the report has timelines");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_text_output_has_a_table_and_verdict_per_experiment() {
    let dir = temp_dir("text");
    let out = brigade(
        &[
            "lab",
            "--quick",
            "race",
            "startup-cost",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("\n== ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("  verdict: ").count(), 2, "{stdout}");
    let report_line = stdout.lines().last().unwrap();
    let path = report_line
        .strip_prefix("report: ")
        .expect("the report path comes last");
    assert!(std::path::Path::new(path).is_file(), "{path}");
    // Not a terminal: progress is plain lines on stderr, one per experiment.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["[1/2] race", "[2/2] startup-cost"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_out_dir_that_cannot_be_written_is_refused_before_any_experiment_runs() {
    let dir = temp_dir("unwritable-out");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    // A directory cannot be made under a regular file, whoever runs the test (root too).
    let out_dir = file.join("report");
    let out = short(&["lab", "--quick", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--out") && stderr.contains("a-file"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
