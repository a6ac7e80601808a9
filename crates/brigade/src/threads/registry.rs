//! The compute lane's shared state: queues, worker seats, and the sleep/wake protocol.
//!
//! # Waking workers without losing a wake-up or paying for needless ones
//!
//! Workers are *busy*, *searching* (spinning over the queues for a short while after running
//! out of work) or *asleep* (parked, listed in `sleepers`). A submitter pushes its job and then
//! wakes someone only if nobody is searching: a searcher will find the job. When the last
//! searcher finds a job and more work is queued, it wakes the next worker (so a burst fans out
//! one wake-up at a time, as in tokio's scheduler). A sleeper is taken off the list by the
//! waker and counted as searching at once, so a burst does not wake every sleeper.
//!
//! The lost-wake-up race (a worker decides to sleep just as a job arrives) is closed Dekker
//! style: the submitter pushes, issues a `SeqCst` fence and then reads the idle counts; a
//! worker going to sleep counts itself a sleeper, fences, and then re-checks the queues before
//! parking. At least one of the two sees the other. Parking is token based, so a wake-up that
//! arrives before the park is not lost either.
//!
//! Workers are started on demand: when a job finds no one searching and no one asleep, the job
//! is still queued, and the pool has fewer than its maximum, the submitter starts a worker. An
//! idle worker is always counted as searching or sleeping, never neither: a new worker counts
//! as searching from birth; a worker whose queues are empty counts as searching *before* it
//! publishes the outcome of its last task; and a worker moves between searching and sleeping
//! in one atomic step on one word that holds both counts. So work that follows a result
//! (submit, wait, submit, …) reuses the idle worker instead of starting another.

use std::io;
use std::sync::Arc;
use std::thread;

use crossbeam_deque::{Stealer, Worker};
use crossbeam_utils::CachePadded;

use super::inject::Injector;
use super::job::Job;
use super::worker::{self, Seat};
use crate::error::Error;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Condvar, Mutex, Parker, Unparker};

/// One searching worker in `Registry::idle`.
const SEARCHER: u64 = 1;
/// One sleeping worker in `Registry::idle`.
const SLEEPER: u64 = 1 << 32;
/// Turns a sleeper into a searcher when added (wrapping) to `Registry::idle`.
const SLEEPER_TO_SEARCHER: u64 = SEARCHER.wrapping_sub(SLEEPER);

fn searchers(idle: u64) -> u64 {
    idle & (SLEEPER - 1)
}

fn sleepers(idle: u64) -> u64 {
    idle >> 32
}

pub(crate) struct Registry {
    /// Work submitted from outside the workers; on a line of its own, as every submission
    /// and every search writes or reads it.
    pub(super) injector: CachePadded<Injector>,
    pub(super) stealers: Box<[Stealer<Job>]>,
    /// Each worker's deque and parker, waiting for the thread that will take them.
    seats: Box<[Mutex<Option<Seat>>]>,
    unparkers: Box<[Unparker]>,
    max: usize,
    /// Workers started so far; only ever grows, only under `spawn_lock`.
    started: AtomicUsize,
    spawn_lock: Mutex<()>,
    terminating: AtomicBool,
    /// Searching workers (low half) and sleeping workers (high half), packed in one word so
    /// that a submitter reads both in one consistent snapshot, and a worker moves from one to
    /// the other in one step. Workers write it on every search; on a line of its own, it does
    /// not drag the read-mostly fields above (read on every submission) through the caches.
    idle: CachePadded<AtomicU64>,
    /// Who is asleep, to wake exactly one.
    sleepers: Mutex<Vec<usize>>,
    /// Workers whose threads have not finished yet.
    live: Mutex<usize>,
    exited: Condvar,
    name: String,
    stack_size: Option<usize>,
    /// Runs on each worker thread before its first task.
    pub(super) initializer: Option<Initializer>,
    /// Why the pool broke (an initializer panicked); set once.
    broken: Mutex<Option<String>>,
    /// `broken` is set: checked without the lock, before `terminating`'s effects.
    is_broken: AtomicBool,
}

/// A worker thread's initializer: called with the worker's index.
pub(crate) type Initializer = Arc<dyn Fn(usize) + Send + Sync>;

impl Registry {
    pub(crate) fn new(
        max: usize,
        name: String,
        stack_size: Option<usize>,
        initializer: Option<Initializer>,
    ) -> Self {
        let mut stealers = Vec::with_capacity(max);
        let mut seats = Vec::with_capacity(max);
        let mut unparkers = Vec::with_capacity(max);
        for _ in 0..max {
            let local = Worker::new_lifo();
            let parker = Parker::new();
            stealers.push(local.stealer());
            unparkers.push(parker.unparker().clone());
            seats.push(Mutex::new(Some(Seat { local, parker })));
        }
        Self {
            injector: CachePadded::new(Injector::new()),
            stealers: stealers.into(),
            seats: seats.into(),
            unparkers: unparkers.into(),
            max,
            started: AtomicUsize::new(0),
            spawn_lock: Mutex::new(()),
            idle: CachePadded::new(AtomicU64::new(0)),
            sleepers: Mutex::new(Vec::with_capacity(max)),
            terminating: AtomicBool::new(false),
            live: Mutex::new(0),
            exited: Condvar::new(),
            name,
            stack_size,
            initializer,
            broken: Mutex::new(None),
            is_broken: AtomicBool::new(false),
        }
    }

    pub(crate) fn max_workers(&self) -> usize {
        self.max
    }

    #[inline]
    pub(crate) fn started_workers(&self) -> usize {
        self.started.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::SeqCst)
    }

    /// Whether any queue holds a job.
    pub(super) fn has_work(&self) -> bool {
        !self.injector.is_empty()
            || self.stealers[..self.started_workers()]
                .iter()
                .any(|s| !s.is_empty())
    }

    /// Whether a worker may leave: the pool is shutting down and no work is queued.
    pub(super) fn should_exit(&self) -> bool {
        if !self.is_terminating() {
            return false;
        }
        // Pairs with the fence in `notify_one`: a job pushed by a submitter that had not yet
        // seen `terminating` is visible here, so it is run rather than stranded.
        fence(Ordering::SeqCst);
        !self.has_work()
    }

    /// Queues a job: on the current worker's own deque when called from one of this pool's
    /// workers, else on the shared injector. Then makes sure someone will run it.
    pub(crate) fn push(self: &Arc<Self>, job: Job) {
        if let Err(job) = worker::push_local(self, job) {
            self.injector.push(job);
        }
        self.notify_one();
        if self.is_terminating()
            && (self.is_broken.load(Ordering::SeqCst) || *self.live.lock() == 0)
        {
            // Pushed while the last worker was leaving (nobody will run it), or into a broken
            // pool (nobody may).
            self.drain(self.refusal());
        }
    }

    /// A cheaper [`notify_one`](Self::notify_one) for work whose owner runs it anyway if
    /// nobody takes it (the second half of a join): no fence, so a worker falling asleep at
    /// this very moment may be missed, which costs only a little parallelism until the next
    /// such job, never progress.
    #[inline]
    pub(super) fn hint_one(self: &Arc<Self>) {
        let idle = self.idle.load(Ordering::Relaxed);
        if searchers(idle) == 0
            && (sleepers(idle) > 0 || self.started.load(Ordering::Relaxed) < self.max)
        {
            self.notify_one();
        }
    }

    /// Whether the pool takes new work from outside its workers: not once it is shutting
    /// down ([`Error::ShutDown`]), nor if it cannot start its first thread
    /// ([`Error::Spawn`]).
    #[inline]
    pub(crate) fn admit(self: &Arc<Self>) -> Result<(), Error> {
        if self.is_terminating() {
            return Err(self.refusal());
        }
        self.ensure_worker()
    }

    /// Makes sure a worker exists, starting the first one if need be. Used before queuing, so a
    /// pool that cannot start any thread refuses work instead of queuing it forever.
    #[inline]
    fn ensure_worker(self: &Arc<Self>) -> Result<(), Error> {
        if self.started_workers() > 0 {
            return Ok(());
        }
        self.start_first_worker()
    }

    #[cold]
    fn start_first_worker(self: &Arc<Self>) -> Result<(), Error> {
        match self.spawn_worker() {
            Ok(_) => Ok(()),
            Err(e) if self.started_workers() > 0 => {
                tracing::warn!(error = %e, "brigade: could not start a worker thread");
                Ok(())
            }
            Err(e) => Err(Error::Spawn {
                message: e.to_string(),
            }),
        }
    }

    /// Wakes or starts a worker unless one is already searching. See the module docs.
    pub(super) fn notify_one(self: &Arc<Self>) {
        fence(Ordering::SeqCst);
        let idle = self.idle.load(Ordering::SeqCst);
        if searchers(idle) > 0 {
            return;
        }
        if sleepers(idle) > 0 {
            let woken = {
                let mut sleepers = self.sleepers.lock();
                let woken = sleepers.pop();
                if woken.is_some() {
                    self.idle.fetch_add(SLEEPER_TO_SEARCHER, Ordering::SeqCst);
                }
                woken
            };
            if let Some(index) = woken {
                self.unparkers[index].unpark();
                return;
            }
        }
        // A busy worker may have taken the job meanwhile; a new thread is for work still queued.
        if self.started_workers() < self.max
            && self.has_work()
            && let Err(e) = self.spawn_worker()
        {
            tracing::warn!(error = %e, "brigade: could not start a worker thread");
        }
    }

    /// Starts the next worker if the pool has room. Returns whether one started.
    fn spawn_worker(self: &Arc<Self>) -> io::Result<bool> {
        let _guard = self.spawn_lock.lock();
        let index = self.started.load(Ordering::Relaxed);
        if index >= self.max || self.is_terminating() {
            return Ok(false);
        }
        *self.live.lock() += 1;
        // Counted as searching from birth: see the module docs.
        self.idle.fetch_add(SEARCHER, Ordering::SeqCst);
        let registry = Arc::clone(self);
        let mut builder = thread::Builder::new().name(format!("{}-{index}", self.name));
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        match builder.spawn(move || worker::main_loop(registry, index)) {
            Ok(_detached) => {
                self.started.store(index + 1, Ordering::Release);
                Ok(true)
            }
            Err(e) => {
                self.idle.fetch_sub(SEARCHER, Ordering::SeqCst);
                *self.live.lock() -= 1;
                Err(e)
            }
        }
    }

    /// Hands worker `index` its deque and parker. Called once, by that worker's thread.
    pub(super) fn take_seat(&self, index: usize) -> Seat {
        self.seats[index]
            .lock()
            .take()
            .expect("each worker takes its seat once")
    }

    /// A worker that ran out of work lists itself as a sleeper, in the same step ceasing to be
    /// a searcher if it was one.
    pub(super) fn fall_asleep(&self, index: usize, was_searching: bool) {
        let mut sleepers = self.sleepers.lock();
        sleepers.push(index);
        let change = if was_searching {
            SLEEPER.wrapping_sub(SEARCHER)
        } else {
            SLEEPER
        };
        self.idle.fetch_add(change, Ordering::SeqCst);
        drop(sleepers);
        // Pairs with the fence in `notify_one`; see the module docs.
        fence(Ordering::SeqCst);
    }

    /// A worker that woke up (or changed its mind) becomes a searcher. If a submitter already
    /// took it off the sleeper list, the submitter also did the counting.
    pub(super) fn wake_up(&self, index: usize) {
        let mut sleepers = self.sleepers.lock();
        if let Some(at) = sleepers.iter().position(|&i| i == index) {
            sleepers.swap_remove(at);
            self.idle.fetch_add(SLEEPER_TO_SEARCHER, Ordering::SeqCst);
        }
    }

    pub(super) fn start_searching(&self) {
        self.idle.fetch_add(SEARCHER, Ordering::SeqCst);
    }

    /// A searcher found work. The last searcher to find work passes the baton.
    pub(super) fn stop_searching(self: &Arc<Self>) {
        let before = self.idle.fetch_sub(SEARCHER, Ordering::SeqCst);
        if searchers(before) == 1 && self.has_work() {
            self.notify_one();
        }
    }

    /// Why a terminating pool refuses work: broken, or shut down.
    #[cold]
    fn refusal(&self) -> Error {
        match &*self.broken.lock() {
            Some(reason) => Error::Broken {
                reason: reason.clone(),
            },
            None => Error::ShutDown,
        }
    }

    /// A worker's initializer failed: the pool takes no more work, and what is queued fails
    /// with the reason (as Python's `BrokenThreadPool`).
    pub(super) fn break_pool(&self, reason: String) {
        tracing::error!(%reason, "brigade: the thread pool is broken");
        self.broken.lock().get_or_insert(reason.clone());
        // Before `terminate`: a submitter that sees `terminating` also sees this, and drains.
        self.is_broken.store(true, Ordering::SeqCst);
        self.terminate();
        self.drain(Error::Broken { reason });
    }

    /// Stops accepting work and tells every worker to leave once the queues are empty.
    pub(crate) fn terminate(&self) {
        self.terminating.store(true, Ordering::SeqCst);
        // Every parker gets a token, so a worker that is about to park does not miss this.
        self.unparkers.iter().for_each(Unparker::unpark);
    }

    /// Ends every queued job unrun with `reason`.
    pub(crate) fn drain(&self, reason: Error) {
        while let Some(job) = self.injector.pop() {
            job.abandon(reason.clone());
        }
        for stealer in &self.stealers {
            loop {
                match stealer.steal() {
                    crossbeam_deque::Steal::Success(job) => job.abandon(reason.clone()),
                    crossbeam_deque::Steal::Empty => break,
                    crossbeam_deque::Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
    }

    /// Called by each worker thread as it leaves.
    pub(super) fn worker_exited(&self) {
        let last = {
            let mut live = self.live.lock();
            *live -= 1;
            *live == 0
        };
        self.exited.notify_all();
        if last && self.has_work() {
            // A job slipped in after the others left: see `push`.
            self.drain(self.refusal());
        }
    }

    /// Blocks until every worker thread has left, or `deadline` passes. True when they have.
    pub(crate) fn wait_for_exit(&self, deadline: Option<std::time::Instant>) -> bool {
        let mut live = self.live.lock();
        while *live > 0 {
            match deadline {
                None => live = self.exited.wait(live),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    live = self.exited.wait_timeout(live, left);
                }
            }
        }
        true
    }
}

impl Drop for Registry {
    /// Jobs have no drop glue of their own (see `Job`): whatever is still queued when the last
    /// reference goes is ended here, so no handle waits on it forever.
    fn drop(&mut self) {
        self.drain(Error::ShutDown);
    }
}
