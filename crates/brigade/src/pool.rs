//! What every pool shares, whatever its lane: how it shuts down ([`Shutdown`]) and how many
//! workers it gets ([`WORKERS_ENV`], [`MAX_WORKERS`]).
//!
//! # One worker-count rule
//!
//! Every pool ([`ThreadPool`](crate::ThreadPool), [`ProcessPool`](crate::ProcessPool),
//! [`EventLoop`](crate::EventLoop)) sizes itself the same way:
//!
//! 1. the builder's `workers(n)`, if called: `n` must lie in `1..=`[`MAX_WORKERS`], else
//!    `build()` fails with [`BuildError::NoWorkers`] or [`BuildError::TooManyWorkers`];
//! 2. else the [`BRIGADE_WORKERS`](WORKERS_ENV) environment variable, clamped to
//!    `1..=`[`MAX_WORKERS`] (a value that is not a whole number is ignored, with a `tracing`
//!    warning);
//! 3. else the machine's available parallelism.
//!
//! ```
//! let pool = brigade::ThreadPool::builder().workers(3).build()?;
//! assert_eq!(pool.workers(), 3);
//! let err = brigade::EventLoop::builder().workers(0).build().unwrap_err();
//! assert_eq!(err, brigade::BuildError::NoWorkers(0));
//! # Ok::<(), brigade::BuildError>(())
//! ```

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::error::BuildError;

/// The largest pool brigade builds.
///
/// ```
/// use brigade::{ThreadPool, pool::MAX_WORKERS};
/// assert!(ThreadPool::builder().workers(MAX_WORKERS).build().is_ok());
/// assert!(ThreadPool::builder().workers(MAX_WORKERS + 1).build().is_err());
/// ```
pub const MAX_WORKERS: usize = 1024;

/// The environment variable that sets every pool's default worker count (clamped to
/// 1..=[`MAX_WORKERS`]); a builder's `workers(n)` overrides it. A value that is not a whole
/// number is ignored with a warning through `tracing`.
///
/// ```sh
/// BRIGADE_WORKERS=4 cargo run --release --example parallel_sum
/// ```
///
/// ```
/// assert_eq!(brigade::pool::WORKERS_ENV, "BRIGADE_WORKERS");
/// ```
pub const WORKERS_ENV: &str = "BRIGADE_WORKERS";

/// The worker count a builder asked for, checked, or the default: every pool's rule (see the
/// [module docs](self)).
pub(crate) fn worker_count(asked: Option<usize>) -> Result<usize, BuildError> {
    match asked {
        Some(0) => Err(BuildError::NoWorkers(0)),
        Some(asked) if asked > MAX_WORKERS => Err(BuildError::TooManyWorkers {
            asked,
            max: MAX_WORKERS,
        }),
        Some(asked) => Ok(asked),
        None => Ok(default_workers(std::env::var(WORKERS_ENV).ok().as_deref())),
    }
}

/// The default worker count, from the environment variable's value if any.
fn default_workers(from_env: Option<&str>) -> usize {
    if let Some(value) = from_env {
        match value.trim().parse::<usize>() {
            Ok(n) => return n.clamp(1, MAX_WORKERS),
            Err(_) => tracing::warn!(
                value,
                "brigade: ignoring {WORKERS_ENV}, which is not a whole number"
            ),
        }
    }
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// How a pool shuts down: every pool's `shutdown(how)` takes one, as Python's
/// `Executor.shutdown(wait, cancel_futures)` takes two flags.
///
/// | | pending tasks (not started) | running tasks | the call returns |
/// |---|---|---|---|
/// | [`Shutdown::graceful()`] (the default, and what dropping the last handle does) | run | finish | when every accepted task is done and every worker has left |
/// | [`Shutdown::cancel_pending()`] | cancelled ([`Error::Cancelled`](crate::Error::Cancelled)) | finish | when the running tasks are done and every worker has left |
/// | `…​.no_wait()` | as above | as above | at once; the work goes on in the background |
/// | `…​.timeout(d)` | as above | as above | when done, or after `d` at the latest |
///
/// A running task is never abandoned by a shutdown: threads cannot be stopped from outside,
/// and an async task is only cancelled when asked to. To stop running work now, cancel its
/// tasks (the event loop stops them at their next `.await`) or, for processes,
/// [`ProcessPool::kill_workers`](crate::ProcessPool::kill_workers).
///
/// Every pool's `shutdown` returns `true` when the pool was fully stopped on return (every
/// accepted task done, every worker gone), `false` when it returned before that (`no_wait`,
/// a passed timeout, or called from one of the pool's own tasks, which cannot wait for
/// itself). Shutting down twice is harmless; after a shutdown every submission is refused.
///
/// ```
/// use std::time::Duration;
/// use brigade::{Shutdown, ThreadPool};
///
/// let pool = ThreadPool::new();
/// let task = pool.submit(|| 6 * 7);
/// assert!(pool.shutdown(Shutdown::graceful().timeout(Duration::from_secs(60))));
/// assert_eq!(task.result(), Ok(42));
/// assert!(pool.is_shut_down());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    wait: bool,
    cancel_pending: bool,
    timeout: Option<Duration>,
}

impl Shutdown {
    /// Run everything already accepted and wait for it: the default, and what dropping a
    /// pool's last handle does.
    ///
    /// ```
    /// assert_eq!(brigade::Shutdown::graceful(), brigade::Shutdown::default());
    /// ```
    pub const fn graceful() -> Self {
        Self {
            wait: true,
            cancel_pending: false,
            timeout: None,
        }
    }

    /// Cancel the tasks that have not started, and wait for the running ones (Python's
    /// `shutdown(cancel_futures=True)`).
    ///
    /// ```
    /// use brigade::{Error, Shutdown, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    /// let running = pool.submit(move || { started_tx.send(()).unwrap(); wait_for_go.recv().unwrap() });
    /// started.recv().unwrap();
    /// let queued = pool.submit(|| 1);
    /// go.send(()).unwrap();
    /// pool.shutdown(Shutdown::cancel_pending());
    /// assert_eq!(running.result(), Ok(()));
    /// assert!(matches!(queued.result(), Err(Error::Cancelled) | Ok(1)));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub const fn cancel_pending() -> Self {
        Self {
            wait: true,
            cancel_pending: true,
            timeout: None,
        }
    }

    /// Return at once instead of waiting; the pool finishes in the background.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// pool.shutdown(brigade::Shutdown::cancel_pending().no_wait());
    /// assert!(pool.is_shut_down());
    /// ```
    pub const fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }

    /// Wait at most `limit` (any huge duration means no limit); the pool finishes in the
    /// background after that.
    pub const fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Whether the call waits at all.
    pub const fn waits(&self) -> bool {
        self.wait
    }

    /// Whether pending tasks are cancelled.
    pub const fn cancels_pending(&self) -> bool {
        self.cancel_pending
    }

    /// The longest the call waits, if limited.
    pub const fn wait_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The moment the wait gives up, measured from now: `None` to wait as long as it takes
    /// (also for a limit too large to add to the clock).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.timeout.and_then(|t| Instant::now().checked_add(t))
    }
}

impl Default for Shutdown {
    /// [`Shutdown::graceful`].
    fn default() -> Self {
        Self::graceful()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_count_from_environment_is_clamped_and_validated() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(default_workers(Some("3")), 3);
        assert_eq!(default_workers(Some(" 5\n")), 5);
        assert_eq!(default_workers(Some("0")), 1);
        assert_eq!(default_workers(Some("999999")), MAX_WORKERS);
        assert_eq!(default_workers(Some("lots")), cores);
        assert_eq!(default_workers(Some("-2")), cores);
        assert_eq!(default_workers(None), cores);
    }

    #[test]
    fn asked_counts_are_checked() {
        assert_eq!(worker_count(Some(0)), Err(BuildError::NoWorkers(0)));
        assert_eq!(
            worker_count(Some(MAX_WORKERS + 1)),
            Err(BuildError::TooManyWorkers {
                asked: MAX_WORKERS + 1,
                max: MAX_WORKERS
            })
        );
        assert_eq!(worker_count(Some(7)), Ok(7));
    }

    #[test]
    fn a_huge_timeout_means_no_deadline() {
        assert_eq!(Shutdown::graceful().timeout(Duration::MAX).deadline(), None);
        assert!(
            Shutdown::graceful()
                .timeout(Duration::from_secs(1))
                .deadline()
                .is_some()
        );
    }
}
