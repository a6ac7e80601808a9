//! [`Promise`]: the producing side of a [`Task`] whose work is not a closure run by a
//! thread-pool worker: a call sent to a worker process, a future on the event loop.
//!
//! The lane keeps the promise, hands the [`Task`] to the user, and drives the same state
//! machine as a thread-pool task: [`start`](Promise::start) is the worker's claim (it loses to
//! an earlier cancel), [`complete`](Promise::complete) publishes the outcome. A promise dropped
//! unfulfilled still ends its task, with [`Hooks::abandoned`], so no waiter can hang on a lane
//! that lost track of its work.

use std::mem::ManuallyDrop;

use super::Task;
use super::cell::{CANCELLED, Cell, Claim, Hooks, Outcome, RUNNING, Work};
use super::origin::Origin;
use super::refs::CellRef;

/// The producing side of a task. `P` is the payload the lane needs to start the work (handed
/// out by [`start`](Self::start), dropped if the task is cancelled first); `X` is what the lane
/// keeps beside it for the handle's sake (see [`Hooks`]).
///
/// One pointer and nothing else: whether it owns the task is read from the cell's state (only a
/// promise ever claims its task to run it, so `RUNNING` there means this promise won that
/// claim), and completing consumes it. A loop task's driver holds one inside tokio's task, which
/// tokio allocates in 128-byte steps: a promise of two words pushed a no-op's task from 128
/// bytes to 256.
pub(crate) struct Promise<T, P, X: Hooks = ()> {
    cell: CellRef<T, Work<P, X>>,
}

impl<T, P, X> Promise<T, P, X>
where
    T: Send + 'static,
    P: Send + 'static,
    X: Hooks + 'static,
{
    /// A pending task and its promise.
    #[cfg(test)]
    pub(crate) fn new(payload: P, extra: X) -> (Self, Task<T>) {
        Self::new_at(payload, extra, Origin::UNKNOWN)
    }

    /// A pending task from `origin`, and its promise.
    pub(crate) fn new_at(payload: P, extra: X, origin: Origin) -> (Self, Task<T>) {
        let (cell, handle) = CellRef::pair(Cell::with(payload, extra, origin));
        let task = Task::from_cell(handle.erase());
        let promise = Self { cell };
        (promise, task)
    }
}

impl<T, P, X: Hooks> Promise<T, P, X> {
    /// What the lane keeps beside the task.
    pub(crate) fn extra(&self) -> &X {
        &self.cell.work.extra
    }

    /// A second handle on what the lane keeps beside the task, usable after the promise has
    /// moved on (into the task's driver, say).
    pub(crate) fn share_extra(&self) -> SharedExtra<T, P, X> {
        SharedExtra(self.cell.clone())
    }

    /// Claims the task to run it and hands out its payload; `None` when it was cancelled
    /// first (or was already started): the promise then has nothing more to do.
    pub(crate) fn start(&mut self) -> Option<P> {
        match self.cell.header.try_start() {
            // SAFETY: we won the claim.
            Claim::Won => Some(unsafe { self.cell.work.take() }),
            Claim::Cancelled | Claim::Started => None,
        }
    }

    /// Whether this promise won the start claim (and so owns the task until it completes it).
    pub(crate) fn is_started(&self) -> bool {
        // Only the promise claims its task to run it, and the claim is its own earlier write.
        self.cell.header.state() & RUNNING != 0
    }

    /// Whether the handle cancelled the task before it started (then it is done already).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cell.header.state() & CANCELLED != 0
    }

    /// Ends the task with `outcome`, claiming it first when it was never started. A task that
    /// was cancelled before that keeps its cancellation, and `outcome` is dropped.
    #[inline]
    pub(crate) fn complete(mut self, outcome: Outcome<T>) {
        if !self.claim_to_settle() {
            return;
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the reference (its only field) is moved out
        // exactly once.
        let cell = unsafe { std::ptr::read(&this.cell) };
        // The promise's reference goes in the step that publishes: the handle, usually the
        // last one left, then frees the cell after a plain load.
        cell.complete_and_release(outcome);
    }

    /// Makes sure the promise owns the task, claiming it first when it was never started.
    /// False when there is nothing to publish: the task was cancelled before it started (then
    /// asking again, as the drop of a promise that `complete` found cancelled does, is false
    /// again).
    fn claim_to_settle(&mut self) -> bool {
        if self.is_started() {
            return true;
        }
        match self.cell.header.try_start() {
            Claim::Won => {
                // SAFETY: we won the claim.
                drop(unsafe { self.cell.work.take() });
                true
            }
            Claim::Cancelled | Claim::Started => false,
        }
    }
}

/// See [`Promise::share_extra`].
pub(crate) struct SharedExtra<T, P, X: Hooks>(CellRef<T, Work<P, X>>);

impl<T, P, X: Hooks> std::ops::Deref for SharedExtra<T, P, X> {
    type Target = X;

    fn deref(&self) -> &X {
        &self.0.work.extra
    }
}

impl<T, P, X: Hooks> Drop for Promise<T, P, X> {
    fn drop(&mut self) {
        // Not completed (`complete` consumes the promise without dropping it): the task ends
        // with the lane's reason, unless it was cancelled before it started.
        if self.claim_to_settle() {
            let reason = self.extra().abandoned();
            self.cell.header.complete(Err(reason));
        }
    }
}

#[cfg(all(test, brigade_loom))]
mod loom_tests {
    //! Model checks of a promise that gives up its reference in the step that publishes.
    use super::*;
    use crate::task::cell::SETTLED;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_handle_collects_while_the_promise_completes() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut promise, task) = Promise::<Counted, ()>::new((), ());
            let value = Counted(drops.clone());
            let lane = thread::spawn(move || {
                promise.start();
                promise.complete(Ok(value));
            });
            while task.completion().state() & SETTLED == 0 {
                thread::yield_now();
            }
            let value = task.result().ok().expect("it completed");
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            drop(value);
            lane.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_handle_dropped_while_the_promise_completes_frees_the_value_once() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (promise, task) = Promise::<Counted, ()>::new((), ());
            let value = Counted(drops.clone());
            let lane = thread::spawn(move || promise.complete(Ok(value)));
            drop(task);
            lane.join().unwrap();
            // Whoever went last freed the cell and dropped the value, once.
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn start_hands_out_the_payload_once_and_complete_publishes() {
        let (mut promise, task) = Promise::<u32, &str>::new("payload", ());
        assert!(!task.is_running());
        assert_eq!(promise.start(), Some("payload"));
        assert!(task.is_running());
        assert_eq!(promise.start(), None);
        promise.complete(Ok(7));
        assert_eq!(task.result(), Ok(7));
    }

    #[test]
    fn a_cancelled_task_is_not_started_and_keeps_its_cancellation() {
        let (mut promise, task) = Promise::<u32, String>::new("payload".into(), ());
        assert!(task.cancel());
        assert!(promise.is_cancelled());
        assert_eq!(promise.start(), None);
        promise.complete(Ok(1));
        assert_eq!(task.result(), Err(Error::Cancelled));
    }

    #[test]
    fn completing_without_starting_claims_the_task() {
        let (promise, task) = Promise::<u32, ()>::new((), ());
        promise.complete(Err(Error::ShutDown));
        assert!(!task.cancel());
        assert_eq!(task.result(), Err(Error::ShutDown));
    }

    #[test]
    fn dropping_an_unfulfilled_promise_ends_the_task() {
        let (promise, task) = Promise::<u32, ()>::new((), ());
        drop(promise);
        assert_eq!(task.result(), Err(Error::ShutDown));

        let (mut promise, task) = Promise::<u32, ()>::new((), ());
        promise.start();
        drop(promise);
        assert_eq!(task.result(), Err(Error::ShutDown));
    }

    struct Interruptible(std::sync::atomic::AtomicBool);

    impl Hooks for Interruptible {
        fn interrupt(&self) -> bool {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            true
        }
        fn abandoned(&self) -> Error {
            Error::Cancelled
        }
    }

    #[test]
    fn cancel_on_a_started_task_asks_the_lane_to_interrupt_it() {
        let (mut promise, task) =
            Promise::<u32, (), Interruptible>::new((), Interruptible(Default::default()));
        promise.start();
        assert!(task.cancel());
        assert!(promise.extra().0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(
            !task.is_cancelled(),
            "still running until the lane stops it"
        );
        drop(promise); // the lane drops the interrupted work
        assert!(task.is_cancelled());
        assert_eq!(task.result(), Err(Error::Cancelled));
    }
}
