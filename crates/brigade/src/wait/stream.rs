//! The async twins of [`wait`](super::wait()) and [`as_completed`](super::as_completed): the
//! same semantics, awaited instead of blocking a thread.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use super::timer::Sleep;
use super::{Completions, Tally, Until, Waitable, Waited};
use crate::error::Error;

/// [`wait`](super::wait()) for async code: waits until `until` holds for `tasks` or `timeout`
/// passes, without blocking a thread, so that an event loop's task can wait on tasks of any
/// lane and its worker runs other tasks meanwhile.
///
/// Everything else is as for [`wait`](super::wait()): a task given twice counts once, running
/// out of time is not an error, the result lists the done and pending tasks in input order.
/// The `timeout` runs from this call. It works under any executor; inside a tokio runtime it
/// uses tokio's timer (which the runtime must have enabled, as brigade's event loop and
/// `#[tokio::main]` do), elsewhere a timer thread of brigade's.
///
/// ```
/// use brigade::{EventLoop, ThreadPool, Until, Waitable, wait_async};
///
/// let lp = EventLoop::new();
/// let pool = ThreadPool::new();
/// let on_threads = pool.submit(|| 6 * 7);
/// let lp2 = lp.clone();
/// let waiter = lp.spawn(async move {
///     let on_the_loop = lp2.spawn(async { "hello" });
///     // Tasks of different value types mix as `&(dyn Waitable + Sync)` in a task's future.
///     let both: [&(dyn Waitable + Sync); 2] = [&on_threads, &on_the_loop];
///     wait_async(both, Until::AllCompleted, None).await.done.len()
/// });
/// assert_eq!(waiter.result(), Ok(2));
/// ```
pub fn wait_async<W: Waitable>(
    tasks: impl IntoIterator<Item = W>,
    until: Until,
    timeout: Option<Duration>,
) -> impl Future<Output = Waited<W>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut tally = Some(Tally::new(tasks, until));
    let mut sleep = deadline.map(Sleep::until);
    poll_fn(move |cx| {
        let current = tally.as_mut().expect("polled after it returned");
        loop {
            if current.met() {
                break;
            }
            if current.watcher().poll_ready(cx).is_ready() {
                current.settle_ready();
                continue;
            }
            let expired = sleep
                .as_mut()
                .is_some_and(|sleep| Pin::new(sleep).poll(cx).is_ready());
            if !expired {
                return Poll::Pending;
            }
            break;
        }
        Poll::Ready(tally.take().expect("checked above").finish())
    })
}

/// [`as_completed`](super::as_completed) for async code: a stream of the tasks as they finish.
///
/// Tasks already done come first (in input order), then the others in the order they finish;
/// a task given twice is yielded once. When the `timeout` (from this call) passes, the stream
/// yields one [`Error::Unfinished`] and ends; [`into_remaining`](AsCompletedStream::into_remaining)
/// gives back the tasks not yielded. Works under any executor, with the timers described at
/// [`wait_async`].
///
/// Use its [`next`](AsCompletedStream::next) method, or any stream combinator: it implements
/// [`futures_core::Stream`].
///
/// ```
/// use std::time::Duration;
/// use brigade::{EventLoop, as_completed_async};
///
/// let lp = EventLoop::new();
/// let lp2 = lp.clone();
/// let order = lp.block_on(async move {
///     let tasks = [30u64, 10, 20].map(|ms| (ms, lp2.spawn(async move {
///         tokio::time::sleep(Duration::from_millis(ms)).await;
///     })));
///     let mut done = as_completed_async(tasks, None);
///     let mut order = Vec::new();
///     while let Some(finished) = done.next().await {
///         order.push(finished.unwrap().0);
///     }
///     order
/// }).unwrap();
/// assert_eq!(order.len(), 3);
/// ```
pub fn as_completed_async<W: Waitable>(
    tasks: impl IntoIterator<Item = W>,
    timeout: Option<Duration>,
) -> AsCompletedStream<W> {
    let inner = Completions::new(tasks, timeout);
    AsCompletedStream {
        sleep: inner.deadline().map(Sleep::until),
        inner,
    }
}

/// The stream [`as_completed_async`] returns; see there.
///
/// ```
/// use futures::StreamExt;
/// use brigade::{AsCompletedStream, Completer, as_completed_async};
///
/// let (done, task) = Completer::<u8>::new();
/// done.set_result(7);
/// let stream: AsCompletedStream<_> = as_completed_async([task], None);
/// let finished: Vec<_> = futures::executor::block_on(stream.collect());
/// assert_eq!(finished.len(), 1);
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct AsCompletedStream<W> {
    inner: Completions<W>,
    sleep: Option<Sleep>,
}

// Nothing inside is pinned: task handles, indices, and a boxed timer.
impl<W> Unpin for AsCompletedStream<W> {}

impl<W> AsCompletedStream<W> {
    /// The next task to finish; `None` when every task has been yielded (or after the one
    /// [`Error::Unfinished`] of a time-out).
    ///
    /// ```
    /// use brigade::{Completer, as_completed_async};
    ///
    /// let (done, task) = Completer::<u8>::new();
    /// let mut stream = as_completed_async([task], None);
    /// done.set_result(3);
    /// futures::executor::block_on(async {
    ///     let task = stream.next().await.unwrap().unwrap();
    ///     assert_eq!(task.await, Ok(3));
    ///     assert!(stream.next().await.is_none());
    /// });
    /// ```
    pub async fn next(&mut self) -> Option<Result<W, Error>> {
        poll_fn(|cx| self.poll_item(cx)).await
    }

    /// The tasks not yielded yet (after a time-out: the unfinished ones), in input order.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Completer, Error, as_completed_async};
    ///
    /// let (completer, task) = Completer::<u8>::new();
    /// let mut stream = as_completed_async([("slow", task)], Some(Duration::from_millis(1)));
    /// let first = futures::executor::block_on(stream.next());
    /// assert!(matches!(first, Some(Err(Error::Unfinished { unfinished: 1, total: 1 }))));
    /// assert_eq!(stream.into_remaining()[0].0, "slow");
    /// # drop(completer);
    /// ```
    pub fn into_remaining(self) -> Vec<W> {
        self.inner.into_remaining()
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<W, Error>>> {
        loop {
            if self.inner.has_ready() {
                // Like awaiting a `JoinHandle`, each finished task spends tokio's budget, so a
                // loop over many finished tasks still lets its worker's other tasks run.
                let coop = ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
                return Poll::Ready(self.inner.next_ready().flatten());
            }
            if let Some(end) = self.inner.next_ready() {
                return Poll::Ready(end);
            }
            if self.inner.watcher().poll_ready(cx).is_ready() {
                continue;
            }
            let expired = self
                .sleep
                .as_mut()
                .is_some_and(|sleep| Pin::new(sleep).poll(cx).is_ready());
            if !expired {
                return Poll::Pending;
            }
            self.sleep = None;
            return Poll::Ready(Some(self.inner.expire()));
        }
    }
}

impl<W> futures_core::Stream for AsCompletedStream<W> {
    type Item = Result<W, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<W> fmt::Debug for AsCompletedStream<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("AsCompletedStream", f)
    }
}
