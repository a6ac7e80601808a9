//! A throwaway `redis-server` for tests, benchmarks and demos: a free loopback port, a
//! temporary directory, `appendonly yes`, and no process left behind.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it starts (loading its append-only file
/// included).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalRedisError {
    /// `redis-server` is not installed (not on `PATH`).
    #[error("redis-server is not installed (not on PATH)")]
    NotInstalled,
    /// It is installed but did not start or answer.
    #[error("redis-server did not start: {0}")]
    Start(String),
}

/// A `redis-server` of its own: started on a free port of 127.0.0.1 with a temporary
/// directory and `appendonly yes` (`appendfsync everysec`), and killed when this guard is
/// dropped, also while a test panics. The server is also set to die with the thread that
/// started it (Linux's parent-death signal), so even a killed test process leaves none
/// behind: keep the guard on the thread that started it.
///
/// ```no_run
/// use brigade_cluster::LocalRedis;
///
/// let mut redis = LocalRedis::start()?;
/// let url = redis.url_with_queue("jobs"); // redis://127.0.0.1:PORT/?queue=jobs
/// redis.kill();                           // SIGKILL, as a crash would
/// redis.restart()?;                       // same port and data: the AOF is replayed
/// # Ok::<(), brigade_cluster::LocalRedisError>(())
/// ```
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl LocalRedis {
    /// Where `redis-server` is, if it is on `PATH`.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    }

    /// Starts a server, and waits until it answers.
    pub fn start() -> Result<Self, LocalRedisError> {
        let binary = Self::binary().ok_or(LocalRedisError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("brigade-redis-")
            .tempdir()
            .map_err(|e| LocalRedisError::Start(format!("temporary directory: {e}")))?;
        let mut server = Self {
            child: None,
            binary,
            port: 0,
            dir,
        };
        let mut last = String::new();
        // A free port can be taken between finding it and the server binding it: try again.
        for _ in 0..5 {
            server.port = free_port().map_err(|e| LocalRedisError::Start(e.to_string()))?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = e.to_string();
                    server.kill();
                }
            }
        }
        Err(LocalRedisError::Start(last))
    }

    fn spawn(&mut self) -> Result<(), LocalRedisError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec, and only makes one
        // system call (prctl), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| LocalRedisError::Start(format!("{}: {e}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server answers PING (not LOADING), or fails if it exits.
    fn wait_ready(&mut self) -> Result<(), LocalRedisError> {
        let client =
            redis::Client::open(self.url()).map_err(|e| LocalRedisError::Start(e.to_string()))?;
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(LocalRedisError::Start(format!(
                    "exited with {status}; log: {}",
                    self.log_tail()
                )));
            }
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(LocalRedisError::Start(format!(
                    "no answer on port {} after {READY_TIMEOUT:?}; log: {}",
                    self.port,
                    self.log_tail()
                )));
            }
            // Start-up takes milliseconds; this only paces the polling of a starting server.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis://127.0.0.1:PORT/?queue=QUEUE`.
    pub fn url_with_queue(&self, queue: &str) -> String {
        format!("{}?queue={queue}", self.url())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (the append-only files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it with SIGKILL (a crash: no shutdown, no final save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (it replays its append-only file), and
    /// waits until it answers.
    pub fn restart(&mut self) -> Result<(), LocalRedisError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
