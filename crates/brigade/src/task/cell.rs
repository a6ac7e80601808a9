//! The shared state behind a [`Task`](super::Task): one allocation holding the work, its
//! outcome, and the state machine that decides who may touch which.
//!
//! # The state machine
//!
//! ```text
//!   pending ──try_start──▶ running ──complete──▶ complete (Ok | Err)
//!      │
//!      └────try_cancel───▶ cancelled ──complete(Err(Cancelled))──▶ complete
//! ```
//!
//! `state` packs the lifecycle bits with two flags. Whoever wins the one compare-and-swap out of
//! *pending* (a worker via [`try_start`](Header::try_start), a canceller via
//! [`try_cancel`](Header::try_cancel)) becomes the task's **owner**: only the owner touches the
//! work slot and writes the outcome slot, so neither needs a lock. Publishing `SETTLED` with
//! release ordering hands the outcome slot to the handle, which reads it only after observing
//! `SETTLED` with acquire ordering. After publishing, the owner never touches the slots again.
//!
//! Completion publishes two bits. `COMPLETE` says the outcome is stored: from then on the task
//! *is done* (`is_done()` holds, even inside its own done callbacks, as in Python). `SETTLED`
//! follows once every done callback has run: only then may the handle take the outcome out,
//! and only then are waiters woken. Callbacks read the outcome by shared reference between the
//! two, so taking it (which needs `SETTLED`) can never pull it from under them.
//!
//! Waiters (blocked threads, async wakers, done callbacks) are rare compared with tasks, so they
//! live behind a lazily allocated, mutex-guarded list, and `WATCHED` tells the owner whether it
//! must look there at all: completing an unwatched task is a single compare-and-swap that sets
//! `COMPLETE` and `SETTLED` together. Registration sets `WATCHED` and checks `SETTLED` in one
//! atomic step while holding the list's lock, and the owner publishes `SETTLED` on the watched
//! path while holding the same lock, so a waiter either lands in the list before the owner
//! drains it or sees `SETTLED` and does not wait: no wake-up is lost.
//!
//! Done callbacks run after `COMPLETE` and before `SETTLED`, on the owner's thread, in the order
//! added; one added while they run (even from another thread, even after `COMPLETE`) is picked
//! up by the owner's next pass. One added after `SETTLED` runs at once in the caller's thread.
//! So each runs exactly once, in order, never two at a time, and while one runs no one can
//! reach the outcome mutably.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use super::origin::Origin;
use crate::error::Error;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Mutex, UnsafeCell};

/// A worker has claimed the task and is running it.
pub(crate) const RUNNING: usize = 1;
/// A canceller claimed the task before it started; it will never run.
pub(crate) const CANCELLED: usize = 2;
/// The outcome is stored: the task is done.
pub(crate) const COMPLETE: usize = 4;
/// The stored outcome is an error (set together with `COMPLETE`).
pub(crate) const FAILED: usize = 8;
/// Someone registered a waker or callback; the owner must look at the waiter list.
const WATCHED: usize = 16;
/// Every done callback has run: the handle may take the outcome, and waiters are woken.
pub(crate) const SETTLED: usize = 32;

const CLAIMED: usize = RUNNING | CANCELLED;

/// What a task ends with.
pub(crate) type Outcome<T> = Result<T, Error>;

type Callback<T> = Box<dyn FnOnce(&Outcome<T>) + Send>;

struct Watchers<T> {
    callbacks: Vec<Callback<T>>,
    wakers: Vec<Waker>,
}

/// Everything about a task except its work.
pub(crate) struct Header<T> {
    state: AtomicUsize,
    /// Where the task comes from; written once, before the task is shared.
    pub(crate) origin: Origin,
    outcome: UnsafeCell<Option<Outcome<T>>>,
    watchers: Mutex<Option<Box<Watchers<T>>>>,
}

// SAFETY: the outcome slot is written only by the task's unique owner before it publishes
// COMPLETE, read by the owner's thread alone (its done callbacks) until it publishes SETTLED,
// and read after that only through the handle (`Task<T>`), whose own `Sync` requires
// `T: Sync` for shared reads from several threads. Everything else in the header is already
// `Sync`. So sharing a header between the owner's thread and the handle's needs only `T: Send`.
unsafe impl<T: Send> Sync for Header<T> {}

/// How a claim on a pending task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The caller won and now owns the task.
    Won,
    /// The task was already cancelled.
    Cancelled,
    /// The task is running or has finished.
    Started,
}

impl<T> Header<T> {
    pub(crate) fn new(origin: Origin) -> Self {
        Self {
            state: AtomicUsize::new(0),
            origin,
            outcome: UnsafeCell::new(None),
            watchers: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    /// Claims a pending task with `bit`; exactly one claim ever wins.
    fn claim(&self, bit: usize) -> Claim {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            if current & CANCELLED != 0 {
                return Claim::Cancelled;
            }
            if current & CLAIMED != 0 {
                return Claim::Started;
            }
            match self.state.compare_exchange_weak(
                current,
                current | bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Claim::Won,
                Err(actual) => current = actual,
            }
        }
    }

    /// A worker claims the task to run it.
    pub(crate) fn try_start(&self) -> Claim {
        self.claim(RUNNING)
    }

    /// A canceller claims the task so that it never runs.
    pub(crate) fn try_cancel(&self) -> Claim {
        self.claim(CANCELLED)
    }

    /// Stores the outcome, publishes `COMPLETE`, runs the done callbacks, publishes `SETTLED`
    /// and wakes the waiters.
    ///
    /// Only the owner (the winner of [`claim`](Self::claim)) may call this, once.
    pub(crate) fn complete(&self, outcome: Outcome<T>) {
        // A running task that a lane interrupted (an aborted async task) ends cancelled too.
        let done = match &outcome {
            Ok(_) => COMPLETE,
            Err(Error::Cancelled) => COMPLETE | FAILED | CANCELLED,
            Err(_) => COMPLETE | FAILED,
        };
        // SAFETY: we are the owner; nobody else reads or writes the slot before COMPLETE.
        self.outcome
            .with_mut(|slot| unsafe { *slot = Some(outcome) });
        let mut current = self.state.load(Ordering::Relaxed);
        while current & WATCHED == 0 {
            // Release: the outcome write above happens-before any acquire load that sees
            // COMPLETE. A failed exchange means a waiter just set WATCHED: go the slow way.
            match self.state.compare_exchange_weak(
                current,
                current | done | SETTLED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
        // Done from here on, for everyone, callbacks included.
        self.state.fetch_or(done, Ordering::AcqRel);
        loop {
            let mut guard = self.watchers.lock();
            let watchers = guard.as_mut().expect("WATCHED is set only with a list");
            if watchers.callbacks.is_empty() {
                let wakers = std::mem::take(&mut watchers.wakers);
                // Published under the list's lock, so a registration either precedes this (and
                // its waker is in `wakers`) or follows it (and sees SETTLED). See the module docs.
                self.state.fetch_or(SETTLED, Ordering::AcqRel);
                drop(guard);
                wakers.into_iter().for_each(wake_guarded);
                return;
            }
            let callbacks = std::mem::take(&mut watchers.callbacks);
            drop(guard);
            self.outcome.with(|slot| {
                // SAFETY: SETTLED is not published, so the handle cannot take the outcome, and
                // no one else writes it; callbacks get only a shared reference, one at a time.
                let outcome = unsafe { (*slot).as_ref() }.expect("outcome was stored");
                callbacks
                    .into_iter()
                    .for_each(|callback| run_callback(callback, outcome));
            });
            // Callbacks added meanwhile landed in the list; the next pass runs them.
        }
    }

    /// Registers under the waiter lock unless the task is already settled.
    ///
    /// Returns `false` (and leaves the list alone) when the task was already settled.
    fn watch_with(&self, register: impl FnOnce(&mut Watchers<T>)) -> bool {
        let mut guard = self.watchers.lock();
        let previous = self.state.fetch_or(WATCHED, Ordering::AcqRel);
        if previous & SETTLED != 0 {
            return false;
        }
        register(guard.get_or_insert_with(|| {
            Box::new(Watchers {
                callbacks: Vec::new(),
                wakers: Vec::new(),
            })
        }));
        true
    }

    /// Asks for `waker` to be woken once the task is settled. Returns `false`, registering
    /// nothing, when it already is.
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        self.watch_with(|w| {
            if !w.wakers.iter().any(|known| known.will_wake(waker)) {
                w.wakers.push(waker.clone());
            }
        })
    }

    /// Adds a done callback; runs it right here when the task is already settled.
    pub(crate) fn add_callback(&self, callback: Callback<T>) {
        let mut pending = Some(callback);
        if !self.watch_with(|w| w.callbacks.extend(pending.take())) {
            let callback = pending.take().expect("not moved when already complete");
            self.outcome.with(|slot| {
                // SAFETY: SETTLED was observed with acquire ordering, so the owner is done
                // with the slot; the handle can only take the outcome through `&mut Task`,
                // which cannot coexist with the `&Task` that led here.
                match unsafe { (*slot).as_ref() } {
                    Some(outcome) => run_callback(callback, outcome),
                    None => run_callback(callback, &Err(Error::Consumed)),
                }
            });
        }
    }

    /// Takes the outcome out of a complete task.
    ///
    /// # Safety
    /// `SETTLED` must have been observed with acquire ordering, and the caller must hold the
    /// only handle exclusively (`&mut Task`).
    pub(crate) unsafe fn take_outcome(&self) -> Option<Outcome<T>> {
        debug_assert!(self.state() & SETTLED != 0);
        // SAFETY: guaranteed by the caller, see above.
        self.outcome.with_mut(|slot| unsafe { (*slot).take() })
    }
}

/// Wakers come from whatever executor awaits the task; one that panics must not take the
/// completing worker down with it.
fn wake_guarded(waker: Waker) {
    if catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err() {
        tracing::error!("a waker panicked while a task completed; the others were still woken");
    }
}

fn run_callback<T>(callback: Callback<T>, outcome: &Outcome<T>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback(outcome))) {
        let Error::Panicked { message } = Error::from_panic(&*payload) else {
            unreachable!("from_panic always gives Panicked")
        };
        tracing::error!(panic = %message, "a task's done callback panicked; the others still run");
    }
}

/// The closure slot, plus whatever a kind of job keeps beside it (`X`: a scoped task keeps
/// its scope's latch). Only the task's owner takes the closure out.
pub(crate) struct Work<F, X = ()> {
    f: UnsafeCell<Option<F>>,
    pub(crate) extra: X,
}

// SAFETY: the closure slot is touched only by the owner of the task (one thread, after a
// successful claim, which acquires the construction); `F: Send` lets that thread be another
// than the one that built the task. `extra` is only read, and is `Sync` itself.
unsafe impl<F: Send, X: Sync> Sync for Work<F, X> {}

impl<F, X> Work<F, X> {
    /// Takes the work out. Only the owner may call this, once.
    pub(super) fn take(&self) -> Option<F> {
        // SAFETY: only the owner calls this, see `Sync` above.
        self.f.with_mut(|slot| unsafe { (*slot).take() })
    }
}

/// What a lane keeps beside a task's work, and how it reacts to the handle.
pub(crate) trait Hooks: Send + Sync {
    /// Asked by [`Task::cancel`](super::Task::cancel) once the task has started: a lane that can
    /// stop running work (an async task at its next await) starts doing so and returns true.
    fn interrupt(&self) -> bool {
        false
    }

    /// The outcome of a task whose [`Promise`](super::promise::Promise) was dropped unfulfilled.
    fn abandoned(&self) -> Error {
        Error::ShutDown
    }
}

impl Hooks for () {}

/// The work slot with its type erased, so that handles need not know the closure's type.
pub(crate) trait Erased: Send + Sync {
    /// Drops the work unrun. Only the owner may call this.
    fn discard(&self);

    /// See [`Hooks::interrupt`].
    fn interrupt(&self) -> bool;
}

impl<F: Send, X: Hooks> Erased for Work<F, X> {
    fn discard(&self) {
        drop(self.take());
    }

    fn interrupt(&self) -> bool {
        self.extra.interrupt()
    }
}

/// One task: its header and its work, in one allocation. Handles see it as
/// `Cell<T, dyn Erased>`; queues hold it as a `threads::job::Job`, with both types erased.
pub(crate) struct Cell<T, W: ?Sized> {
    pub(crate) header: Header<T>,
    pub(crate) work: W,
}

impl<T, F> Cell<T, Work<F>> {
    pub(crate) fn new(work: F, origin: Origin) -> Self {
        Self::with(work, (), origin)
    }
}

impl<T, F, X> Cell<T, Work<F, X>> {
    /// A task whose work slot also keeps `extra`.
    pub(crate) fn with(work: F, extra: X, origin: Origin) -> Self {
        Self {
            header: Header::new(origin),
            work: Work {
                f: UnsafeCell::new(Some(work)),
                extra,
            },
        }
    }
}

impl<T, W: Erased + ?Sized> Cell<T, W> {
    /// Cancels the task if it has not started, or interrupts it if its lane can. True when it
    /// is (now or already) cancelled, or an interruption is under way.
    pub(crate) fn cancel(&self) -> bool {
        match self.header.try_cancel() {
            Claim::Won => {
                self.work.discard();
                self.header.complete(Err(Error::Cancelled));
                true
            }
            Claim::Cancelled => true,
            Claim::Started => self.header.state() & COMPLETE == 0 && self.work.interrupt(),
        }
    }

    /// Ends a task that can no longer run (its pool refused or dropped it) with `reason`.
    pub(crate) fn abandon(&self, reason: Error) {
        if self.header.try_cancel() == Claim::Won {
            self.work.discard();
            self.header.complete(Err(reason));
        }
    }
}

impl<T, F, X> Cell<T, Work<F, X>>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    /// Runs the task unless it was cancelled, calling `before_publish` after the work and
    /// before its outcome becomes visible. Returns the panic message if it panicked.
    pub(crate) fn run(&self, before_publish: &dyn Fn()) -> Option<String> {
        if self.header.try_start() != Claim::Won {
            return None;
        }
        let work = self.work.take().expect("the owner takes the work once");
        // The closure is consumed by the call, so whatever it captured is dropped here, before
        // completion: once a waiter sees the outcome, the pool holds nothing of the closure.
        let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(|p| Error::from_panic(&*p));
        let panicked = match &outcome {
            Err(Error::Panicked { message }) => Some(message.clone()),
            _ => None,
        };
        before_publish();
        self.header.complete(outcome);
        panicked
    }
}

#[cfg(all(test, brigade_loom))]
mod loom_tests {
    //! Model checks of the state machine: every interleaving of the racing parties, with loom
    //! checking each access to the two unsafe slots.
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    type TestCell = Cell<usize, Work<Box<dyn FnOnce() -> usize + Send>>>;

    fn cell(value: usize) -> Arc<TestCell> {
        Arc::new(Cell::new(Box::new(move || value), Origin::UNKNOWN))
    }

    fn outcome(cell: &TestCell) -> Option<Outcome<usize>> {
        if cell.header.state() & SETTLED == 0 {
            return None;
        }
        // SAFETY: SETTLED observed; the test is the only handle.
        unsafe { cell.header.take_outcome() }
    }

    #[test]
    fn cancel_races_start() {
        loom::model(|| {
            let task = cell(7);
            let worker = {
                let task = task.clone();
                thread::spawn(move || task.run(&|| ()))
            };
            let cancelled = task.cancel();
            assert_eq!(worker.join().unwrap(), None);
            let outcome = outcome(&task).expect("both parties are done, so it is complete");
            if cancelled {
                assert_eq!(outcome, Err(Error::Cancelled));
                assert!(task.header.state() & CANCELLED != 0);
            } else {
                assert_eq!(outcome, Ok(7));
                assert!(task.header.state() & RUNNING != 0);
            }
        });
    }

    #[test]
    fn completion_races_waker_registration() {
        loom::model(|| {
            let task = cell(3);
            let (tx, rx) = loom::sync::mpsc::channel();
            let worker = {
                let task = task.clone();
                thread::spawn(move || task.run(&|| ()))
            };
            let waker = Waker::from(Arc::new(ChannelWaker(Mutex::new(tx))));
            if task.header.watch(&waker) {
                // Registered before completion: the owner must wake us exactly once.
                rx.recv().unwrap();
            }
            worker.join().unwrap();
            assert_eq!(outcome(&task), Some(Ok(3)));
        });
    }

    #[test]
    fn callbacks_run_once_in_order_while_completion_races() {
        loom::model(|| {
            let task = cell(5);
            let log = Arc::new(Mutex::new(Vec::new()));
            let worker = {
                let task = task.clone();
                thread::spawn(move || task.run(&|| ()))
            };
            for i in 0..2 {
                let log = log.clone();
                let header = task.clone();
                task.header.add_callback(Box::new(move |outcome| {
                    assert_eq!(outcome, &Ok(5));
                    // Done callbacks run once the task counts as done (Python's order).
                    assert!(header.header.state() & COMPLETE != 0);
                    log.lock().push(i);
                }));
            }
            worker.join().unwrap();
            assert_eq!(*log.lock(), vec![0, 1]);
            assert_eq!(outcome(&task), Some(Ok(5)));
        });
    }

    #[test]
    fn blocking_wait_races_completion() {
        loom::model(|| {
            let task = cell(9);
            let worker = {
                let task = task.clone();
                thread::spawn(move || task.run(&|| ()))
            };
            let header = &task.header;
            crate::task::block::block_until(
                || header.state() & SETTLED != 0,
                |waker| {
                    header.watch(waker);
                },
                None,
            );
            assert_eq!(outcome(&task), Some(Ok(9)));
            worker.join().unwrap();
        });
    }

    struct ChannelWaker(Mutex<loom::sync::mpsc::Sender<()>>);

    impl std::task::Wake for ChannelWaker {
        fn wake(self: Arc<Self>) {
            self.0.lock().send(()).unwrap();
        }
    }
}
