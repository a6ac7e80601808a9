//! [`timeout`] and [`timeout_at`]: give up on any future after a while, cancelling it, like
//! `asyncio.timeout` (and `asyncio.wait_for` over a coroutine).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::wait::timer::Sleep;

pin_project_lite::pin_project! {
    /// What [`timeout`] and [`timeout_at`] return: the work, raced against a deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::event_loop::{Timeout, timeout};
    ///
    /// let quick: Timeout<_> = timeout(Duration::from_secs(60), async { "in time" });
    /// assert_eq!(futures::executor::block_on(quick), Ok("in time")); // any executor
    /// ```
    #[must_use = "a timeout does nothing unless awaited"]
    pub struct Timeout<F> {
        // `None` once it finished or was cancelled: dropped in place, at once.
        #[pin]
        work: Option<F>,
        sleep: Option<Sleep>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(work) = this.work.as_mut().as_pin_mut() else {
            panic!("a Timeout was polled after it returned");
        };
        // The work first: when it is ready as the deadline passes, its value wins.
        if let Poll::Ready(value) = work.poll(cx) {
            this.work.set(None);
            return Poll::Ready(Ok(value));
        }
        let expired = this
            .sleep
            .as_mut()
            .is_some_and(|sleep| Pin::new(sleep).poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        // Cancelled here, before the time-out is reported: the future's destructors (its
        // cleanup) have run by the time the caller sees `TimedOut`.
        this.work.set(None);
        *this.sleep = None;
        Poll::Ready(Err(Error::TimedOut))
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("finished", &self.work.is_none())
            .finish_non_exhaustive()
    }
}

/// Runs `work` for at most `limit`; when the limit passes, cancels it and returns
/// [`Error::TimedOut`].
///
/// Any future will do: an `async` block, a call to an async function, a brigade [`Task`]. On
/// time-out the future is dropped where it waits (at its `.await`), which is how a Rust
/// future is cancelled: by the time `timeout` returns, its destructors (closing a socket,
/// releasing a lock) have run. Dropping the timeout itself, for instance because the task
/// awaiting it was cancelled, cancels the work the same way.
///
/// A [`Task`] is a handle, and dropping a handle *detaches* its task (see [`Task`]), so on
/// time-out a task given here keeps running, as a tokio `JoinHandle` does under
/// `tokio::time::timeout`. To stop it too, time out a [`gather`](super::gather) of it (a
/// gather cancels its unfinished tasks when dropped) or cancel it yourself, as the example
/// shows.
///
/// Unlike [`Task::result_timeout`], which gives up waiting *without* cancelling, nothing of
/// the work outlives the time-out. Works under any executor: inside a tokio runtime (brigade's
/// event loop, `#[tokio::main]`) with tokio's timer, elsewhere with a timer thread of
/// brigade's. A `limit` too large to add to the clock means no limit.
///
/// [`Task`]: crate::Task
/// [`Task::result_timeout`]: crate::Task::result_timeout
///
/// ```
/// use std::time::Duration;
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::{gather, timeout};
///
/// let lp = EventLoop::new();
/// lp.block_on(async {
///     let slow = async { tokio::time::sleep(Duration::from_secs(60)).await; 1 };
///     assert_eq!(timeout(Duration::from_millis(5), slow).await, Err(Error::TimedOut));
///     assert_eq!(timeout(Duration::from_secs(60), async { 7 }).await, Ok(7));
///
///     // A task: keep the handle to cancel it, or let a gather cancel it.
///     let mut stuck = lp.spawn(std::future::pending::<()>());
///     if timeout(Duration::from_millis(5), &mut stuck).await.is_err() {
///         stuck.cancel();
///     }
///     let stuck_too = lp.spawn(std::future::pending::<()>());
///     assert_eq!(timeout(Duration::from_millis(5), gather([stuck_too])).await, Err(Error::TimedOut));
///     assert_eq!(stuck.await, Err(Error::Cancelled));
/// }).unwrap();
/// ```
pub fn timeout<F: IntoFuture>(limit: Duration, work: F) -> Timeout<F::IntoFuture> {
    Timeout {
        work: Some(work.into_future()),
        sleep: Instant::now().checked_add(limit).map(Sleep::until),
    }
}

/// Runs `work` until `deadline`; when it passes, cancels it and returns [`Error::TimedOut`].
/// The same as [`timeout`], with a point in time instead of a duration: several steps can
/// share one deadline.
///
/// ```
/// use std::time::{Duration, Instant};
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::timeout_at;
///
/// let lp = EventLoop::new();
/// let deadline = Instant::now() + Duration::from_millis(20);
/// let steps = lp.block_on(async {
///     let mut steps = 0;
///     while timeout_at(deadline, tokio::time::sleep(Duration::from_millis(1))).await.is_ok() {
///         steps += 1;
///     }
///     steps
/// }).unwrap();
/// assert!(steps >= 1);
/// assert!(Instant::now() >= deadline);
/// ```
pub fn timeout_at<F: IntoFuture>(deadline: Instant, work: F) -> Timeout<F::IntoFuture> {
    Timeout {
        work: Some(work.into_future()),
        sleep: Some(Sleep::until(deadline)),
    }
}
