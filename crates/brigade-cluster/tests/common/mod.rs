//! Shared by the cluster's tests: a watchdog, a Redis server per test, worker processes (this
//! test binary re-run as a worker), and the functions the workers run.
#![allow(dead_code, unreachable_pub)] // each test file uses its own subset

pub mod functions;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use brigade_cluster::LocalRedis;

/// Generous, because CI machines are slow and shared; a correct test takes seconds.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The environment variable that turns this test binary into a worker; its value is the
/// worker's command line.
pub const WORKER_ENV: &str = "BRIGADE_CLUSTER_TEST_WORKER";

/// Aborts the whole test process (naming the test) if it is still alive after `patience`.
pub struct Watchdog {
    disarm: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    test: &'static str,
    started: Instant,
}

impl Watchdog {
    pub fn new(test: &'static str) -> Self {
        Self::with(test, PATIENCE)
    }

    pub fn with(test: &'static str, patience: Duration) -> Self {
        let (disarm, armed) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(patience) {
                eprintln!("watchdog: test `{test}` hung for {patience:?}; aborting");
                std::process::abort();
            }
        });
        Self {
            disarm: Some(disarm),
            thread: Some(thread),
            test,
            started: Instant::now(),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        if took > Duration::from_secs(10) {
            eprintln!("slow: test `{}` took {took:?}", self.test);
        }
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server for one test. Where `redis-server` is not installed the test fails, unless
/// `BRIGADE_SKIP_REDIS=1` says to skip it (then `None`, after one line saying so): a test that
/// passes without running must be asked for, never the default. CI installs the server.
pub fn redis() -> Option<LocalRedis> {
    match LocalRedis::start() {
        Ok(r) => Some(r),
        Err(brigade_cluster::LocalRedisError::NotInstalled) if skip_allowed() => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped (BRIGADE_SKIP_REDIS is set): redis-server is not installed"
            );
            None
        }
        Err(brigade_cluster::LocalRedisError::NotInstalled) => panic!(
            "redis-server is not installed: apt-get install redis-server, \
             or set BRIGADE_SKIP_REDIS=1 to skip the tests that need it"
        ),
        Err(e) => panic!("{e}"),
    }
}

fn skip_allowed() -> bool {
    std::env::var("BRIGADE_SKIP_REDIS").is_ok_and(|v| v == "1")
}

/// A worker process: this test binary, re-run with only the `worker_process` test, which
/// serves the queue when [`WORKER_ENV`] is set. Killed (SIGKILL) on drop, and by the kernel
/// if the thread that started it dies.
pub struct WorkerProc {
    child: Option<Child>,
}

impl WorkerProc {
    pub fn spawn(url: &str, flags: &[&str]) -> Self {
        let mut line = format!("worker --broker {url}");
        for f in flags {
            line.push(' ');
            line.push_str(f);
        }
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, line)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("BRIGADE_TEST_WORKER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        // SAFETY: one prctl between fork and exec: async-signal-safe, touches no parent state.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        Self {
            child: Some(cmd.spawn().expect("start a worker process")),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: asks it to drain.
    pub fn term(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    }

    /// Waits for it to exit by itself (within `timeout`, else panics).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit in {timeout:?}"
            );
            // Paces the polling of a child's exit; the outcome does not depend on it.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("wait").is_some(),
            None => true,
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The body of the `worker_process` test: when this binary runs as a worker, serve and exit.
pub fn serve_if_worker() {
    let Ok(line) = std::env::var(WORKER_ENV) else {
        return;
    };
    let args: Vec<&str> = line.split(' ').collect();
    let code = brigade_cluster::worker_main_from(args, functions::all());
    let _ = std::io::stdout().flush();
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// A fresh temporary directory for files tasks write (to count their runs).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("brigade-cluster-test-")
        .tempdir()
        .unwrap()
}

/// Lines in a file (0 if it does not exist).
pub fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// A Unix socket that tasks (GATE) connect to when they start: `wait` blocks until one does
/// and gives its pid and the connection; the task runs until the connection is dropped.
pub struct Gate {
    listener: std::os::unix::net::UnixListener,
    pub path: String,
    _dir: tempfile::TempDir,
}

impl Gate {
    pub fn new() -> Self {
        let dir = scratch();
        let path = dir.path().join("gate.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        Self {
            listener,
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// Blocks until a task connects; returns the pid it announced, and its connection (drop
    /// it to let the task finish).
    pub fn wait(&self) -> (u32, std::os::unix::net::UnixStream) {
        use std::io::BufRead;
        let (stream, _) = self.listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap();
        (line.trim().parse().unwrap(), stream)
    }
}

/// Restarts worker processes that exit, until dropped (then kills them all).
pub struct Supervisor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Supervisor {
    /// Keeps `n` workers with `flags` running on `url`.
    pub fn new(url: &str, n: usize, flags: &'static [&'static str]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = url.to_owned();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut workers: Vec<WorkerProc> =
                (0..n).map(|_| WorkerProc::spawn(&url, flags)).collect();
            let mut restarts = 0;
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                for w in &mut workers {
                    if w.exited() {
                        *w = WorkerProc::spawn(&url, flags);
                        restarts += 1;
                    }
                }
                // Paces the check for exited workers; nothing depends on how soon it runs.
                std::thread::sleep(Duration::from_millis(20));
            }
            restarts
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops (killing the workers) and says how many restarts it made.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
