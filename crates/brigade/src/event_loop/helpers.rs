//! asyncio's helpers with its tested semantics: a task group that fails together, a timeout
//! that cancels, and a concurrency-limited map.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use super::EventLoop;
use super::join::{Joiner, gather_results};
use crate::error::Error;
use crate::task::Task;

/// Tasks that succeed or fail together, like Python's `asyncio.TaskGroup`.
///
/// [`join`](Self::join) waits for every task. The first one to fail cancels all the others
/// (running ones stop at their next `.await`), `join` waits until they have stopped, and
/// reports that first failure. Dropping a group without joining it cancels its tasks: no task
/// outlives its group unnoticed.
///
/// ```
/// use brigade::{Error, EventLoop};
///
/// let lp = EventLoop::new();
/// let mut group = lp.group();
/// group.spawn(async { Ok(1) });
/// group.spawn(async { Err("the second fails") });
/// group.spawn(std::future::pending()); // would run forever: the failure cancels it
/// let failure = lp.block_on(group.join()).unwrap().unwrap_err();
/// assert_eq!(failure.index, 1);
/// assert_eq!(failure.cancelled, 1);
/// ```
pub struct TaskGroup<T> {
    lp: EventLoop,
    tasks: Vec<Task<T>>,
}

/// Why a [`TaskGroup`] failed: its first failing task, and how many others it cancelled.
///
/// A task that returns `Err` counts as failing ([`GroupError::error`] is then `None`, and the
/// value is in [`GroupError::value`]); so does one that panics or is cancelled from outside.
///
/// ```
/// use brigade::Error;
///
/// let lp = brigade::EventLoop::new();
/// let mut group = lp.group::<(), String>();
/// group.spawn(async { panic!("the parser fell over") });
/// let failure = lp.block_on(group.join()).unwrap().unwrap_err();
/// assert_eq!((failure.index, failure.value, failure.cancelled), (0, None, 0));
/// assert!(matches!(failure.error, Some(Error::Panicked { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupError<E> {
    /// The failing task's position, in spawn order.
    pub index: usize,
    /// The error the task returned, when it returned one.
    pub value: Option<E>,
    /// What happened to the task instead, when it did not return (a panic, a cancellation).
    pub error: Option<Error>,
    /// How many other tasks were stopped by the group's cancellation.
    pub cancelled: usize,
}

impl<E: fmt::Debug> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} of the group failed: ", self.index)?;
        match (&self.value, &self.error) {
            (Some(value), _) => write!(f, "{value:?}")?,
            (None, Some(error)) => write!(f, "{error}")?,
            (None, None) => f.write_str("unknown")?,
        }
        write!(f, " ({} others cancelled)", self.cancelled)
    }
}

impl<E: fmt::Debug> std::error::Error for GroupError<E> {}

impl EventLoop {
    /// An empty [`TaskGroup`] on this loop.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let mut group = lp.group::<u32, ()>();
    /// group.spawn(async { Ok(1) });
    /// group.spawn(async { Ok(2) });
    /// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(vec![1, 2]));
    /// ```
    pub fn group<T, E>(&self) -> TaskGroup<Result<T, E>> {
        TaskGroup {
            lp: self.clone(),
            tasks: Vec::new(),
        }
    }

    /// Runs `f` over `inputs` with at most `limit` calls in flight at once, and returns every
    /// outcome in input order; one failure fails only its own slot.
    ///
    /// Inputs are taken from the iterator only as slots free up (a semaphore inside), so an
    /// endless or expensive iterator is fine, and they start in input order (first in, first
    /// out). Each call runs as its own task, spawned from the caller's location for blocking
    /// detection. A `limit` of 0 counts as 1. Dropping the returned future stops taking
    /// inputs; calls already started run on, detached.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// use std::sync::Arc;
    ///
    /// let lp = brigade::EventLoop::new();
    /// let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    /// let (n, m) = (now.clone(), most.clone());
    /// let doubled = lp.block_on(lp.map_limited(3, 1..=10u64, move |x| {
    ///     let (now, most) = (n.clone(), m.clone());
    ///     async move {
    ///         most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
    ///         tokio::task::yield_now().await;
    ///         now.fetch_sub(1, SeqCst);
    ///         x * 2
    ///     }
    /// })).unwrap();
    /// assert_eq!(doubled.len(), 10);
    /// assert_eq!(doubled[9], Ok(20));
    /// assert!(most.load(SeqCst) <= 3);
    /// ```
    #[track_caller]
    pub fn map_limited<I, F, Fut>(
        &self,
        limit: usize,
        inputs: I,
        f: F,
    ) -> impl Future<Output = Vec<Result<Fut::Output, Error>>> + Send + 'static
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        F: FnMut(I::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let site = Location::caller();
        let lp = self.clone();
        let inputs = inputs.into_iter();
        let slots = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
        let mut f = f;
        async move {
            let mut inputs = inputs;
            let mut tasks = Vec::new();
            loop {
                // tokio's semaphore is fair (first in, first out), and the permit comes before
                // the input, so nothing is pulled from the iterator before it can start.
                let permit = Arc::clone(&slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let Some(input) = inputs.next() else { break };
                let call = f(input);
                tasks.push(lp.spawn_at(site, async move {
                    let value = call.await;
                    drop(permit);
                    value
                }));
            }
            gather_results(tasks).await
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskGroup<Result<T, E>> {
    /// Adds a task to the group. The caller's location is its spawn site for blocking
    /// detection, as with [`EventLoop::spawn`].
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let mut group = lp.group::<&str, ()>();
    /// group.spawn(async { Ok("a") });
    /// assert_eq!(group.len(), 1);
    /// ```
    #[track_caller]
    pub fn spawn<F>(&mut self, future: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let task = self.lp.spawn_at(Location::caller(), future);
        self.tasks.push(task);
    }

    /// How many tasks were added.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert!(lp.group::<(), ()>().is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task was added.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert_eq!(lp.group::<(), ()>().len(), 0);
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for every task; their values in spawn order, or the first failure (see the
    /// [type's docs](Self)).
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let mut group = lp.group::<usize, std::io::Error>();
    /// for n in [3, 1, 2] {
    ///     group.spawn(async move {
    ///         tokio::time::sleep(std::time::Duration::from_millis(n as u64)).await;
    ///         Ok(n)
    ///     });
    /// }
    /// assert_eq!(lp.block_on(group.join()).unwrap().unwrap(), [3, 1, 2]);
    /// ```
    pub fn join(mut self) -> impl Future<Output = Result<Vec<T>, GroupError<E>>> + Send {
        let mut joiner = Joiner::new(std::mem::take(&mut self.tasks));
        async move {
            let mut values: Vec<Option<T>> = (0..joiner.len()).map(|_| None).collect();
            let mut failure: Option<GroupError<E>> = None;
            while let Some((index, outcome)) = joiner.next().await {
                let (value, error) = match outcome {
                    Ok(Ok(value)) => {
                        values[index] = Some(value);
                        continue;
                    }
                    Ok(Err(value)) => (Some(value), None),
                    Err(error) => (None, Some(error)),
                };
                match &mut failure {
                    None => {
                        joiner.cancel_rest();
                        failure = Some(GroupError {
                            index,
                            value,
                            error,
                            cancelled: 0,
                        });
                    }
                    Some(first) => {
                        if error == Some(Error::Cancelled) {
                            first.cancelled += 1;
                        }
                    }
                }
            }
            match failure {
                Some(failure) => Err(failure),
                None => Ok(values
                    .into_iter()
                    .map(|v| v.expect("every task was yielded once"))
                    .collect()),
            }
        }
    }
}

impl<T> Drop for TaskGroup<T> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.cancel();
        }
    }
}

impl<T> fmt::Debug for TaskGroup<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// Waits for `task` at most `limit`; on time-out cancels it and returns [`Error::TimedOut`],
/// like `asyncio.wait_for`.
///
/// An async task stops at its next `.await`; a thread-pool task is cancelled only if it has
/// not started (see [`Task::cancel`]). Unlike [`Task::result_timeout`], which gives up
/// *without* cancelling, the task does not outlive the time-out. Must be awaited inside an
/// event loop (a task, or [`EventLoop::block_on`]): it uses the loop's timers.
///
/// ```
/// use std::time::Duration;
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::timeout;
///
/// let lp = EventLoop::new();
/// let slow = lp.spawn(std::future::pending::<()>());
/// let fast = lp.spawn(async { 7 });
/// lp.block_on(async {
///     assert_eq!(timeout(Duration::from_millis(5), slow).await, Err(Error::TimedOut));
///     assert_eq!(timeout(Duration::from_secs(60), fast).await, Ok(7));
/// }).unwrap();
/// ```
pub async fn timeout<T>(limit: Duration, mut task: Task<T>) -> Result<T, Error> {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => {
            task.cancel();
            Err(Error::TimedOut)
        }
    }
}
