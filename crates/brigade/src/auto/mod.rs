//! The auto lane: brigade applies the choosing rule for you, by measurement.
//!
//! Every concurrency primer ends with a rule: CPU-bound work wants parallel workers, blocking
//! I/O wants threads, many slow connections want an event loop. [`Auto`] owns one of each
//! (a compute lane of one thread per core, never grown; an elastic blocking lane; an event
//! loop) and applies the rule *per call site*, from what the work did the last times it ran:
//!
//! ```
//! use std::time::Duration;
//! use brigade::auto::{Auto, Lane};
//!
//! let auto = Auto::new();
//! for _ in 0..8 {
//!     // Sleeps: this line's calls move to the blocking lane after a few samples.
//!     auto.submit(|| std::thread::sleep(Duration::from_millis(2))).result()?;
//! }
//! let sum = auto.submit(|| (0..1_000u64).sum::<u64>()); // computes: compute lane
//! let fetched = auto.spawn(async { 42 });              // a future: stays on the loop
//! assert_eq!((sum.result()?, fetched.result()?), (499_500, 42));
//!
//! let report = auto.report();
//! let sleeper = report.sites.iter().find(|s| s.calls == 8).unwrap();
//! assert_eq!(sleeper.lane, Some(Lane::Blocking));
//! println!("{report}"); // every site: lane, samples, cpu/wall, p50/p99, and every move
//! # Ok::<(), brigade::Error>(())
//! ```
//!
//! Every call returns the same [`Task`] as the other lanes; `wait`, `as_completed` and
//! `.await` work unchanged.
//!
//! # How a site is classified
//!
//! A call site is the line that called [`submit`](Auto::submit), [`spawn`](Auto::spawn) or
//! [`map`](Auto::map) (`#[track_caller]`, as the event loop's blocking detector uses).
//!
//! * **Closures.** Every call of a new site is *probed*: its wall time, its thread's CPU time,
//!   its voluntary and involuntary context switches and its wait for a core (see the table in
//!   the probe costs below). Each call splits into time on the CPU, time waiting for a core
//!   (the machine was busy: not the call's fault) and time *blocked* (asleep on I/O, a timer,
//!   a lock). After four calls the site is placed: mostly blocked → the **blocking lane**,
//!   otherwise (CPU-bound, or too short to matter, under 50 µs) → the **compute lane**. Until
//!   then its calls run on the blocking lane, whose growth is gated on CPU use, so a burst of
//!   CPU-bound calls from a new site does not get a thread each. A queued call from a site
//!   placed on the compute lane meanwhile is forwarded there when its turn comes.
//! * **Futures** stay on the event loop unless their polls are long (1 ms or more of the
//!   thread's own time) — long polls both a quarter of the polls or more and most of the
//!   poll time, over at least four probed long polls. Then each poll goes where its kind
//!   belongs: **a CPU-heavy poll is not a blocking call**, so CPU-heavy polls run on the
//!   compute lane and blocking ones on the blocking lane (the future still awaits I/O on the
//!   loop's reactor in between). A burst of slow polls among many quick ones (a thousand
//!   connections opening at once: 7 % of their polls slept several milliseconds in the kernel
//!   on locks the loop's own threads held) is no reason to move; a future whose long polls are
//!   rarer than one in four stays on the loop (hint it with [`Auto::blocking`] if it should
//!   not).
//! * **Hysteresis.** A site leaves the compute lane as soon as its recent time is mostly
//!   blocked (a blocked compute thread costs the whole pool a core), and comes back only after
//!   eight samples in a row say so; a future comes back to the loop after sixteen short polls
//!   in a row. Sampling never stops (one call in up to 1024 for tiny calls, every call for
//!   long ones), so no site is locked in; and a short call that suddenly runs long (it crossed
//!   a scheduler tick on the coarse clock, or took four times its usual wall time) makes the
//!   next calls probed.
//!
//! **Hints win over measurement**: [`Auto::cpu`] and [`Auto::blocking`] send a call to that
//! lane whatever its site measured, and `BRIGADE_AUTO=off` (or
//! [`Builder::measure(false)`](Builder::measure)) turns measurement off: closures go to the
//! compute lane, futures to the loop, and nothing is timed. Isolation is never guessed: a
//! [`ProcessPool`](crate::ProcessPool) task is submitted explicitly, though the report
//! suggests it for a site whose tasks panic.
//!
//! # Probe costs
//!
//! | read | cost here (2-core VM) | when |
//! |---|---|---|
//! | coarse monotonic clock (the last scheduler tick) | ~0.005 µs | after every other call |
//! | monotonic clock | ~0.03 µs | around every call of a site whose calls take ≥ 20 µs; every poll |
//! | `CLOCK_THREAD_CPUTIME_ID`: CPU time | ~0.5–0.7 µs | probed calls: every call of a new site, then 1 in N, N chosen to keep probing under ~1 % |
//! | `getrusage(RUSAGE_THREAD)`: voluntary and involuntary switches | ~0.4 µs | probed calls |
//! | `/proc/thread-self/schedstat`: wait for a core | ~1.2 µs | at most once a millisecond per thread, and at the end of probed calls over 200 µs |
//!
//! (`getrusage`'s own CPU times are not used: for a running thread they lag by up to a
//! scheduler tick, so a 1 ms computation read as 30 µs.)
//!
//! # The blocking lane
//!
//! Threads that may sleep, sized by feedback rather than a fixed cap (at most
//! [`Builder::max_blocking_threads`], 512 by default): a call known to sleep gets a thread at
//! once, CPU-bound work never more threads than cores, and a controller ticking every half
//! millisecond while the lane has work grows it from Little's law and when all its threads
//! are asleep, and holds growth when service time rises (a saturated disk) or memory is short.
//! Idle threads retire after [`Builder::blocking_keep_alive`].
//!
//! The rules react to *causes* (threads asleep, cores busy, service time rising) rather than
//! climbing on throughput. What was taken from where, and why:
//!
//! * **Little's law** (L = λW): to keep up with arrivals at rate λ that each hold a thread for
//!   W, a lane needs about λW threads. The controller measures λ and W and steps a quarter of
//!   the way towards λW per tick: the steady state. It says nothing about a burst that arrived
//!   before any call finished, hence the next two.
//! * **Go's sysmon hand-off**: Go does not wait for a thread stuck in a system call to come
//!   back; its monitor notices it and hands the processor to another thread. Likewise the
//!   controller looks at each running call's thread (its state in `/proc`) and, when it is
//!   seen asleep twice in a row, marks the call's site as one that sleeps: that site's queued
//!   and future calls get a thread at once, before its first call has even finished.
//! * **.NET's starvation detection and blocking injection**: when all pool threads are busy
//!   and work waits, .NET injects threads, slowly (about two a second) because its hill
//!   climber cannot tell blocked threads from busy ones; its maintainers proposed switching
//!   the climber off (dotnet/runtime PR #81406) for reacting late and noisily. Here the
//!   controller *can* tell them apart, so when every busy thread is asleep and work waits, the
//!   lane doubles at once (asleep threads cost no CPU), and threads seen on the CPU count
//!   against the cores instead: CPU-bound work that landed here never gets more threads than
//!   there are cores.
//! * **Netflix concurrency-limits, Gradient2**: compare a short-term average latency with a
//!   long-term one; when the short one rises well above it, more concurrency only queues
//!   somewhere else (a disk, a database), so stop growing. The controller applies that
//!   gradient to the lane's service time before any growth past the cores.
//!
//! Growth also stops when the system's available memory is under 5 % (or 64 MiB), or after a
//! thread failed to start.
//!
//! # Explain
//!
//! [`Auto::report`] lists per site: its lane, calls, probed samples, CPU/wall ratio, p50/p99
//! durations and every move with its reason; its `Display` prints that as a table. Each move
//! also emits a `tracing` event (level INFO, target `brigade::auto::site`).

mod blocking;
mod builder;
pub(crate) mod classify;
mod dispatch;
mod hinted;
mod probe;
mod report;
mod routed;
mod site;
mod sizing;

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::Builder;
pub use classify::Lane;
pub use hinted::Hinted;
pub use report::{BlockingStats, Move, Report, SiteReport, Work};

use crate::error::{Error, SubmitError};
use crate::event_loop::{BlockOnError, EventLoop};
use crate::map::Map;
use crate::pool::Shutdown;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};
use crate::task::Task;
use crate::threads::ThreadPool;
use blocking::BlockingLane;
use routed::Routed;
use site::Sites;

/// The environment variable that turns measurement off: `BRIGADE_AUTO=off` (or `0`, `false`)
/// pins the defaults (closures on the compute lane, futures on the loop). A builder's
/// [`measure`](Builder::measure) overrides it.
///
/// ```
/// assert_eq!(brigade::auto::AUTO_ENV, "BRIGADE_AUTO");
/// ```
pub const AUTO_ENV: &str = "BRIGADE_AUTO";

/// The blocking lane's default cap (tokio's `spawn_blocking` pool has the same).
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 512;

/// How long an idle blocking-lane thread lives by default (tokio's keep-alive too).
pub const DEFAULT_BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What the lanes share with the work in flight on them.
pub(crate) struct Lanes {
    compute: ThreadPool,
    blocking: BlockingLane,
    futures: Outstanding,
}

/// Futures in flight, so that a shutdown can wait for them.
struct Outstanding {
    count: AtomicUsize,
    lock: Mutex<()>,
    zero: Condvar,
}

impl Outstanding {
    fn started(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = self.lock.lock();
            self.zero.notify_all();
        }
    }

    /// Waits until no future is in flight, or `deadline`. True when none is.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut guard = self.lock.lock();
        while self.count.load(Ordering::Acquire) > 0 {
            // A short wait: `finished` does not hold the lock while it counts down.
            let step = Duration::from_millis(10);
            let step = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(step),
                    _ => return false,
                },
                None => step,
            };
            guard = self.zero.wait_timeout(guard, step);
        }
        true
    }
}

/// A pool that routes each call site to the lane its work belongs on, by measurement; see the
/// [module docs](self).
///
/// Cloning gives another handle to the same pool. When the last handle goes, the pool shuts
/// down gracefully for closures (queued calls run, and the call waits for them); futures end
/// as the event loop's do when it is dropped ([`Error::ShutDown`] unless finished).
///
/// ```
/// let auto = brigade::auto::Auto::new();
/// let tasks: Vec<_> = (1..=4u64).map(|n| auto.submit(move || n * n)).collect();
/// let squares: Vec<u64> = tasks.into_iter().map(|t| t.result().unwrap()).collect();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
#[derive(Clone)]
pub struct Auto {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Arc<Lanes>,
    event_loop: EventLoop,
    sites: Sites,
    measuring: bool,
    closed: AtomicBool,
    workers: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close(Shutdown::graceful(), false);
    }
}

impl Inner {
    fn close(&self, how: Shutdown, wait_for_futures: bool) -> bool {
        self.closed.store(true, Ordering::Release);
        let deadline = how.deadline();
        let futures_done = if how.waits() && wait_for_futures {
            self.lanes.futures.wait(deadline)
        } else {
            self.lanes.futures.count.load(Ordering::Acquire) == 0
        };
        let wait = how.waits().then_some(deadline);
        let blocking = self.lanes.blocking.shutdown(how.cancels_pending(), wait);
        let mut compute_how = if how.cancels_pending() {
            Shutdown::cancel_pending()
        } else {
            Shutdown::graceful()
        };
        if !how.waits() {
            compute_how = compute_how.no_wait();
        }
        if let Some(deadline) = deadline {
            compute_how = compute_how.timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let compute = self.lanes.compute.shutdown(compute_how);
        futures_done && blocking && compute
    }
}

impl Auto {
    /// A pool with the default sizes: compute lane and loop of `BRIGADE_WORKERS` or one
    /// thread per core each, a blocking lane of up to 512 threads.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// assert!(auto.workers() >= 1);
    /// ```
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts configuring a pool.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::builder().workers(2).max_blocking_threads(64).build()?;
    /// assert_eq!(auto.workers(), 2);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Threads of the compute lane (and workers of the event loop).
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// The compute lane, for what only it has: [`scope`](ThreadPool::scope) (tasks that
    /// borrow) and [`join`](ThreadPool::join).
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let data = vec![1u64, 2, 3, 4];
    /// let sum: u64 = auto.compute().scope(|s| {
    ///     let halves: Vec<_> = data.chunks(2).map(|h| s.spawn(move || h.iter().sum::<u64>())).collect();
    ///     halves.into_iter().map(|t| t.result().unwrap()).sum()
    /// });
    /// assert_eq!(sum, 10);
    /// ```
    pub fn compute(&self) -> &ThreadPool {
        &self.inner.lanes.compute
    }

    /// The event loop, for [`block_on`](EventLoop::block_on) and the loop's helpers.
    pub fn event_loop(&self) -> &EventLoop {
        &self.inner.event_loop
    }

    /// Runs `future` to completion on the calling thread with the loop's reactor and timers
    /// (see [`EventLoop::block_on`]).
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let task = auto.spawn(async { 6 * 7 });
    /// assert_eq!(auto.block_on(task), Ok(Ok(42)));
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, BlockOnError> {
        self.inner.event_loop.block_on(future)
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Runs `work` on the lane its call site belongs on and returns its [`Task`].
    ///
    /// After [`shutdown`](Self::shutdown) the work is not run: the task is already failed
    /// with [`Error::ShutDown`] (see [`try_submit`](Self::try_submit) to get it back).
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// assert_eq!(auto.submit(|| "hello".len()).result(), Ok(5));
    /// ```
    #[track_caller]
    pub fn submit<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_hinted(None, work)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// Like [`submit`](Self::submit), but hands the work back when the pool refuses it.
    ///
    /// ```
    /// use brigade::{Error, Shutdown};
    ///
    /// let auto = brigade::auto::Auto::new();
    /// auto.shutdown(Shutdown::graceful());
    /// let refused = auto.try_submit(|| 6 * 7).unwrap_err();
    /// assert_eq!(refused.reason(), &Error::ShutDown);
    /// assert_eq!(refused.into_inner()(), 42);
    /// ```
    #[track_caller]
    pub fn try_submit<F, T>(&self, work: F) -> Result<Task<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_hinted(None, work)
    }

    #[track_caller]
    fn submit_hinted<F, T>(&self, hint: Option<Lane>, work: F) -> Result<Task<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(SubmitError::new(work, Error::ShutDown));
        }
        let location = Location::caller();
        if !inner.measuring {
            return match hint {
                Some(Lane::Blocking) => Ok(self.to_blocking(None, location, true, work)),
                _ => inner.lanes.compute.try_submit(work),
            };
        }
        Ok(self.route_call(hint, location, work))
    }

    /// Runs `future` as a task: on the event loop, its polls shipped to the compute or the
    /// blocking lane if they prove long (see the [module docs](self)).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let auto = brigade::auto::Auto::new();
    /// let task = auto.spawn(async {
    ///     tokio::time::sleep(Duration::from_millis(1)).await;
    ///     "slept"
    /// });
    /// assert_eq!(task.result(), Ok("slept"));
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_hinted(None, future)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// Like [`spawn`](Self::spawn), but hands the future back when the pool refuses it.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// auto.shutdown(brigade::Shutdown::graceful());
    /// assert!(auto.try_spawn(async { 1 }).is_err());
    /// ```
    #[track_caller]
    pub fn try_spawn<F>(&self, future: F) -> Result<Task<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_hinted(None, future)
    }

    #[track_caller]
    fn spawn_hinted<F>(
        &self,
        hint: Option<Lane>,
        future: F,
    ) -> Result<Task<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(SubmitError::new(future, Error::ShutDown));
        }
        let location = Location::caller();
        if !inner.measuring && matches!(hint, None | Some(Lane::Loop)) {
            return Ok(inner.event_loop.spawn_from(location, future));
        }
        let site = self.arrive(location, Work::Futures, hint);
        let routed = Routed::new(future, site, hint, inner.lanes.clone());
        // Counted out by a done callback, which runs once the task counts as done: a shutdown
        // that waits for the count to reach zero returns with every task done.
        inner.lanes.futures.started();
        let task = inner.event_loop.spawn_from(location, routed);
        let lanes = inner.lanes.clone();
        task.add_done_callback(move |_| lanes.futures.finished());
        Ok(task)
    }

    /// Applies `f` to every item of `inputs`, routed by the `map` call's site; see [`Map`]
    /// for the knobs (chunk size, in flight, timeout, unordered).
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let squares: Vec<u64> = auto.map(1..=4u64, |x| x * x).map(Result::unwrap).collect();
    /// assert_eq!(squares, [1, 4, 9, 16]);
    /// ```
    #[track_caller]
    pub fn map<I, F, R>(&self, inputs: I, f: F) -> Map<I::IntoIter, F, R, Auto>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        Map::new(self.clone(), inputs.into_iter(), f, Location::caller())
    }

    /// Sends this call to the compute lane, whatever its site measured.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let task = auto.cpu().submit(|| (1..=20u64).product::<u64>());
    /// assert_eq!(task.result(), Ok(2_432_902_008_176_640_000));
    /// ```
    pub fn cpu(&self) -> Hinted {
        Hinted {
            auto: self.clone(),
            lane: Lane::Compute,
        }
    }

    /// Sends this call to the blocking lane, whatever its site measured.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let read = auto.blocking().submit(|| std::fs::read_to_string("Cargo.toml").is_ok());
    /// assert_eq!(read.result(), Ok(true));
    /// ```
    pub fn blocking(&self) -> Hinted {
        Hinted {
            auto: self.clone(),
            lane: Lane::Blocking,
        }
    }

    /// What the router decided and why: every call site, its lane, its measurements and its
    /// moves (see [`Report`]).
    pub fn report(&self) -> Report {
        let inner = &*self.inner;
        let mut sites: Vec<SiteReport> = inner.sites.all().iter().map(|s| s.report()).collect();
        sites.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| a.location.cmp(b.location))
        });
        Report {
            sites,
            compute_threads: inner.workers,
            loop_threads: inner.event_loop.workers(),
            blocking: inner.lanes.blocking.stats(),
            measuring: inner.measuring,
        }
    }

    /// Stops accepting work; see [`Shutdown`]. Waits (as `how` says) for every accepted
    /// closure *and future*; true when all are done and every lane thread is gone.
    ///
    /// ```
    /// use brigade::{Error, Shutdown};
    ///
    /// let auto = brigade::auto::Auto::new();
    /// let task = auto.submit(|| 1);
    /// let future = auto.spawn(async { 2 });
    /// assert!(auto.shutdown(Shutdown::graceful()));
    /// assert_eq!((task.result(), future.result()), (Ok(1), Ok(2)));
    /// assert_eq!(auto.submit(|| 3).result(), Err(Error::ShutDown));
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> bool {
        self.inner.close(how, true)
    }
}

impl Default for Auto {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Auto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auto")
            .field("workers", &self.inner.workers)
            .field("measuring", &self.inner.measuring)
            .field("blocking", &self.inner.lanes.blocking.stats())
            .finish_non_exhaustive()
    }
}
