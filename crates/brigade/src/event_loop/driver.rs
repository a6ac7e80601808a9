//! What runs inside each tokio task that the loop spawns: the user's future wrapped so that
//! every poll is timed, panics become [`Error::Panicked`], and a cancel from the handle stops
//! it at its next await.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::detect::{Site, Stats};
use super::shutdown::{LiveGuard, LoopState};
use super::{blocking_lane, sched};
use crate::error::Error;
use crate::sync::UnsafeCell;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::task::cell::Hooks;
use crate::task::cell::Outcome;
use crate::task::promise::{Promise, SharedExtra};

thread_local! {
    /// Set on threads where a blocking `block_on` is legitimate even though tokio's context is
    /// set there (the loop's `to_thread` closures).
    static BLOCKING_OK: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside an event loop, where `block_on` must not be called.
///
/// tokio's runtime context is the tell: it is set on a runtime's workers (so in every poll of
/// a brigade task, handed-off polls under `block_in_place` included), on the blocking lane's
/// threads (each inside its own runtime's `block_on`), inside any runtime's `block_on`
/// (`#[tokio::main]` included, whose future is not a task), on tokio's blocking threads, and
/// after `Handle::enter`. tokio panics on a nested `block_on` in most of these, and offers no
/// way to tell them apart, so all of them are refused, except the loop's own
/// [`to_thread`](super::EventLoop::to_thread) threads, which exist to block. (A per-poll
/// marker used to say "inside a brigade poll"; the context covers those polls, and a poll no
/// longer pays for setting it.)
pub(super) fn inside_a_loop() -> bool {
    !BLOCKING_OK.with(Cell::get) && tokio::runtime::Handle::try_current().is_ok()
}

/// Runs `f` on a thread where blocking is allowed even though tokio counts it as a task.
pub(super) fn blocking_allowed<R>(f: impl FnOnce() -> R) -> R {
    BLOCKING_OK.with(|b| b.set(true));
    let out = f();
    BLOCKING_OK.with(|b| b.set(false));
    out
}

/// What an async task keeps beside its handle: how a cancel reaches the running future.
///
/// Cancelling sets the flag and aborts tokio's task through the [`JoinHandle`] kept here:
/// tokio drops the future at its next await (or right after the poll in progress returns
/// pending), never polling it again, and the [`Driver`]'s promise, dropped unfulfilled with it,
/// ends the task with [`Hooks::abandoned`], which sees the flag: [`Error::Cancelled`]. A future
/// is only ever left at an await point, so this is "aborts at the next await". Aborting through
/// tokio spares each task a waker slot (a lock and a waker clone on its first pending poll):
/// the handle that tokio already keeps is the way in.
///
/// [`JoinHandle`]: tokio::task::JoinHandle
pub(super) struct Control {
    /// The loop's shutdown state: a task dropped unfinished while the loop cancels its tasks
    /// ends cancelled.
    state: &'static LoopState,
    /// A shielded task (see [`EventLoop::shield`](super::EventLoop::shield)) refuses
    /// interruption: its handle's `cancel` answers `false`, as for a running thread.
    shielded: bool,
    interrupted: AtomicBool,
    /// tokio's handle on the task: how a cancel aborts it (see above), and kept so that tokio's
    /// allocation is freed where the brigade handle is (usually the thread that spawned and
    /// awaits it), not on the worker that finished it: glibc's allocator pays dearly for memory
    /// freed on another thread than the one that allocated it (the tiny-async benchmark went
    /// from 0.37–0.51× tokio to 0.65–1.00× with this). Written once, by the spawner (see
    /// [`keep`](Self::keep)), before the task's handle leaves the spawning call; a `OnceLock`
    /// here cost ~170 instructions per task under callgrind.
    join: UnsafeCell<Option<tokio::task::JoinHandle<()>>>,
    /// The task's spawn site, and the poll statistics that the [`Driver`] keeps for it from
    /// one poll to the next. They live here, in brigade's cell, rather than in the driver,
    /// because tokio stores the driver in its own task, which it allocates in 128-byte steps:
    /// with them (and the loop's live count) in the driver, a no-op's tokio task took 256
    /// bytes where tokio's own takes 128, and every task paid for the second half (tokio
    /// itself runs `tiny-async` ~15 % slower with a future big enough to cross the step). The
    /// cell must stay within 120 bytes in turn (see [`Stats`]): every field here is packed
    /// for that (40 bytes).
    site: &'static Site,
    stats: UnsafeCell<Stats>,
    /// On a lane thread: blocking there stalls no worker, and there is no worker to hand over.
    /// Written only before the driver is spawned ([`Driver::for_worker`]).
    on_lane: AtomicBool,
}

// SAFETY: `join` is the only field that is not `Sync` by itself. It is written once, by the
// thread that spawned the task, right after spawning (`keep`), while that thread holds every
// handle that can reach `interrupt` (the `Task`, and a group's control): they are handed out
// only after the write, by moves that order it before any use on another thread. From then on
// it is only read (`abort` takes `&self`, and `JoinHandle` is `Sync`), and it is dropped with
// the cell by whoever lets go of the last reference, which is exclusive, and which the
// reference counting (release on every drop, acquire by the last) orders after every read.
// `stats` is touched only by the task's driver: in its polls, which tokio runs one at a time,
// each ordered after the last, and when it is dropped, which excludes a poll. The other fields are atomics.
// So no write ever races a read.
unsafe impl Sync for Control {}

impl Control {
    #[inline]
    pub(super) fn new(
        shielded: bool,
        state: &'static LoopState,
        site: &'static Site,
        on_lane: bool,
    ) -> Self {
        Self {
            state,
            shielded,
            interrupted: AtomicBool::new(false),
            join: UnsafeCell::new(None),
            site,
            stats: UnsafeCell::new(Stats::new()),
            on_lane: AtomicBool::new(on_lane),
        }
    }

    /// The task's poll statistics, with its site.
    ///
    /// # Safety
    /// Only the task's driver may call this, from its poll or its drop (see
    /// `impl Sync for Control`), and not reentrantly.
    #[inline]
    unsafe fn with_stats<R>(&self, f: impl FnOnce(&mut Stats, &'static Site) -> R) -> R {
        // SAFETY: the caller is the driver, the one user of `stats` (see above).
        self.stats
            .with_mut(|stats| f(unsafe { &mut *stats }, self.site))
    }

    #[inline]
    fn on_lane(&self) -> bool {
        self.on_lane.load(Ordering::Relaxed)
    }

    /// Keeps tokio's handle on the task (see the field).
    ///
    /// # Safety
    /// At most one call per task, by the thread that spawned it, through a reference that it
    /// keeps alive until the call returns, and before any handle that can interrupt the task
    /// leaves that thread (see `impl Sync for Control`).
    #[inline]
    pub(super) unsafe fn keep(&self, join: tokio::task::JoinHandle<()>) {
        // SAFETY: the caller's single write, before anyone can read the slot.
        self.join.with_mut(|slot| unsafe { *slot = Some(join) });
    }

    #[inline]
    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }
}

/// A second handle on a task's [`Control`], for whoever must be able to interrupt the task
/// without holding its [`Task`](crate::Task) (a [`TaskGroup`](super::TaskGroup)).
pub(super) type ControlRef<T> = SharedExtra<T, (), Control>;

/// Interrupts a task whatever its value type.
pub(super) trait Interrupt: Send + Sync {
    /// See [`Hooks::interrupt`]: a task not started yet never runs its future.
    fn interrupt(&self);
}

impl<T: Send> Interrupt for ControlRef<T> {
    fn interrupt(&self) {
        Hooks::interrupt(&**self);
    }
}

impl Hooks for Control {
    fn interrupt(&self) -> bool {
        if self.shielded {
            return false;
        }
        // The flag is set before the abort: tokio's abort and its cancelling of the task are
        // read-modify-writes of the task's state (acquire and release), so the flag is visible
        // to `abandoned` when the dropped driver's promise asks for its outcome.
        self.interrupted.store(true, Ordering::Release);
        self.join.with(|slot| {
            // SAFETY: a shared read of a slot written before this handle could reach us (see
            // `impl Sync for Control`).
            if let Some(join) = unsafe { &*slot } {
                join.abort();
            }
        });
        true
    }

    fn abandoned(&self) -> Error {
        if self.interrupted() || self.state.is_cancelling() {
            Error::Cancelled
        } else {
            Error::ShutDown
        }
    }
}

pin_project_lite::pin_project! {
    /// What a loop task runs: the user's future, polled with a stopwatch, and the promise
    /// that publishes its outcome. Nothing else, so that tokio's task for a small future stays
    /// as small as tokio's own (see [`Control::site`], where the rest is kept): for a no-op,
    /// its 16-byte future and an 8-byte promise.
    ///
    /// The driver also counts its task out of the loop's live count (see
    /// [`LoopState::admit`]), once, right after the outcome is published, or when it is
    /// dropped unfinished (a cancel, a shutdown).
    pub(super) struct Driver<F: Future> {
        #[pin]
        task: Running<F>,
    }

    impl<F: Future> PinnedDrop for Driver<F> {
        fn drop(this: Pin<&mut Self>) {
            // The future goes first (dropped in place), as before a published outcome; then
            // the promise, whose drop ends the task with `Hooks::abandoned`.
            if let RunningReplace::Yes { promise, .. } =
                this.project().task.project_replace(Running::No)
            {
                // SAFETY: the driver's drop. The polls since the last flush still count.
                unsafe { promise.extra().with_stats(|stats, site| stats.flush(site)) };
                release(promise, None);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future and its promise until the outcome is known, then nothing: the future is
    /// dropped before the outcome is published, so that once a waiter sees it, the loop holds
    /// nothing of the task. One enum rather than two options: the promise's pointer is the
    /// tag, where an `Option` around the future cost a word.
    #[project = RunningProj]
    #[project_replace = RunningReplace]
    enum Running<F: Future> {
        Yes {
            #[pin]
            future: F,
            promise: Promise<F::Output, (), Control>,
        },
        No,
    }
}

/// Ends the driver's part: publishes `outcome` (with none, the promise's drop ends the task,
/// see [`Hooks::abandoned`]), then counts the task out of its loop. In that order, so that a
/// shutdown that waits for the count finds every outcome published.
fn release<T>(promise: Promise<T, (), Control>, outcome: Option<Outcome<T>>) {
    let state = promise.extra().state;
    match outcome {
        Some(outcome) => promise.complete(outcome),
        None => drop(promise),
    }
    state.finished();
}

impl<F: Future> Driver<F>
where
    F::Output: Send + 'static,
{
    /// The driver of a task admitted with `live`, which it keeps counted until it releases
    /// the task (see [`release`]).
    pub(super) fn new(
        future: F,
        promise: Promise<F::Output, (), Control>,
        live: LiveGuard,
    ) -> Self {
        live.into_driver();
        Self {
            task: Running::Yes { future, promise },
        }
    }
}

impl<F: Future> Driver<F> {
    /// The same task, to run on a worker after all (the lane could not take it).
    pub(super) fn for_worker(self) -> Self {
        if let Running::Yes { promise, .. } = &self.task {
            promise.extra().on_lane.store(false, Ordering::Relaxed);
        }
        self
    }
}

impl<F: Future> Future for Driver<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut task = self.project().task;
        let RunningProj::Yes { future, promise } = task.as_mut().project() else {
            return Poll::Ready(());
        };
        let on_lane = promise.extra().on_lane();
        // SAFETY: the driver's poll.
        if unsafe { promise.extra().with_stats(|stats, _| stats.is_fresh()) } {
            if on_lane {
                blocking_lane::first_poll();
            }
            // A shielded task was claimed at spawn; any other is claimed here, unless its
            // handle cancelled it first.
            if !promise.is_started() && promise.start().is_none() {
                // Cancelled before it ran: the handle already has its outcome.
                if let RunningReplace::Yes { promise, .. } = task.project_replace(Running::No) {
                    release(promise, None);
                }
                return Poll::Ready(());
            }
        }
        // Its loop is cancelling every task (a shutdown with `cancel_pending`): it stops here,
        // at an await (or before it ever ran). A cancel through its handle never gets here: it
        // aborts tokio's task, which drops the driver instead of polling it (see `Control`).
        let outcome = if promise.extra().state.is_cancelling() {
            Err(Error::Cancelled)
        } else {
            // A task of a flagged site that is on a worker anyway (it was running when its
            // site was caught, or the lane could not take it) hands its worker to another
            // thread for each poll (`block_in_place`): if the poll blocks, only its own
            // thread waits, and the loop keeps turning.
            let hand_off = !on_lane && promise.extra().site.is_flagged();
            let watch = sched::stopwatch();
            let start = watch.stamp();
            watch.poll_starts(start);
            let polled = {
                let _mark = on_lane.then(blocking_lane::PollMark::enter);
                if hand_off {
                    tokio::task::block_in_place(|| {
                        catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
                    })
                } else {
                    catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
                }
            };
            let elapsed = watch.elapsed_ns(start, watch.stamp());
            // SAFETY: the driver's poll.
            unsafe {
                promise.extra().with_stats(|stats, site| {
                    stats.record(site, elapsed, on_lane || hand_off);
                });
            }
            match polled {
                Ok(Poll::Ready(value)) => Ok(value),
                Ok(Poll::Pending) => return Poll::Pending,
                Err(payload) => Err(Error::from_panic(&*payload)),
            }
        };
        if let RunningReplace::Yes { promise, .. } = task.project_replace(Running::No) {
            // SAFETY: the driver's poll.
            unsafe { promise.extra().with_stats(|stats, site| stats.flush(site)) };
            release(promise, Some(outcome));
        }
        Poll::Ready(())
    }
}
