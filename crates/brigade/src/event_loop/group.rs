//! [`TaskGroup`]: tasks that succeed or fail together, like Python's `asyncio.TaskGroup`.

use std::fmt;
use std::future::Future;
use std::panic::Location;

use super::EventLoop;
use super::gather::Joiner;
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
        let task = self.lp.spawn_at(Location::caller(), future, false);
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
