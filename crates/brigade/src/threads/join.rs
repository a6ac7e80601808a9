//! The second half of a `join`, kept on its owner's stack instead of the heap.
//!
//! `join(a, b)` on a worker pushes `b` onto the worker's own deque as a [`StackRef`] (a raw
//! pointer to a [`StackJob`] in the joining frame), runs `a`, then takes `b` back: usually it
//! pops `b` itself and runs it inline, so a join that nobody steals costs a push and a pop and
//! allocates nothing. If a thief stole `b`, the owner runs other work until the thief reports
//! `DONE`; if a shutdown drained `b` from the deque, it is `HANDED_BACK` and the owner runs it.
//!
//! The frame must outlive every use of the pointer. The deque hands each job to exactly one
//! taker (the owner's pop, a thief's steal or a drain), and the owner does not leave the frame
//! before either popping `b` back or seeing `DONE`/`HANDED_BACK`; the taker reads everything it
//! needs (the owner's waker) *before* publishing that state, and touches nothing after.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use crate::sync::UnsafeCell;
use crate::sync::atomic::{AtomicU8, Ordering};

const QUEUED: u8 = 0;
const DONE: u8 = 1;
const HANDED_BACK: u8 = 2;

/// What a queue can do with a stack job without knowing its types.
trait StackRun: Sync {
    /// Runs the job (a thief took it) and tells the owner.
    fn execute(&self);
    /// Gives the job back to its owner unrun (a drain took it).
    fn hand_back(&self);
}

/// A pointer to a [`StackJob`] in some worker's frame, as its deque holds it.
#[derive(Clone, Copy)]
pub(crate) struct StackRef(*const (dyn StackRun + 'static));

// SAFETY: the pointee is `Sync` (see `StackJob`), and the join protocol in the module docs keeps
// it alive for as long as the one party that took the pointer from the deque uses it.
unsafe impl Send for StackRef {}

impl StackRef {
    #[inline]
    pub(super) fn same_as(&self, other: &StackRef) -> bool {
        std::ptr::addr_eq(self.0, other.0)
    }

    /// Runs the job for its owner. Only the party that took this pointer from a deque calls
    /// this, once.
    pub(super) fn execute(self) {
        // SAFETY: the owner waits for DONE before leaving the frame (module docs).
        unsafe { (*self.0).execute() }
    }

    /// Gives the job back unrun. Only the party that took this pointer from a deque calls
    /// this, once.
    pub(super) fn hand_back(self) {
        // SAFETY: the owner waits for HANDED_BACK before leaving the frame (module docs).
        unsafe { (*self.0).hand_back() }
    }
}

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

    /// The pointer to queue. The caller must keep `self` in place until [`Self::finished`]
    /// holds or it has popped the pointer back (see the module docs).
    #[inline]
    pub(super) fn queue_ref(&self) -> StackRef {
        let job: *const (dyn StackRun + '_) = self;
        // SAFETY: only the lifetime bound of the trait object is erased; the owner upholds it
        // by the protocol in the module docs.
        StackRef(unsafe {
            std::mem::transmute::<*const (dyn StackRun + '_), *const (dyn StackRun + 'static)>(job)
        })
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
}

impl<F, R> StackRun for StackJob<'_, F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    fn execute(&self) {
        // SAFETY: we took the job from the deque, so we are its only user until DONE.
        let func = self
            .func
            .with_mut(|f| unsafe { (*f).take() })
            .expect("queued once");
        let result = catch_unwind(AssertUnwindSafe(func));
        // SAFETY: as above.
        self.result.with_mut(|r| unsafe { *r = Some(result) });
        let owner = self.owner.clone(); // after DONE the frame may be gone
        self.state.store(DONE, Ordering::Release);
        owner.wake();
    }

    fn hand_back(&self) {
        let owner = self.owner.clone(); // after HANDED_BACK the frame may be gone
        self.state.store(HANDED_BACK, Ordering::Release);
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
            let taken = job.queue_ref();
            let thief = loom::thread::spawn(move || taken.execute());
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
