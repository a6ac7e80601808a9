//! What runs inside each tokio task that the loop spawns: the user's future wrapped so that
//! every poll is timed, panics become [`Error::Panicked`], and a cancel from the handle stops
//! it at its next await.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::detect::Stats;
use super::shutdown::{LiveGuard, LoopState};
use super::{blocking_lane, sched};
use crate::error::Error;
use crate::sync::UnsafeCell;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::task::cell::Hooks;
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
}

// SAFETY: `join` is the only field that is not `Sync` by itself. It is written once, by the
// thread that spawned the task, right after spawning (`keep`), while that thread holds every
// handle that can reach `interrupt` (the `Task`, and a group's control): they are handed out
// only after the write, by moves that order it before any use on another thread. From then on
// it is only read (`abort` takes `&self`, and `JoinHandle` is `Sync`), and it is dropped with
// the cell by whoever lets go of the last reference, which is exclusive, and which the
// reference counting (release on every drop, acquire by the last) orders after every read.
// The other fields are atomics. So no write ever races a read.
unsafe impl Sync for Control {}

impl Control {
    #[inline]
    pub(super) fn new(shielded: bool, state: &'static LoopState) -> Self {
        Self {
            state,
            shielded,
            interrupted: AtomicBool::new(false),
            join: UnsafeCell::new(None),
        }
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
    /// that publishes its outcome.
    pub(super) struct Driver<F: Future> {
        // `Some` until the outcome is known; dropped before the outcome is published, so that
        // once a waiter sees it, the loop holds nothing of the task.
        #[pin]
        future: Option<F>,
        promise: Option<Promise<F::Output, (), Control>>,
        stats: Stats,
        // On a lane thread: blocking there stalls no worker, and there is no worker to hand over.
        on_lane: bool,
        started: bool,
        // Counts the task as live until the driver goes (after the outcome is published).
        live: LiveGuard,
    }
}

impl<F: Future> Driver<F>
where
    F::Output: Send + 'static,
{
    pub(super) fn new(
        future: F,
        promise: Promise<F::Output, (), Control>,
        stats: Stats,
        on_lane: bool,
        live: LiveGuard,
    ) -> Self {
        Self {
            live,
            future: Some(future),
            promise: Some(promise),
            stats,
            on_lane,
            started: false,
        }
    }
}

impl<F: Future> Driver<F> {
    /// The same task, to run on a worker after all (the lane could not take it).
    pub(super) fn for_worker(mut self) -> Self {
        self.on_lane = false;
        self
    }
}

impl<F: Future> Future for Driver<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(promise) = this.promise.as_mut() else {
            return Poll::Ready(());
        };
        if !*this.started {
            *this.started = true;
            if *this.on_lane {
                blocking_lane::first_poll();
            }
            // A shielded task was claimed at spawn; any other is claimed here, unless its
            // handle cancelled it first.
            if !promise.is_started() && promise.start().is_none() {
                // Cancelled before it ran: the handle already has its outcome.
                this.future.set(None);
                *this.promise = None;
                return Poll::Ready(());
            }
        }
        // Its loop is cancelling every task (a shutdown with `cancel_pending`): it stops here,
        // at an await (or before it ever ran). A cancel through its handle never gets here: it
        // aborts tokio's task, which drops the driver instead of polling it (see `Control`).
        let outcome = if promise.extra().state.is_cancelling() {
            Err(Error::Cancelled)
        } else {
            let Some(future) = this.future.as_mut().as_pin_mut() else {
                return Poll::Ready(());
            };
            // A task of a flagged site that is on a worker anyway (it was running when its
            // site was caught, or the lane could not take it) hands its worker to another
            // thread for each poll (`block_in_place`): if the poll blocks, only its own
            // thread waits, and the loop keeps turning.
            let hand_off = !*this.on_lane && this.stats.site().is_flagged();
            let watch = sched::stopwatch();
            let start = watch.stamp();
            watch.poll_starts(start);
            let polled = {
                let _mark = this.on_lane.then(blocking_lane::PollMark::enter);
                if hand_off {
                    tokio::task::block_in_place(|| {
                        catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
                    })
                } else {
                    catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
                }
            };
            this.stats.record(
                watch.elapsed_ns(start, watch.stamp()),
                *this.on_lane || hand_off,
            );
            match polled {
                Ok(Poll::Ready(value)) => Ok(value),
                Ok(Poll::Pending) => return Poll::Pending,
                Err(payload) => Err(Error::from_panic(&*payload)),
            }
        };
        this.future.set(None);
        this.stats.flush();
        if let Some(promise) = this.promise.take() {
            promise.complete(outcome);
        }
        Poll::Ready(())
    }
}
