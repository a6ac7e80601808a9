//! The second half of a `join`, kept on its owner's stack instead of the heap.
//!
//! `join(a, b)` on a worker pushes `b` onto the worker's own deque as a job pointing at a
//! [`StackJob`] in the joining frame, runs `a`, then takes `b` back: usually it pops `b`
//! itself and runs it inline, so a join that nobody steals costs a push and a pop and
//! allocates nothing. If a thief stole `b`, the owner runs other work until the thief reports
//! `DONE`; if a shutdown drained `b` from the deque, it is `HANDED_BACK` and the owner runs it.
//!
//! The frame must outlive every use of the pointer. The deque hands each job to exactly one
//! taker (the owner's pop, a thief's steal or a drain), and the owner does not leave the frame
//! before either popping `b` back or seeing `DONE`/`HANDED_BACK`; the taker reads everything it
//! needs (the owner's waker) *before* publishing that state, and touches nothing after. The
//! taker works through a raw pointer, never a reference that would outlive its last access.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use crate::sync::UnsafeCell;
use crate::sync::atomic::{AtomicU8, Ordering};

const QUEUED: u8 = 0;
const DONE: u8 = 1;
const HANDED_BACK: u8 = 2;

/// `b` of a `join`, with room for its result, in the joining worker's frame.
pub(super) struct StackJob<'w, F, R> {
    func: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<std::thread::Result<R>>>,
    state: AtomicU8,
    owner: &'w Waker,
}

// SAFETY: `func` and `result` are touched by one party at a time: the taker until it publishes
// DONE (release), then the owner after observing it (acquire); or the owner alone when it pops
// the job back or gets it handed back. `F` and `R` cross threads, hence `Send`.
unsafe impl<F: Send, R: Send> Sync for StackJob<'_, F, R> {}

impl<'w, F, R> StackJob<'w, F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    #[inline]
    pub(super) fn new(func: F, owner: &'w Waker) -> Self {
        Self {
            func: UnsafeCell::new(Some(func)),
            result: UnsafeCell::new(None),
            state: AtomicU8::new(QUEUED),
            owner,
        }
    }

    /// Whether a thief finished the job or a drain handed it back.
    #[inline]
    pub(super) fn finished(&self) -> bool {
        self.state.load(Ordering::Acquire) != QUEUED
    }

    /// The job's outcome, running it here unless a thief already did. The owner calls this
    /// once it popped the job back or [`Self::finished`] holds. Run here, a panic simply
    /// unwinds through the caller: nothing else of the join is pending by then.
    #[inline]
    pub(super) fn into_result(self) -> std::thread::Result<R> {
        if self.state.load(Ordering::Acquire) == DONE {
            // SAFETY: DONE was published with release after the thief's last write.
            return self
                .result
                .with_mut(|r| unsafe { (*r).take() })
                .expect("a thief stored it");
        }
        // SAFETY: nobody else holds the job: popped back by us, or handed back.
        let func = self
            .func
            .with_mut(|f| unsafe { (*f).take() })
            .expect("not run yet");
        Ok(func())
    }

    /// Runs the job for its owner and tells it so.
    ///
    /// # Safety
    /// `this` points at a live job that the caller took from a queue; it is used once.
    pub(super) unsafe fn execute(this: *const Self) {
        // SAFETY: we took the job from the deque, so we are its only user until DONE; the
        // frame lives until then. Each access below is a short-lived place expression.
        let func = unsafe { (*this).func.with_mut(|f| (*f).take()) }.expect("queued once");
        let result = catch_unwind(AssertUnwindSafe(func));
        // SAFETY: as above.
        unsafe { (*this).result.with_mut(|r| *r = Some(result)) };
        // SAFETY: as above; the waker is copied out before DONE, after which the frame may go.
        unsafe { Self::publish(this, DONE) };
    }

    /// Gives the job back to its owner unrun.
    ///
    /// # Safety
    /// As for [`Self::execute`].
    pub(super) unsafe fn hand_back(this: *const Self) {
        // SAFETY: as in `execute`.
        unsafe { Self::publish(this, HANDED_BACK) };
    }

    /// # Safety
    /// As for [`Self::execute`]; `this` is not used again.
    unsafe fn publish(this: *const Self, state: u8) {
        // SAFETY: still before the store below, so the frame is alive.
        let owner = unsafe { (*this).owner.clone() };
        // SAFETY: the last access; after it the owner may leave and free the frame.
        unsafe { (*this).state.store(state, Ordering::Release) };
        owner.wake();
    }
}

#[cfg(all(test, brigade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;

    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn a_stolen_half_publishes_its_result_to_the_owner() {
        loom::model(|| {
            let woken = std::sync::Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(woken.clone());
            let job = Arc::new(StackJob::new(|| 40 + 2, &*Box::leak(Box::new(waker))));
            let taken = super::super::job::Job::stack(&*job);
            let thief = loom::thread::spawn(move || taken.execute(&|| ()));
            while !job.finished() {
                loom::thread::yield_now();
            }
            // The result is read before joining the thief: DONE alone must publish it.
            let job = Arc::try_unwrap(job)
                .ok()
                .expect("the thief holds only a raw pointer");
            assert_eq!(job.into_result().unwrap(), 42);
            thief.join().unwrap();
            assert!(woken.0.load(Ordering::Acquire));
        });
    }
}
