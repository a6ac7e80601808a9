//! The compute lane: a fixed-size, work-stealing thread pool.
//!
//! Rust has no global interpreter lock, so threads run CPU-bound work in parallel on every
//! core: this is the lane for computation, and for blocking I/O over a few connections.
//! Threads share memory, so tasks can borrow data in place through
//! [`scope`](ThreadPool::scope) and [`join`](ThreadPool::join) instead of copying it to
//! workers.
//!
//! | you want | use |
//! |---|---|
//! | a handle to one piece of work, Python-style | [`ThreadPool::submit`] → [`Task`] |
//! | the same function over many inputs | [`ThreadPool::map`] |
//! | tasks that borrow the caller's data | [`ThreadPool::scope`] |
//! | recursive divide and conquer | [`ThreadPool::join`] |
//!
//! # How it schedules
//!
//! Each worker owns a deque. Work submitted from outside goes to a shared queue; work
//! submitted from inside a task goes to the submitting worker's own deque, last in first out,
//! which keeps recursive fan-outs cache-friendly and their memory bounded. An idle worker
//! takes from its own deque, then from the shared queue, then steals half of a random peer's
//! deque. Workers start on demand, up to the pool's size; an idle worker spins briefly, then
//! sleeps until work arrives.
//!
//! A worker that waits (on a [`Task`], a scope, a join, [`wait`](crate::wait()) or
//! [`as_completed`](crate::as_completed)) runs other queued work of its pool meanwhile, so
//! tasks that wait on tasks of the same pool do not deadlock it, whatever its size.
//!
//! A running task is never interrupted: neither [`Task::cancel`] nor
//! [`shutdown`](ThreadPool::shutdown) can stop it (threads cannot be killed safely; the
//! process lane is the one with killable tasks).

mod inject;
mod job;
mod join;
mod registry;
mod scope;
mod worker;

use std::fmt;
use std::sync::Arc;

pub use scope::Scope;

use crate::error::{BuildError, Error, SubmitError};
use crate::map::Map;
use crate::pool::{Shutdown, worker_count};
use crate::task::Task;
use crate::task::cell::Cell;
use crate::task::origin::{LaneName, Origin};
use crate::task::refs::CellRef;
use job::Job;
use registry::Registry;

/// A pool of worker threads for CPU-bound work.
///
/// Cloning gives another handle to the same pool; the pool shuts down gracefully (finishing
/// the work queued so far) when the last handle is dropped.
///
/// ```
/// use brigade::ThreadPool;
///
/// let pool = ThreadPool::new();
/// let tasks: Vec<_> = (1..=4u64).map(|n| pool.submit(move || n * n)).collect();
/// let squares: Vec<u64> = tasks.into_iter().map(|t| t.result().unwrap()).collect();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    owner: Arc<Owner>,
}

/// Shuts the pool down when the last `ThreadPool` handle goes.
struct Owner {
    registry: Arc<Registry>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        shutdown(&self.registry, Shutdown::graceful());
    }
}

fn shutdown(registry: &Arc<Registry>, how: Shutdown) -> bool {
    registry.terminate();
    if how.cancels_pending() {
        registry.drain(Error::Cancelled);
    }
    // A task of this pool cannot wait for its own worker to leave.
    how.waits() && !worker::is_worker_of(registry) && registry.wait_for_exit(how.deadline())
}

impl ThreadPool {
    /// A pool with the default number of workers: the `BRIGADE_WORKERS` environment variable
    /// if set, else the machine's available parallelism.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// assert!(pool.workers() >= 1);
    /// ```
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts configuring a pool.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::builder().workers(2).thread_name("crunch").build()?;
    /// assert_eq!(pool.workers(), 2);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The most workers this pool runs.
    ///
    /// ```
    /// let pool = brigade::ThreadPool::builder().workers(3).build().unwrap();
    /// assert_eq!(pool.workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.registry().max_workers()
    }

    /// How many workers have been started so far (workers start on demand).
    ///
    /// ```
    /// let pool = brigade::ThreadPool::builder().workers(4).build().unwrap();
    /// assert_eq!(pool.started_workers(), 0);
    /// pool.submit(|| ()).result().unwrap();
    /// assert!(pool.started_workers() >= 1);
    /// ```
    pub fn started_workers(&self) -> usize {
        self.registry().started_workers()
    }

    /// Whether [`shutdown`](Self::shutdown) has been called (see [`Shutdown`] for an example).
    pub fn is_shut_down(&self) -> bool {
        self.registry().is_terminating()
    }

    fn registry(&self) -> &Arc<Registry> {
        &self.owner.registry
    }

    /// Submits `work` and returns its [`Task`].
    ///
    /// Called from a task of this pool, the work goes to the calling worker's own queue. After
    /// [`shutdown`](Self::shutdown) the work is not run: the task is already failed with
    /// [`Error::ShutDown`] (see [`try_submit`](Self::try_submit) to get the work back instead).
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let task = pool.submit(|| "hello from a worker".len());
    /// assert_eq!(task.result()?, 19);
    /// # Ok::<(), brigade::Error>(())
    /// ```
    #[track_caller]
    pub fn submit<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_submit(work)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// Submits `work` like [`submit`](Self::submit), but hands the work back inside the
    /// error when the pool refuses it: after [`shutdown`](Self::shutdown)
    /// ([`Error::ShutDown`]), or when no worker thread could be started
    /// ([`Error::Spawn`]).
    ///
    /// ```
    /// use brigade::{Error, Shutdown, ThreadPool};
    ///
    /// let pool = ThreadPool::new();
    /// pool.shutdown(Shutdown::graceful());
    /// let refused = pool.try_submit(|| 6 * 7).unwrap_err();
    /// assert_eq!(refused.reason(), &Error::ShutDown);
    /// assert_eq!(refused.into_inner()(), 42); // nothing is lost: run it elsewhere
    /// ```
    #[track_caller]
    pub fn try_submit<F, T>(&self, work: F) -> Result<Task<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_submit_at(work, Origin::here(LaneName::Threads))
    }

    fn try_submit_at<F, T>(&self, work: F, origin: Origin) -> Result<Task<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let registry = self.registry();
        if let Err(reason) = registry.admit() {
            return Err(SubmitError::new(work, reason));
        }
        let (job, handle) = CellRef::pair(Cell::new(work, origin));
        registry.push(Job::task(job));
        Ok(Task::from_cell(handle.erase()))
    }

    /// Runs `body` with a [`Scope`] whose tasks may borrow from the caller's stack, and waits
    /// for all of them before returning, like [`std::thread::scope`].
    ///
    /// Called from outside the pool, the body itself runs on a worker (as in `rayon::scope`)
    /// while the caller waits, hence the `Send` bounds; on a pool that is shut down it runs on
    /// the caller, and its tasks fail with [`Error::ShutDown`].
    ///
    /// If a task spawned in the scope panics, `scope` panics too once every task is over, with
    /// the number of panicked tasks and the first message (a panic in `body` itself is
    /// resumed as is). Catch panics inside a task if you want to handle them there.
    ///
    /// This is how to sum a huge list in place, across all cores:
    ///
    /// ```
    /// let pool = brigade::ThreadPool::new();
    /// let numbers: Vec<u64> = (1..=1_000_000).collect();
    /// let chunk = numbers.len().div_ceil(pool.workers() * 4);
    /// let total: u64 = pool.scope(|s| {
    ///     let parts: Vec<_> =
    ///         numbers.chunks(chunk).map(|part| s.spawn(move || part.iter().sum::<u64>())).collect();
    ///     parts.into_iter().map(|t| t.result().unwrap()).sum()
    /// });
    /// assert_eq!(total, 500_000_500_000);
    /// ```
    pub fn scope<'env, F, R>(&self, body: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R + Send,
        R: Send,
    {
        let registry = self.registry();
        // The body runs on a worker, so that its spawns go to that worker's own deque (cheap,
        // and stolen by the others) rather than through the shared queue one by one.
        worker::in_worker(registry, || scope::run(registry, body)).unwrap_or_else(|here| here())
    }

    /// Runs `a` and `b`, in parallel when a worker is free, and returns both results, like
    /// `rayon::join`. Both closures may borrow from the caller.
    ///
    /// This is the cheapest way to split work recursively (divide and conquer): called from a
    /// task of this pool, it runs `a` at once and offers `b` to idle workers; if none takes it,
    /// the caller runs `b` itself, and nothing was allocated. Called from outside, the join runs
    /// on a worker and the caller waits. If the pool is shut down, both run on the caller,
    /// one after the other.
    ///
    /// If `a` or `b` panics, `join` panics with that panic once both are over (`b` may borrow
    /// from the caller's frame, so it is never abandoned halfway).
    ///
    /// ```
    /// fn fib(pool: &brigade::ThreadPool, n: u64) -> u64 {
    ///     if n < 2 {
    ///         return n;
    ///     }
    ///     let (a, b) = pool.join(|| fib(pool, n - 1), || fib(pool, n - 2));
    ///     a + b
    /// }
    /// let pool = brigade::ThreadPool::new();
    /// assert_eq!(fib(&pool, 20), 6765);
    /// ```
    #[inline]
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        match worker::join_here(self.registry(), a, b) {
            Ok(both) => both,
            Err((a, b)) => self.join_from_outside(a, b),
        }
    }

    /// `join` called from a thread that is not one of this pool's workers.
    #[cold]
    fn join_from_outside<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let mut halves = Some((a, b));
        // On a worker, `join` takes the fast path. A pool that refuses the work (or drains it
        // on shutdown) leaves the halves to this thread, one after the other.
        let on_worker = worker::in_worker(self.registry(), || {
            let (a, b) = halves.take().expect("run once");
            self.join(a, b)
        });
        match on_worker.map_err(drop) {
            Ok(both) => both,
            Err(()) => {
                let (a, b) = halves.take().expect("refused work did not run");
                (a(), b())
            }
        }
    }

    /// Applies `f` to every item of `inputs` on the pool; see [`Map`] for the knobs.
    ///
    /// Results come in input order, one per item, each a `Result` so that a panic fails only
    /// its own item. The input is read lazily and the work in flight is bounded.
    ///
    /// ```
    /// use brigade::Error;
    ///
    /// let pool = brigade::ThreadPool::new();
    /// let results: Vec<Result<u32, Error>> =
    ///     pool.map([1, 0, 4], |x| 100 / x).collect();
    /// assert_eq!(results[0], Ok(100));
    /// assert!(matches!(results[1], Err(Error::Panicked { .. })));
    /// assert_eq!(results[2], Ok(25));
    /// ```
    #[track_caller]
    pub fn map<I, F, R>(&self, inputs: I, f: F) -> Map<I::IntoIter, F, R, ThreadPool>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        Map::new(
            self.clone(),
            inputs.into_iter(),
            f,
            std::panic::Location::caller(),
        )
    }

    /// Stops accepting work; see [`Shutdown`] for the choices and what the returned `bool`
    /// says. Calling it again is harmless.
    ///
    /// Running tasks always finish (they are never interrupted). Called from inside one of the
    /// pool's own tasks, it does not wait, since that task's worker cannot leave before the
    /// task returns.
    ///
    /// ```
    /// use brigade::{Error, Shutdown, ThreadPool};
    ///
    /// let pool = ThreadPool::new();
    /// let task = pool.submit(|| 1);
    /// assert!(pool.shutdown(Shutdown::graceful()));
    /// assert_eq!(task.result(), Ok(1)); // queued work still ran
    /// assert_eq!(pool.submit(|| 2).result(), Err(Error::ShutDown));
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> bool {
        shutdown(self.registry(), how)
    }
}

impl Default for ThreadPool {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers())
            .field("started_workers", &self.started_workers())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

/// Configures a [`ThreadPool`].
///
/// ```
/// let pool = brigade::ThreadPool::builder()
///     .workers(2)
///     .thread_name("oven")
///     .stack_size(8 << 20)
///     .build()?;
/// let name = pool.submit(|| std::thread::current().name().map(String::from));
/// assert_eq!(name.result().unwrap().as_deref(), Some("oven-0"));
/// # Ok::<(), brigade::BuildError>(())
/// ```
#[derive(Clone, Default)]
pub struct Builder {
    workers: Option<usize>,
    thread_name: Option<String>,
    stack_size: Option<usize>,
    initializer: Option<registry::Initializer>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl Builder {
    /// The most workers the pool runs (1..=[`MAX_WORKERS`](crate::pool::MAX_WORKERS));
    /// overrides `BRIGADE_WORKERS` (see [the worker-count rule](crate::pool)).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The prefix of the worker threads' names (`"brigade"` by default); workers are named
    /// `prefix-0`, `prefix-1`, ….
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = Some(prefix.into());
        self
    }

    /// Each worker thread's stack size in bytes (the platform's default for spawned threads
    /// otherwise). Worth raising when tasks wait on tasks in long chains, since a waiting
    /// worker runs other tasks on top of its own stack.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Runs `init(index)` on each worker thread when it starts, before its first task
    /// (Python's `ThreadPoolExecutor(initializer=…)`): set up per-thread state such as a
    /// thread-local connection, cache or RNG. Workers start on demand, so a worker that never
    /// starts never runs it.
    ///
    /// If it panics, the pool is **broken**: the task that started the worker and every task
    /// queued or submitted later fail with [`Error::Broken`], naming the panic (as Python
    /// fails them with `BrokenThreadPool`); tasks already running finish.
    ///
    /// ```
    /// use std::cell::Cell;
    ///
    /// thread_local! { static SEED: Cell<u64> = const { Cell::new(0) }; }
    ///
    /// let pool = brigade::ThreadPool::builder()
    ///     .workers(2)
    ///     .initializer(|index| SEED.set(1000 + index as u64))
    ///     .build()?;
    /// let seed = pool.submit(|| SEED.get()).result().unwrap();
    /// assert!(seed >= 1000);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn initializer<F>(mut self, init: F) -> Self
    where
        F: Fn(usize) + Send + Sync + 'static,
    {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Builds the pool. No thread starts until work arrives.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let workers = worker_count(self.workers)?;
        let name = self.thread_name.unwrap_or_else(|| "brigade".to_owned());
        let registry = Arc::new(Registry::new(
            workers,
            name,
            self.stack_size,
            self.initializer,
        ));
        Ok(ThreadPool {
            owner: Arc::new(Owner { registry }),
        })
    }
}

impl<A, F, R> crate::map::Lane<A, F, R> for ThreadPool
where
    A: Send + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    fn workers(&self) -> usize {
        ThreadPool::workers(self)
    }

    fn submit_chunk(
        &self,
        f: &Arc<F>,
        items: Vec<A>,
        site: &'static std::panic::Location<'static>,
    ) -> Result<Task<crate::map::ChunkResults<R>>, Error> {
        let f = Arc::clone(f);
        // Each item has its own catch_unwind, so a panic fails only its own slot, chunked or not.
        let work = move || {
            items
                .into_iter()
                .map(|item| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item)))
                        .map_err(|p| Error::from_panic(&*p))
                })
                .collect()
        };
        let origin = Origin {
            lane: LaneName::Threads,
            site: Some(site),
        };
        self.try_submit_at(work, origin)
            .map_err(|refused| refused.reason().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_submitted_inside_a_worker_goes_to_its_own_deque() {
        let pool = ThreadPool::builder().workers(1).build().unwrap();
        let inner = pool.clone();
        let (own_deque, shared_queue) = pool
            .submit(move || {
                let child = inner.submit(|| ());
                let registry = inner.registry();
                let seen = (registry.stealers[0].len(), registry.injector.len());
                drop(child);
                seen
            })
            .result()
            .unwrap();
        assert_eq!((own_deque, shared_queue), (1, 0));

        // From outside, work goes to the shared queue.
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel();
        let blocker = pool.submit(move || {
            started_tx.send(()).unwrap();
            wait_for_go.recv().unwrap();
        });
        started.recv().unwrap();
        let queued = pool.submit(|| ());
        assert_eq!(pool.registry().injector.len(), 1);
        assert_eq!(pool.registry().stealers[0].len(), 0);
        go.send(()).unwrap();
        blocker.result().unwrap();
        queued.result().unwrap();
    }
}
