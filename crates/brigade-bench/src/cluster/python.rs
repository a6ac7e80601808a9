//! The Python anchors: Celery (Redis broker, prefork and solo pools) and RQ (`SimpleWorker`),
//! each in a virtual environment that `python/cluster_setup.sh` makes from the package index.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use serde_json::Value;

/// The Python anchors: two virtual environments made by `python/cluster_setup.sh` (Celery's
/// Redis transport wants redis-py ≥ 6.1; RQ gets its own).
pub(super) struct Python {
    celery: PathBuf,
    rq: PathBuf,
}

const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

impl Python {
    pub(super) fn setup() -> anyhow::Result<Self> {
        let venvs = std::env::var_os("BRIGADE_BENCH_VENVS").map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../target/bench-venvs"
                ))
            },
            PathBuf::from,
        );
        let out = Command::new("bash")
            .arg(format!("{PYTHON_DIR}/cluster_setup.sh"))
            .arg(&venvs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .context("running python/cluster_setup.sh")?;
        anyhow::ensure!(
            out.status.success(),
            "python/cluster_setup.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        Ok(Self {
            celery: venvs.join("celery/bin/python"),
            rq: venvs.join("rq/bin/python"),
        })
    }

    /// Runs an anchor script; it prints one JSON object.
    pub(super) fn run(&self, kind: &str, args: &[&str]) -> anyhow::Result<Value> {
        let (python, script, extra): (&PathBuf, &str, &[&str]) = match kind {
            "celery-prefork" => (&self.celery, "cluster_celery.py", &["--pool", "prefork"]),
            "celery-solo" => (&self.celery, "cluster_celery.py", &["--pool", "solo"]),
            _ => (&self.rq, "cluster_rq.py", &[]),
        };
        let out = Command::new(python)
            .arg(format!("{PYTHON_DIR}/{script}"))
            .args(args)
            .args(extra)
            .current_dir(PYTHON_DIR)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {script}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.lines().last().unwrap_or("")).context("the script's JSON")
    }
}
