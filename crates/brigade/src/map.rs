//! `map` over a pool: lazy over its input, bounded in flight, ordered or as completed. One
//! implementation for every lane: a lane only says how to run a chunk of items as one task.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::progress::Bar;
use crate::task::Task;
use crate::wait::Watcher;

/// Results of one chunk, one slot per input item.
pub(crate) type ChunkResults<R> = Vec<Result<R, Error>>;

/// A pool that [`Map`] can feed: it runs `f` over a chunk of items as one task, each item's
/// outcome in its own slot. Sealed: implemented by brigade's pools only.
#[allow(unreachable_pub)] // public in a private module: nameable in `Map`'s bounds only
pub trait Lane<A, F, R>: Clone {
    /// How many workers the pool has (sizes the default read-ahead).
    fn workers(&self) -> usize;
    /// Submits one chunk; `site` is the line that called `map`.
    fn submit_chunk(
        &self,
        f: &Arc<F>,
        items: Vec<A>,
        site: &'static Location<'static>,
    ) -> Result<Task<ChunkResults<R>>, Error>;
}

/// The results of a chunk that failed as a whole: every item gets the error, so the slots
/// still line up with the input.
fn errors<R>(e: &Error, len: usize) -> ChunkResults<R> {
    (0..len).map(|_| Err(e.clone())).collect()
}

/// Where a chunk stands: submitted, or refused by the pool.
enum Chunk<R> {
    Submitted(Task<ChunkResults<R>>),
    Refused(Error),
}

/// The shared part of both iterators: the input, the function, and how to submit a chunk.
struct Feeder<I: Iterator, F, P> {
    pool: P,
    inputs: I,
    f: Arc<F>,
    chunk_size: usize,
    in_flight: usize,
    exhausted: bool,
    /// Input index of the next chunk's first item.
    next_index: usize,
    /// The line that called `map`: every chunk's submission site.
    site: &'static Location<'static>,
    /// When the whole iteration gives up (see `Map::timeout`).
    deadline: Option<Instant>,
    /// The deadline passed: nothing more is submitted or waited for.
    expired: bool,
}

impl<I: Iterator, F, P> Feeder<I, F, P> {
    /// Takes the next chunk from the input and submits it: `(first index, length, chunk)`.
    /// `None` once the input is over or the pool refused a chunk (after which the input is
    /// left alone).
    fn next_chunk<R>(&mut self) -> Option<(usize, usize, Chunk<R>)>
    where
        P: Lane<I::Item, F, R>,
    {
        if self.exhausted || self.expired {
            return None;
        }
        let items: Vec<I::Item> = self.inputs.by_ref().take(self.chunk_size).collect();
        if items.is_empty() {
            self.exhausted = true;
            return None;
        }
        let (first, len) = (self.next_index, items.len());
        self.next_index += len;
        match self.pool.submit_chunk(&self.f, items, self.site) {
            Ok(task) => Some((first, len, Chunk::Submitted(task))),
            Err(refused) => {
                self.exhausted = true;
                Some((first, len, Chunk::Refused(refused)))
            }
        }
    }
}

/// The iterator `map` returns ([`ThreadPool::map`](crate::ThreadPool::map),
/// [`ProcessPool::map`](crate::ProcessPool::map)): results in input order.
///
/// It submits work only as it is iterated, keeping at most
/// [`in_flight`](Self::in_flight) chunks submitted but not yet yielded, so it never reads the
/// input far ahead of the consumer (an infinite input works). Each item's outcome occupies its
/// own slot: a panic in one yields an [`Error::Panicked`] for that item and the iteration goes
/// on. Dropping the iterator cancels the chunks that have not started.
///
/// If the pool is shut down mid-way, the items of the refused chunk yield
/// [`Error::ShutDown`] and the iteration ends, leaving the rest of the input unread.
///
/// With a [`timeout`](Self::timeout) for the whole iteration (Python's `map(timeout=)`), the
/// items not finished when it passes yield [`Error::TimedOut`], their tasks are cancelled
/// (those already running on a lane that cannot stop them finish unseen), and the iteration
/// ends, leaving the rest of the input unread.
#[must_use = "map is lazy: iterate it to run the work"]
pub struct Map<I: Iterator, F, R, P> {
    feeder: Feeder<I, F, P>,
    queue: InFlight<R>,
    ready: std::vec::IntoIter<Result<R, Error>>,
    bar: Bar,
}

/// A submitted chunk's results: its own, or, when the iteration's deadline has passed and the
/// chunk is not done, a time-out for each item (and the chunk is cancelled).
fn outcome<R>(task: Task<ChunkResults<R>>, len: usize, expired: bool) -> ChunkResults<R> {
    if expired && !task.is_done() {
        task.cancel();
        return errors(&Error::TimedOut, len);
    }
    // Any other error: a cancelled chunk (the pool shut down with `cancel_pending`), say.
    task.result().unwrap_or_else(|e| errors(&e, len))
}

/// Chunks submitted and not yet consumed, `(first index, length, chunk)`, in input order.
/// Dropping them cancels those that have not started.
struct InFlight<R>(VecDeque<(usize, usize, Chunk<R>)>);

impl<R> Drop for InFlight<R> {
    fn drop(&mut self) {
        for (_, _, chunk) in &self.0 {
            if let Chunk::Submitted(task) = chunk {
                task.cancel();
            }
        }
    }
}

impl<I, F, R, P> Map<I, F, R, P>
where
    I: Iterator,
    R: Send,
    P: Lane<I::Item, F, R>,
{
    pub(crate) fn new(pool: P, inputs: I, f: F, site: &'static Location<'static>) -> Self {
        let in_flight = 2 * pool.workers();
        Self {
            feeder: Feeder {
                pool,
                inputs,
                f: Arc::new(f),
                chunk_size: 1,
                in_flight,
                exhausted: false,
                next_index: 0,
                site,
                deadline: None,
                expired: false,
            },
            queue: InFlight(VecDeque::new()),
            ready: Vec::new().into_iter(),
            bar: Bar::default(),
        }
    }

    /// Draws a progress bar on stderr as results come (feature `progress`), like wrapping
    /// the iteration in tqdm. The bar knows the total when the input's length is known
    /// (`size_hint`), and shows a count otherwise. Nothing is drawn when stderr is not a
    /// terminal.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let sum: u64 = pool.map(0..1_000u64, |x| x * 2).progress().map(Result::unwrap).sum();
    /// assert_eq!(sum, 999_000);
    /// ```
    #[cfg(feature = "progress")]
    pub fn progress(mut self) -> Self {
        let (low, high) = self.feeder.inputs.size_hint();
        self.bar.show((high == Some(low)).then_some(low));
        self
    }

    /// Sets how many items each task processes (default 1). Chunks amortize the per-task cost
    /// when items are tiny.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let squares: Vec<u64> =
    ///     pool.map(0..10_000u64, |x| x * x).chunk_size(256).map(Result::unwrap).collect();
    /// assert_eq!(squares[9_999], 99_980_001);
    /// ```
    ///
    /// # Panics
    /// If `items` is 0.
    pub fn chunk_size(mut self, items: usize) -> Self {
        assert!(items > 0, "chunk_size must be at least 1");
        self.feeder.chunk_size = items;
        self
    }

    /// Sets how many chunks may be submitted and not yet consumed (default: twice the pool's
    /// workers). Bounds memory and read-ahead of the input.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// // An endless input is fine: at most 4 items are read ahead of the consumer.
    /// let first: Vec<u64> = pool.map(1.., |x: u64| x * 2).in_flight(4).take(3).map(Result::unwrap).collect();
    /// assert_eq!(first, [2, 4, 6]);
    /// ```
    ///
    /// # Panics
    /// If `chunks` is 0.
    pub fn in_flight(mut self, chunks: usize) -> Self {
        assert!(chunks > 0, "in_flight must be at least 1");
        self.feeder.in_flight = chunks;
        self
    }

    /// Gives the whole iteration `limit` from now (Python's `Executor.map(timeout=)`): an item
    /// not finished by then yields [`Error::TimedOut`], as does every other item submitted and
    /// not yet finished, whose tasks are cancelled; then the iteration ends. Items that did
    /// finish in time still yield their results. A limit too large for the clock means none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Error, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    /// let wait_for_go = std::sync::Mutex::new(wait_for_go);
    /// let results: Vec<_> = pool
    ///     .map([1, 2], move |x| if x == 2 { wait_for_go.lock().unwrap().recv().ok(); } else {})
    ///     .timeout(Duration::from_millis(20))
    ///     .collect();
    /// assert_eq!(results[0], Ok(()));
    /// assert_eq!(results[1], Err(Error::TimedOut));
    /// go.send(()).unwrap(); // lets the stuck item end
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.feeder.deadline = Instant::now().checked_add(limit);
        self
    }

    /// Like [`timeout`](Self::timeout), with a fixed moment instead of a duration from now.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.feeder.deadline = Some(deadline);
        self
    }

    /// Yields results as they complete instead of in input order, each with its input's index.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let mut results: Vec<(usize, u32)> =
    ///     pool.map([3, 1, 2], |x| x * 10).unordered().map(|(i, r)| (i, r.unwrap())).collect();
    /// results.sort();
    /// assert_eq!(results, [(0, 30), (1, 10), (2, 20)]);
    /// ```
    pub fn unordered(mut self) -> Unordered<I, F, R, P> {
        let first = self.feeder.next_index
            - self.ready.len()
            - self.queue.0.iter().map(|(_, len, _)| len).sum::<usize>();
        let mut unordered = Unordered {
            bar: std::mem::take(&mut self.bar),
            feeder: self.feeder,
            tasks: HashMap::new(),
            watcher: Watcher::new(),
            completed: VecDeque::new(),
            ready: (first..).zip(self.ready).collect(),
            next_chunk: 0,
        };
        for (first, len, chunk) in self.queue.0.drain(..) {
            unordered.track(first, len, chunk);
        }
        unordered
    }
}

impl<I, F, R, P> Iterator for Map<I, F, R, P>
where
    I: Iterator,
    P: Lane<I::Item, F, R>,
{
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.ready.next() {
                self.bar.inc();
                return Some(result);
            }
            while self.queue.0.len() < self.feeder.in_flight {
                match self.feeder.next_chunk() {
                    Some(chunk) => self.queue.0.push_back(chunk),
                    None => break,
                }
            }
            let Some((_, len, chunk)) = self.queue.0.pop_front() else {
                self.bar.finish();
                return None;
            };
            self.ready = match chunk {
                Chunk::Submitted(task) => {
                    if !self.feeder.expired && !task.wait_until(self.feeder.deadline) {
                        // Time is up: nothing more is read, and every chunk not done now
                        // times out below, this one first.
                        self.feeder.expired = true;
                    }
                    outcome(task, len, self.feeder.expired)
                }
                Chunk::Refused(e) => errors(&e, len),
            }
            .into_iter();
        }
    }
}

impl<I: Iterator, F, R, P> fmt::Debug for Map<I, F, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.queue.0.len())
            .finish_non_exhaustive()
    }
}

/// The iterator [`Map::unordered`] returns: `(input index, result)` in completion order; see
/// there for an example.
#[must_use = "map is lazy: iterate it to run the work"]
pub struct Unordered<I: Iterator, F, R, P> {
    feeder: Feeder<I, F, P>,
    /// Submitted chunks not yet yielded, by chunk number, with their first input index and
    /// their length.
    tasks: HashMap<usize, (usize, usize, Task<ChunkResults<R>>)>,
    watcher: Watcher,
    completed: VecDeque<usize>,
    ready: VecDeque<(usize, Result<R, Error>)>,
    next_chunk: usize,
    bar: Bar,
}

impl<I: Iterator, F, R: Send, P> Unordered<I, F, R, P> {
    /// Starts watching a chunk for completion.
    fn track(&mut self, first: usize, len: usize, chunk: Chunk<R>) {
        match chunk {
            Chunk::Submitted(task) => {
                let id = self.next_chunk;
                self.next_chunk += 1;
                if !self.watcher.watch(id, task.completion()) {
                    self.completed.push_back(id);
                }
                self.tasks.insert(id, (first, len, task));
            }
            Chunk::Refused(e) => self.ready.extend((first..).zip(errors(&e, len))),
        }
    }
}

impl<I, F, R, P> Iterator for Unordered<I, F, R, P>
where
    I: Iterator,
    R: Send,
    P: Lane<I::Item, F, R>,
{
    type Item = (usize, Result<R, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.ready.pop_front() {
                self.bar.inc();
                return Some(result);
            }
            while self.tasks.len() < self.feeder.in_flight {
                let Some((first, len, chunk)) = self.feeder.next_chunk() else {
                    break;
                };
                self.track(first, len, chunk);
            }
            if !self.ready.is_empty() {
                continue;
            }
            if self.tasks.is_empty() {
                self.bar.finish();
                return None;
            }
            while self.completed.is_empty() && !self.feeder.expired {
                if !self.watcher.wait(self.feeder.deadline) {
                    self.feeder.expired = true;
                }
                self.watcher.drain_into(&mut self.completed);
            }
            if self.feeder.expired {
                // Time is up: whatever finished yields its results, the rest time out.
                let mut left: Vec<_> = self.tasks.drain().map(|(_, chunk)| chunk).collect();
                left.sort_by_key(|(first, _, _)| *first);
                for (first, len, task) in left {
                    self.ready.extend((first..).zip(outcome(task, len, true)));
                }
                continue;
            }
            let id = self.completed.pop_front().expect("just filled");
            let (first, len, task) = self.tasks.remove(&id).expect("each chunk completes once");
            let results = task.result().unwrap_or_else(|e| errors(&e, len));
            self.ready.extend((first..).zip(results));
        }
    }
}

impl<I: Iterator, F, R, P> Drop for Unordered<I, F, R, P> {
    fn drop(&mut self) {
        for (_, _, task) in self.tasks.values() {
            task.cancel();
        }
    }
}

impl<I: Iterator, F, R, P> fmt::Debug for Unordered<I, F, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unordered")
            .field("in_flight", &self.tasks.len())
            .finish_non_exhaustive()
    }
}
