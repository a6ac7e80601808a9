//! The cluster suite's worker side: this binary as a worker, the functions it runs, and the
//! worker processes a run starts.

use std::process::{Child, Command, Stdio};

use anyhow::Context;
use brigade_cluster::{Function, Functions};

/// Internal: this binary as a cluster worker (`cluster-worker --broker … --queue …`).
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    args: brigade_cluster::WorkerArgs,
}

/// The machine-wide monotonic clock, ns (the same clock in every process, Python's
/// `time.monotonic_ns()` included).
pub(super) fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A no-op that says when it ran: `(x, start)`.
pub(super) fn noop(x: u64) -> (u64, u64) {
    (x, mono_ns())
}
pub(super) const NOOP: Function<u64, (u64, u64)> = Function::new("noop", 1, noop);

/// When it started.
pub(super) fn started(_: ()) -> u64 {
    mono_ns()
}
pub(super) const STARTED: Function<(), u64> = Function::new("started", 1, started);

/// Connects to the Unix socket `path`, says its pid, and blocks until the bench closes it.
fn gate(path: String) -> u32 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("the bench's gate");
    let _ = writeln!(s, "{}", std::process::id());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    std::process::id()
}
pub(super) const GATE: Function<String, u32> = Function::new("gate", 1, gate);

fn functions() -> Functions {
    Functions::new()
        .register(&NOOP)
        .register(&STARTED)
        .register(&GATE)
}

pub(crate) fn worker(args: &WorkerArgs) -> std::process::ExitCode {
    brigade_cluster::worker_main_with(&args.args, functions())
}

/// Worker processes of this binary, killed (SIGKILL) on drop.
pub(super) struct Workers(pub(super) Vec<Child>);

impl Workers {
    pub(super) fn spawn(url: &str, queue: &str, n: usize, flags: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(
                Command::new(&exe)
                    .args(["cluster-worker", "--broker", url, "--queue", queue])
                    .args(flags)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting a worker process")?,
            );
        }
        Ok(Self(children))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
