//! The cluster suite's `redelivery` workload: how long a task held by a worker that is killed
//! takes to run again on another worker.

use std::time::{Duration, Instant};

use anyhow::Context;
use brigade_cluster::{Client, Options};
use serde_json::json;

use super::Bench;
use super::workers::{GATE, Workers};
use crate::measure::{emit, median, round3};

impl Bench<'_> {
    /// From a worker's SIGKILL to its task running on another worker.
    pub(super) fn redelivery(&mut self) -> anyhow::Result<()> {
        let lease = if self.args.run.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(1)
        };
        let mut times = Vec::new();
        for _ in 0..self.args.run.reps {
            times.push(self.one_redelivery(lease)?);
        }
        let ms = median(&mut times.clone());
        let target = lease.as_secs_f64() * 1e3 + 1000.0;
        let mut line = self.base("redelivery", 1);
        crate::measure::merge(
            &mut line,
            &json!({
                "impl": "brigade",
                "wall_ms": round3(ms),
                "min_ms": round3(times.iter().copied().fold(f64::INFINITY, f64::min)),
                "max_ms": round3(times.iter().copied().fold(0.0, f64::max)),
                "per_task_ns": round3(ms * 1e6),
                "lease_ms": lease.as_millis(),
                "over_lease_ms": round3(ms - lease.as_secs_f64() * 1e3),
                "anchor": "target: lease + 1 s",
                "vs_anchor": round3(target / ms),
            }),
        );
        emit(&line);
        Ok(())
    }

    fn one_redelivery(&mut self, lease: Duration) -> anyhow::Result<f64> {
        use std::io::BufRead;
        let queue = self.queue("kill");
        let url = self.redis.url();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("gate.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        let mut procs = Workers::spawn(&url, &queue, 2, &["--concurrency", "1"])?;
        let client = Client::builder(&url)
            .queue(&queue)
            .options(Options::default().lease(lease))
            .connect()?;
        let task = client.submit(&GATE, path.to_string_lossy().into_owned());
        let accept = || -> anyhow::Result<(u32, std::os::unix::net::UnixStream)> {
            let (s, _) = listener.accept()?;
            let mut line = String::new();
            std::io::BufReader::new(&s).read_line(&mut line)?;
            Ok((line.trim().parse()?, s))
        };
        let (first, _held) = accept()?;
        let victim = procs
            .0
            .iter_mut()
            .find(|c| c.id() == first)
            .context("the gate's pid is one of the workers")?;
        victim.kill()?;
        let killed = Instant::now();
        let (second, release) = accept()?;
        let ms = killed.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(second != first, "ran again on the killed worker?");
        drop(release);
        anyhow::ensure!(task.result()? == second, "the second run's outcome");
        Ok(ms)
    }
}
