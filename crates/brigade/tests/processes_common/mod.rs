//! Helpers shared by the process-pool test files (`processes*.rs`): tasks that coordinate with
//! the test through a [`Gate`], signals, and re-running the test binary as a child process.
#![allow(dead_code, unreachable_pub)] // each test file uses its own subset

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use brigade::{Error, ProcessPool};

/// Set in a child run of a test binary: which child body to run (see [`run_child`]).
pub const CHILD_MODE: &str = "BRIGADE_TEST_CHILD_MODE";

pub fn square(x: u64) -> u64 {
    x * x
}

pub fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Connects to the gate at `path`, reports its pid, and blocks until released; returns its pid.
pub fn gated(path: String) -> u32 {
    let mut stream = UnixStream::connect(&path).expect("gate is listening");
    stream.write_all(&std::process::id().to_le_bytes()).unwrap();
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte);
    std::process::id()
}

/// Where a task in a worker process says it started, and waits to be released.
pub struct Gate {
    path: PathBuf,
    listener: UnixListener,
}

impl Gate {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "brigade-gate-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        Self { path, listener }
    }

    pub fn arg(&self) -> String {
        self.path.to_str().unwrap().to_owned()
    }

    /// Waits for a task to arrive; returns its connection (drop or write to release it) and
    /// the pid of the worker running it.
    pub fn arrival(&self) -> (UnixStream, u32) {
        let (mut stream, _) = self.listener.accept().unwrap();
        let mut pid = [0u8; 4];
        stream.read_exact(&mut pid).unwrap();
        (stream, u32::from_le_bytes(pid))
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn kill(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// A panic's message, without the worker's backtrace (there when `RUST_BACKTRACE` is set).
pub fn panic_text<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Panicked { message }) => message
            .split(brigade::processes::BACKTRACE_HEADING)
            .next()
            .unwrap()
            .to_owned(),
        other => panic!("expected a panic, got {other:?}"),
    }
}

pub fn pool(workers: usize) -> ProcessPool {
    ProcessPool::builder().workers(workers).build().unwrap()
}

/// Runs `test` of this test binary again, as a child process with `mode` in [`CHILD_MODE`]
/// and `env` set, and returns its output.
pub fn run_child(test: &str, mode: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// The child's mode, when this process is a child run (see [`run_child`]).
pub fn child_mode() -> Option<String> {
    std::env::var(CHILD_MODE).ok()
}

/// Fails with the child's output when it did not succeed.
pub fn assert_child_ok(output: &Output) {
    assert!(
        output.status.success(),
        "child failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
