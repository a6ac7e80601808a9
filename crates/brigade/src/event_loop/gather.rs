//! Awaiting many tasks at once: [`gather`], [`gather_results`], and the completion-order
//! stream that they and [`TaskGroup`](super::TaskGroup) are built on.
//!
//! Each task gets its own waker that records its index, so a completion costs one poll of
//! that task, not a poll of every task still pending.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::error::Error;
use crate::sync::Mutex;
use crate::task::Task;

struct Ready {
    indices: Mutex<Vec<usize>>,
    parent: Mutex<Option<Waker>>,
}

struct Slot {
    ready: Arc<Ready>,
    index: usize,
}

impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.indices.lock().push(self.index);
        if let Some(parent) = self.ready.parent.lock().as_ref() {
            parent.wake_by_ref();
        }
    }
}

/// Tasks, yielded with their index as they finish.
pub(super) struct Joiner<T> {
    tasks: Vec<Option<Task<T>>>,
    wakers: Vec<Waker>,
    ready: Arc<Ready>,
    to_poll: Vec<usize>,
    remaining: usize,
}

impl<T> Joiner<T> {
    pub(super) fn new(tasks: impl IntoIterator<Item = Task<T>>) -> Self {
        let tasks: Vec<Option<Task<T>>> = tasks.into_iter().map(Some).collect();
        let ready = Arc::new(Ready {
            indices: Mutex::new(Vec::new()),
            parent: Mutex::new(None),
        });
        Self {
            remaining: tasks.len(),
            // Everything is polled once at first; after that, only what woke.
            to_poll: (0..tasks.len()).rev().collect(),
            tasks,
            wakers: Vec::new(),
            ready,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Cancels every task not yet yielded; returns how many accepted.
    pub(super) fn cancel_rest(&self) {
        for task in self.tasks.iter().flatten() {
            task.cancel();
        }
    }

    /// The next task to finish, with its index; `None` when all have been yielded.
    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(usize, Result<T, Error>)>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        {
            let mut parent = self.ready.parent.lock();
            if !parent.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *parent = Some(cx.waker().clone());
            }
        }
        if self.wakers.is_empty() {
            self.wakers = (0..self.tasks.len())
                .map(|index| {
                    Waker::from(Arc::new(Slot {
                        ready: Arc::clone(&self.ready),
                        index,
                    }))
                })
                .collect();
        }
        // The woken indices are taken at most once per call: a task that is pending only
        // because tokio's budget ran out wakes its slot at once, and taking them again here
        // would spin. Every index pushed later also wakes the parent, so none is lost.
        let mut drained = false;
        loop {
            if self.to_poll.is_empty() {
                let mut woken = self.ready.indices.lock();
                if woken.is_empty() || drained {
                    return Poll::Pending;
                }
                std::mem::swap(&mut self.to_poll, &mut woken);
                drained = true;
            }
            while let Some(index) = self.to_poll.pop() {
                let Some(task) = self.tasks[index].as_mut() else {
                    continue; // woken twice
                };
                let mut child = Context::from_waker(&self.wakers[index]);
                if let Poll::Ready(outcome) = Pin::new(task).poll(&mut child) {
                    self.tasks[index] = None;
                    self.remaining -= 1;
                    return Poll::Ready(Some((index, outcome)));
                }
            }
        }
    }

    pub(super) async fn next(&mut self) -> Option<(usize, Result<T, Error>)> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// Waits for every task and returns their values in input order, like `asyncio.gather`.
///
/// The first error (in the order the tasks finish) is returned as soon as it happens; the
/// other tasks are **not** cancelled and keep running, detached, as in asyncio. To collect
/// every outcome instead, use [`gather_results`]; to cancel the rest on the first failure,
/// use a [`TaskGroup`](super::TaskGroup). Works with tasks from any lane.
///
/// ```
/// use brigade::EventLoop;
/// use brigade::event_loop::gather;
///
/// let lp = EventLoop::new();
/// let tasks: Vec<_> = (1..=4u64).map(|n| lp.spawn(async move { n * 10 })).collect();
/// assert_eq!(lp.block_on(gather(tasks)).unwrap(), Ok(vec![10, 20, 30, 40]));
/// ```
pub fn gather<T>(
    tasks: impl IntoIterator<Item = Task<T>>,
) -> impl Future<Output = Result<Vec<T>, Error>> + Send
where
    T: Send + 'static,
{
    let mut joiner = Joiner::new(tasks);
    async move {
        let mut values: Vec<Option<T>> = (0..joiner.len()).map(|_| None).collect();
        while let Some((index, outcome)) = joiner.next().await {
            values[index] = Some(outcome?);
        }
        Ok(values
            .into_iter()
            .map(|v| v.expect("every task was yielded once"))
            .collect())
    }
}

/// Waits for every task and returns each one's outcome in input order, like
/// `asyncio.gather(..., return_exceptions=True)`: one failure fails only its own slot.
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
pub fn gather_results<T>(
    tasks: impl IntoIterator<Item = Task<T>>,
) -> impl Future<Output = Vec<Result<T, Error>>> + Send
where
    T: Send + 'static,
{
    let mut joiner = Joiner::new(tasks);
    async move {
        let mut outcomes: Vec<Option<Result<T, Error>>> = (0..joiner.len()).map(|_| None).collect();
        while let Some((index, outcome)) = joiner.next().await {
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every task was yielded once"))
            .collect()
    }
}
