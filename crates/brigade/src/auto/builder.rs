//! The [`Auto`] pool's builder.

use std::sync::Arc;
use std::time::Duration;

use super::blocking::BlockingLane;
use super::site::Sites;
use super::{
    AUTO_ENV, Auto, DEFAULT_BLOCKING_KEEP_ALIVE, DEFAULT_MAX_BLOCKING_THREADS, Inner, Lanes,
    Outstanding,
};
use crate::error::BuildError;
use crate::event_loop::EventLoop;
use crate::pool::worker_count;
use crate::sync::atomic::{AtomicBool, AtomicUsize};
use crate::sync::{Condvar, Mutex};
use crate::threads::ThreadPool;

/// Configures an [`Auto`] pool.
///
/// ```
/// use std::time::Duration;
///
/// let auto = brigade::auto::Auto::builder()
///     .workers(2)
///     .max_blocking_threads(128)
///     .blocking_keep_alive(Duration::from_secs(2))
///     .thread_name("router")
///     .build()?;
/// let name = auto.cpu().submit(|| std::thread::current().name().map(String::from));
/// assert_eq!(name.result().unwrap().as_deref(), Some("router-compute-0"));
/// # Ok::<(), brigade::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    max_blocking: usize,
    keep_alive: Duration,
    thread_name: String,
    measure: Option<bool>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            max_blocking: DEFAULT_MAX_BLOCKING_THREADS,
            keep_alive: DEFAULT_BLOCKING_KEEP_ALIVE,
            thread_name: "brigade-auto".to_owned(),
            measure: None,
        }
    }
}

impl Builder {
    /// Threads of the compute lane and of the event loop, each (1..=[`MAX_WORKERS`]);
    /// overrides `BRIGADE_WORKERS` (see [the worker-count rule](crate::pool)).
    ///
    /// [`MAX_WORKERS`]: crate::pool::MAX_WORKERS
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The most threads the blocking lane may have (default
    /// [`DEFAULT_MAX_BLOCKING_THREADS`]); at least 1, at most
    /// [`MAX_WORKERS`](crate::pool::MAX_WORKERS).
    pub fn max_blocking_threads(mut self, max: usize) -> Self {
        self.max_blocking = max;
        self
    }

    /// How long an idle blocking-lane thread lives (default
    /// [`DEFAULT_BLOCKING_KEEP_ALIVE`]).
    pub fn blocking_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// The prefix of the pool's thread names (default `brigade-auto`): `prefix-compute-N`,
    /// `prefix-loop`, `prefix-blocking`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Whether to measure and route (default: yes, unless [`AUTO_ENV`] says `off`). Off pins
    /// the defaults: closures on the compute lane, futures on the loop; hints still apply.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::builder().measure(false).build()?;
    /// auto.submit(|| ()).result().unwrap();
    /// assert!(auto.report().sites.is_empty());
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn measure(mut self, on: bool) -> Self {
        self.measure = Some(on);
        self
    }

    /// Builds the pool: the compute lane and the loop start their threads as usual, the
    /// blocking lane none until work needs one.
    ///
    /// ```
    /// use brigade::BuildError;
    /// let err = brigade::auto::Auto::builder().max_blocking_threads(0).build().unwrap_err();
    /// assert_eq!(err, BuildError::NoWorkers(0));
    /// ```
    pub fn build(self) -> Result<Auto, BuildError> {
        let workers = worker_count(self.workers)?;
        let max_blocking = worker_count(Some(self.max_blocking))?;
        let measuring = self.measure.unwrap_or_else(|| {
            !std::env::var(AUTO_ENV).is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "off" | "0" | "false"
                )
            })
        });
        let compute = ThreadPool::builder()
            .workers(workers)
            .thread_name(format!("{}-compute", self.thread_name))
            .build()?;
        let event_loop = EventLoop::builder()
            .workers(workers)
            .thread_name(format!("{}-loop", self.thread_name))
            // The router times polls itself; the loop's own detector would move tasks behind
            // its back.
            .blocking_threshold(Duration::MAX)
            .build()?;
        let blocking = BlockingLane::new(&self.thread_name, workers, max_blocking, self.keep_alive);
        Ok(Auto {
            inner: Arc::new(Inner {
                lanes: Arc::new(Lanes {
                    compute,
                    blocking,
                    futures: Outstanding {
                        count: AtomicUsize::new(0),
                        lock: Mutex::new(()),
                        zero: Condvar::new(),
                    },
                }),
                event_loop,
                sites: Sites::new(),
                measuring,
                closed: AtomicBool::new(false),
                workers,
            }),
        })
    }
}
