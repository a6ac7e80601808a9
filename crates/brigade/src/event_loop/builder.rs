//! [`Builder`]: an event loop's configuration.

use std::sync::Arc;
use std::time::Duration;

use super::blocking_lane::BlockingLane;
use super::detect::Sites;
use super::shutdown::LoopState;
use super::{DEFAULT_BLOCKING_THRESHOLD, DEFAULT_DROP_GRACE, EventLoop, Inner};
use crate::error::BuildError;
use crate::sync::Mutex;

/// Configures an [`EventLoop`] (see [`EventLoop::builder`]).
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    threshold: Duration,
    thread_name: String,
    drop_grace: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            threshold: DEFAULT_BLOCKING_THRESHOLD,
            thread_name: "brigade-loop".to_owned(),
            drop_grace: DEFAULT_DROP_GRACE,
        }
    }
}

impl Builder {
    /// How many worker threads poll tasks (1..=[`MAX_WORKERS`](crate::pool::MAX_WORKERS));
    /// by default `BRIGADE_WORKERS` or the machine's available parallelism, as for every pool
    /// (see [the worker-count rule](crate::pool)).
    ///
    /// ```
    /// let lp = brigade::EventLoop::builder().workers(2).build()?;
    /// assert_eq!(lp.workers(), 2);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// A poll longer than this flags its spawn site as blocking (default
    /// [`DEFAULT_BLOCKING_THRESHOLD`]). `Duration::MAX` turns detection off; polls are still
    /// timed for [`EventLoop::blocking_report`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = brigade::EventLoop::builder().blocking_threshold(Duration::from_millis(50)).build()?;
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn blocking_threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// The name of the loop's threads (default `brigade-loop`).
    ///
    /// ```
    /// let lp = brigade::EventLoop::builder().thread_name("net").build()?;
    /// let name = lp.spawn(async { std::thread::current().name().map(str::to_owned) });
    /// assert_eq!(name.result()?.as_deref(), Some("net"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// How long dropping the loop's last handle waits for its tasks to finish before it
    /// cancels the ones left (default [`DEFAULT_DROP_GRACE`]); see
    /// [Shutting down](super#shutting-down). `Duration::ZERO` cancels them at once (as
    /// dropping a tokio runtime or leaving `asyncio.run` does); `Duration::MAX` waits as long
    /// as they take (as dropping a [`ThreadPool`](crate::ThreadPool) does).
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Error, EventLoop};
    ///
    /// let lp = EventLoop::builder().drop_grace(Duration::ZERO).build()?;
    /// let forever = lp.spawn(std::future::pending::<()>());
    /// drop(lp); // returns at once: the task is cancelled at its await
    /// assert_eq!(forever.result(), Err(Error::Cancelled));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn drop_grace(mut self, grace: Duration) -> Self {
        self.drop_grace = grace;
        self
    }

    /// Starts the loop's threads.
    ///
    /// ```
    /// use brigade::{BuildError, EventLoop};
    /// assert_eq!(EventLoop::builder().workers(0).build().err(), Some(BuildError::NoWorkers(0)));
    /// ```
    pub fn build(self) -> Result<EventLoop, BuildError> {
        let workers = crate::pool::worker_count(self.workers)?;
        // Calibrated now, so that no poll pays for it.
        super::sched::calibrate();
        let state = LoopState::leak();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(self.thread_name.clone())
            .enable_all()
            .build()
            .map_err(|e| BuildError::Runtime {
                message: e.to_string(),
            })?;
        Ok(EventLoop {
            inner: Arc::new(Inner {
                handle: runtime.handle().clone(),
                runtime: Mutex::new(Some(runtime)),
                sites: Sites::new(self.threshold),
                lane: Arc::new(BlockingLane::new(&self.thread_name)),
                state,
                workers,
                drop_grace: self.drop_grace,
                thread_name: self.thread_name,
            }),
        })
    }
}
