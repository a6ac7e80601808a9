//! The errors brigade reports: one enum for what can happen to a task, and two small ones for
//! what can go wrong before a task exists.

use std::fmt;

/// Why a task produced no value.
///
/// Every lane reports task outcomes with this one type, so code that waits on tasks from
/// several lanes handles failures in one place. It is `#[non_exhaustive]`: lanes added later
/// (the process pool, for one) bring their own reasons, such as a crashed worker.
///
/// ```
/// use brigade::{Error, ThreadPool};
///
/// let pool = ThreadPool::new();
/// let task = pool.submit(|| -> u32 { panic!("disk on fire") });
/// match task.result() {
///     Err(Error::Panicked { message }) => assert_eq!(message, "disk on fire"),
///     other => panic!("unexpected outcome: {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task panicked; `message` is the panic's payload when it was a string.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic message, or a placeholder when the payload was not a string.
        message: String,
    },
    /// The task was cancelled before it started, so it never ran; or, on the event loop, it
    /// was cancelled while running and stopped at an `.await`.
    #[error("task was cancelled")]
    Cancelled,
    /// A bounded wait ran out before the task finished. The task itself is untouched: it keeps
    /// running, and a later wait can still get its value.
    #[error("timed out waiting for the task")]
    TimedOut,
    /// A deadline over several tasks ran out (see [`as_completed`](crate::as_completed)).
    #[error("timed out: {unfinished} (of {total}) tasks unfinished")]
    Unfinished {
        /// How many tasks had not finished when the deadline passed.
        unfinished: usize,
        /// How many tasks were being waited on.
        total: usize,
    },
    /// The pool was shut down before the work could be accepted.
    #[error("the pool is shut down")]
    ShutDown,
    /// The pool could not start a worker thread and had none running.
    #[error("could not start a worker thread: {message}")]
    Spawn {
        /// The operating system's explanation.
        message: String,
    },
    /// The task's outcome was already taken out of this handle by an earlier call.
    #[error("the task's outcome was already taken")]
    Consumed,
    /// No remote worker has the task's function: its registered name and version are unknown
    /// where it was delivered (`brigade-cluster`). Functions travel by name, never as code.
    #[error("no worker has function `{name}` version {version}: {message}")]
    UnknownFunction {
        /// The function's registered name.
        name: String,
        /// The version asked for.
        version: u32,
        /// What the worker said (the versions it has, say).
        message: String,
    },
    /// The task was delivered to remote workers `deliveries` times and none of them finished
    /// it (each died or lost it), so it was set aside as a dead letter instead of being
    /// retried forever (`brigade-cluster`).
    #[error("dead-lettered after {deliveries} deliveries: {last}")]
    DeadLettered {
        /// How many times it was delivered.
        deliveries: u32,
        /// What happened to the last delivery.
        last: String,
    },
    /// The code that was to complete the task (a [`Completer`](crate::Completer)) went away
    /// without setting an outcome.
    #[error("the task's completer was dropped without setting an outcome")]
    Abandoned,
    /// The worker process running the task died: killed by a signal (`signal`), or exited
    /// (`code`) in the middle of the task. Only the task(s) it was running fail; the pool
    /// starts a replacement.
    #[error("worker process {pid} {}", describe_exit(*.signal, *.code))]
    WorkerCrashed {
        /// The worker's process id.
        pid: u32,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },
    /// The task's argument or result could not be encoded or decoded for the trip to or from
    /// a worker process.
    #[error("could not encode or decode the task's data: {message}")]
    Codec {
        /// What the codec reported.
        message: String,
    },
    /// The pool can run nothing more, for the reason given (a thread's initializer failed, or
    /// a replacement worker process's).
    #[error("the pool is broken: {reason}")]
    Broken {
        /// Why the pool broke.
        reason: String,
    },
    /// The process pool had no worker process for a whole start timeout, and could start none
    /// (the system was out of file descriptors or processes, say). The pool keeps trying, and
    /// serves again as soon as a worker starts: a later task may succeed.
    #[error("no worker process could be started: {message}")]
    WorkerStart {
        /// What went wrong, and for how long.
        message: String,
    },
    /// The function given to a process pool is not part of the program's executable (it came
    /// from a dynamically loaded library, say), so a worker process cannot name it; the task
    /// was refused before anything ran.
    #[error(
        "the function at {address:#x} is not in this program's executable (loaded from a shared \
         library?): a process pool runs only functions its workers have too"
    )]
    ForeignFunction {
        /// The function's address in the pool's process.
        address: usize,
    },
}

/// "was killed by signal 9 (SIGKILL)", "exited with code 3" or "vanished".
fn describe_exit(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(signal), _) => match signal_name(signal) {
            Some(name) => format!("was killed by signal {signal} ({name})"),
            None => format!("was killed by signal {signal}"),
        },
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "vanished".to_owned(),
    }
}

/// The usual names of the signals that end processes (Linux numbering).
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

impl Error {
    /// Turns a panic payload (as caught by `catch_unwind`) into [`Error::Panicked`].
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        Error::Panicked {
            message: Self::panic_message(payload),
        }
    }

    /// The text of a panic payload: the message when it is a string, else a placeholder.
    pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any> (a panic payload that is not a string)".to_owned()
        }
    }
}

/// Work that a pool refused, handed back unrun.
///
/// ```
/// use brigade::{Shutdown, ThreadPool};
///
/// let pool = ThreadPool::new();
/// pool.shutdown(Shutdown::graceful());
/// let refused = pool.try_submit(|| 6 * 7).unwrap_err();
/// assert_eq!(refused.to_string(), "the pool is shut down");
/// let work = refused.into_inner();
/// assert_eq!(work(), 42); // nothing is lost: run it elsewhere
/// ```
pub struct SubmitError<F> {
    work: F,
    reason: Error,
}

impl<F> SubmitError<F> {
    pub(crate) fn new(work: F, reason: Error) -> Self {
        Self { work, reason }
    }

    /// Gives the refused work back (see the type's example).
    pub fn into_inner(self) -> F {
        self.work
    }

    /// Why the work was refused: [`Error::ShutDown`] or [`Error::Spawn`].
    ///
    /// ```
    /// # let pool = brigade::ThreadPool::new();
    /// pool.shutdown(brigade::Shutdown::graceful());
    /// let refused = pool.try_submit(|| ()).unwrap_err();
    /// assert_eq!(refused.reason(), &brigade::Error::ShutDown);
    /// ```
    pub fn reason(&self) -> &Error {
        &self.reason
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.reason, f)
    }
}

impl<F> std::error::Error for SubmitError<F> {}

impl<F> From<SubmitError<F>> for Error {
    /// Drops the refused work and keeps the reason, so `?` works in functions returning
    /// [`Error`].
    fn from(e: SubmitError<F>) -> Self {
        e.reason
    }
}

/// A pool configuration that cannot work.
///
/// ```
/// let err = brigade::ThreadPool::builder().workers(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "a pool needs at least 1 worker (asked for 0)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The worker count was zero.
    #[error("a pool needs at least 1 worker (asked for {0})")]
    NoWorkers(usize),
    /// The worker count was above [`MAX_WORKERS`](crate::pool::MAX_WORKERS).
    #[error("a pool can have at most {max} workers (asked for {asked})")]
    TooManyWorkers {
        /// The count asked for.
        asked: usize,
        /// The largest count allowed.
        max: usize,
    },
    /// A worker process could not be started, or did not answer brigade's start-up handshake.
    #[error("could not start a worker process: {message}")]
    WorkerStart {
        /// What went wrong.
        message: String,
    },
    /// A worker process's initializer failed (panicked), so the pool was not built.
    #[error("the worker initializer failed: {message}")]
    Initializer {
        /// The initializer's panic message.
        message: String,
    },
    /// The event loop's runtime could not start (the operating system refused a thread, say).
    #[error("could not start the event loop: {message}")]
    Runtime {
        /// The underlying error's explanation.
        message: String,
    },
}
