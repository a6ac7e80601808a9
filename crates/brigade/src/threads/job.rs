//! What the compute lane's queues hold: a pointer and what to do with it, in 16 bytes.
//!
//! Queues move jobs around constantly (pushes, pops, batch steals, deque resizes), so a job is
//! as small as rayon's `JobRef`: a type-erased pointer plus a static table of two functions.
//! There are three kinds:
//!
//! * a **task**: the pointer is a `CellRef<T, Work<F>>` turned into a raw pointer, and the
//!   job owns that one reference;
//! * a **scoped task**: the same, whose work slot also keeps its scope's latch;
//! * the second half of a **join**: the pointer is a `StackJob` in its owner's frame, which the
//!   job does not own (see the `join` module for why that is sound).
//!
//! Every job leaves its queue through exactly one of [`Job::execute`] and [`Job::abandon`]; the
//! places that empty queues without running them (a drain on shutdown, a registry going away)
//! abandon each job, which ends its task or hands a join's half back to its owner, so nobody
//! waits on work that can no longer run. A job has no drop glue: one that were simply dropped
//! would leak its task (never hang a waiter on freed memory, but never complete it either).

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::join::StackJob;
use super::scope::LatchRef;
use crate::error::Error;
use crate::task::cell::Work;
use crate::task::refs::CellRef;

pub(crate) struct Job {
    data: NonNull<()>,
    vtable: &'static VTable,
}

struct VTable {
    /// Runs the job; consumes what the job owns.
    execute: unsafe fn(NonNull<()>, &dyn Fn()),
    /// Ends the job unrun; consumes what the job owns.
    abandon: unsafe fn(NonNull<()>, Error),
}

// SAFETY: every kind of pointee is `Send + Sync` (task cells of `Send` work and values, join
// halves as documented in `join`), and a job is used by one thread at a time.
unsafe impl Send for Job {}

impl Job {
    /// A job that owns one reference to a task.
    pub(crate) fn task<T, F>(cell: CellRef<T, Work<F>>) -> Self
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        Self::from_ref(cell, &Tasks::<T, F, ()>::VTABLE)
    }

    /// A job that owns one reference to a scoped task, whose work keeps its scope's latch.
    ///
    /// # Safety
    /// The task may borrow from the scope's frame: the scope must not end before the job has
    /// been executed or abandoned (its latch, released as the job's very last act, sees to it).
    pub(crate) unsafe fn scoped<T, F>(cell: CellRef<T, Work<F, LatchRef>>) -> Self
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        Self::from_ref(cell, &Tasks::<T, F, LatchRef>::VTABLE)
    }

    fn from_ref<T, F, X>(cell: CellRef<T, Work<F, X>>, vtable: &'static VTable) -> Self {
        Self {
            data: cell.into_raw().cast(),
            vtable,
        }
    }

    /// The second half of a join, on its owner's stack.
    pub(super) fn stack<F, R>(job: &StackJob<'_, F, R>) -> Self
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        Self {
            data: NonNull::from(job).cast(),
            vtable: &Halves::<F, R>::VTABLE,
        }
    }

    /// Runs the job (a task is skipped if it was cancelled meanwhile). `before_publish` is
    /// called after a task's work and before its outcome becomes visible.
    #[inline]
    pub(crate) fn execute(self, before_publish: &dyn Fn()) {
        // SAFETY: `data` was made for this vtable, and the job is consumed here, once.
        unsafe { (self.vtable.execute)(self.data, before_publish) }
    }

    /// Ends the job unrun: a task with `reason`, a join's half handed back to its owner.
    pub(crate) fn abandon(self, reason: Error) {
        // SAFETY: as in `execute`.
        unsafe { (self.vtable.abandon)(self.data, reason) }
    }

    /// Whether this is the join half `job` (the one a joining worker is looking for).
    #[inline]
    pub(super) fn is<F, R>(&self, job: &StackJob<'_, F, R>) -> bool {
        std::ptr::eq(
            self.data.as_ptr().cast_const(),
            std::ptr::from_ref(job).cast(),
        )
    }

    /// Takes back a join half that its owner popped to run itself: it owns nothing (the
    /// owner's frame does), so there is nothing to do.
    #[inline]
    pub(super) fn reclaim(self) {}
}

/// The vtable of task jobs, per task type.
struct Tasks<T, F, X>(PhantomData<(T, F, X)>);

impl<T, F, X> Tasks<T, F, X>
where
    T: Send,
    F: FnOnce() -> T + Send,
    X: Latch,
{
    const VTABLE: VTable = VTable {
        execute: Self::execute,
        abandon: Self::abandon,
    };

    /// Takes back the reference the job owned.
    ///
    /// # Safety
    /// `data` came from `Job::from_ref` for this `CellRef<T, Work<F, X>>`, and is used once.
    unsafe fn reclaim(data: NonNull<()>) -> CellRef<T, Work<F, X>> {
        // SAFETY: as required of the caller: the pointer is `into_raw` of this very type.
        unsafe { CellRef::from_raw(data.cast()) }
    }

    /// # Safety
    /// As for [`Self::reclaim`].
    unsafe fn execute(data: NonNull<()>, before_publish: &dyn Fn()) {
        // SAFETY: as required of the caller.
        let cell = unsafe { Self::reclaim(data) };
        let latch = cell.work.extra;
        // Our reference goes (in the step that publishes the outcome) before the scope learns
        // the job is over: a scoped task's value may borrow from the scope's caller, so
        // nothing of it may outlive the latch release.
        let panicked = cell.run(before_publish);
        latch.finish(panicked);
    }

    /// # Safety
    /// As for [`Self::reclaim`].
    unsafe fn abandon(data: NonNull<()>, reason: Error) {
        // SAFETY: as required of the caller.
        let cell = unsafe { Self::reclaim(data) };
        cell.abandon(reason);
        let latch = cell.work.extra;
        drop(cell);
        latch.finish(None);
    }
}

/// What a task job tells its scope when it is over: nothing for a plain task.
trait Latch: Copy + crate::task::cell::Hooks {
    fn finish(self, panicked: Option<String>);
}

impl Latch for () {
    #[inline]
    fn finish(self, _panicked: Option<String>) {}
}

impl Latch for LatchRef {
    fn finish(self, panicked: Option<String>) {
        if let Some(message) = panicked {
            self.record_panic(message);
        }
        self.release();
    }
}

/// The vtable of join halves, per closure type.
struct Halves<F, R>(PhantomData<(F, R)>);

impl<F, R> Halves<F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    const VTABLE: VTable = VTable {
        execute: Self::execute,
        abandon: Self::hand_back,
    };

    /// # Safety
    /// `data` points at a live `StackJob<'_, F, R>` that the caller took from a queue.
    unsafe fn execute(data: NonNull<()>, _before_publish: &dyn Fn()) {
        // SAFETY: see above; the join protocol keeps the frame alive until the job says DONE.
        unsafe { StackJob::<F, R>::execute(data.cast().as_ptr()) }
    }

    /// # Safety
    /// As for `execute`.
    unsafe fn hand_back(data: NonNull<()>, _reason: Error) {
        // SAFETY: as in `execute`.
        unsafe { StackJob::<F, R>::hand_back(data.cast().as_ptr()) }
    }
}
