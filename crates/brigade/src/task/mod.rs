//! [`Task<T>`]: the one handle every lane returns.

pub(crate) mod block;
pub(crate) mod cell;
mod completer;
pub(crate) mod origin;
pub(crate) mod promise;
pub(crate) mod refs;

pub use completer::Completer;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Error;
use cell::{CANCELLED, COMPLETE, Cell, Erased, FAILED, Header, Outcome, RUNNING, SETTLED};
use refs::CellRef;

/// A handle to work submitted to a pool: its future result.
///
/// A task is **pending** until a worker picks it up, then **running**, then **done** with a
/// value or an [`Error`]; or it is **cancelled** while still pending, and then it never runs.
/// Its outcome is written once.
///
/// The semantics follow Python's `concurrent.futures.Future`, in Rust's idiom:
///
/// * [`result`](Self::result) blocks until the task is done and gives its outcome;
///   [`result_timeout`](Self::result_timeout) gives up after a while *without* cancelling, and
///   [`try_result`](Self::try_result) never blocks;
/// * [`cancel`](Self::cancel) succeeds only while the task is pending;
/// * [`add_done_callback`](Self::add_done_callback) runs code when it finishes;
/// * `Task<T>` is a [`Future`], so async code can `.await` a task from any lane;
/// * a panic inside the task becomes [`Error::Panicked`] with the panic's message, and the
///   worker that ran it lives on.
///
/// Dropping a handle detaches it: the work still runs and its value is dropped when it
/// finishes. The pool never keeps a finished task's closure or value.
///
/// # Waiting from inside a pool
///
/// Blocking on a task from inside a task of the same pool does not deadlock when every worker
/// is busy: a worker that waits runs other queued work of its pool until the awaited task is
/// done (as rayon does). The waiting task's own stack then holds the helped task's frames, so
/// deep chains of tasks waiting on tasks need stack to match (see
/// [`Builder::stack_size`](crate::threads::Builder::stack_size)).
///
/// ```
/// use brigade::ThreadPool;
///
/// let pool = ThreadPool::new();
/// let task = pool.submit(|| (1..=10u64).product::<u64>());
/// assert_eq!(task.result(), Ok(3_628_800));
/// ```
#[must_use = "dropping a task detaches it; call `result` to get its outcome"]
pub struct Task<T> {
    /// Once the outcome is taken, the slot stays empty: later takes see [`Error::Consumed`].
    cell: CellRef<T, dyn Erased>,
    /// `Task<T>` may be shared between threads only when `T` may: callbacks added through
    /// `&Task` read the value.
    _value: PhantomData<T>,
}

impl<T> Task<T> {
    pub(crate) fn from_cell(cell: CellRef<T, dyn Erased>) -> Self {
        Self {
            cell,
            _value: PhantomData,
        }
    }

    /// A task that is already done with `error`: what a pool that refuses work hands back.
    pub(crate) fn failed(error: Error) -> Self
    where
        T: Send + 'static,
    {
        let cell = CellRef::new(Cell::<T, _>::new((), origin::Origin::UNKNOWN));
        cell.abandon(error);
        Self::from_cell(cell.erase())
    }

    fn header(&self) -> &Header<T> {
        &self.cell.header
    }

    /// Takes the outcome; the task must be settled.
    fn take(&mut self) -> Outcome<T> {
        // SAFETY: callers observed SETTLED (acquire) and we hold `&mut self`, the only handle.
        unsafe { self.header().take_outcome() }.unwrap_or(Err(Error::Consumed))
    }

    /// Done, and its done callbacks have run: the outcome can be taken.
    fn is_settled(&self) -> bool {
        self.header().state() & SETTLED != 0
    }

    /// Blocks until the task is settled, or `deadline` passes. True when settled.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_settled() {
            return true;
        }
        block::block_until_polling(
            || self.is_settled(),
            |waker| {
                self.header().watch(waker);
            },
            deadline,
            self.header().origin().lane.waiter_poll(),
        )
    }

    /// Waits for the task to finish and returns its outcome.
    ///
    /// Inside a worker of a brigade pool, the wait runs other queued work of that pool instead
    /// of blocking the worker (see [Waiting from inside a pool](Self#waiting-from-inside-a-pool)).
    ///
    /// ```
    /// # let pool = brigade::ThreadPool::new();
    /// let task = pool.submit(|| "done");
    /// assert_eq!(task.result(), Ok("done"));
    /// ```
    pub fn result(mut self) -> Result<T, Error> {
        self.wait_until(None);
        self.take()
    }

    /// Waits at most `timeout` for the task to finish.
    ///
    /// On time-out this returns [`Error::TimedOut`] and **does not cancel** the task: it keeps
    /// running, and a later call can still get its value. Once an outcome has been returned,
    /// later calls return [`Error::Consumed`].
    ///
    /// Inside a pool's worker the deadline is checked between the jobs the worker helps with,
    /// so a long helped job can make the wait overrun.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use brigade::{Error, ThreadPool};
    ///
    /// let pool = ThreadPool::new();
    /// let (go, wait_for_go) = mpsc::channel::<()>();
    /// let mut task = pool.submit(move || { wait_for_go.recv().unwrap(); 42 });
    /// assert_eq!(task.result_timeout(Duration::from_millis(10)), Err(Error::TimedOut));
    /// go.send(()).unwrap();
    /// assert_eq!(task.result_timeout(Duration::from_secs(60)), Ok(42));
    /// ```
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        let deadline = Instant::now().checked_add(timeout);
        if self.wait_until(deadline) {
            self.take()
        } else {
            Err(Error::TimedOut)
        }
    }

    /// Returns the outcome if the task is done, without blocking; `None` while it is not.
    ///
    /// ```
    /// # let pool = brigade::ThreadPool::new();
    /// let mut task = pool.submit(|| 5);
    /// let value = loop {
    ///     if let Some(outcome) = task.try_result() {
    ///         break outcome;
    ///     }
    ///     std::thread::yield_now();
    /// };
    /// assert_eq!(value, Ok(5));
    /// ```
    pub fn try_result(&mut self) -> Option<Result<T, Error>> {
        if !self.is_done() {
            return None;
        }
        // Done, but its done callbacks may still be reading the outcome on the thread that
        // finished it: they are about to end.
        self.wait_until(None);
        Some(self.take())
    }

    /// Cancels the task if it has not started.
    ///
    /// Returns `true` when the task is cancelled (by this call or an earlier one): it will never
    /// run, its closure is dropped now, and its outcome is [`Error::Cancelled`]. Returns `false`
    /// when it is done, or running on a lane that cannot interrupt it: a thread cannot be
    /// stopped from outside, so a running thread-pool task is never interrupted.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use brigade::{Error, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).build().unwrap();
    /// let (started_tx, started) = mpsc::channel();
    /// let (go, wait_for_go) = mpsc::channel::<()>();
    /// let blocker = pool
    ///     .submit(move || { started_tx.send(()).unwrap(); wait_for_go.recv().unwrap() });
    /// started.recv().unwrap(); // the only worker is busy now
    /// let queued = pool.submit(|| -> u32 { unreachable!("cancelled tasks never run") });
    /// assert!(queued.cancel());
    /// assert!(queued.is_cancelled() && queued.is_done());
    /// assert!(!blocker.cancel()); // running: never interrupted
    /// go.send(()).unwrap();
    /// assert_eq!(queued.result(), Err(Error::Cancelled));
    /// assert_eq!(blocker.result(), Ok(()));
    /// ```
    pub fn cancel(&self) -> bool {
        self.cell.cancel()
    }

    /// Whether the task is done: finished with a value or an error, or cancelled.
    ///
    /// A task counts as done as soon as its outcome is stored, before its done callbacks run
    /// (so inside a callback it is done already, as in Python).
    ///
    /// ```
    /// use brigade::{ThreadPool, Until, wait};
    ///
    /// let pool = ThreadPool::new();
    /// let task = pool.submit(|| 1);
    /// wait([&task], Until::AllCompleted, None);
    /// assert!(task.is_done() && !task.is_running() && !task.is_cancelled());
    /// ```
    pub fn is_done(&self) -> bool {
        self.header().state() & COMPLETE != 0
    }

    /// Whether a worker is running the task right now.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// # let pool = brigade::ThreadPool::new();
    /// let (started_tx, started) = mpsc::channel();
    /// let (go, wait_for_go) = mpsc::channel::<()>();
    /// let task = pool
    ///     .submit(move || { started_tx.send(()).unwrap(); wait_for_go.recv().unwrap() });
    /// started.recv().unwrap();
    /// assert!(task.is_running());
    /// go.send(()).unwrap();
    /// task.result().unwrap();
    /// ```
    pub fn is_running(&self) -> bool {
        self.header().state() & (RUNNING | COMPLETE) == RUNNING
    }

    /// Whether the task was cancelled before it started, or, on the event loop, stopped by a
    /// cancel while it ran (see [`cancel`](Self::cancel) for an example).
    pub fn is_cancelled(&self) -> bool {
        self.header().state() & CANCELLED != 0
    }

    /// Adds a callback that runs once when the task is done (finished or cancelled).
    ///
    /// Callbacks run in the order added, exactly once each, one at a time, in the thread that
    /// finishes the task (a worker, or the canceller); a callback added once the task and its
    /// earlier callbacks are done runs at once, in the caller's thread. A panicking callback is
    /// reported through `tracing` and stops neither the other callbacks nor the worker. The
    /// callback sees [`Error::Consumed`] when the handle already took the outcome.
    ///
    /// As in Python, callbacks run *after* the task counts as done: inside one,
    /// [`is_done`](Self::is_done) holds, and the outcome is the callback's argument. Taking the
    /// outcome out of the handle ([`result`](Self::result), `.await`, …) waits for the running
    /// callbacks to return, which is what lets them read it by reference.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// # let pool = brigade::ThreadPool::new();
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let task = pool.submit(|| 2 + 2);
    /// task.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), Ok(4));
    /// assert!(task.is_done()); // the callback ran after the task was done
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Result<T, Error>) + Send + 'static,
    {
        self.header().add_callback(Box::new(callback));
    }
}

// The handle never pins anything: the value lives in the shared cell.
impl<T> Unpin for Task<T> {}

impl<T> Future for Task<T> {
    type Output = Result<T, Error>;

    /// Ready with the outcome once the task is done. Polling again after that gives
    /// [`Error::Consumed`].
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // On tokio's scheduler, awaiting spends the task's budget as awaiting a `JoinHandle`
        // does, so a loop over many finished tasks still yields now and then instead of holding
        // its worker. Elsewhere this is free and always proceeds.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let this = self.get_mut();
        if this.is_settled() || !this.header().watch(cx.waker()) {
            coop.made_progress();
            return Poll::Ready(this.take());
        }
        Poll::Pending
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.header().state();
        let status = if state & CANCELLED != 0 {
            "cancelled"
        } else if state & COMPLETE != 0 && state & FAILED != 0 {
            "failed"
        } else if state & COMPLETE != 0 {
            "finished"
        } else if state & RUNNING != 0 {
            "running"
        } else {
            "pending"
        };
        let origin = self.header().origin();
        let mut debug = f.debug_struct("Task");
        debug.field("lane", &origin.lane());
        if let Some(site) = origin.site {
            debug.field("site", &format_args!("{site}"));
        }
        debug.field("status", &status).finish()
    }
}

/// The type-erased view of a task that [`wait`](crate::wait()) and
/// [`as_completed`](crate::as_completed) work with.
#[allow(unreachable_pub)] // public in a private module, for the sealed `Waitable`
pub trait Completion: Send + Sync {
    /// The state bits.
    fn state(&self) -> usize;
    /// See [`Header::watch`].
    fn watch(&self, waker: &std::task::Waker) -> bool;
}

impl<T: Send> Completion for Header<T> {
    fn state(&self) -> usize {
        Header::state(self)
    }

    fn watch(&self, waker: &std::task::Waker) -> bool {
        Header::watch(self, waker)
    }
}

impl<T: Send> Task<T> {
    pub(crate) fn completion(&self) -> &dyn Completion {
        self.header()
    }

    /// Tells, from anywhere and for as long as it is kept, whether the task ended with an error
    /// (a cancellation included). It holds a reference to the task's cell: keep it only where
    /// it goes when the task completes (a waker registered on the task).
    pub(crate) fn failure_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static
    where
        T: 'static,
    {
        let cell = self.cell.clone();
        move || cell.header.state() & (COMPLETE | FAILED) == COMPLETE | FAILED
    }
}

/// Whether a [`Completion::state`] is done for waiting's sake: done, with its done callbacks run
/// (so whoever a wait returns to can take the outcome at once).
pub(crate) fn state_is_done(state: usize) -> bool {
    state & SETTLED != 0
}

/// Whether a [`Completion::state`] is done with an error the task raised (not a cancellation).
pub(crate) fn state_is_error(state: usize) -> bool {
    state & (COMPLETE | FAILED | CANCELLED) == COMPLETE | FAILED
}
