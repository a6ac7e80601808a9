//! Awaiting many tasks at once: [`gather`], [`gather_results`], and the completion-order
//! stream that they are built on.
//!
//! Completions are watched through the floor's [`Watcher`]: each task's waker records its
//! index, so a completion costs a look at that one task, not a poll of every task still
//! pending. A gather needs them all, so a completion wakes it only when it is the last one
//! outstanding, or (for [`gather`], which returns the first error) when its task failed: the
//! awaiting task sleeps through the others instead of waking once per task.
//!
//! As in asyncio, whoever stops waiting on a gather (its future is dropped: the task awaiting
//! it was cancelled, a timeout around it fired) cancels the tasks that have not finished.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::error::Error;
use crate::task::Task;
use crate::wait::Watcher;

/// Tasks, yielded with their index as they finish.
struct Joiner<T> {
    tasks: Vec<Option<Task<T>>>,
    watcher: Watcher,
    ready: VecDeque<usize>,
    remaining: usize,
    watching: bool,
    /// Whether a failure ends the wait early ([`gather`]): then a failed task wakes it.
    fail_fast: bool,
}

impl<T> Joiner<T> {
    /// Cancels every task not yet yielded.
    fn cancel_rest(&self) {
        for task in self.tasks.iter().flatten() {
            task.cancel();
        }
    }
}

impl<T: Send + 'static> Joiner<T> {
    fn new(tasks: impl IntoIterator<Item = Task<T>>, fail_fast: bool) -> Self {
        let tasks: Vec<Option<Task<T>>> = tasks.into_iter().map(Some).collect();
        Self {
            remaining: tasks.len(),
            tasks,
            watcher: Watcher::new(),
            ready: VecDeque::new(),
            watching: false,
            fail_fast,
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next task to finish, with its index; `None` when all have been yielded.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Result<T, Error>)>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if !self.watching {
            // Watched on the first poll, not at construction: a gather that is never awaited
            // registers nothing.
            self.watching = true;
            for (index, task) in self.tasks.iter().enumerate() {
                let task = task.as_ref().expect("nothing is yielded before watching");
                // How quietly is up to `poll_all` below; a gather that returns the first error
                // also asks a failure to wake it.
                let watched = if self.fail_fast {
                    self.watcher
                        .watch_quietly(index, task.completion(), task.failure_probe())
                } else {
                    self.watcher.watch(index, task.completion())
                };
                if !watched {
                    self.ready.push_back(index);
                }
            }
        }
        loop {
            if self.ready.is_empty() {
                // Every task not yielded yet is outstanding: nothing is drained but unyielded.
                ready!(self.watcher.poll_all(cx, self.remaining));
                self.watcher.drain_into(&mut self.ready);
            }
            // Like awaiting a `JoinHandle`, each finished task spends tokio's budget, so a
            // gather over many finished tasks still lets its worker's other tasks run.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            let index = self.ready.pop_front().expect("not empty");
            let Some(mut task) = self.tasks[index].take() else {
                continue; // woken twice
            };
            let outcome = task
                .try_result()
                .expect("a watched task is reported once it is settled");
            coop.made_progress();
            self.remaining -= 1;
            return Poll::Ready(Some((index, outcome)));
        }
    }
}

/// What [`gather`] returns: a future of every task's value, in input order.
///
/// Dropping it before it is done (the task awaiting it was cancelled, a timeout around it
/// fired) cancels the tasks that have not finished; once it has returned, even with an error,
/// the tasks still running are left alone.
///
/// ```
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::{Gather, gather};
///
/// let lp = EventLoop::new();
/// let stuck = lp.spawn(std::future::pending::<u8>());
/// let (tx, rx) = std::sync::mpsc::channel();
/// stuck.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
/// let pending: Gather<u8> = gather([stuck]);
/// drop(pending); // never awaited to the end: its task is cancelled
/// assert_eq!(rx.recv().unwrap(), Err(Error::Cancelled));
/// ```
#[must_use = "a gather does nothing unless awaited, and dropping it cancels its tasks"]
pub struct Gather<T> {
    joiner: Joiner<T>,
    values: Vec<Option<T>>,
    returned: bool,
}

// Nothing in a gather is ever pinned: it holds task handles and plain values.
impl<T> Unpin for Gather<T> {}

impl<T: Send + 'static> Future for Gather<T> {
    type Output = Result<Vec<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while let Some((index, outcome)) = ready!(this.joiner.poll_next(cx)) {
            match outcome {
                Ok(value) => this.values[index] = Some(value),
                Err(error) => {
                    this.returned = true;
                    return Poll::Ready(Err(error));
                }
            }
        }
        this.returned = true;
        Poll::Ready(Ok(std::mem::take(&mut this.values)
            .into_iter()
            .map(|v| v.expect("every task was yielded once"))
            .collect()))
    }
}

impl<T> Drop for Gather<T> {
    fn drop(&mut self) {
        if !self.returned {
            self.joiner.cancel_rest();
        }
    }
}

impl<T> fmt::Debug for Gather<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("tasks", &self.joiner.tasks.len())
            .field("remaining", &self.joiner.remaining)
            .finish()
    }
}

/// Waits for every task and returns their values in input order, like `asyncio.gather`.
///
/// The first error (in the order the tasks finish) is returned as soon as it happens; the
/// other tasks are **not** cancelled and keep running, detached, as in asyncio. To collect
/// every outcome instead, use [`gather_results`]; to cancel the rest on the first failure,
/// use a [`TaskGroup`](super::TaskGroup). Works with tasks from any lane.
///
/// Also as in asyncio, cancelling whatever awaits the gather cancels the tasks that have not
/// finished: dropping the [`Gather`] before it has returned does (see there).
///
/// ```
/// use brigade::EventLoop;
/// use brigade::event_loop::gather;
///
/// let lp = EventLoop::new();
/// let tasks: Vec<_> = (1..=4u64).map(|n| lp.spawn(async move { n * 10 })).collect();
/// assert_eq!(lp.block_on(gather(tasks)).unwrap(), Ok(vec![10, 20, 30, 40]));
/// ```
///
/// ```
/// use std::time::Duration;
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::gather;
///
/// let lp = EventLoop::new();
/// let stuck = lp.spawn(std::future::pending::<()>());
/// let (tx, rx) = std::sync::mpsc::channel();
/// stuck.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
/// let waited = lp.block_on(async { tokio::time::timeout(Duration::from_millis(5), gather([stuck])).await });
/// assert!(waited.unwrap().is_err()); // timed out: the gather was dropped...
/// assert_eq!(rx.recv().unwrap(), Err(Error::Cancelled)); // ...and cancelled its task
/// ```
pub fn gather<T>(tasks: impl IntoIterator<Item = Task<T>>) -> Gather<T>
where
    T: Send + 'static,
{
    let joiner = Joiner::new(tasks, true);
    Gather {
        values: (0..joiner.len()).map(|_| None).collect(),
        joiner,
        returned: false,
    }
}

/// What [`gather_results`] returns: a future of every task's outcome, in input order.
///
/// Dropping it before it is done cancels the tasks that have not finished, as for
/// [`Gather`].
///
/// ```
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::gather_results;
///
/// let lp = EventLoop::new();
/// let tasks = [lp.spawn(async { 1 }), lp.spawn(async { panic!("two") })];
/// let outcomes = lp.block_on(gather_results(tasks)).unwrap();
/// assert_eq!(outcomes[0], Ok(1));
/// assert!(matches!(outcomes[1], Err(Error::Panicked { .. })));
/// ```
#[must_use = "a gather does nothing unless awaited, and dropping it cancels its tasks"]
pub struct GatherResults<T> {
    joiner: Joiner<T>,
    outcomes: Vec<Option<Result<T, Error>>>,
    returned: bool,
}

impl<T> Unpin for GatherResults<T> {}

impl<T: Send + 'static> Future for GatherResults<T> {
    type Output = Vec<Result<T, Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while let Some((index, outcome)) = ready!(this.joiner.poll_next(cx)) {
            this.outcomes[index] = Some(outcome);
        }
        this.returned = true;
        Poll::Ready(
            std::mem::take(&mut this.outcomes)
                .into_iter()
                .map(|o| o.expect("every task was yielded once"))
                .collect(),
        )
    }
}

impl<T> Drop for GatherResults<T> {
    fn drop(&mut self) {
        if !self.returned {
            self.joiner.cancel_rest();
        }
    }
}

impl<T> fmt::Debug for GatherResults<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherResults")
            .field("tasks", &self.joiner.tasks.len())
            .field("remaining", &self.joiner.remaining)
            .finish()
    }
}

/// Waits for every task and returns each one's outcome in input order, like
/// `asyncio.gather(..., return_exceptions=True)`: one failure fails only its own slot.
/// Dropping the future before it is done cancels the tasks that have not finished.
///
/// ```
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::gather_results;
///
/// let lp = EventLoop::new();
/// let tasks = vec![
///     lp.spawn(async { 1 }),
///     lp.spawn(async { panic!("bad input") }),
///     lp.spawn(async { 3 }),
/// ];
/// let outcomes = lp.block_on(gather_results(tasks)).unwrap();
/// assert_eq!(outcomes[0], Ok(1));
/// assert!(matches!(&outcomes[1], Err(Error::Panicked { message }) if message == "bad input"));
/// assert_eq!(outcomes[2], Ok(3));
/// ```
pub fn gather_results<T>(tasks: impl IntoIterator<Item = Task<T>>) -> GatherResults<T>
where
    T: Send + 'static,
{
    let joiner = Joiner::new(tasks, false);
    GatherResults {
        outcomes: (0..joiner.len()).map(|_| None).collect(),
        joiner,
        returned: false,
    }
}
