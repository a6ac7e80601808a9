//! The event loop: many tasks on few threads, for I/O-bound work with many slow connections.
//!
//! [`EventLoop`] runs futures on tokio's multi-thread runtime, so tokio's reactor, timers and
//! I/O types (and everything built on them: hyper, reqwest, tonic, …) work inside its tasks.
//! [`spawn`](EventLoop::spawn) hands back the same [`Task`] as the other lanes.
//!
//! | you want | use |
//! |---|---|
//! | run a future, get a handle | [`EventLoop::spawn`] → [`Task`] |
//! | wait for a future from sync code | [`EventLoop::block_on`], or [`Task::result`] |
//! | run blocking code from async code | [`EventLoop::to_thread`], or `pool.submit(f).await` on a [`ThreadPool`](crate::ThreadPool) |
//! | all results, in order | [`gather`], [`gather_results`] |
//! | fail together | [`TaskGroup`] |
//! | give up after a while | [`timeout`] |
//! | an async function over many inputs, a few at a time | [`EventLoop::map_limited`] |
//!
//! # Cancelling: tasks versus threads
//!
//! [`Task::cancel`] on an async task that is *running* stops it at its next `.await`: the
//! future is dropped there (its destructors run) and the task ends with
//! [`Error::Cancelled`]. A thread cannot be stopped that way, so a running thread-pool task
//! is never interrupted. Code between two awaits always runs to the next await; a loop that
//! never awaits cannot be cancelled.
//!
//! # Blocking detection
//!
//! One blocking call (`std::thread::sleep`, a synchronous read, a long computation) inside
//! async code freezes every task that shares its worker. brigade times every poll of every
//! task. A poll longer than the loop's threshold (10 ms unless
//! [configured](Builder::blocking_threshold)) flags the task's *spawn site*, the line of code
//! that called `spawn`, and logs one `tracing` warning naming it. From then on:
//!
//! * tasks spawned from a flagged site run on the loop's *blocking lane*: threads that are
//!   small event loops of their own (tokio current-thread runtimes, with timers and I/O). A new
//!   task goes to a lane thread that is not inside a poll; when all are, the lane grows by a
//!   thread (up to 64). Blocking there stalls no worker, and the task still awaits cheaply, so
//!   a site flagged for a one-off hiccup loses little;
//! * tasks from that site that were already on a worker hand the worker over to another
//!   thread for each of their polls (`tokio::task::block_in_place`), so the loop keeps turning.
//!
//! The user's code does not change.
//!
//! On Linux, time the thread spent waiting for a CPU (a busy machine preempting an innocent
//! poll) is not held against the task: a poll is slow only if its own time passes the
//! threshold.
//!
//! [`EventLoop::blocking_report`] lists every site with its poll counts, longest and total
//! poll time. Timing costs two clock reads per poll (see the `tiny-async` benchmark). The
//! first slow poll of a site still stalls its worker: detection learns from it, it cannot undo
//! it.

mod blocking_lane;
mod detect;
mod driver;
mod gather;
mod group;
mod map_limited;
mod sched;
mod timeout;

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

pub use detect::SiteReport;
pub use gather::{gather, gather_results};
pub use group::{GroupError, GroupJoin, GroupSpawner, TaskGroup};
pub use timeout::{Timeout, timeout, timeout_at};

use crate::error::{BuildError, Error};
use crate::task::Task;
use crate::task::promise::Promise;
use blocking_lane::BlockingLane;
use detect::{Sites, Stats};
use driver::{Control, ControlRef, Driver};

/// The blocking threshold unless configured: a poll longer than this flags its spawn site.
///
/// ```
/// assert_eq!(brigade::event_loop::DEFAULT_BLOCKING_THRESHOLD.as_millis(), 10);
/// ```
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(10);

/// An event loop: tokio's multi-thread runtime, with brigade's [`Task`] handles and blocking
/// detection.
///
/// Cloning gives another handle to the same loop. When the last handle goes, the loop shuts
/// down without waiting: tasks that have not finished end with [`Error::ShutDown`] (a task
/// blocked inside a poll, or a [`to_thread`](Self::to_thread) closure, finishes that in the
/// background first).
///
/// ```
/// use std::time::Duration;
/// use brigade::EventLoop;
///
/// let lp = EventLoop::new();
/// let task = lp.spawn(async {
///     tokio::time::sleep(Duration::from_millis(1)).await;
///     "slept"
/// });
/// assert_eq!(task.result(), Ok("slept")); // sync code waits on an async task
/// ```
#[derive(Clone)]
pub struct EventLoop {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Some` until dropped; taken out in `drop` to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    sites: Sites,
    lane: BlockingLane,
    workers: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // A plain drop would wait for blocking threads, and panics when the last handle
            // goes inside a task (tokio #5273's cousin). Neither may happen to a user.
            runtime.shutdown_background();
        }
    }
}

/// Configures an [`EventLoop`] (see [`EventLoop::builder`]).
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    threshold: Duration,
    thread_name: String,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            threshold: DEFAULT_BLOCKING_THRESHOLD,
            thread_name: "brigade-loop".to_owned(),
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

    /// Starts the loop's threads.
    ///
    /// ```
    /// use brigade::{BuildError, EventLoop};
    /// assert_eq!(EventLoop::builder().workers(0).build().err(), Some(BuildError::NoWorkers(0)));
    /// ```
    pub fn build(self) -> Result<EventLoop, BuildError> {
        let workers = crate::pool::worker_count(self.workers)?;
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
                runtime: Some(runtime),
                sites: Sites::new(self.threshold),
                lane: BlockingLane::new(&self.thread_name),
                workers,
            }),
        })
    }
}

/// [`EventLoop::block_on`] was called where it would block the loop it waits on.
///
/// ```
/// use brigade::EventLoop;
/// use brigade::event_loop::BlockOnError;
///
/// let lp = EventLoop::new();
/// let inner = lp.clone();
/// let task = lp.spawn(async move { inner.block_on(async { 1 }) });
/// assert_eq!(task.result().unwrap(), Err(BlockOnError::InsideLoop));
/// // Under `#[tokio::main]`, or inside another `block_on`, too:
/// assert_eq!(lp.block_on(async { lp.block_on(async { 2 }) }), Ok(Err(BlockOnError::InsideLoop)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockOnError {
    /// The caller is inside an event loop (brigade's or tokio's): a task, a `block_on` (such
    /// as `#[tokio::main]`'s), or any thread inside tokio's runtime context. Blocking there
    /// would stall that loop, and could deadlock it. `.await` the future instead, or, from a
    /// thread that may block, [`spawn`](EventLoop::spawn) it and wait with
    /// [`Task::result`].
    #[error(
        "block_on called from inside an event loop; `.await` the future, or spawn it and await its Task"
    )]
    InsideLoop,
}

impl EventLoop {
    /// A loop with one worker per core and the default blocking threshold.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert!(lp.workers() >= 1);
    /// ```
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts configuring a loop.
    ///
    /// ```
    /// let lp = brigade::EventLoop::builder().workers(1).build().unwrap();
    /// assert_eq!(lp.spawn(async { 2 }).result(), Ok(2));
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// How many worker threads the loop has.
    ///
    /// ```
    /// assert_eq!(brigade::EventLoop::builder().workers(3).build().unwrap().workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Runs `future` as a task of this loop and returns its handle.
    ///
    /// The task is *pending* until a worker first polls it (a [`cancel`](Task::cancel) then
    /// stops it before it runs), then *running*. A running task's `cancel` stops it at its next
    /// `.await`. A panic inside the future becomes [`Error::Panicked`]. Dropping the handle
    /// detaches the task: it still runs.
    ///
    /// The caller's location is the task's *spawn site* for blocking detection: once a task
    /// from this line of code has blocked a worker, new tasks from it run on the blocking lane
    /// (see the [module docs](self#blocking-detection)).
    ///
    /// ```
    /// use brigade::EventLoop;
    ///
    /// let lp = EventLoop::new();
    /// let lp2 = lp.clone();
    /// let outer = lp.spawn(async move {
    ///     let inner = lp2.spawn(async { 20 });
    ///     inner.await.unwrap() + 1 // awaiting a task does not block a worker
    /// });
    /// assert_eq!(outer.result(), Ok(21));
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_at(Location::caller(), future, false).0
    }

    /// Runs `future` as a task that cancellation does not reach, like `asyncio.shield`: the
    /// work goes on when whatever waits for it gives up.
    ///
    /// The handle's [`cancel`](Task::cancel) answers `false` (the task counts as running from
    /// the start, and is not interrupted), so a [`gather`] or [`TaskGroup`] that cancels the
    /// tasks it holds, a cancelled task that was awaiting it, or a [`timeout`] that expires
    /// around it, all leave it running; dropping the handle detaches it as always. The
    /// caller's location is its spawn site, as with [`spawn`](Self::spawn).
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Error, EventLoop};
    /// use brigade::event_loop::{gather, timeout};
    ///
    /// let lp = EventLoop::new();
    /// let (saved_tx, saved) = std::sync::mpsc::channel();
    /// let save = lp.shield(async move {
    ///     tokio::time::sleep(Duration::from_millis(20)).await; // a write that must finish
    ///     saved_tx.send("saved").unwrap();
    /// });
    /// assert!(!save.cancel());
    /// let waited = lp.block_on(timeout(Duration::from_millis(1), gather([save]))).unwrap();
    /// assert_eq!(waited, Err(Error::TimedOut)); // the gather gave up and cancelled what it held...
    /// assert_eq!(saved.recv().unwrap(), "saved"); // ...but the shielded work finished
    /// ```
    #[track_caller]
    pub fn shield<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_at(Location::caller(), future, true).0
    }

    fn spawn_at<F>(
        &self,
        site: &'static Location<'static>,
        future: F,
        shielded: bool,
    ) -> (Task<F::Output>, ControlRef<F::Output>)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let site = self.inner.sites.get(site);
        let flagged = site.is_flagged();
        let (mut promise, task) =
            Promise::<F::Output, (), Control>::new((), Control::new(shielded));
        if shielded {
            // Running from the start, so that no cancel ever claims it.
            let _ = promise.start();
        }
        let control = promise.share_extra();
        let driver = Driver::new(future, promise, Stats::new(site), flagged);
        let on_worker = if flagged {
            self.inner.lane.spawn(driver).err().map(Driver::for_worker)
        } else {
            Some(driver)
        };
        if let Some(driver) = on_worker {
            control.keep(self.inner.handle.spawn(driver));
        }
        (task, control)
    }

    /// Runs `future` to completion on the calling thread, with this loop's reactor and timers,
    /// and returns its output: the entry point from synchronous code.
    ///
    /// Called from inside an event loop (a task of any loop, another runtime's `block_on` such
    /// as `#[tokio::main]`'s, or any thread in tokio's runtime context other than this loop's
    /// [`to_thread`](Self::to_thread) threads), it returns [`BlockOnError::InsideLoop`] instead
    /// of blocking the loop (tokio panics there). Inside async code, `.await` instead; from a
    /// thread that may block, `spawn(future).result()` works anywhere.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let sum = lp.block_on(async {
    ///     let tasks: Vec<_> = (1..=3u32).map(|n| tokio::spawn(async move { n })).collect();
    ///     let mut sum = 0;
    ///     for t in tasks {
    ///         sum += t.await.unwrap();
    ///     }
    ///     sum
    /// });
    /// assert_eq!(sum, Ok(6));
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, BlockOnError> {
        if driver::inside_a_loop() {
            return Err(BlockOnError::InsideLoop);
        }
        Ok(self.inner.handle.block_on(future))
    }

    /// Runs blocking `work` on the loop's blocking threads (tokio's elastic pool) and returns
    /// its handle, which async code can `.await` without blocking a worker: the event loop's
    /// `asyncio.to_thread`.
    ///
    /// Like any thread, it can be cancelled only before it starts. A panic becomes
    /// [`Error::Panicked`]. For CPU-bound work, prefer a [`ThreadPool`](crate::ThreadPool)
    /// sized to the cores: `pool.submit(f).await` works the same way from async code.
    ///
    /// ```
    /// use brigade::{EventLoop, ThreadPool};
    ///
    /// let lp = EventLoop::new();
    /// let pool = ThreadPool::new();
    /// let lp2 = lp.clone();
    /// let task = lp.spawn(async move {
    ///     let read = lp2.to_thread(|| std::fs::read_to_string("Cargo.toml").map(|s| s.len()));
    ///     let summed = pool.submit(|| (1..=100u64).sum::<u64>());
    ///     (read.await.unwrap().unwrap() > 0, summed.await.unwrap())
    /// });
    /// assert_eq!(task.result(), Ok((true, 5050)));
    /// ```
    pub fn to_thread<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (mut promise, task) = Promise::<T, F>::new(work, ());
        drop(self.inner.handle.spawn_blocking(move || {
            if let Some(work) = promise.start() {
                let outcome = driver::blocking_allowed(|| catch_unwind(AssertUnwindSafe(work)))
                    .map_err(|payload| Error::from_panic(&*payload));
                promise.complete(outcome);
            }
        }));
        task
    }

    /// Every spawn site seen so far, with its poll statistics, most total poll time first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::EventLoop;
    ///
    /// let lp = EventLoop::builder().blocking_threshold(Duration::from_millis(5)).build().unwrap();
    /// let blocking = lp.spawn(async { std::thread::sleep(Duration::from_millis(20)) });
    /// blocking.result().unwrap();
    /// let report = lp.blocking_report();
    /// assert!(report[0].flagged && report[0].slow_polls == 1);
    /// assert!(report[0].worst >= Duration::from_millis(20));
    /// ```
    pub fn blocking_report(&self) -> Vec<SiteReport> {
        self.inner.sites.report()
    }
}

impl Default for EventLoop {
    /// The same as [`EventLoop::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("workers", &self.inner.workers)
            .finish_non_exhaustive()
    }
}
