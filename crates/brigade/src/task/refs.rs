//! [`CellRef`]: an owning reference to a task's cell, counted in the cell's state word.
//!
//! It does what `Arc<Cell<…>>` did, minus what a task never uses: no weak count (8 bytes per
//! task) and no separate strong count (a second contended word, written by the worker and the
//! handle on every task). The count shares the word that the lifecycle already writes, which is
//! what lets a worker drop its reference in the compare-and-swap that completes the task, and
//! lets the handle, usually the last reference by the time it is collected, free the cell after
//! a plain load (see [`Header::release`](super::cell::Header::release)). Measured on
//! `tiny-tasks` (submit + result): two atomic read-modify-writes fewer on the submitting thread
//! per task, and 16 bytes less per cell.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use super::cell::{Cell, Erased, Slot, Work};

/// One counted reference to a boxed [`Cell`]; the cell is freed with the last one.
pub(crate) struct CellRef<T, W: ?Sized + Slot> {
    ptr: NonNull<Cell<T, W>>,
    /// Owns a share of the cell (for drop check and auto traits).
    _owns: PhantomData<Cell<T, W>>,
}

// SAFETY: as for `Arc<Cell<T, W>>`: the cell is shared between the holders, so it must be
// both `Send` and `Sync` for a reference to move or be shared across threads.
unsafe impl<T, W: ?Sized + Slot> Send for CellRef<T, W> where Cell<T, W>: Send + Sync {}
// SAFETY: as above.
unsafe impl<T, W: ?Sized + Slot> Sync for CellRef<T, W> where Cell<T, W>: Send + Sync {}

impl<T, W: Slot> CellRef<T, W> {
    /// Boxes `cell`: its one reference.
    pub(crate) fn new(cell: Cell<T, W>) -> Self {
        Self::boxed(cell, 1)
    }

    /// Boxes `cell` with two references, for the two parties of a task (the handle, and the
    /// job or promise that completes it): one store instead of a later increment.
    pub(crate) fn pair(cell: Cell<T, W>) -> (Self, Self) {
        let first = Self::boxed(cell, 2);
        let second = Self {
            ptr: first.ptr,
            _owns: PhantomData,
        };
        (first, second)
    }

    fn boxed(mut cell: Cell<T, W>, refs: usize) -> Self {
        cell.header.set_refs_unshared(refs);
        Self {
            ptr: NonNull::from(Box::leak(Box::new(cell))),
            _owns: PhantomData,
        }
    }

    /// This reference as one to `Cell<T, dyn Erased>`, the handle's view.
    pub(crate) fn erase<'a>(self) -> CellRef<T, dyn Erased + 'a>
    where
        W: Erased + 'a,
    {
        let this = ManuallyDrop::new(self);
        CellRef {
            ptr: this.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T, W: ?Sized + Slot> CellRef<T, W> {
    /// Gives up this reference as a raw pointer (for a queue's job); see [`Self::from_raw`].
    pub(crate) fn into_raw(self) -> NonNull<Cell<T, W>> {
        ManuallyDrop::new(self).ptr
    }

    /// Takes back a reference given up by [`Self::into_raw`].
    ///
    /// # Safety
    /// `ptr` comes from `into_raw` of a `CellRef<T, W>` of this very type, and is taken back
    /// once.
    pub(crate) unsafe fn from_raw(ptr: NonNull<Cell<T, W>>) -> Self {
        Self {
            ptr,
            _owns: PhantomData,
        }
    }

    /// Frees the cell: the caller held its last reference.
    ///
    /// # Safety
    /// No reference to the cell is left, and the cell is not used again.
    unsafe fn free(ptr: NonNull<Cell<T, W>>) {
        // SAFETY: nobody else holds the cell.
        let cell = unsafe { ptr.as_ref() };
        if !cell.header.is_claimed() {
            // SAFETY: no claim won, so the work is still in its slot: ours to drop.
            unsafe { cell.work.drop_unclaimed() };
        }
        // SAFETY: boxed in `boxed` (fat or thin, `Box` knows the layout); nobody else holds it.
        drop(unsafe { Box::from_raw(ptr.as_ptr()) });
    }
}

impl<T> CellRef<T, dyn Erased + '_> {
    /// The same reference, with the work's lifetime bound erased.
    ///
    /// # Safety
    /// Nothing the work borrows may be used through the result once the borrow ends: the
    /// caller makes sure the work is consumed (run or discarded) before that, so that only the
    /// header and an empty work slot remain to be reached and dropped.
    pub(crate) unsafe fn assume_static(self) -> CellRef<T, dyn Erased> {
        let ptr = ManuallyDrop::new(self).ptr;
        // SAFETY: only the trait object's lifetime bound changes; the layout is identical.
        let ptr = unsafe {
            std::mem::transmute::<NonNull<Cell<T, dyn Erased + '_>>, NonNull<Cell<T, dyn Erased>>>(
                ptr,
            )
        };
        CellRef {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T, W: ?Sized + Slot> Clone for CellRef<T, W> {
    fn clone(&self) -> Self {
        self.header.add_ref();
        Self {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T, W: ?Sized + Slot> Deref for CellRef<T, W> {
    type Target = Cell<T, W>;

    fn deref(&self) -> &Cell<T, W> {
        // SAFETY: our reference keeps the cell alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T, W: ?Sized + Slot> Drop for CellRef<T, W> {
    fn drop(&mut self) {
        if self.header.release() {
            // SAFETY: that was the last reference.
            unsafe { Self::free(self.ptr) }
        }
    }
}

impl<T, F, X> CellRef<T, Work<F, X>>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    /// Runs the task unless it was cancelled, calling `before_publish` after the work and
    /// before its outcome becomes visible, and gives up this reference in the step that
    /// publishes it. Returns the panic message if it panicked.
    pub(crate) fn run(self, before_publish: &dyn Fn()) -> Option<String> {
        let Some((outcome, panicked)) = self.run_work() else {
            drop_guarded(self);
            return None;
        };
        before_publish();
        self.complete_and_release(outcome);
        panicked
    }
}

impl<T, W: ?Sized + Slot> CellRef<T, W> {
    /// Publishes `outcome` and gives up this reference in the same compare-and-swap (see
    /// [`Header::complete_and_release`](super::cell::Header::complete_and_release)): one
    /// read-modify-write of the state word instead of two.
    ///
    /// Only the task's owner may call this, once.
    #[inline]
    pub(crate) fn complete_and_release(self, outcome: super::cell::Outcome<T>) {
        let ptr = self.into_raw();
        // SAFETY: our reference, given up just above, keeps the cell alive until this call
        // drops it; after that we touch the cell only if it was the last reference.
        let last = unsafe { ptr.as_ref() }.header.complete_and_release(outcome);
        if last {
            // SAFETY: ours was the last reference (the handle is gone), and it is spent.
            drop_guarded(Freeing(ptr));
        }
    }
}

/// Frees a cell whose last reference is already spent, when dropped.
struct Freeing<T, W: ?Sized + Slot>(NonNull<Cell<T, W>>);

impl<T, W: ?Sized + Slot> Drop for Freeing<T, W> {
    fn drop(&mut self) {
        // SAFETY: see where it is made.
        unsafe { CellRef::free(self.0) }
    }
}

/// Drops a worker's last hold on a task. If the handle is already gone this drops the task's
/// value, whose `Drop` is user code: a panic there is reported, and the worker lives.
fn drop_guarded<D>(last: D) {
    if catch_unwind(AssertUnwindSafe(|| drop(last))).is_err() {
        tracing::error!("dropping a finished task's value panicked; the worker goes on");
    }
}

#[cfg(all(test, brigade_loom))]
mod loom_tests {
    //! Model checks of who frees a cell: the worker's release inside the completing
    //! compare-and-swap, against the handle's release by a plain load.
    use super::*;
    use crate::task::Task;
    use crate::task::cell::SETTLED;
    use crate::task::origin::Origin;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;
    use std::sync::Arc;

    /// A value that counts its drops, to see it dropped exactly once, by whichever party
    /// freed the cell.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Work = Box<dyn FnOnce() -> Counted + Send>;

    fn task(drops: &Arc<AtomicUsize>) -> (CellRef<Counted, super::Work<Work>>, Task<Counted>) {
        let drops = drops.clone();
        let work: Work = Box::new(move || Counted(drops));
        let (job, handle) = CellRef::pair(Cell::new(work, Origin::UNKNOWN));
        (job, Task::from_cell(handle.erase()))
    }

    #[test]
    fn the_handle_collects_while_the_worker_completes() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, task) = task(&drops);
            let worker = thread::spawn(move || job.run(&|| ()));
            // The waiting thread spins (loom yields) rather than parking, to explore every
            // point at which it may see the outcome.
            while task.completion().state() & SETTLED == 0 {
                thread::yield_now();
            }
            let value = task.result().expect("it ran");
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            drop(value);
            assert_eq!(worker.join().unwrap(), None);
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_handle_dropped_while_the_task_runs_leaves_the_value_to_the_worker() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, task) = task(&drops);
            let worker = thread::spawn(move || job.run(&|| ()));
            drop(task);
            worker.join().unwrap();
            // Whoever went last freed the cell and dropped the value, once.
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_cancel_races_the_worker_and_the_cell_is_freed_once() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, task) = task(&drops);
            let worker = thread::spawn(move || job.run(&|| ()));
            let cancelled = task.cancel();
            let outcome = task.result();
            worker.join().unwrap();
            assert_eq!(cancelled, outcome.is_err());
            drop(outcome);
            // The work never ran if cancelled (its closure was dropped unrun); otherwise its
            // value was dropped with `outcome` above.
            let expected = usize::from(!cancelled);
            assert_eq!(drops.load(Ordering::SeqCst), expected);
        });
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::task::Task;
    use crate::task::origin::Origin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cell_freed_unclaimed_drops_its_work_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let captured = Counted(drops.clone());
        let cell = CellRef::new(Cell::<(), _>::new(move || drop(captured), Origin::UNKNOWN));
        let second = cell.clone();
        drop(cell);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "a reference is left");
        drop(second);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_that_ran_is_not_dropped_again_and_its_value_goes_with_the_last_reference() {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = Counted(drops.clone());
        let (job, handle) = CellRef::pair(Cell::new(move || value, Origin::UNKNOWN));
        let task = Task::from_cell(handle.erase());
        assert_eq!(job.run(&|| ()), None);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the handle still holds the value"
        );
        drop(task);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        // Detached first: the worker's release is the last, and drops the value.
        let value = Counted(drops.clone());
        let (job, handle) = CellRef::pair(Cell::new(move || value, Origin::UNKNOWN));
        drop(Task::from_cell(handle.erase()));
        job.run(&|| ());
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_cancelled_cell_drops_its_work_unrun_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let captured = Counted(drops.clone());
        let (job, handle) = CellRef::pair(Cell::new(
            move || -> u32 {
                drop(captured);
                unreachable!("cancelled")
            },
            Origin::UNKNOWN,
        ));
        let task = Task::from_cell(handle.erase());
        assert!(task.cancel());
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped by the cancel");
        assert_eq!(job.run(&|| ()), None);
        assert_eq!(task.result(), Err(Error::Cancelled));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
