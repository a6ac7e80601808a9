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
//!
//! # Who frees the cell
//!
//! The same word counts the references to the cell (the handle, the queued job or the lane's
//! promise; see [`CellRef`](super::refs::CellRef)), above the lifecycle bits, so that a thread
//! pool worker drops its reference *in* the compare-and-swap that completes the task, and a
//! handle that finds itself the last reference frees the cell after a plain load. A task that
//! is submitted, run and collected thus costs one allocation and no reference-count traffic
//! beyond the state word it already writes. The lane (for `Debug`) is kept there too, as it
//! never changes.

use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::ptr;
use std::task::Waker;

use super::origin::{LaneName, Origin};
use crate::error::Error;
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
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

/// Where the task's lane is kept (three bits, written once).
const LANE_SHIFT: u32 = 6;
const LANE_MASK: usize = 0b111 << LANE_SHIFT;

/// One reference to the cell; the count takes the rest of the word.
pub(super) const REF_ONE: usize = 1 << 9;
const REF_MASK: usize = !(REF_ONE - 1);

/// What a task ends with.
pub(crate) type Outcome<T> = Result<T, Error>;

type Callback<T> = Box<dyn FnOnce(&Outcome<T>) + Send>;

struct Watchers<T> {
    callbacks: Vec<Callback<T>>,
    wakers: Wakers,
}

/// The wakers to wake once the task is settled. Nearly always one (the task awaiting the
/// handle), kept in place: a list that allocates on its first push cost an `.await` that
/// found the task unfinished a second allocation (~150 instructions under callgrind, on a
/// path of ~5,000 for a spawn and await of a no-op).
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakers {
    /// Adds `waker` unless one that wakes the same task is there already.
    fn add(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                if !self.more.iter().any(|known| known.will_wake(waker)) {
                    self.more.push(waker.clone());
                }
            }
        }
    }

    fn wake_all(self) {
        self.first
            .into_iter()
            .chain(self.more)
            .for_each(wake_guarded);
    }
}

/// Everything about a task except its work.
pub(crate) struct Header<T> {
    /// Lifecycle bits, the lane, and the reference count.
    state: AtomicUsize,
    /// Where the task was submitted; written once, before the task is shared.
    site: Option<&'static Location<'static>>,
    outcome: UnsafeCell<Option<Outcome<T>>>,
    /// The waiter list, allocated by the first registration (null until then) and freed with
    /// the cell. Most tasks never have one, so it costs them a pointer, not a lock.
    watchers: AtomicPtr<Mutex<Watchers<T>>>,
}

// SAFETY: the outcome slot is written only by the task's unique owner before it publishes
// COMPLETE, read by the owner's thread alone (its done callbacks) until it publishes SETTLED,
// and read after that only through the handle (`Task<T>`), whose own `Sync` requires
// `T: Sync` for shared reads from several threads. The waiter list is reached only through its
// mutex, and holds `Send` callbacks and wakers. So sharing a header between the owner's thread
// and the handle's needs only `T: Send`.
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
    /// A pending task from `origin`, with one reference (its creator's).
    pub(crate) fn new(origin: Origin) -> Self {
        Self {
            state: AtomicUsize::new(((origin.lane as usize) << LANE_SHIFT) | REF_ONE),
            site: origin.site,
            outcome: UnsafeCell::new(None),
            watchers: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The lifecycle bits (and others that the lifecycle masks ignore).
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    /// Where the task comes from.
    pub(crate) fn origin(&self) -> Origin {
        let lane = (self.state.load(Ordering::Relaxed) & LANE_MASK) >> LANE_SHIFT;
        Origin {
            lane: LaneName::from_index(lane),
            site: self.site,
        }
    }

    /// Whether a claim on the task has won (so its work slot is empty).
    pub(super) fn is_claimed(&self) -> bool {
        self.state.load(Ordering::Relaxed) & CLAIMED != 0
    }

    /// Sets the reference count of a cell nobody else can see yet.
    pub(super) fn set_refs_unshared(&mut self, refs: usize) {
        let state = self.state.load(Ordering::Relaxed);
        self.state = AtomicUsize::new((state & !REF_MASK) | (refs * REF_ONE));
    }

    /// Adds a reference; the caller holds one already.
    pub(super) fn add_ref(&self) {
        // Relaxed, as in `Arc::clone`: a new reference is made from an existing one, which
        // keeps the cell alive meanwhile.
        let before = self.state.fetch_add(REF_ONE, Ordering::Relaxed);
        assert!(
            before & REF_MASK < REF_MASK / 2,
            "task reference count overflow"
        );
    }

    /// Drops a reference. True when it was the last one: the caller must free the cell.
    pub(super) fn release(&self) -> bool {
        // The usual last reference (a handle whose worker already let go) sees itself alone
        // with a load; acquire makes every other holder's use of the cell happen before ours
        // ends, as the acquire of `Arc`'s last decrement does. Nobody can add a reference
        // meanwhile: only a holder can, and we are the only one.
        if self.state.load(Ordering::Acquire) & REF_MASK == REF_ONE {
            return true;
        }
        let before = self.state.fetch_sub(REF_ONE, Ordering::AcqRel);
        before & REF_MASK == REF_ONE
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
        self.complete_inner(outcome, false);
    }

    /// [`complete`](Self::complete), dropping the caller's reference in the same step. True
    /// when it was the last reference: the caller must free the cell. Otherwise the caller
    /// must not touch the cell again: the handle may free it at once.
    #[inline]
    pub(super) fn complete_and_release(&self, outcome: Outcome<T>) -> bool {
        self.complete_inner(outcome, true)
    }

    #[inline]
    fn complete_inner(&self, outcome: Outcome<T>, release: bool) -> bool {
        // A running task that a lane interrupted (an aborted async task) ends cancelled too.
        let done = match &outcome {
            Ok(_) => COMPLETE,
            Err(Error::Cancelled) => COMPLETE | FAILED | CANCELLED,
            Err(_) => COMPLETE | FAILED,
        };
        let ours = if release { REF_ONE } else { 0 };
        // SAFETY: we are the owner; nobody else reads or writes the slot before COMPLETE.
        self.outcome
            .with_mut(|slot| unsafe { *slot = Some(outcome) });
        let mut current = self.state.load(Ordering::Relaxed);
        while current & WATCHED == 0 {
            // Release: the outcome write above happens-before any acquire load that sees
            // COMPLETE. Acquire: if ours is the last reference, every other holder is done
            // with the cell. A failed exchange means a waiter just set WATCHED (go the slow
            // way), or a reference came or went (try again).
            match self.state.compare_exchange_weak(
                current,
                (current | done | SETTLED) - ours,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(before) => return release && before & REF_MASK == REF_ONE,
                Err(actual) => current = actual,
            }
        }
        self.complete_watched(done, release)
    }

    /// The rest of [`complete_inner`](Self::complete_inner) for a task that someone watches:
    /// out of line, so that the usual unwatched completion stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn complete_watched(&self, done: usize, release: bool) -> bool {
        // Done from here on, for everyone, callbacks included.
        self.state.fetch_or(done, Ordering::AcqRel);
        // SAFETY: WATCHED is set only after the list is installed (see `watch_with`), and the
        // acquire above synchronizes with that.
        let list = unsafe { &*self.watchers.load(Ordering::Acquire) };
        loop {
            let mut watchers = list.lock();
            if watchers.callbacks.is_empty() {
                let wakers = std::mem::take(&mut watchers.wakers);
                // Published under the list's lock, so a registration either precedes this (and
                // its waker is in `wakers`) or follows it (and sees SETTLED). See the module docs.
                self.state.fetch_or(SETTLED, Ordering::AcqRel);
                drop(watchers);
                wakers.wake_all();
                return release && self.release();
            }
            let callbacks = std::mem::take(&mut watchers.callbacks);
            drop(watchers);
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

    /// The waiter list, installing it on first use.
    fn watchers(&self) -> &Mutex<Watchers<T>> {
        let mut list = self.watchers.load(Ordering::Acquire);
        if list.is_null() {
            let new = Box::into_raw(Box::new(Mutex::new(Watchers {
                callbacks: Vec::new(),
                wakers: Wakers::default(),
            })));
            list = match self.watchers.compare_exchange(
                ptr::null_mut(),
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => new,
                Err(theirs) => {
                    // SAFETY: ours was never shared.
                    drop(unsafe { Box::from_raw(new) });
                    theirs
                }
            };
        }
        // SAFETY: installed once, freed only with the header.
        unsafe { &*list }
    }

    /// Registers under the waiter lock unless the task is already settled.
    ///
    /// Returns `false` (and leaves the list alone) when the task was already settled.
    fn watch_with(&self, register: impl FnOnce(&mut Watchers<T>)) -> bool {
        let mut watchers = self.watchers().lock();
        let previous = self.state.fetch_or(WATCHED, Ordering::AcqRel);
        if previous & SETTLED != 0 {
            return false;
        }
        register(&mut watchers);
        true
    }

    /// Asks for `waker` to be woken once the task is settled. Returns `false`, registering
    /// nothing, when it already is.
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        self.watch_with(|w| w.wakers.add(waker))
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

impl<T> Drop for Header<T> {
    fn drop(&mut self) {
        let list = self.watchers.load(Ordering::Relaxed);
        if !list.is_null() {
            // SAFETY: installed by `watchers` from a `Box`, and we are the last user.
            drop(unsafe { Box::from_raw(list) });
        }
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
///
/// The slot holds the closure exactly while no claim on the task has won: every claimant
/// takes it out (to run it, or to drop it unrun) right after winning. So the state word says
/// whether it is there, and the slot needs no tag of its own (8 bytes per task, often the
/// difference between two malloc size classes).
pub(crate) struct Work<F, X = ()> {
    f: UnsafeCell<MaybeUninit<F>>,
    pub(crate) extra: X,
}

// SAFETY: the closure slot is touched only by the owner of the task (one thread, after a
// successful claim, which acquires the construction), or by the last reference when no claim
// ever won; `F: Send` lets that thread be another than the one that built the task. `extra`
// is only read, and is `Sync` itself.
unsafe impl<F: Send, X: Sync> Sync for Work<F, X> {}

impl<F, X> Work<F, X> {
    /// Takes the work out.
    ///
    /// # Safety
    /// Only the task's owner (the winner of its claim) may call this, once.
    pub(super) unsafe fn take(&self) -> F {
        // SAFETY: present until the owner takes it, once (see the type's docs).
        self.f
            .with_mut(|slot| unsafe { (*slot).assume_init_read() })
    }
}

/// Dropping the work of a task that nobody claimed, when its cell is freed (see
/// [`CellRef`](super::refs::CellRef)).
pub(crate) trait Slot {
    /// # Safety
    /// No claim on the task ever won, and the cell is being freed by its last reference.
    unsafe fn drop_unclaimed(&self);
}

impl<F, X> Slot for Work<F, X> {
    unsafe fn drop_unclaimed(&self) {
        // SAFETY: unclaimed, so the work is still there, and nobody else can take it.
        drop(unsafe { self.take() });
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
pub(crate) trait Erased: Send + Sync + Slot {
    /// Drops the work unrun.
    ///
    /// # Safety
    /// As for [`Work::take`]: only the task's owner, once.
    unsafe fn discard(&self);

    /// See [`Hooks::interrupt`].
    fn interrupt(&self) -> bool;
}

impl<F: Send, X: Hooks> Erased for Work<F, X> {
    unsafe fn discard(&self) {
        // SAFETY: as required of the caller.
        drop(unsafe { self.take() });
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
                f: UnsafeCell::new(MaybeUninit::new(work)),
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
                // SAFETY: we won the claim.
                unsafe { self.work.discard() };
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
            // SAFETY: we won the claim.
            unsafe { self.work.discard() };
            self.header.complete(Err(reason));
        }
    }
}

impl<T, F, X> Cell<T, Work<F, X>>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    /// Claims and runs the work; `None` when the task was cancelled first. Returns the outcome
    /// to publish, and the panic message if it panicked.
    pub(super) fn run_work(&self) -> Option<(Outcome<T>, Option<String>)> {
        if self.header.try_start() != Claim::Won {
            return None;
        }
        // SAFETY: we won the claim.
        let work = unsafe { self.work.take() };
        // The closure is consumed by the call, so whatever it captured is dropped here, before
        // completion: once a waiter sees the outcome, the pool holds nothing of the closure.
        let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(|p| Error::from_panic(&*p));
        let panicked = match &outcome {
            Err(Error::Panicked { message }) => Some(message.clone()),
            _ => None,
        };
        Some((outcome, panicked))
    }
}

#[cfg(all(test, brigade_loom))]
mod loom_tests;

#[cfg(all(test, not(brigade_loom)))]
mod tests;
