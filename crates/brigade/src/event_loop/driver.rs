//! What runs inside each tokio task that the loop spawns: the user's future wrapped so that
//! every poll is timed, panics become [`Error::Panicked`], and a cancel from the handle stops
//! it at its next await.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::detect::Stats;
use crate::error::Error;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::task::cell::Hooks;

thread_local! {
    /// Set while this thread polls a task of any brigade loop: `block_on` here would block
    /// the very loop it waits on (tokio panics; brigade reports an error).
    static IN_POLL: Cell<bool> = const { Cell::new(false) };
    /// Set on threads where a blocking `block_on` is legitimate even though tokio says a
    /// task runs there (the loop's `to_thread` closures).
    static BLOCKING_OK: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside an event loop, where `block_on` must not be called.
pub(super) fn inside_a_loop() -> bool {
    IN_POLL.with(Cell::get)
        || (!BLOCKING_OK.with(Cell::get) && tokio::runtime::Handle::try_current().is_ok() && {
            // A worker of some tokio runtime polling a task: blocking here stalls it, and tokio
            // would panic. (`try_id` is `None` on plain threads that merely entered a handle.)
            tokio::task::try_id().is_some()
        })
}

/// Runs `f` on a thread where blocking is allowed even though tokio counts it as a task.
pub(super) fn blocking_allowed<R>(f: impl FnOnce() -> R) -> R {
    BLOCKING_OK.with(|b| b.set(true));
    let out = f();
    BLOCKING_OK.with(|b| b.set(false));
    out
}

/// Marks the thread as polling a loop task for the guard's lifetime (restored on unwind too).
struct PollGuard(bool);

impl PollGuard {
    fn enter() -> Self {
        Self(IN_POLL.with(|p| p.replace(true)))
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        IN_POLL.with(|p| p.set(self.0));
    }
}

/// What an async task keeps beside its handle: how a cancel reaches the running future.
///
/// Cancelling sets the flag and wakes the task; its next poll sees the flag and ends it with
/// [`Error::Cancelled`] without polling the user's future again. A future is only ever left
/// at an await point, so this is "aborts at the next await". The waker is recorded on the
/// first poll: a tokio task's waker, like `block_on`'s, stays the same for its whole life.
pub(super) struct Control {
    interrupted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Control {
    pub(super) fn new() -> Self {
        Self {
            interrupted: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }
}

impl Hooks for Control {
    fn interrupt(&self) -> bool {
        // The flag is set before the waker is looked at, and `Timed` records the waker before
        // it reads the flag (both under the lock): either we find the waker, or it finds the
        // flag.
        self.interrupted.store(true, Ordering::Release);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
        true
    }

    fn abandoned(&self) -> Error {
        if self.interrupted() {
            Error::Cancelled
        } else {
            Error::ShutDown
        }
    }
}

/// The user's future, polled with a stopwatch.
pub(super) struct Timed<'a, F> {
    pub(super) fut: Pin<&'a mut F>,
    pub(super) control: &'a Control,
    pub(super) stats: Stats,
    /// Running on the blocking lane already: blocking here stalls no worker.
    pub(super) on_lane: bool,
    pub(super) polled: bool,
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.polled {
            this.polled = true;
            *this.control.waker.lock() = Some(cx.waker().clone());
        }
        if this.control.interrupted() {
            return Poll::Ready(Err(Error::Cancelled));
        }
        // A flagged site's task that is already on a worker (spawned before the flag went up)
        // hands its worker to another thread for the poll, so the loop keeps turning.
        let hand_off = !this.on_lane && this.stats.site().is_flagged();
        let fut = &mut this.fut;
        let start = Instant::now();
        let polled = {
            let _guard = PollGuard::enter();
            if hand_off {
                tokio::task::block_in_place(|| {
                    catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)))
                })
            } else {
                catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)))
            }
        };
        this.stats.record(start.elapsed(), this.on_lane || hand_off);
        match polled {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(Error::from_panic(&*payload))),
        }
    }
}
