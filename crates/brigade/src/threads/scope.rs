//! Scoped tasks: work that borrows from the caller's stack, all finished before `scope` returns.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::task::Waker;

use super::job::Job;
use super::registry::Registry;
use super::worker::{self, block_until};
use crate::error::Error;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::task::Task;
use crate::task::cell::{Cell, Erased, Run};

/// Counts a scope's unfinished jobs and wakes its owner when none is left.
pub(crate) struct ScopeLatch {
    /// Unfinished jobs, plus one for the scope's own body while it runs.
    pending: AtomicUsize,
    owner: Mutex<Option<Waker>>,
    panics: Mutex<(usize, Option<String>)>,
}

impl ScopeLatch {
    fn new() -> Self {
        Self {
            pending: AtomicUsize::new(1),
            owner: Mutex::new(None),
            panics: Mutex::new((0, None)),
        }
    }

    fn is_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// One job (or the body) is over. Release: whatever it did happens-before the owner's
    /// acquire load that sees zero.
    pub(crate) fn release(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(owner) = self.owner.lock().as_ref()
        {
            owner.wake_by_ref();
        }
    }

    pub(crate) fn record_panic(&self, message: String) {
        let mut panics = self.panics.lock();
        panics.0 += 1;
        panics.1.get_or_insert(message);
    }
}

/// A scope to spawn tasks that borrow from the enclosing stack frame; see
/// [`ThreadPool::scope`](super::ThreadPool::scope).
pub struct Scope<'scope, 'env: 'scope> {
    registry: Arc<Registry>,
    latch: Arc<ScopeLatch>,
    // Invariance over both lifetimes, as in `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a task that may borrow anything that outlives the scope.
    ///
    /// The returned [`Task`] can be waited on inside the scope (`scope` waits for every task
    /// anyway). Tasks may spawn more tasks into the same scope. If the pool is shut down and
    /// the caller is not one of its workers, the task ends at once with [`Error::ShutDown`].
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
        let cell = Arc::new(Cell::new(f));
        let handle: Arc<Cell<T, dyn Erased + 'scope>> = cell.clone();
        let job: Arc<dyn Run + 'scope> = cell;
        // SAFETY: only the trait objects' lifetime bounds change; the layouts are identical.
        // Nothing reachable from the cell is used after 'scope ends: `scope` does not return
        // before every job of the scope has been executed or abandoned and then dropped (the
        // latch is released only in `Job`'s drop, after its reference to the cell is gone),
        // and both paths consume the closure. What may outlive the scope is the handle, which
        // is bounded by `T: 'scope`, and the cell's allocation, whose work slot is by then
        // empty, so dropping it touches nothing the closure borrowed.
        let (handle, job) = unsafe {
            (
                std::mem::transmute::<Arc<Cell<T, dyn Erased + 'scope>>, Arc<Cell<T, dyn Erased>>>(
                    handle,
                ),
                std::mem::transmute::<Arc<dyn Run + 'scope>, Arc<dyn Run>>(job),
            )
        };
        let task = Task::from_cell(handle);
        let refused = if worker::is_worker_of(&self.registry) {
            None
        } else if self.registry.is_terminating() {
            Some(Error::ShutDown)
        } else {
            self.registry.ensure_worker().err()
        };
        self.latch.pending.fetch_add(1, Ordering::Relaxed);
        let job = Job::scoped(job, Arc::clone(&self.latch));
        match refused {
            None => self.registry.push(job),
            Some(reason) => job.abandon(reason),
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
        latch: Arc::new(ScopeLatch::new()),
        scope: PhantomData,
        env: PhantomData,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    let latch = &scope.latch;
    latch.release();
    block_until(
        || latch.is_done(),
        |waker| *latch.owner.lock() = Some(waker.clone()),
        None,
    );
    let value = outcome.unwrap_or_else(|payload| resume_unwind(payload));
    let (count, first) = std::mem::take(&mut *latch.panics.lock());
    if let Some(first) = first {
        panic!("{count} task(s) spawned in a brigade scope panicked; the first: {first}");
    }
    value
}
