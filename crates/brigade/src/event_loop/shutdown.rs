//! How a loop stops: which tasks it still accepts, how it waits for the ones it has, and the
//! thread that takes its runtime down.
//!
//! # Counting live tasks
//!
//! A graceful shutdown waits until every task the loop accepted has finished, so the loop
//! counts them: one up when a task is admitted, one down when its driver goes (after it has
//! published its outcome). A spawning thread and the worker that finishes the task are often
//! different threads, and one shared counter would bounce between them on every task, so the
//! count is spread over stripes, one per thread (modulo [`STRIPES`]): each thread adds to its
//! own, and only the rare reader sums them. A stripe alone may go negative.
//!
//! Admission and closing race as in Dekker's protocol: a spawner counts itself in *before*
//! it looks at `closed`, and a closer sets `closed` *before* it sums the count (both
//! sequentially consistent), so either the spawner sees the loop closed and backs out, or the
//! closer's sum includes it. A task that finishes while someone waits for the count to reach
//! zero says so under the lock the waiter sleeps on, so no wake-up is lost.
//!
//! # The finisher
//!
//! Dropping a tokio runtime waits for its threads, and must not happen inside async code. So
//! the first shutdown hands the runtime and the blocking lane to one plain thread, the
//! finisher, which waits until the tasks are done (or until it is told to cancel them), drops
//! the runtime (which drops every task still there: that is how an unfinished task is
//! cancelled at its await), stops the lane threads, and marks the loop stopped. Whoever called
//! `shutdown` waits for that mark, when it may wait at all.

use std::time::{Duration, Instant};

use super::blocking_lane::BlockingLane;
use crate::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use crate::sync::{Condvar, Mutex};

use super::stripe::{self, STRIPES};

#[derive(Default)]
#[repr(align(128))] // one stripe per cache-line pair: stripes never share a line
struct Stripe(AtomicIsize);

/// One loop's shutdown state. Leaked, like the loop's spawn sites: a task dropped on a worker
/// after its loop's handles are gone still reaches it, and no task pays for a reference count.
pub(super) struct LoopState {
    /// No new work is accepted.
    closed: AtomicBool,
    /// Unfinished tasks are being cancelled: a task dropped unfinished now ends
    /// [`Cancelled`](crate::Error::Cancelled), not [`ShutDown`](crate::Error::ShutDown).
    cancelling: AtomicBool,
    /// Someone waits for the live count to reach zero: finishing tasks must tell them.
    closing: AtomicBool,
    live: [Stripe; STRIPES],
    phase: Mutex<Phase>,
    changed: Condvar,
}

#[derive(Default)]
struct Phase {
    /// When the finisher stops waiting and cancels what is left (a drop's grace).
    cancel_at: Option<Instant>,
    /// The finisher has taken the runtime.
    finishing: bool,
    /// The runtime is gone, its threads and the lane's have left.
    stopped: bool,
}

/// What the finisher takes down.
pub(super) struct Parts {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) lane: std::sync::Arc<BlockingLane>,
}

impl LoopState {
    pub(super) fn leak() -> &'static Self {
        Box::leak(Box::new(Self {
            closed: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            live: Default::default(),
            phase: Mutex::new(Phase::default()),
            changed: Condvar::new(),
        }))
    }

    #[inline]
    fn add(&self, n: isize) {
        self.live[stripe::index()].0.fetch_add(n, Ordering::SeqCst);
    }

    fn live(&self) -> isize {
        self.live.iter().map(|s| s.0.load(Ordering::SeqCst)).sum()
    }

    /// Counts a new task in, unless the loop is closed.
    #[inline]
    pub(super) fn admit(&'static self) -> Option<LiveGuard> {
        self.add(1);
        if self.closed.load(Ordering::SeqCst) {
            self.finished();
            return None;
        }
        Some(LiveGuard(self))
    }

    /// A task is done: counted out, and a waiting closer told.
    #[inline]
    pub(super) fn finished(&self) {
        self.add(-1);
        if self.closing.load(Ordering::SeqCst) {
            self.tell_closer();
        }
    }

    #[cold]
    #[inline(never)]
    fn tell_closer(&self) {
        let _phase = self.phase.lock();
        self.changed.notify_all();
    }

    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn is_cancelling(&self) -> bool {
        self.cancelling.load(Ordering::Acquire)
    }

    /// Stops accepting work; with `cancel`, also cancels every unfinished task; with
    /// `cancel_after`, cancels what is left once that much time has passed (a drop's grace).
    pub(super) fn close(&self, cancel: bool, cancel_after: Option<Duration>) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.store(true, Ordering::SeqCst);
        let mut phase = self.phase.lock();
        if cancel {
            self.cancelling.store(true, Ordering::SeqCst);
        }
        if let Some(at) = cancel_after.and_then(|d| Instant::now().checked_add(d)) {
            phase.cancel_at = Some(phase.cancel_at.map_or(at, |earlier| earlier.min(at)));
        }
        self.changed.notify_all();
    }

    /// Whether this caller is the one to hand the runtime to the finisher.
    pub(super) fn claim_finishing(&self) -> bool {
        let mut phase = self.phase.lock();
        !std::mem::replace(&mut phase.finishing, true)
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.phase.lock().stopped
    }

    /// Waits until the loop has stopped, or `deadline` passes; true when stopped.
    pub(super) fn wait_stopped(&self, deadline: Option<Instant>) -> bool {
        let mut phase = self.phase.lock();
        while !phase.stopped {
            match deadline {
                None => phase = self.changed.wait(phase),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    phase = self.changed.wait_timeout(phase, left);
                }
            }
        }
        true
    }

    /// Takes the loop down; see the module docs. Runs on the finisher thread (or, if no
    /// thread could be started, wherever the caller is, without waiting).
    pub(super) fn finish(&'static self, parts: Parts, may_block: bool) {
        if may_block {
            self.wait_for_tasks();
            parts.lane.stop();
            // Drops every task still on the runtime (cancelling it at its await) and waits for
            // the workers and the blocking threads to leave.
            drop(parts.runtime);
            parts.lane.join();
        } else {
            self.cancelling.store(true, Ordering::SeqCst);
            parts.lane.stop();
            parts.runtime.shutdown_background();
        }
        let mut phase = self.phase.lock();
        phase.stopped = true;
        self.changed.notify_all();
    }

    /// Waits until every accepted task is done, or a cancel is asked for (then, or at the
    /// cancel deadline, the rest are cancelled).
    fn wait_for_tasks(&self) {
        let mut phase = self.phase.lock();
        loop {
            if self.is_cancelling() || self.live() <= 0 {
                return;
            }
            match phase.cancel_at {
                None => phase = self.changed.wait(phase),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            target: "brigade::event_loop",
                            unfinished = self.live(),
                            "brigade: the event loop's last handle was dropped and tasks were \
                             still running after its grace period; cancelling them"
                        );
                        self.cancelling.store(true, Ordering::SeqCst);
                        return;
                    }
                    phase = self.changed.wait_timeout(phase, left);
                }
            }
        }
    }
}

/// One live task: counted out when dropped.
pub(super) struct LiveGuard(&'static LoopState);

impl LiveGuard {
    /// Hands the count to a loop task's driver, which counts the task out itself (through
    /// its control's loop state) when it releases the task: a guard kept in the driver made
    /// tokio's task a word bigger, past its 128-byte step (see `driver::Control::site`).
    #[inline]
    pub(super) fn into_driver(self) {
        std::mem::forget(self);
    }
}

impl Drop for LiveGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// What a [`to_thread`](super::EventLoop::to_thread) task keeps beside its closure: a closure
/// dropped unrun by a cancelling shutdown ends its task cancelled, as a loop task's does.
pub(super) struct ThreadHooks(pub(super) &'static LoopState);

impl crate::task::cell::Hooks for ThreadHooks {
    fn abandoned(&self) -> crate::error::Error {
        if self.0.is_cancelling() {
            crate::error::Error::Cancelled
        } else {
            crate::error::Error::ShutDown
        }
    }
}

/// Whether the calling thread is where a shutdown must not wait: inside async code of any
/// tokio runtime (a worker, a `block_on`, a blocking thread, a lane thread), where waiting
/// could wait for itself, and where tokio forbids dropping a runtime.
pub(super) fn must_not_wait() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}
