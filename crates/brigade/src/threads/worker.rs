//! A worker thread: where it finds work, how it waits, and how it helps while a task waits.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use super::job::Job;
use super::join::StackJob;
use super::registry::Registry;
use crate::error::Error;
use crate::sync::Parker;
use crate::task::block::{self, unpark_waker};

/// Rounds a worker spins over the queues before it sleeps: the first `SPIN_PAUSES` with a
/// growing busy-wait (cheap when work arrives within microseconds, as in a burst of
/// submissions), the rest yielding the CPU (a submitter on the same core gets to run).
const SPIN_ROUNDS: u32 = 32;
const SPIN_PAUSES: u32 = 7;

/// How often (in jobs) a worker looks at the shared queue before its own, so that a task that
/// keeps feeding its own deque cannot starve work submitted from outside.
const INJECTOR_EVERY: u32 = 61;

/// A worker's own deque and parker, created with the pool and claimed by the worker's thread.
pub(crate) struct Seat {
    pub(super) local: Worker<Job>,
    pub(super) parker: Parker,
}

pub(super) struct WorkerThread {
    registry: Arc<Registry>,
    index: usize,
    local: Worker<Job>,
    parker: Parker,
    waker: Waker,
    searching: Cell<bool>,
    tick: Cell<u32>,
    rng: Cell<u32>,
}

std::thread_local! {
    /// The worker this thread is: its registry's address and its state, or (0, null).
    ///
    /// A plain `Cell` with no destructor is the cheapest thread-local there is, and every
    /// submission and every `join` consults it; a reference-counted handle here cost a
    /// measurable share of a join.
    static CURRENT: Cell<(usize, *const WorkerThread)> = const { Cell::new((0, ptr::null())) };
}

/// Points `CURRENT` at a worker for as long as the guard lives.
struct CurrentGuard;

impl CurrentGuard {
    fn set(worker: &WorkerThread) -> Self {
        CURRENT.set((registry_id(&worker.registry), worker));
        Self
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.set((0, ptr::null()));
    }
}

/// Runs `f(worker, arg)` if this thread is one of `registry`'s workers (`None`: of any pool);
/// hands `arg` back otherwise.
#[inline]
fn with_worker<A, R>(
    registry: Option<&Arc<Registry>>,
    arg: A,
    f: impl FnOnce(&WorkerThread, A) -> R,
) -> Result<R, A> {
    let (id, worker) = CURRENT.get();
    let ours = match registry {
        Some(registry) => id == registry_id(registry),
        None => id != 0,
    };
    if !ours {
        return Err(arg);
    }
    // SAFETY: `main_loop` points CURRENT at its own `WorkerThread` through a guard that
    // lives no longer than that value and resets it on every exit; only this thread reads it,
    // and the reference does not escape `f`.
    Ok(f(unsafe { &*worker }, arg))
}

fn registry_id(registry: &Arc<Registry>) -> usize {
    Arc::as_ptr(registry) as usize
}

/// Joins `a` and `b` on the calling thread if it is one of `registry`'s workers; hands them
/// back otherwise.
#[inline]
pub(super) fn join_here<A, B, RA, RB>(
    registry: &Arc<Registry>,
    a: A,
    b: B,
) -> Result<(RA, RB), (A, B)>
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    with_worker(Some(registry), (a, b), |worker, (a, b)| worker.join(a, b))
}

/// Whether the calling thread is one of `registry`'s workers.
pub(super) fn is_worker_of(registry: &Arc<Registry>) -> bool {
    CURRENT.get().0 == registry_id(registry)
}

/// Pushes onto the calling worker's own deque if it belongs to `registry`; hands the job back
/// otherwise.
pub(super) fn push_local(registry: &Arc<Registry>, job: Job) -> Result<(), Job> {
    with_worker(Some(registry), job, |worker, job| worker.local.push(job))
}

/// Runs `f` on one of `registry`'s workers and returns its result: right here if the caller
/// is one, else on a worker while the caller waits (as a worker of another pool, it helps its
/// own pool meanwhile). Hands `f` back when the pool cannot take it (shut down, or no thread
/// could start). If a shutdown drains it from the queue, it runs on the caller after all.
pub(super) fn in_worker<F, R>(registry: &Arc<Registry>, f: F) -> Result<R, F>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    if is_worker_of(registry) {
        return Ok(f());
    }
    if registry.admit().is_err() {
        return Err(f);
    }
    let waker = block::current_waker();
    let job = StackJob::new(f, &waker);
    registry.push(Job::stack(&job));
    block::block_until(|| job.finished(), |_| {}, None);
    match job.into_result() {
        Ok(value) => Ok(value),
        Err(panic) => resume_unwind(panic),
    }
}

/// The body of a worker thread.
pub(super) fn main_loop(registry: Arc<Registry>, index: usize) {
    let Seat { local, parker } = registry.take_seat(index);
    let waker = unpark_waker(parker.unparker().clone());
    let worker = WorkerThread {
        registry: Arc::clone(&registry),
        index,
        local,
        parker,
        waker,
        // The registry counted this worker as searching when it started the thread.
        searching: Cell::new(true),
        tick: Cell::new(0),
        rng: Cell::new(0x9E37_79B9 ^ (index as u32).wrapping_mul(0x85EB_CA6B) | 1),
    };
    let guard = CurrentGuard::set(&worker);
    if let Some(init) = &registry.initializer
        && let Err(panic) = catch_unwind(AssertUnwindSafe(|| init(index)))
    {
        let Error::Panicked { message } = Error::from_panic(&*panic) else {
            unreachable!("from_panic gives Panicked")
        };
        registry.break_pool(format!("worker {index}'s initializer panicked: {message}"));
    } else {
        block::helping(&worker, || {
            worker.wait_until(|| registry.should_exit(), |_| {}, None)
        });
    }
    drop(guard);
    drop(worker);
    registry.worker_exited();
}

/// A worker that waits on a task runs its pool's work meanwhile: see [`block`].
impl block::Helper for WorkerThread {
    fn help_until(
        &self,
        done: &mut dyn FnMut() -> bool,
        register: &mut dyn FnMut(&Waker),
        deadline: Option<Instant>,
    ) -> bool {
        self.wait_until(done, register, deadline)
    }

    fn waker(&self) -> &Waker {
        &self.waker
    }
}

impl WorkerThread {
    /// Runs queued work until `done()` holds (or `deadline` passes), sleeping when there is
    /// none. This is both the worker's main loop and how a task waits inside the pool: the
    /// worker keeps the pool moving instead of blocking, so waiting on a task of the same pool
    /// cannot deadlock it.
    fn wait_until(
        &self,
        mut done: impl FnMut() -> bool,
        register: impl FnOnce(&Waker),
        deadline: Option<Instant>,
    ) -> bool {
        register(&self.waker);
        let mut idle_rounds = 0;
        loop {
            if done() {
                self.stop_searching();
                return true;
            }
            if let Some(job) = self.find_work() {
                self.stop_searching();
                job.execute(&|| self.finishing());
                idle_rounds = 0;
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.stop_searching();
                return done();
            }
            if idle_rounds < SPIN_ROUNDS {
                self.start_searching();
                idle_rounds += 1;
                if idle_rounds <= SPIN_PAUSES {
                    (0..1u32 << idle_rounds).for_each(|_| std::hint::spin_loop());
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            self.sleep(&mut done, deadline);
            idle_rounds = 0;
        }
    }

    /// Runs `a` here and `b` wherever an idle worker takes it (or here too, if none does);
    /// see the `join` module for the protocol that keeps `b` on this frame.
    #[inline]
    pub(super) fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let job_b = StackJob::new(b, &self.waker);
        self.local.push(Job::stack(&job_b));
        // Measured: the fence-free hint beats the full protocol here; a missed wake-up only
        // means the owner runs `b` itself.
        self.registry.hint_one();
        let result_a = catch_unwind(AssertUnwindSafe(a));
        // Take `b` back, or run other work until whoever took it is done with it. Even when
        // `a` panicked: `b` may borrow this frame.
        while !job_b.finished() {
            match self.local.pop() {
                Some(job) if job.is(&job_b) => {
                    job.reclaim();
                    break;
                }
                // Work `a` left behind on our deque, above `b`.
                Some(job) => job.execute(&|| self.finishing()),
                None => {
                    // Stolen (or drained): the taker wakes us through our waker.
                    self.wait_until(|| job_b.finished(), |_| {}, None);
                }
            }
        }
        let result_b = job_b.into_result();
        match (result_a, result_b) {
            (Ok(ra), Ok(rb)) => (ra, rb),
            (Err(panic), _) | (_, Err(panic)) => resume_unwind(panic),
        }
    }

    /// Called after a task's work and before its outcome is published. A worker that has
    /// nothing queued counts itself as searching from here on, so that whoever reacts to the
    /// outcome by submitting more work (the submit, wait, submit, … of a sequential caller)
    /// finds an idle worker to hand it to rather than starting another.
    fn finishing(&self) {
        if self.local.is_empty() && self.registry.injector.is_empty() {
            self.start_searching();
        }
    }

    /// Parks until woken (new work, `done()` may hold, or the deadline).
    ///
    /// Going to sleep and waking up each move the worker between the searching and sleeping
    /// counts in one atomic step, so a submitter never sees an idle worker as busy and starts
    /// a new one instead.
    fn sleep(&self, done: &mut impl FnMut() -> bool, deadline: Option<Instant>) {
        let registry = &self.registry;
        registry.fall_asleep(self.index, self.searching.replace(false));
        if !(done() || registry.has_work()) {
            match deadline {
                None => self.parker.park(),
                Some(deadline) => self.parker.park_deadline(deadline),
            }
        }
        registry.wake_up(self.index);
        self.searching.set(true);
    }

    fn start_searching(&self) {
        if !self.searching.replace(true) {
            self.registry.start_searching();
        }
    }

    fn stop_searching(&self) {
        if self.searching.replace(false) {
            self.registry.stop_searching();
        }
    }

    fn find_work(&self) -> Option<Job> {
        let tick = self.tick.get();
        if tick == 0 {
            self.tick.set(INJECTOR_EVERY);
            if let Some(job) = self.steal_injector() {
                return Some(job);
            }
        } else {
            self.tick.set(tick - 1);
        }
        self.local
            .pop()
            .or_else(|| self.steal_injector())
            .or_else(|| self.steal_peers())
    }

    fn steal_injector(&self) -> Option<Job> {
        self.registry.injector.steal_batch_and_pop(&self.local)
    }

    fn steal_peers(&self) -> Option<Job> {
        let peers = self.registry.started_workers();
        if peers < 2 {
            return None;
        }
        let start = self.next_random() as usize % peers;
        loop {
            let mut retry = false;
            for victim in (start..peers).chain(0..start) {
                if victim == self.index {
                    continue;
                }
                match self.registry.stealers[victim].steal_batch_and_pop(&self.local) {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// xorshift32: cheap, and good enough to spread thieves over victims.
    fn next_random(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }
}
