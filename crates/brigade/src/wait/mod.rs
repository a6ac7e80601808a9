//! Waiting on many tasks at once, from any mix of lanes: [`wait`] and [`as_completed`] block
//! the calling thread; [`wait_async`] and [`as_completed_async`] are their twins for async
//! code (an event loop's task, any executor), which wait without blocking a thread.

mod stream;
pub(crate) mod timer;

pub use stream::{AsCompletedStream, as_completed_async, wait_async};

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::progress::Bar;
use crate::sync::Mutex;
use crate::task::block::block_until;
use crate::task::{Completion, Task, state_is_done, state_is_error};

mod sealed {
    use crate::task::Completion;

    /// Hidden supertrait: only brigade's handles are waitable, and how they are watched stays
    /// private.
    #[allow(unreachable_pub)] // public in a private module: nameable by no one outside
    pub trait Sealed {
        fn completion(&self) -> &dyn Completion;
    }
}

use sealed::Sealed;

/// Something [`wait`] and [`as_completed`] can wait on: a [`Task`], a reference to one, or a
/// pair `(key, task)` that carries along whatever identifies the task for you (an input, an
/// index, a URL), the way Python code keeps a `{future: url}` dictionary. Tasks with different
/// value types mix as `&dyn Waitable`.
///
/// ```
/// use brigade::{ThreadPool, Until, Waitable, wait};
///
/// let pool = ThreadPool::new();
/// let number = pool.submit(|| 7);
/// let text = pool.submit(|| String::from("seven"));
/// let both: [&dyn Waitable; 2] = [&number, &text];
/// assert_eq!(wait(both, Until::AllCompleted, None).done.len(), 2);
/// ```
pub trait Waitable: Sealed {}

impl<T: Send> Sealed for Task<T> {
    fn completion(&self) -> &dyn Completion {
        Task::completion(self)
    }
}
impl<T: Send> Waitable for Task<T> {}

impl<T: Send> Sealed for &Task<T> {
    fn completion(&self) -> &dyn Completion {
        Task::completion(self)
    }
}
impl<T: Send> Waitable for &Task<T> {}

impl<K, T: Send> Sealed for (K, Task<T>) {
    fn completion(&self) -> &dyn Completion {
        self.1.completion()
    }
}
impl<K, T: Send> Waitable for (K, Task<T>) {}

/// Tasks of different value types can be waited on together as `&dyn Waitable`.
impl Sealed for &dyn Waitable {
    fn completion(&self) -> &dyn Completion {
        (**self).completion()
    }
}
impl Waitable for &dyn Waitable {}

/// The same, shareable between threads: what a future that must be `Send` (an event-loop
/// task waiting with [`wait_async`]) can hold.
impl Sealed for &(dyn Waitable + Sync) {
    fn completion(&self) -> &dyn Completion {
        (**self).completion()
    }
}
impl Waitable for &(dyn Waitable + Sync) {}

/// The identity of a waitable: the address of its task's shared state.
fn identity(w: &impl Waitable) -> usize {
    std::ptr::from_ref(w.completion()).cast::<()>() as usize
}

/// Collects the indices of tasks as they complete and wakes the one thread waiting on them.
///
/// A waiter that needs every task (a gather) can ask to be woken only once all of them are in,
/// or when one fails ([`watch_quietly`](Self::watch_quietly), [`poll_all`](Self::poll_all)):
/// awaiting a thousand slow requests with `gather` woke the awaiting thread once per request
/// (a thousand extra context switches per run of the `io-slow-many` benchmark, which put it
/// 3.5 % behind awaiting the same tasks one by one).
pub(crate) struct Watcher {
    shared: Arc<WatcherShared>,
}

struct WatcherShared {
    ready: Mutex<Ready>,
    owner: Mutex<Option<Waker>>,
}

#[derive(Default)]
struct Ready {
    indices: Vec<usize>,
    /// A completion wakes the owner only when this many indices are in (or its task failed);
    /// 0 wakes it at every completion. Set by the owner under the same lock as it looks at
    /// `indices`, so the completion that brings the count there always sees it.
    wake_at: usize,
}

struct Notify<F> {
    shared: Arc<WatcherShared>,
    index: usize,
    /// Whether the task failed: a failure wakes the owner whatever `wake_at` says.
    failed: F,
}

impl<F: Fn() -> bool + Send + Sync + 'static> Wake for Notify<F> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wake = {
            let mut ready = self.shared.ready.lock();
            ready.indices.push(self.index);
            ready.wake_at == 0 || ready.indices.len() >= ready.wake_at || (self.failed)()
        };
        if wake && let Some(owner) = self.shared.owner.lock().as_ref() {
            owner.wake_by_ref();
        }
    }
}

impl Watcher {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(WatcherShared {
                ready: Mutex::new(Ready::default()),
                owner: Mutex::new(None),
            }),
        }
    }

    /// Watches `completion` under `index`. Returns `false` when it is already done (nothing is
    /// registered and the caller should treat it as ready at once).
    pub(crate) fn watch(&self, index: usize, completion: &dyn Completion) -> bool {
        self.watch_quietly(index, completion, || false)
    }

    /// [`watch`](Self::watch), where the completion wakes the owner only as
    /// [`poll_all`](Self::poll_all) asks, or when `failed()` says the task failed.
    pub(crate) fn watch_quietly(
        &self,
        index: usize,
        completion: &dyn Completion,
        failed: impl Fn() -> bool + Send + Sync + 'static,
    ) -> bool {
        let waker = Waker::from(Arc::new(Notify {
            shared: Arc::clone(&self.shared),
            index,
            failed,
        }));
        completion.watch(&waker)
    }

    /// Moves the indices of tasks completed since the last call into `into`.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<usize>) {
        into.extend(self.shared.ready.lock().indices.drain(..));
    }

    /// Ready when some watched task completed since the last drain; otherwise arranges for
    /// `cx`'s waker to be woken when one does: [`wait`](Self::wait) for async code.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_all(cx, 0)
    }

    /// [`poll_ready`](Self::poll_ready), but woken only once `outstanding` tasks (every one
    /// still awaited) have completed since the last drain, or one watched quietly failed.
    pub(crate) fn poll_all(&self, cx: &mut Context<'_>, outstanding: usize) -> Poll<()> {
        {
            let mut owner = self.shared.owner.lock();
            if !owner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *owner = Some(cx.waker().clone());
            }
        }
        // The waker is in place before `ready` is looked at, and a completion pushes its index
        // before it looks for the waker (each under its lock): either we see the index, or the
        // completion sees our waker.
        let mut ready = self.shared.ready.lock();
        ready.wake_at = outstanding;
        if ready.indices.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Blocks until some watched task completes or `deadline` passes. True if one completed.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        let shared = &self.shared;
        block_until(
            || !shared.ready.lock().indices.is_empty(),
            |waker| *shared.owner.lock() = Some(waker.clone()),
            deadline,
        )
    }
}

/// When [`wait`] returns.
///
/// ```
/// use brigade::{ThreadPool, Until, wait};
///
/// let pool = ThreadPool::new();
/// let tasks = [pool.submit(|| 1), pool.submit(|| -> i32 { panic!("no") })];
/// let waited = wait(&tasks, Until::FirstError, None);
/// assert!(waited.done.iter().any(|t| t.is_done()));
/// assert_eq!(Until::default(), Until::AllCompleted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Until {
    /// As soon as any task is done (finished, failed or cancelled).
    FirstCompleted,
    /// As soon as any task fails with an error it raised (a panic, say); a cancellation does
    /// not count. When none fails, this is the same as [`Until::AllCompleted`].
    FirstError,
    /// When every task is done.
    #[default]
    AllCompleted,
}

/// What [`wait`] returns: the tasks that are done and those that are not, each in input order.
///
/// ```
/// use std::time::Duration;
/// use brigade::{ThreadPool, Until, wait};
///
/// let pool = ThreadPool::new();
/// let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
/// let stuck = pool.submit(move || wait_for_go.recv().unwrap());
/// let waited = wait([stuck], Until::AllCompleted, Some(Duration::from_millis(1)));
/// assert_eq!((waited.done.len(), waited.pending.len()), (0, 1));
/// go.send(()).unwrap();
/// let stuck = waited.pending.into_iter().next().unwrap(); // nothing is lost
/// assert_eq!(stuck.result(), Ok(()));
/// ```
pub struct Waited<W> {
    /// Tasks that are done.
    pub done: Vec<W>,
    /// Tasks that are not done (only when the condition was met early or time ran out).
    pub pending: Vec<W>,
}

impl<W> fmt::Debug for Waited<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waited")
            .field("done", &self.done.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Keeps the first of each task, by identity.
fn dedup<W: Waitable>(tasks: impl IntoIterator<Item = W>) -> Vec<W> {
    let mut seen = HashSet::new();
    tasks
        .into_iter()
        .filter(|w| seen.insert(identity(w)))
        .collect()
}

/// Waits until `until` holds for `tasks` or `timeout` passes, like Python's
/// `concurrent.futures.wait`.
///
/// Tasks may come from any lane; a task given twice counts once. A task cancelled before or
/// during the wait counts as done at once. Running out of time is not an error: the result
/// tells which tasks are done and which are still pending. `timeout: None` waits as long as
/// it takes.
///
/// ```
/// use std::sync::mpsc;
/// use brigade::{Until, ThreadPool, wait};
///
/// let pool = ThreadPool::new();
/// let (go, wait_for_go) = mpsc::channel::<()>();
/// let fast = pool.submit(|| 1);
/// let slow = pool.submit(move || { wait_for_go.recv().unwrap(); 2 });
///
/// let first = wait([&fast, &slow], Until::FirstCompleted, None);
/// assert_eq!(first.done.len(), 1);
/// assert!(std::ptr::eq(first.done[0], &fast));
///
/// go.send(()).unwrap();
/// let all = wait([&fast, &slow, &fast], Until::AllCompleted, None);
/// assert_eq!((all.done.len(), all.pending.len()), (2, 0));
/// ```
pub fn wait<W: Waitable>(
    tasks: impl IntoIterator<Item = W>,
    until: Until,
    timeout: Option<Duration>,
) -> Waited<W> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut tally = Tally::new(tasks, until);
    while !tally.met() && tally.watcher.wait(deadline) {
        tally.settle_ready();
    }
    tally.finish()
}

/// Where a [`wait`] stands: which of its tasks are done, and whether its condition is met.
/// The blocking and the async wait differ only in how they sleep between completions.
pub(crate) struct Tally<W> {
    tasks: Vec<W>,
    done: Vec<bool>,
    remaining: usize,
    failed: bool,
    until: Until,
    watcher: Watcher,
    ready: VecDeque<usize>,
}

impl<W: Waitable> Tally<W> {
    /// Deduplicates `tasks` and starts watching the ones not done yet.
    pub(crate) fn new(tasks: impl IntoIterator<Item = W>, until: Until) -> Self {
        let tasks = dedup(tasks);
        let mut tally = Self {
            done: vec![false; tasks.len()],
            remaining: tasks.len(),
            tasks,
            failed: false,
            until,
            watcher: Watcher::new(),
            ready: VecDeque::new(),
        };
        for i in 0..tally.tasks.len() {
            let completion = tally.tasks[i].completion();
            if state_is_done(completion.state()) || !tally.watcher.watch(i, completion) {
                tally.settle(i);
            }
        }
        tally
    }

    fn settle(&mut self, i: usize) {
        if !std::mem::replace(&mut self.done[i], true) {
            self.remaining -= 1;
            self.failed |= state_is_error(self.tasks[i].completion().state());
        }
    }

    /// Counts the tasks whose completion was reported since the last call.
    pub(crate) fn settle_ready(&mut self) {
        self.watcher.drain_into(&mut self.ready);
        while let Some(i) = self.ready.pop_front() {
            self.settle(i);
        }
    }

    /// Whether the wait's condition holds.
    pub(crate) fn met(&self) -> bool {
        match self.until {
            Until::FirstCompleted => self.remaining < self.tasks.len() || self.tasks.is_empty(),
            Until::FirstError => self.failed || self.remaining == 0,
            Until::AllCompleted => self.remaining == 0,
        }
    }

    /// Whose completions to listen for.
    pub(crate) fn watcher(&self) -> &Watcher {
        &self.watcher
    }

    /// The tasks, split into done and pending, each in input order.
    pub(crate) fn finish(self) -> Waited<W> {
        let mut waited = Waited {
            done: Vec::with_capacity(self.tasks.len() - self.remaining),
            pending: Vec::with_capacity(self.remaining),
        };
        for (task, done) in self.tasks.into_iter().zip(self.done) {
            if done {
                waited.done.push(task);
            } else {
                waited.pending.push(task);
            }
        }
        waited
    }
}

/// Yields tasks as they finish, like Python's `concurrent.futures.as_completed`.
///
/// Tasks already done when the call is made come first (in input order), then the others in
/// the order they finish. A task given twice is yielded once. The `timeout` runs from this
/// call: when it passes, the iterator yields one [`Error::Unfinished`] saying how many tasks
/// were left, then ends; [`AsCompleted::into_remaining`] gives those tasks back.
///
/// ```
/// use std::time::Duration;
/// use brigade::{ThreadPool, as_completed};
///
/// let pool = ThreadPool::new();
/// let urls = ["a.example", "b.example", "c.example"];
/// let tasks = urls.map(|url| (url, pool.submit(move || url.len())));
/// let mut seen = Vec::new();
/// for done in as_completed(tasks, Some(Duration::from_secs(60))) {
///     let (url, task) = done.unwrap();
///     seen.push((url, task.result().unwrap()));
/// }
/// seen.sort();
/// assert_eq!(seen, [("a.example", 9), ("b.example", 9), ("c.example", 9)]);
/// ```
pub fn as_completed<W: Waitable>(
    tasks: impl IntoIterator<Item = W>,
    timeout: Option<Duration>,
) -> AsCompleted<W> {
    AsCompleted {
        inner: Completions::new(tasks, timeout),
    }
}

/// Where an [`as_completed`] stands: the tasks not yielded yet and those known to be done.
/// The iterator and the stream differ only in how they sleep between completions.
pub(crate) struct Completions<W> {
    tasks: Vec<Option<W>>,
    ready: VecDeque<usize>,
    watcher: Watcher,
    remaining: usize,
    total: usize,
    deadline: Option<Instant>,
    expired: bool,
    bar: Bar,
}

impl<W: Waitable> Completions<W> {
    /// Deduplicates `tasks`, notes the ones done already and watches the others; the
    /// `timeout` runs from now.
    pub(crate) fn new(tasks: impl IntoIterator<Item = W>, timeout: Option<Duration>) -> Self {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let tasks = dedup(tasks);
        let watcher = Watcher::new();
        let mut ready = VecDeque::new();
        for (i, task) in tasks.iter().enumerate() {
            let completion = task.completion();
            if state_is_done(completion.state()) || !watcher.watch(i, completion) {
                ready.push_back(i);
            }
        }
        Self {
            remaining: tasks.len(),
            total: tasks.len(),
            tasks: tasks.into_iter().map(Some).collect(),
            ready,
            watcher,
            deadline,
            expired: false,
            bar: Bar::default(),
        }
    }
}

impl<W> Completions<W> {
    /// The next item if it needs no waiting: `Some(Some(item))`, or `Some(None)` at the end;
    /// `None` when the caller must wait for a completion (or the deadline).
    pub(crate) fn next_ready(&mut self) -> Option<Option<Result<W, Error>>> {
        if self.has_ready() {
            let i = self.ready.pop_front().expect("checked");
            self.remaining -= 1;
            self.bar.inc();
            return Some(Some(Ok(self.tasks[i]
                .take()
                .expect("each task completes once"))));
        }
        if self.remaining == 0 || self.expired {
            self.bar.finish();
            return Some(None);
        }
        None
    }

    /// Whether an item is ready to be yielded without waiting.
    pub(crate) fn has_ready(&mut self) -> bool {
        if self.expired {
            return false; // after the time-out's error, the iteration is over
        }
        if self.ready.is_empty() {
            self.watcher.drain_into(&mut self.ready);
        }
        !self.ready.is_empty()
    }

    /// The deadline passed: the one error that says how many tasks were left.
    pub(crate) fn expire(&mut self) -> Result<W, Error> {
        self.expired = true;
        Err(Error::Unfinished {
            unfinished: self.remaining,
            total: self.total,
        })
    }

    pub(crate) fn watcher(&self) -> &Watcher {
        &self.watcher
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn into_remaining(self) -> Vec<W> {
        self.tasks.into_iter().flatten().collect()
    }

    pub(crate) fn size_hint(&self) -> (usize, Option<usize>) {
        let ready = if self.expired { 0 } else { self.ready.len() };
        (ready, Some(self.remaining + 1))
    }

    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("remaining", &self.remaining)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The iterator [`as_completed`] returns; see there for an example.
pub struct AsCompleted<W> {
    inner: Completions<W>,
}

impl<W> AsCompleted<W> {
    /// Draws a progress bar on stderr, one step per finished task (feature `progress`), as
    /// users wrap `as_completed` in tqdm. Nothing is drawn when stderr is not a terminal.
    ///
    /// ```
    /// use brigade::{ThreadPool, as_completed};
    ///
    /// let pool = ThreadPool::new();
    /// let tasks: Vec<_> = (0..100u64).map(|n| pool.submit(move || n)).collect();
    /// let done = as_completed(tasks, None).progress().count();
    /// assert_eq!(done, 100);
    /// ```
    #[cfg(feature = "progress")]
    pub fn progress(mut self) -> Self {
        self.inner.bar.show(Some(self.inner.remaining));
        self
    }

    /// The tasks not yielded yet (after a time-out: the unfinished ones), in input order.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Error, ThreadPool, as_completed};
    ///
    /// let pool = ThreadPool::new();
    /// let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    /// let slow = pool.submit(move || wait_for_go.recv().unwrap());
    /// let mut it = as_completed([("slow", slow)], Some(Duration::from_millis(1)));
    /// assert!(matches!(it.next(), Some(Err(Error::Unfinished { unfinished: 1, total: 1 }))));
    /// let rest = it.into_remaining();
    /// assert_eq!(rest[0].0, "slow");
    /// go.send(()).unwrap();
    /// ```
    pub fn into_remaining(self) -> Vec<W> {
        self.inner.into_remaining()
    }
}

impl<W> Iterator for AsCompleted<W> {
    type Item = Result<W, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.inner.next_ready() {
                return item;
            }
            if !self.inner.watcher().wait(self.inner.deadline()) {
                return Some(self.inner.expire());
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<W> fmt::Debug for AsCompleted<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("AsCompleted", f)
    }
}
