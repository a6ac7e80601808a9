//! [`TaskGroup`]: tasks that succeed or fail together, like Python's `asyncio.TaskGroup`.
//!
//! The group does not own its children's handles (the caller gets each child's [`Task`]), so
//! it learns about them from inside: every child's future is wrapped in a [`Child`] that
//! reports to the group how it ended (a value, an `Err`, a panic, or being dropped unfinished,
//! which is how a cancelled task ends), and the group keeps a second handle on each running
//! child's control, through which it interrupts them. The wrapper reports from its destructor
//! too, so a child cancelled before its first poll is accounted for all the same. Besides,
//! the group watches each child's task (through the floor's [`Watcher`]), and `join` returns
//! once every child has reported *and* every child's task is settled.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

mod report;

use super::EventLoop;
use super::driver::Interrupt;
use crate::error::Error;
use crate::sync::Mutex;
use crate::task::Task;
use crate::wait::Watcher;
use report::{Child, Reporter, Shared, State};

/// Tasks that succeed or fail together, like Python's `asyncio.TaskGroup`.
///
/// [`spawn`](Self::spawn) starts a child and hands back its [`Task`]; each child returns a
/// `Result`. [`join`](Self::join) waits until every child has ended. The first child to fail
/// (return `Err`, or panic) cancels all the others (running ones stop at their next
/// `.await`); `join` waits until they have stopped, and reports that first failure as a
/// [`GroupError`]. The children's values stay in their handles.
///
/// Children may be spawned while the group is being joined, from anywhere, through a
/// [`GroupSpawner`] (cloneable, `Send`); `join` then waits for them too.
/// [`cancel`](Self::cancel) cancels the whole group.
///
/// Nothing outlives the group unnoticed: dropping it without joining it, or dropping its
/// `join` future before it is done (the task awaiting it was cancelled, a [`timeout`] around
/// it fired), cancels every child still running.
///
/// A child cancelled from outside, through its own handle, simply ends: as in asyncio, that
/// is not a failure of the group. Once the group has failed, been cancelled or been joined,
/// it takes no more children: a late [`spawn`](Self::spawn) returns a task already failed
/// with [`Error::Cancelled`] (failed or cancelled group) or [`Error::ShutDown`] (joined).
///
/// [`timeout`]: super::timeout()
///
/// ```
/// use brigade::{Error, EventLoop};
///
/// let lp = EventLoop::new();
/// let group = lp.group();
/// let (fail, failing) = tokio::sync::oneshot::channel::<()>();
/// let first = group.spawn(async { Ok::<_, String>(1) });
/// assert_eq!(first.result(), Ok(Ok(1))); // done before anything fails: not cancelled
/// let second = group.spawn(async move {
///     failing.await.unwrap();
///     Err::<u32, _>("the second fails".to_string())
/// });
/// let forever = group.spawn(async { std::future::pending::<Result<(), String>>().await });
/// fail.send(()).unwrap();
/// let failure = lp.block_on(group.join()).unwrap().unwrap_err();
/// assert_eq!(failure.index, Some(1));
/// assert_eq!(failure.cancelled, 1); // `forever` was stopped
/// assert_eq!(second.result(), Ok(Err("the second fails".to_string())));
/// assert_eq!(forever.result(), Err(Error::Cancelled));
/// ```
pub struct TaskGroup {
    spawner: GroupSpawner,
}

/// Spawns children into a [`TaskGroup`], from anywhere, also while the group is being joined
/// (see [`TaskGroup::spawner`]). Cloning gives another spawner for the same group.
///
/// ```
/// let lp = brigade::EventLoop::new();
/// let group = lp.group();
/// let spawner = group.spawner();
/// let parent = group.spawn(async move {
///     // A child spawns a sibling while the group is being joined: join waits for it too.
///     let sibling = spawner.spawn(async { Ok::<_, ()>(2) });
///     Ok::<_, ()>(sibling.await.unwrap().unwrap() + 1)
/// });
/// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
/// assert_eq!(parent.result(), Ok(Ok(3)));
/// ```
#[derive(Clone)]
pub struct GroupSpawner {
    lp: EventLoop,
    shared: Arc<Shared>,
}

/// Why a [`TaskGroup`] failed: its first failing child, or a [`cancel`](TaskGroup::cancel);
/// and how many other children the group stopped.
///
/// ```
/// use brigade::Error;
///
/// let lp = brigade::EventLoop::new();
/// let group = lp.group();
/// let parser = group.spawn(async { if true { panic!("the parser fell over") }; Ok::<(), ()>(()) });
/// let failure = lp.block_on(group.join()).unwrap().unwrap_err();
/// assert_eq!((failure.index, failure.message, failure.cancelled), (Some(0), None, 0));
/// assert!(matches!(failure.error, Some(Error::Panicked { .. })));
/// assert!(matches!(parser.result(), Err(Error::Panicked { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupError {
    /// The failing child's position, in spawn order; `None` when the group was cancelled with
    /// [`TaskGroup::cancel`].
    pub index: Option<usize>,
    /// What the child ended with instead of a value, when it did not return (a panic).
    pub error: Option<Error>,
    /// The `Err` the child returned, written with `{:?}`. The value itself is in the child's
    /// [`Task`].
    pub message: Option<String>,
    /// How many other children the group's cancellation stopped.
    pub cancelled: usize,
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => {
                write!(f, "task {index} of the group failed: ")?;
                match (&self.message, &self.error) {
                    (Some(message), _) => f.write_str(message)?,
                    (None, Some(error)) => write!(f, "{error}")?,
                    (None, None) => f.write_str("unknown")?,
                }
                write!(f, " ({} others cancelled)", self.cancelled)
            }
            None => write!(
                f,
                "the group was cancelled ({} tasks stopped)",
                self.cancelled
            ),
        }
    }
}

impl std::error::Error for GroupError {}

impl EventLoop {
    /// An empty [`TaskGroup`] on this loop.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let one = group.spawn(async { Ok::<_, ()>(1) });
    /// let two = group.spawn(async { Ok::<_, ()>("two") }); // children's types may differ
    /// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    /// assert_eq!((one.result(), two.result()), (Ok(Ok(1)), Ok(Ok("two"))));
    /// ```
    pub fn group(&self) -> TaskGroup {
        TaskGroup {
            spawner: GroupSpawner {
                lp: self.clone(),
                shared: Arc::new(Shared {
                    state: Mutex::new(State::default()),
                    settled: Watcher::new(),
                }),
            },
        }
    }
}

impl GroupSpawner {
    /// Adds a child to the group and returns its handle; see [`TaskGroup::spawn`].
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let spawner = group.spawner();
    /// let child = std::thread::spawn(move || spawner.spawn(async { Ok::<_, ()>(5) }))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    /// assert_eq!(child.result(), Ok(Ok(5)));
    /// ```
    #[track_caller]
    pub fn spawn<F, T, E>(&self, future: F) -> Task<Result<T, E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Debug + Send + 'static,
    {
        self.spawn_at(Location::caller(), future)
    }

    fn spawn_at<F, T, E>(&self, site: &'static Location<'static>, future: F) -> Task<Result<T, E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Debug + Send + 'static,
    {
        // Registered before it is spawned: it may end (and report) before `spawn` returns.
        let index = {
            let mut state = self.shared.state.lock();
            if state.failure.is_some() {
                return Task::failed(Error::Cancelled);
            }
            if state.closed {
                return Task::failed(Error::ShutDown);
            }
            let index = state.spawned;
            state.spawned += 1;
            state.running.push((index, None));
            index
        };
        let child = Child {
            future,
            reporter: Reporter {
                shared: Arc::clone(&self.shared),
                index,
                reported: false,
            },
        };
        let (task, control) = self.lp.spawn_at(site, child, false, true);
        let watched = self.shared.settled.watch(index, task.completion());
        let stopping = {
            let mut state = self.shared.state.lock();
            if !watched {
                state.settled += 1;
            }
            let stopping = state.failure.is_some() || state.closed;
            // `None` when the loop refused the child: its wrapper is dropped, and has reported.
            match (state.running.iter_mut().find(|(i, _)| *i == index), control) {
                // Still running: keep its control, unless the group began stopping meanwhile.
                (Some(slot), Some(control)) if !stopping => {
                    slot.1 = Some(Box::new(control));
                    None
                }
                (Some(_), control) => control,
                (None, _) => None, // it already ended
            }
        };
        if let Some(control) = stopping {
            control.interrupt();
        }
        task
    }
}

impl TaskGroup {
    /// Adds a child to the group and returns its handle. The caller's location is its spawn
    /// site for blocking detection, as with [`EventLoop::spawn`].
    ///
    /// The child fails the group when it returns `Err` (written into
    /// [`GroupError::message`] with `{:?}`; the value stays in its handle) or panics.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let child = group.spawn(async { Ok::<_, std::io::Error>("a") });
    /// assert_eq!(group.len(), 1);
    /// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    /// assert_eq!(child.result().unwrap().unwrap(), "a");
    /// ```
    #[track_caller]
    pub fn spawn<F, T, E>(&self, future: F) -> Task<Result<T, E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Debug + Send + 'static,
    {
        self.spawner.spawn_at(Location::caller(), future)
    }

    /// A spawner for this group, to add children from elsewhere (another task, a child, a
    /// thread), also while the group is being joined; see [`GroupSpawner`] for an example.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let spawner = group.spawner();
    /// let child = spawner.spawn(async { Ok::<_, ()>("from the spawner") });
    /// assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    /// assert_eq!(child.result(), Ok(Ok("from the spawner")));
    /// ```
    pub fn spawner(&self) -> GroupSpawner {
        self.spawner.clone()
    }

    /// Cancels the group: every running child stops at its next `.await`, no more children
    /// are taken, and [`join`](Self::join) reports a [`GroupError`] whose `index` is `None`
    /// (unless a child had failed first).
    ///
    /// ```
    /// use brigade::Error;
    ///
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let child = group.spawn(async { std::future::pending::<Result<(), ()>>().await });
    /// group.cancel();
    /// let failure = lp.block_on(group.join()).unwrap().unwrap_err();
    /// assert_eq!((failure.index, failure.cancelled), (None, 1));
    /// assert_eq!(child.result(), Err(Error::Cancelled));
    /// ```
    pub fn cancel(&self) {
        self.spawner.shared.stop(
            Some(GroupError {
                index: None,
                error: None,
                message: None,
                cancelled: 0,
            }),
            false,
        );
    }

    /// How many children were spawned so far.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert_eq!(lp.group().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.spawner.shared.state.lock().spawned
    }

    /// Whether no child was spawned.
    ///
    /// ```
    /// let lp = brigade::EventLoop::new();
    /// assert!(lp.group().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every child has ended (children spawned meanwhile included); `Ok(())`, or
    /// the first failure (see the [type's docs](Self)). Dropping the returned future before it
    /// is done cancels the children still running.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::Error;
    /// use brigade::event_loop::timeout;
    ///
    /// let lp = brigade::EventLoop::new();
    /// let group = lp.group();
    /// let stuck = group.spawn(async { std::future::pending::<Result<(), ()>>().await });
    /// let joined = lp.block_on(timeout(Duration::from_millis(5), group.join())).unwrap();
    /// assert_eq!(joined, Err(Error::TimedOut));
    /// assert_eq!(stuck.result(), Err(Error::Cancelled)); // the timeout cancelled the group
    /// ```
    pub fn join(self) -> GroupJoin {
        GroupJoin { group: Some(self) }
    }
}

impl Drop for TaskGroup {
    /// Dropped unjoined (or its `join` dropped before it was done): the children still running
    /// are cancelled. After a completed `join` there are none.
    fn drop(&mut self) {
        self.spawner.shared.stop(None, true);
    }
}

impl fmt::Debug for TaskGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.spawner.shared.state.lock();
        f.debug_struct("TaskGroup")
            .field("spawned", &state.spawned)
            .field("running", &state.running.len())
            .field("failed", &state.failure.is_some())
            .finish()
    }
}

impl fmt::Debug for GroupSpawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSpawner").finish_non_exhaustive()
    }
}

/// What [`TaskGroup::join`] returns. Dropping it before it is done cancels the group's
/// running children.
///
/// ```
/// use brigade::Error;
/// use brigade::event_loop::GroupJoin;
///
/// let lp = brigade::EventLoop::new();
/// let group = lp.group();
/// let child = group.spawn(async { std::future::pending::<Result<(), ()>>().await });
/// let join: GroupJoin = group.join();
/// drop(join); // no one waits any more: the children are cancelled
/// assert_eq!(child.result(), Err(Error::Cancelled));
/// ```
#[must_use = "a join does nothing unless awaited, and dropping it cancels the group"]
pub struct GroupJoin {
    /// `None` once it has returned.
    group: Option<TaskGroup>,
}

impl Future for GroupJoin {
    type Output = Result<(), GroupError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let group = this
            .group
            .as_ref()
            .expect("a GroupJoin was polled after it returned");
        let shared = &group.spawner.shared;
        // Registered before anything is looked at, so that no report or settling between the
        // looks and the return goes unheard.
        let settling = shared.settled.poll_ready(cx).is_ready();
        let mut state = shared.state.lock();
        if settling {
            let mut settled = std::collections::VecDeque::new();
            shared.settled.drain_into(&mut settled);
            state.settled += settled.len();
        }
        if !state.running.is_empty() || state.settled < state.spawned {
            if !state
                .joiner
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.joiner = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        state.closed = true;
        let failure = state.failure.take();
        drop(state);
        this.group = None;
        Poll::Ready(failure.map_or(Ok(()), Err))
    }
}

impl fmt::Debug for GroupJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupJoin")
            .field("done", &self.group.is_none())
            .finish()
    }
}
