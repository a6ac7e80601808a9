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
//! | fail together, cancel together | [`TaskGroup`] ([`EventLoop::group`]) |
//! | give up after a while (any future) | [`timeout`], [`timeout_at`] |
//! | work that must not be cancelled with its waiter | [`EventLoop::shield`] |
//! | wait on tasks of any lane without blocking the loop | [`wait_async`](crate::wait_async), [`as_completed_async`](crate::as_completed_async) |
//! | an async function over many inputs, a few at a time | [`EventLoop::map_limited`] |
//! | stop the loop | [`EventLoop::shutdown`], or drop the last handle (see [Shutting down](#shutting-down)) |
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
//! task. Polls longer than the loop's threshold (10 ms unless
//! [configured](Builder::blocking_threshold)) flag the task's *spawn site*, the line of code
//! that called `spawn`, once they are a quarter or more of the site's recent polls (about the
//! last 16): a site whose first poll blocks is flagged at once, one that had been quick within
//! a few blocking polls, while a few stalls among many quick polls (a thousand connections
//! opening at once) flag nothing. Flagging logs one `tracing` warning naming the site (target
//! `brigade::event_loop`, with the fields `site`, `file`, `line`, `column`, `poll_ms` and
//! `threshold_ms`; silent unless the program installs a subscriber). From then on:
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
//!
//! # Shutting down
//!
//! [`EventLoop::shutdown`] takes the same [`Shutdown`] as every pool; after it (or once the
//! last handle is gone), [`spawn`](EventLoop::spawn) hands back tasks already failed with
//! [`Error::ShutDown`] and [`try_spawn`](EventLoop::try_spawn) gives the future back.
//!
//! | | pending tasks (never polled) | running tasks (polled, not finished) | the call returns |
//! |---|---|---|---|
//! | [`Shutdown::graceful()`] | run | finish | when every task is done and the loop's threads have left |
//! | [`Shutdown::cancel_pending()`] | cancelled: never run | **cancelled at their next `.await`** | when they have stopped and the threads have left |
//! | `…​.no_wait()`, or called inside async code | as above | as above | at once (`false`); the loop finishes in the background |
//! | `…​.timeout(d)` | as above | as above | when done, or after `d` at the latest |
//! | dropping the last handle | as `graceful` for up to the [drop grace](Builder::drop_grace) (5 s by default), then as `cancel_pending` | | when stopped, or when the grace runs out; at once inside async code |
//!
//! Unlike a thread, an async task can be stopped at an `.await` (see above), and on an event
//! loop "running" mostly means "waiting at an `.await`" for a long while (a server's accept
//! loop, a heartbeat), so `cancel_pending` cancels those too, as `asyncio.run` does with the
//! tasks left at its end: their futures are dropped, and their handles say
//! [`Error::Cancelled`]. A poll in progress (code between two awaits, or blocking code) is
//! never cut short: it runs to its end first. [`shield`](EventLoop::shield)ed tasks are
//! cancelled too.
//!
//! A shutdown never waits where waiting could deadlock or block a loop: called (or the last
//! handle dropped) inside async code (a task of this loop or another, a `block_on`, a
//! [`to_thread`](EventLoop::to_thread) closure), it returns at once and the loop finishes on
//! a thread of its own. The drop grace bounds how long a dropped loop can keep its caller
//! waiting for a task that never ends. Graceful waits count brigade's tasks (`spawn`,
//! `shield`, `to_thread`, a group's children, `map_limited`'s calls); raw `tokio::spawn`
//! tasks inside the loop are not waited for, and are dropped when the loop stops.

mod blocking_lane;
mod builder;
mod detect;
mod driver;
mod gather;
mod group;
mod map_limited;
mod sched;
mod shutdown;
mod spawn;
mod stripe;
mod timeout;

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

pub use builder::Builder;
pub use detect::SiteReport;
pub use gather::{Gather, GatherResults, gather, gather_results};
pub use group::{GroupError, GroupJoin, GroupSpawner, TaskGroup};
pub use timeout::{Timeout, timeout, timeout_at};

use crate::error::{Error, SubmitError};
use crate::pool::Shutdown;
use crate::sync::Mutex;
use crate::task::Task;
use crate::task::origin::{LaneName, Origin};
use crate::task::promise::Promise;
use blocking_lane::BlockingLane;
use detect::Sites;

use shutdown::{LoopState, Parts, ThreadHooks};

/// The blocking threshold unless configured: a poll longer than this flags its spawn site.
///
/// ```
/// assert_eq!(brigade::event_loop::DEFAULT_BLOCKING_THRESHOLD.as_millis(), 10);
/// ```
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(10);

/// How long dropping a loop's last handle waits for its tasks before cancelling the rest,
/// unless [configured](Builder::drop_grace).
///
/// ```
/// assert_eq!(brigade::event_loop::DEFAULT_DROP_GRACE.as_secs(), 5);
/// ```
pub const DEFAULT_DROP_GRACE: Duration = Duration::from_secs(5);

/// An event loop: tokio's multi-thread runtime, with brigade's [`Task`] handles and blocking
/// detection.
///
/// Cloning gives another handle to the same loop. When the last handle goes, the loop shuts
/// down gracefully, for a while: it waits up to its [drop grace](Builder::drop_grace) (5 s
/// by default) for its tasks to finish, then cancels the ones left at their next `.await`.
/// Dropped inside async code, it does not wait at all. See
/// [Shutting down](self#shutting-down).
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
    /// `Some` until a shutdown hands it to the finisher.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    sites: Sites,
    lane: Arc<BlockingLane>,
    state: &'static LoopState,
    workers: usize,
    drop_grace: Duration,
    thread_name: String,
}

impl Inner {
    /// Starts taking the loop down, if no one has yet: the finisher thread gets the runtime.
    fn start_finisher(&self) {
        if !self.state.claim_finishing() {
            return;
        }
        let Some(runtime) = self.runtime.lock().take() else {
            return;
        };
        let parts = Parts {
            runtime,
            lane: Arc::clone(&self.lane),
        };
        let state = self.state;
        // The parts travel in a slot, so that they come back if the thread cannot start.
        let slot = Arc::new(Mutex::new(Some(parts)));
        let theirs = Arc::clone(&slot);
        let started = std::thread::Builder::new()
            .name(format!("{}-shutdown", self.thread_name))
            .spawn(move || {
                if let Some(parts) = theirs.lock().take() {
                    state.finish(parts, true);
                }
            });
        if started.is_err()
            && let Some(parts) = slot.lock().take()
        {
            // No thread to wait on: stop at once, without blocking here.
            state.finish(parts, false);
        }
    }

    fn shutdown(&self, how: Shutdown, cancel_after: Option<Duration>) -> bool {
        self.state.close(how.cancels_pending(), cancel_after);
        self.start_finisher();
        if !how.waits() || shutdown::must_not_wait() {
            return self.state.is_stopped();
        }
        self.state.wait_stopped(how.deadline())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let grace = self.drop_grace;
        self.shutdown(Shutdown::graceful().timeout(grace), Some(grace));
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
    /// The loop was shut down (see [`EventLoop::shutdown`]): its timers and I/O are going or
    /// gone.
    #[error("block_on called on an event loop that is shut down")]
    ShutDown,
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
    /// detaches the task: it still runs. After [`shutdown`](Self::shutdown) the future is not
    /// run: the task is already failed with [`Error::ShutDown`] (see
    /// [`try_spawn`](Self::try_spawn) to get the future back instead).
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
        self.spawn_at(Location::caller(), future, false, false).0
    }

    /// Runs `future` like [`spawn`](Self::spawn), but hands the future back inside the error
    /// when the loop refuses it (after [`shutdown`](Self::shutdown)), as
    /// [`ThreadPool::try_submit`](crate::ThreadPool::try_submit) does.
    ///
    /// ```
    /// use brigade::{Error, EventLoop, Shutdown};
    ///
    /// let lp = EventLoop::new();
    /// assert_eq!(lp.try_spawn(async { 1 }).unwrap().result(), Ok(1));
    /// lp.shutdown(Shutdown::graceful());
    /// let refused = lp.try_spawn(async { 2 }).unwrap_err();
    /// assert_eq!(refused.reason(), &Error::ShutDown);
    /// let future = refused.into_inner(); // nothing is lost: run it elsewhere
    /// assert_eq!(EventLoop::new().block_on(future), Ok(2));
    /// ```
    #[track_caller]
    pub fn try_spawn<F>(&self, future: F) -> Result<Task<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.try_spawn_at(Location::caller(), future, false, false)
            .map(|(task, _)| task)
    }

    /// Runs `future` as a task that cancellation does not reach, like `asyncio.shield`: the
    /// work goes on when whatever waits for it gives up.
    ///
    /// The handle's [`cancel`](Task::cancel) answers `false` (the task counts as running from
    /// the start, and is not interrupted), so a [`gather`] or [`TaskGroup`] that cancels the
    /// tasks it holds, a cancelled task that was awaiting it, or a [`timeout`] that expires
    /// around it, all leave it running; dropping the handle detaches it as always. Only the
    /// loop's own [`shutdown`](Self::shutdown) with [`Shutdown::cancel_pending`] (or the end of
    /// a drop's grace) stops it, as `asyncio.run` does at exit. The caller's location is its
    /// spawn site, as with [`spawn`](Self::spawn).
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
        self.spawn_at(Location::caller(), future, true, false).0
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
        if self.inner.state.is_closed() {
            return Err(BlockOnError::ShutDown);
        }
        Ok(self.inner.handle.block_on(future))
    }

    /// Runs blocking `work` on the loop's blocking threads (tokio's elastic pool) and returns
    /// its handle, which async code can `.await` without blocking a worker: the event loop's
    /// `asyncio.to_thread`.
    ///
    /// Like any thread, it can be cancelled only before it starts. After a shutdown it is
    /// not run: the task is already failed with [`Error::ShutDown`]. A panic becomes
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
    #[track_caller]
    pub fn to_thread<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Some(live) = self.inner.state.admit() else {
            return Task::failed(Error::ShutDown);
        };
        let (mut promise, task) = Promise::<T, F, ThreadHooks>::new_at(
            work,
            ThreadHooks(self.inner.state),
            Origin::here(LaneName::Blocking),
        );
        drop(self.inner.handle.spawn_blocking(move || {
            if promise.extra().0.is_cancelling() {
                promise.complete(Err(Error::Cancelled)); // never started: cancelled, unrun
            } else if let Some(work) = promise.start() {
                let outcome = driver::blocking_allowed(|| catch_unwind(AssertUnwindSafe(work)))
                    .map_err(|payload| Error::from_panic(&*payload));
                promise.complete(outcome);
            }
            drop(live); // counted out only once its outcome is published
        }));
        task
    }

    /// Stops accepting work and shuts the loop down; see [`Shutdown`] for the choices, and
    /// [Shutting down](self#shutting-down) for what they mean on an event loop (in short:
    /// `cancel_pending` cancels running tasks at their next `.await` too). Returns `true` when
    /// the loop was fully stopped on return (every task done, every thread gone). Calling it
    /// again is harmless, and can turn a graceful shutdown into a cancelling one.
    ///
    /// Called inside async code (a task of any loop, a `block_on`, a `to_thread` closure) it
    /// never waits, since the caller may be one of the tasks it would wait for: it returns
    /// `false` and the loop finishes in the background.
    ///
    /// ```
    /// use brigade::{Error, EventLoop, Shutdown};
    ///
    /// let lp = EventLoop::new();
    /// let mut done = lp.spawn(async { 1 });
    /// assert_eq!(lp.block_on(&mut done), Ok(Ok(1))); // finished before the shutdown
    /// let forever = lp.spawn(std::future::pending::<()>());
    /// assert!(lp.shutdown(Shutdown::cancel_pending()));
    /// assert!(lp.is_shut_down());
    /// assert_eq!(forever.result(), Err(Error::Cancelled)); // stopped at its await
    /// assert_eq!(lp.spawn(async { 2 }).result(), Err(Error::ShutDown));
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> bool {
        self.inner.shutdown(how, None)
    }

    /// Whether [`shutdown`](Self::shutdown) was called: the loop takes no more work.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert!(!lp.is_shut_down());
    /// lp.shutdown(brigade::Shutdown::graceful().no_wait());
    /// assert!(lp.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.inner.state.is_closed()
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
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}
