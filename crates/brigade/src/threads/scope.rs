//! Scoped tasks: work that borrows from the caller's stack, all finished before `scope` returns.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::task::Waker;

use super::job::Job;
use super::registry::Registry;
use super::worker;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::task::Task;
use crate::task::block::{block_until, current_waker};
use crate::task::cell::Cell;
use crate::task::origin::{LaneName, Origin};
use crate::task::refs::CellRef;

/// Counts a scope's unfinished jobs and wakes its owner when none is left. It lives in the
/// scope's frame; jobs point at it with a [`LatchRef`].
pub(crate) struct ScopeLatch {
    /// Unfinished jobs, plus one for the scope's own body while it runs.
    pending: AtomicUsize,
    /// Set by the last release, after which no job touches the latch again.
    done: AtomicBool,
    owner: Waker,
    panics: Mutex<(usize, Option<String>)>,
}

impl ScopeLatch {
    fn new(owner: Waker) -> Self {
        Self {
            pending: AtomicUsize::new(1),
            done: AtomicBool::new(false),
            owner,
            panics: Mutex::new((0, None)),
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// One job (or the body) is over. The `AcqRel` decrements chain every job's effects into
    /// the last one, whose `done` store (release) the owner acquires.
    fn release(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Once `done` is set the owner may return and free the latch: take what the wake
            // needs first.
            let owner = self.owner.clone();
            self.done.store(true, Ordering::Release);
            owner.wake();
        }
    }

    fn record_panic(&self, message: String) {
        let mut panics = self.panics.lock();
        panics.0 += 1;
        panics.1.get_or_insert(message);
    }
}

/// A job's pointer to its scope's latch.
///
/// Not reference counted: counting would put two more contended atomic operations on every
/// scoped job (measured on the tiny-tasks benchmark). The scope outlives every `LatchRef`:
/// `scope` does not return before the latch is `done`, which only the last `release` sets,
/// and each `LatchRef` is released exactly once, as the last thing its job does.
#[derive(Clone, Copy)]
pub(crate) struct LatchRef(*const ScopeLatch);

// SAFETY: `ScopeLatch` is `Sync`, and the pointer stays valid while used (see above).
unsafe impl Send for LatchRef {}
// SAFETY: as above; sharing the pointer gives no more access than sending it.
unsafe impl Sync for LatchRef {}

impl crate::task::cell::Hooks for LatchRef {}

impl LatchRef {
    pub(crate) fn record_panic(&self, message: String) {
        // SAFETY: not yet released, so the scope is still waiting (see the type's docs).
        unsafe { (*self.0).record_panic(message) }
    }

    /// Tells the scope this job is over; the pointer is not used again.
    pub(crate) fn release(self) {
        // SAFETY: not yet released, so the scope is still waiting (see the type's docs).
        unsafe { (*self.0).release() }
    }
}

/// A scope to spawn tasks that borrow from the enclosing stack frame; see
/// [`ThreadPool::scope`](super::ThreadPool::scope) and [`Scope::spawn`] for examples.
pub struct Scope<'scope, 'env: 'scope> {
    registry: Arc<Registry>,
    latch: ScopeLatch,
    // Invariance over both lifetimes, as in `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a task that may borrow anything that outlives the scope.
    ///
    /// The returned [`Task`] can be waited on inside the scope (`scope` waits for every task
    /// anyway). Tasks may spawn more tasks into the same scope. If the pool is shut down and
    /// the caller is not one of its workers, the task ends at once with
    /// [`Error::ShutDown`](crate::Error::ShutDown).
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let words = vec!["threads", "processes", "coroutines"];
    /// let total = pool.scope(|s| {
    ///     let lengths: Vec<_> = words.iter().map(|w| s.spawn(move || w.len())).collect();
    ///     lengths.into_iter().map(|t| t.result().unwrap()).sum::<usize>()
    /// });
    /// assert_eq!(total, 26);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.latch.pending.fetch_add(1, Ordering::Relaxed);
        let (cell, handle) = CellRef::pair(Cell::with(
            f,
            LatchRef(&self.latch),
            Origin::here(LaneName::Threads),
        ));
        // SAFETY: what may outlive the scope is this handle, bounded by `T: 'scope`, and the
        // cell's allocation, whose work slot is empty by then (the job below consumes the
        // closure before the scope can end), so dropping it touches nothing the closure
        // borrowed.
        let handle = unsafe { handle.erase().assume_static() };
        // SAFETY: `scope` does not return before the latch is done, and the job releases the
        // latch as its very last act, after letting go of the cell.
        let job = unsafe { Job::scoped(cell) };
        let task = Task::from_cell(handle);
        // A worker of this pool is always admitted: its own scope's work is part of the
        // task it is running, even during a shutdown.
        let admitted = if worker::is_worker_of(&self.registry) {
            Ok(())
        } else {
            self.registry.admit()
        };
        match admitted {
            Ok(()) => self.registry.push(job),
            Err(reason) => job.abandon(reason),
        }
        task
    }
}

/// Runs `body` with a scope, waits for every task spawned in it, and reports their panics.
pub(super) fn run<'env, F, R>(registry: &Arc<Registry>, body: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        registry: Arc::clone(registry),
        latch: ScopeLatch::new(current_waker()),
        scope: PhantomData,
        env: PhantomData,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    let latch = &scope.latch;
    LatchRef(latch).release();
    block_until(|| latch.is_done(), |_| {}, None);
    let value = outcome.unwrap_or_else(|payload| resume_unwind(payload));
    let (count, first) = std::mem::take(&mut *latch.panics.lock());
    if let Some(first) = first {
        panic!("{count} task(s) spawned in a brigade scope panicked; the first: {first}");
    }
    value
}
