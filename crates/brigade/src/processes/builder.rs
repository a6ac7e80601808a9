//! [`Builder`]: a process pool's settings, and starting it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::call::{self, InitTrampoline};
use super::shared::{Config, InitCall, Shared};
use super::spawn::StartError;
use super::wire::MAX_MESSAGE;
use super::{Owner, ProcessPool, supervisor, worker};
use crate::error::BuildError;
use crate::sync::Mutex;

/// Settings for a [`ProcessPool`]; start from [`ProcessPool::builder`].
///
/// ```
/// use std::time::Duration;
///
/// let pool = brigade::ProcessPool::builder()
///     .workers(2)
///     .max_tasks_per_worker(1_000)
///     .memory_limit(512 << 20)
///     .task_timeout(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(pool.workers(), 2);
/// # Ok::<(), brigade::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    max_tasks: Option<usize>,
    memory_limit: Option<u64>,
    message_limit: usize,
    /// The initializer, or why it cannot be sent (its argument failed to encode, say).
    initializer: Option<Result<InitCall, String>>,
    task_timeout: Option<Duration>,
    start_timeout: Duration,
    /// The worker executable; always this program, except in tests of the handshake.
    pub(super) program: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            max_tasks: None,
            memory_limit: None,
            message_limit: MAX_MESSAGE,
            initializer: None,
            task_timeout: None,
            start_timeout: Duration::from_secs(10),
            program: None,
        }
    }
}

impl Builder {
    /// Number of worker processes (default: the number of CPUs, or
    /// [`BRIGADE_WORKERS`](crate::pool::WORKERS_ENV) when set).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Replaces each worker with a fresh process after it has run `tasks` tasks (a chunk of
    /// [`map`](ProcessPool::map) counts as one). Contains slow leaks in native code.
    ///
    /// # Panics
    /// If `tasks` is 0.
    pub fn max_tasks_per_worker(mut self, tasks: usize) -> Self {
        assert!(tasks > 0, "max_tasks_per_worker must be at least 1");
        self.max_tasks = Some(tasks);
        self
    }

    /// Replaces a worker whose resident memory is above `bytes` after a task. Checked between
    /// tasks, so a task is never interrupted for it.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes.max(1));
        self
    }

    /// The largest argument or result, encoded, that may travel between the pool and a worker
    /// (default and most: 2 GiB). A larger argument is refused at submit, and a larger result
    /// fails its task in the worker, which lives on; both with [`Error::Codec`](crate::Error::Codec) naming the
    /// size and the limit. Neither side ever allocates past the limit for a message.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool};
    ///
    /// fn echo(text: String) -> String { text }
    ///
    /// let pool = ProcessPool::builder().workers(1).max_message_bytes(64).build()?;
    /// assert_eq!(pool.submit(echo, "short".into()).result(), Ok("short".into()));
    /// let refused = pool.submit(echo, "x".repeat(100)).result();
    /// assert!(matches!(refused, Err(Error::Codec { message }) if message.contains("over the limit")));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.message_limit = bytes.min(MAX_MESSAGE);
        self
    }

    /// Runs `init` once in each worker before its first task (replacements included).
    ///
    /// If it panics while the pool is being built, [`build`](Self::build) fails with
    /// [`BuildError::Initializer`] (its message, then, with backtraces on, the worker's
    /// backtrace after [`BACKTRACE_HEADING`](super::BACKTRACE_HEADING)). If it panics later, in a replacement worker, the pool is
    /// **broken**: queued and later tasks fail with [`Error::Broken`](crate::Error::Broken). An initializer that
    /// failed once is not retried, since running it again usually fails again. For an
    /// initializer that needs data, see [`initializer_with`](Self::initializer_with); a pool
    /// has one initializer, the last one set.
    ///
    /// ```
    /// fn init() {
    ///     // e.g. open a per-process connection, seed a per-process cache ...
    /// }
    /// let pool = brigade::ProcessPool::builder().workers(1).initializer(init).build()?;
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn initializer(mut self, init: fn()) -> Self {
        let trampoline: InitTrampoline = call::init_plain;
        self.initializer = Some(Self::init_call(trampoline, init as usize, Ok(Vec::new())));
        self
    }

    /// Runs `init(arg)` once in each worker before its first task (replacements included),
    /// like [`initializer`](Self::initializer), with an argument encoded once, here, and
    /// decoded in each worker (Python's `initargs`). An argument that cannot be encoded makes
    /// [`build`](Self::build) fail with [`BuildError::Initializer`].
    ///
    /// ```
    /// use brigade::ProcessPool;
    /// use std::sync::OnceLock;
    ///
    /// static GREETING: OnceLock<String> = OnceLock::new();
    ///
    /// fn init(greeting: String) {
    ///     GREETING.set(greeting).unwrap();
    /// }
    ///
    /// fn greet(name: String) -> String {
    ///     format!("{}, {name}", GREETING.get().unwrap())
    /// }
    ///
    /// let pool = ProcessPool::builder()
    ///     .workers(1)
    ///     .initializer_with(init, "hello".to_owned())
    ///     .build()?;
    /// assert_eq!(pool.submit(greet, "world".into()).result(), Ok("hello, world".into()));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn initializer_with<A>(mut self, init: fn(A), arg: A) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        let trampoline: InitTrampoline = call::init_with::<A>;
        let mut payload = Vec::new();
        let no_spares = super::spare::Spares::default();
        let encoded = call::encode_argument(&arg, &mut payload, self.message_limit, &no_spares)
            .map(|()| payload)
            .map_err(|e| e.to_string());
        self.initializer = Some(Self::init_call(trampoline, init as usize, encoded));
        self
    }

    fn init_call(
        trampoline: InitTrampoline,
        func: usize,
        payload: Result<Vec<u8>, String>,
    ) -> Result<InitCall, String> {
        call::check_in_executable(func).map_err(|e| e.to_string())?;
        Ok(InitCall {
            trampoline: call::offset_of(trampoline as usize),
            func: call::offset_of(func),
            payload: payload?,
        })
    }

    /// Default timeout for every task (see [`ProcessPool::submit_timeout`]): a task running
    /// longer is killed with its worker and fails with [`Error::TimedOut`](crate::Error::TimedOut). A timeout too long
    /// to represent (such as `Duration::MAX`) means no limit.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// How long a new worker may take to start and answer (default 10 s). It is also how long
    /// the pool goes on with no worker at all (none can be started: the system is out of
    /// processes or file descriptors, say) before it fails the queued tasks with
    /// [`Error::WorkerStart`](crate::Error::WorkerStart); it keeps trying, and serves again once a worker starts. A
    /// timeout too long to represent (such as `Duration::MAX`) means no limit.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the workers and waits until each has answered (and run its initializer).
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        worker::keep_linked();
        let workers = crate::pool::worker_count(self.workers)?;
        let program = if let Some(program) = self.program {
            program
        } else if cfg!(target_os = "linux") {
            // The running image itself, even if its file was replaced since we started.
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().map_err(|e| BuildError::WorkerStart {
                message: format!("cannot find this program's executable: {e}"),
            })?
        };
        let initializer = match self.initializer {
            None => None,
            Some(Ok(init)) => Some(init),
            Some(Err(message)) => return Err(BuildError::Initializer { message }),
        };
        let shared = Shared::new(Config {
            workers,
            max_tasks: self.max_tasks,
            memory_limit: self.memory_limit,
            message_limit: self.message_limit,
            initializer,
            task_timeout: self.task_timeout,
            start_timeout: self.start_timeout,
            program,
        });
        let (started, reports) = mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        let mut failure = None;
        for index in 0..workers {
            let shared = Arc::clone(&shared);
            let started = started.clone();
            match std::thread::Builder::new()
                .name(format!("brigade-proc-{index}"))
                .spawn(move || supervisor::run_slot(shared, index, started))
            {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    failure = Some(BuildError::WorkerStart {
                        message: format!("cannot start a supervising thread: {e}"),
                    });
                    break;
                }
            }
        }
        drop(started);
        for _ in 0..threads.len() {
            match reports.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(match e {
                        StartError::Start(message) => BuildError::WorkerStart { message },
                        StartError::Init(message) => BuildError::Initializer { message },
                    });
                }
                Err(_) => {
                    // A slot thread ended without reporting: it cannot serve.
                    failure.get_or_insert(BuildError::WorkerStart {
                        message: "a supervising thread ended before its worker started".into(),
                    });
                    break;
                }
            }
        }
        let owner = Owner {
            shared,
            thread_ids: threads.iter().map(|t| t.thread().id()).collect(),
            threads: Mutex::new(threads),
        };
        match failure {
            // Dropping the owner shuts the started workers down and reaps them.
            Some(e) => Err(e),
            None if owner.thread_ids.is_empty() => Err(BuildError::WorkerStart {
                message: "no supervising thread started".into(),
            }),
            None => Ok(ProcessPool {
                owner: Arc::new(owner),
            }),
        }
    }
}
