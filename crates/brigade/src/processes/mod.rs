//! The process lane: a pool of worker processes, for **isolation**.
//!
//! In Rust, threads already run CPU-bound work in parallel (there is no GIL), so processes
//! are not for speed. They are for work that must not be able to take the program down: a
//! task that crashes, aborts, leaks, hangs, or calls a native library that is not thread-safe.
//! Here such a task costs one worker process, never the pool:
//!
//! * a worker killed by a signal (`SIGKILL`, `SIGSEGV`, `abort`) or exiting mid-task fails only
//!   the task it was running, with [`Error::WorkerCrashed`] naming the pid and the signal or
//!   exit code; the pool starts a replacement and every other task completes (Python's
//!   `ProcessPoolExecutor` instead breaks the whole pool). Each worker records in a small shared
//!   file which call it takes, before any of the call's code runs, so the pool knows which task
//!   was running: a worker killed *between* tasks fails nobody, and the calls it had been sent
//!   go to the replacement;
//! * a per-task timeout ([`ProcessPool::submit_timeout`], [`Builder::task_timeout`]) **kills**
//!   the worker running the task and fails it with [`Error::TimedOut`]. A thread cannot be
//!   stopped from outside, so a thread-pool task can only be waited on with a timeout, never
//!   stopped; a process can;
//! * workers can be recycled after a number of tasks, or when they pass a memory ceiling
//!   (checked between tasks), so a leaking library is contained;
//! * a panic in a task comes back as [`Error::Panicked`] with its message, and the worker goes
//!   on. The worker's panic line names the task's function, and with `RUST_BACKTRACE` set the
//!   worker's backtrace follows the message, after [`BACKTRACE_HEADING`] (as Python shows a
//!   worker's traceback);
//! * a replacement that cannot start (the system is out of descriptors or processes) is
//!   retried with a growing pause while the other workers serve; tasks fail
//!   ([`Error::WorkerStart`]) only when the pool has had no worker for a whole
//!   [start timeout](Builder::start_timeout), and it serves again once one starts;
//! * [`ProcessPool::terminate_workers`] and [`ProcessPool::kill_workers`] stop every worker at
//!   once, failing what they ran and what was queued with [`Error::Cancelled`].
//!
//! Supervision reports through [`tracing`](https://docs.rs/tracing) (a worker crashed, was
//! killed for a timeout, recycled, replaced, could not be started): silent unless the program
//! installs a subscriber.
//!
//! # Setup: none
//!
//! Workers are this same executable, started again (never a `fork` of the running,
//! multi-threaded program) in *worker mode*: a constructor that brigade links into every
//! program runs before `main`, sees that the process was started as a worker, and serves the
//! pool instead of running `main`. So there is no line to add to `main`, and a pool works the
//! same from a binary, an example, an integration test (`cargo test`) or a doc test, from any
//! working directory. A process is a worker only when a random token in its environment
//! matches the one its pool wrote into its socket before starting it: a stray
//! `BRIGADE_PROCESS_WORKER` variable is removed and otherwise ignored. If the worker mode
//! cannot start (the program was not built with this brigade, say), building the pool fails
//! with [`BuildError::WorkerStart`] after [`Builder::start_timeout`] at most, instead of
//! hanging.
//!
//! # Tasks
//!
//! A task is a plain function `fn(A) -> R` (a function item, or a closure that captures
//! nothing) with a serde-serializable argument and result. It is named on the wire by its
//! place in the executable, so the name is the same in every process running the same build;
//! a function that is not part of the executable (from a dynamically loaded library) has no
//! such name and is refused at submit with [`Error::ForeignFunction`].
//! Arguments and results travel as [postcard](https://docs.rs/postcard) over a Unix socket, in
//! length-prefixed frames; for large byte payloads, wrap them in `serde_bytes::ByteBuf` (a
//! plain `Vec<u8>` is encoded byte by byte). An argument or result that cannot be encoded or
//! decoded fails its task with [`Error::Codec`], carrying the message of the type's own
//! `Serialize`/`Deserialize` (a panic in them included), and so does one over
//! [`Builder::max_message_bytes`] (2 GiB at most), naming its size; the worker lives on.
//!
//! ```
//! use brigade::{Error, ProcessPool};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn crash(_: ()) {
//!     std::process::abort();
//! }
//!
//! let pool = ProcessPool::builder().workers(2).build()?;
//! let squared = pool.submit(square, 12);
//! let crashed = pool.submit(crash, ());
//! assert_eq!(squared.result(), Ok(144));
//! assert!(matches!(crashed.result(), Err(Error::WorkerCrashed { signal: Some(6), .. })));
//! // The pool lives on, with a fresh worker in place of the one that crashed.
//! assert_eq!(pool.submit(square, 3).result(), Ok(9));
//! # Ok::<(), brigade::BuildError>(())
//! ```
//!
//! # Running, cancelling
//!
//! A task counts as running from the moment its call is sent to a worker, and only a pending
//! task can be [cancelled](Task::cancel): a running process task is never interrupted by
//! `cancel` (use a timeout to stop one). To keep workers busy, the pool sends short calls a
//! little ahead of time (a call under 10 ms may wait in its worker's socket behind one other;
//! calls of microseconds, several), so such a call may report running a moment before it
//! starts. A timeout counts from when the worker starts the call.
//!
//! # Output, orphans and shutdown
//!
//! A worker's stdout and stderr are forwarded to the pool's, a whole line at a time, so lines
//! from several workers never interleave mid-line; what a task printed is flushed when it
//! finishes, so it is not lost if a later task crashes the worker. A worker exits as soon as the
//! pool's process goes away (its socket closes), however that happens: exit, panic, or
//! `SIGKILL`. [`ProcessPool::shutdown`] with `wait` (and dropping the last handle) waits for
//! the accepted tasks, then for every worker to exit, and reaps it.
//!
//! Unix only. The process that builds the pool must be the program's own executable (not a
//! library loaded into another program's process, such as a Python extension).

mod builder;
mod call;
mod codec;
mod ledger;
mod panics;
mod shared;
mod slot;
mod spare;
mod spawn;
mod spin;
mod supervisor;
mod timer;
mod wire;
mod worker;

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz;

use std::fmt;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BuildError, Error, SubmitError};
use crate::map::{ChunkResults, Lane, Map};
use crate::pool::Shutdown;
use crate::sync::Mutex;
use crate::task::Task;
use crate::task::origin::{LaneName, Origin};
use crate::task::promise::Promise;
pub use builder::Builder;
use call::Trampoline;
pub use panics::BACKTRACE_HEADING;
use shared::{Completion, Job, Shared};
use wire::{FrameWriter, Verdict};

/// The iterator [`ProcessPool::map`] returns: [`Map`] over a process pool, with the same
/// knobs ([`chunk_size`](Map::chunk_size), [`in_flight`](Map::in_flight),
/// [`unordered`](Map::unordered)) as the thread pool's.
pub type ProcessMap<I, A, R> = Map<I, fn(A) -> R, R, ProcessPool>;

/// A pool of worker processes that fails one task, never the pool; see the
/// [module docs](self).
///
/// Cloning gives another handle to the same pool. The pool shuts down (waiting for accepted
/// tasks) when the last handle is dropped.
#[derive(Clone)]
pub struct ProcessPool {
    owner: Arc<Owner>,
}

struct Owner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    thread_ids: Vec<ThreadId>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shutdown(Shutdown::graceful());
    }
}

impl Owner {
    fn shutdown(&self, how: Shutdown) -> bool {
        self.shared.close(how.cancels_pending());
        // A done callback runs on a slot thread: it must not wait for itself.
        let on_own_thread = self.thread_ids.contains(&std::thread::current().id());
        if !how.waits() || on_own_thread {
            return false;
        }
        let deadline = how.deadline();
        if !self.shared.wait_drained(deadline) {
            return false;
        }
        // Drained: every worker has been told to exit; its slot thread reaps it and leaves.
        let mut threads = self.threads.lock();
        while let Some(thread) = threads.last() {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return false;
            }
            if !thread.is_finished() && deadline.is_some() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let _ = threads.pop().expect("just looked").join();
        }
        true
    }
}

/// The producing side of a process task: its promise, and how to decode its result.
struct Decoding<R> {
    promise: Option<Promise<R, ()>>,
    started: bool,
    decode: fn(Verdict, &[u8]) -> Result<R, Error>,
}

impl<R: Send + 'static> Completion for Decoding<R> {
    fn start(&mut self) -> bool {
        if !self.started {
            let promise = self.promise.as_mut().expect("present until settled");
            self.started = promise.start().is_some();
        }
        self.started
    }

    fn finish(mut self: Box<Self>, verdict: Verdict, payload: &[u8]) {
        // The decoders catch panics in the user's `Deserialize`; this guards the slot thread
        // against anything else.
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.decode)(verdict, payload)))
            .unwrap_or_else(|panic| {
                Err(Error::Codec {
                    message: format!("result: {}", Error::panic_message(&*panic)),
                })
            });
        if let Some(promise) = self.promise.take() {
            promise.complete(outcome);
        }
    }

    fn fail(mut self: Box<Self>, error: Error) {
        if let Some(promise) = self.promise.take() {
            promise.complete(Err(error));
        }
    }
}

impl ProcessPool {
    /// A pool with the default settings (one worker per CPU); see [`Builder`] for the others.
    ///
    /// ```
    /// fn double(x: i32) -> i32 { 2 * x }
    ///
    /// let pool = brigade::ProcessPool::new()?;
    /// assert_eq!(pool.submit(double, 21).result(), Ok(42));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn new() -> Result<Self, BuildError> {
        Builder::default().build()
    }

    /// Settings for a new pool.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// How many worker processes the pool keeps.
    ///
    /// ```
    /// let pool = brigade::ProcessPool::builder().workers(1).build()?;
    /// assert_eq!(pool.workers(), 1);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.owner.shared.config.workers
    }

    /// The process ids of the workers alive right now (for monitoring, or for tests that
    /// kill one).
    ///
    /// ```
    /// let pool = brigade::ProcessPool::builder().workers(2).build()?;
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// assert!(!pool.worker_pids().contains(&std::process::id()));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.owner.shared.pids()
    }

    /// Whether [`shutdown`](Self::shutdown) was called, or the pool broke.
    ///
    /// ```
    /// let pool = brigade::ProcessPool::builder().workers(1).build()?;
    /// assert!(!pool.is_shut_down());
    /// pool.shutdown(brigade::Shutdown::graceful());
    /// assert!(pool.is_shut_down());
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.owner.shared.is_closed()
    }

    /// Runs `f(arg)` in a worker process and returns its [`Task`].
    ///
    /// The argument is encoded right here, in the caller's thread. A task that cannot be
    /// accepted is already failed: with [`Error::Codec`] for an argument that cannot be
    /// encoded, [`Error::ShutDown`] after [`shutdown`](Self::shutdown), [`Error::Broken`] on a
    /// broken pool. [`try_submit`](Self::try_submit) hands the argument back instead.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool};
    ///
    /// fn checked_div((a, b): (i64, i64)) -> i64 {
    ///     a.checked_div(b).expect("division by zero")
    /// }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// assert_eq!(pool.submit(checked_div, (84, 2)).result(), Ok(42));
    /// let failed = pool.submit(checked_div, (1, 0)).result();
    /// // (With `RUST_BACKTRACE` set, the worker's backtrace follows the message.)
    /// assert!(matches!(failed, Err(Error::Panicked { message }) if message.starts_with("division by zero")));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    #[track_caller]
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Task<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_with(f, arg, None)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// Runs `f(arg)` like [`submit`](Self::submit), but hands the argument back inside the
    /// error when the pool does not accept the task.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool, Shutdown};
    ///
    /// fn id(x: u8) -> u8 { x }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// pool.shutdown(Shutdown::graceful());
    /// let refused = pool.try_submit(id, 8).unwrap_err();
    /// assert_eq!(refused.reason(), &Error::ShutDown);
    /// assert_eq!(refused.into_inner(), 8);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    #[track_caller]
    pub fn try_submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Task<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_with(f, arg, None)
    }

    /// Runs `f(arg)` in a worker process, killing the worker if the task runs longer than
    /// `timeout` (from when the worker starts it); the task then fails with
    /// [`Error::TimedOut`] and a fresh worker takes the killed one's place.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brigade::{Error, ProcessPool};
    ///
    /// fn spin_forever(_: ()) {
    ///     loop { std::hint::spin_loop(); }
    /// }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let task = pool.submit_timeout(spin_forever, (), Duration::from_millis(50));
    /// assert_eq!(task.result(), Err(Error::TimedOut));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    #[track_caller]
    pub fn submit_timeout<A, R>(&self, f: fn(A) -> R, arg: A, timeout: Duration) -> Task<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_with(f, arg, Some(timeout))
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    #[track_caller]
    fn submit_with<A, R>(
        &self,
        f: fn(A) -> R,
        arg: A,
        timeout: Option<Duration>,
    ) -> Result<Task<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let trampoline: Trampoline = call::call_one::<A, R>;
        let frame = match self.frame(trampoline, f as usize, &arg) {
            Ok(frame) => frame,
            Err(e) => return Err(SubmitError::new(arg, e)),
        };
        let origin = Origin::here(LaneName::Processes);
        let (task, job) = self.job(frame, timeout, call::decode_one::<R>, origin);
        match self.owner.shared.enqueue(job) {
            Ok(()) => Ok(task),
            Err((job, reason)) => {
                // Nothing ran: the handle is dropped unseen, and the argument goes back.
                drop(job);
                Err(SubmitError::new(arg, reason))
            }
        }
    }

    /// Encodes a call frame, after checking that `func` can be named in a worker.
    fn frame<A: Serialize + ?Sized>(
        &self,
        trampoline: Trampoline,
        func: usize,
        arg: &A,
    ) -> Result<Vec<u8>, Error> {
        call::check_in_executable(func)?;
        let shared = &self.owner.shared;
        let mut frame = FrameWriter::call(
            shared.next_id(),
            call::offset_of(trampoline as usize),
            call::offset_of(func),
        );
        call::encode_argument(
            arg,
            frame.payload(),
            shared.config.message_limit,
            &shared.spares,
        )?;
        frame.seal().map_err(|e| Error::Codec {
            message: e.to_string(),
        })
    }

    fn job<R: Send + 'static>(
        &self,
        frame: Vec<u8>,
        timeout: Option<Duration>,
        decode: fn(Verdict, &[u8]) -> Result<R, Error>,
        origin: Origin,
    ) -> (Task<R>, Job) {
        let id = wire::frame_call_id(&frame);
        let (promise, task) = Promise::new_at((), (), origin);
        let completion = Box::new(Decoding {
            promise: Some(promise),
            started: false,
            decode,
        });
        let job = Job {
            id,
            frame,
            timeout,
            completion,
        };
        (task, job)
    }

    /// Applies `f` to every item of `inputs` in the worker processes: ordered, lazy, bounded
    /// in flight, one `Result` per item (see [`Map`] for the knobs).
    ///
    /// Use [`chunk_size`](Map::chunk_size) for tiny items: a chunk travels as one message and
    /// runs as one task (each item still under its own `catch_unwind`). If a worker dies in
    /// the middle of a chunk, every item of that chunk gets the crash error.
    ///
    /// ```
    /// fn cube(x: u64) -> u64 { x * x * x }
    ///
    /// let pool = brigade::ProcessPool::builder().workers(2).build()?;
    /// let cubes: Vec<u64> = pool.map(1..=1_000u64, cube).chunk_size(100).map(Result::unwrap).collect();
    /// assert_eq!(cubes[9], 1_000);
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    #[track_caller]
    pub fn map<I, A, R>(&self, inputs: I, f: fn(A) -> R) -> ProcessMap<I::IntoIter, A, R>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Map::new(self.clone(), inputs.into_iter(), f, Location::caller())
    }

    /// Stops accepting tasks; see [`Shutdown`] for the choices. With `wait`, returns once
    /// every accepted task has finished and every worker process has exited and been reaped.
    /// Calling it again is harmless.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool, Shutdown};
    ///
    /// fn id(x: u8) -> u8 { x }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let task = pool.submit(id, 7);
    /// assert!(pool.shutdown(Shutdown::graceful()));
    /// assert_eq!(task.result(), Ok(7));
    /// assert!(pool.worker_pids().is_empty());
    /// assert_eq!(pool.submit(id, 8).result(), Err(Error::ShutDown));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> bool {
        self.owner.shutdown(how)
    }

    /// Stops every worker process now with `SIGTERM` (Python's `terminate_workers`): the
    /// tasks they were running, and every queued task, fail with [`Error::Cancelled`]; the pool
    /// is shut down ([`submit`](Self::submit) then fails with [`Error::ShutDown`]). Returns
    /// once every worker has exited and been reaped. A task that handles `SIGTERM` and goes on
    /// keeps this call waiting for it: [`kill_workers`](Self::kill_workers) cannot be ignored.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool};
    ///
    /// fn forever(_: ()) { loop { std::thread::park(); } }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let stuck = pool.submit(forever, ());
    /// let queued = pool.submit(forever, ());
    /// pool.terminate_workers();
    /// assert_eq!(stuck.result(), Err(Error::Cancelled));
    /// assert_eq!(queued.result(), Err(Error::Cancelled));
    /// assert!(pool.worker_pids().is_empty());
    /// assert!(pool.is_shut_down());
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.stop_workers(rustix::process::Signal::TERM);
    }

    /// Stops every worker process now with `SIGKILL`, like
    /// [`terminate_workers`](Self::terminate_workers) but without giving them a chance to
    /// run signal handlers.
    ///
    /// ```
    /// use brigade::{Error, ProcessPool};
    ///
    /// fn forever(_: ()) { loop { std::thread::park(); } }
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let stuck = pool.submit(forever, ());
    /// pool.kill_workers();
    /// assert_eq!(stuck.result(), Err(Error::Cancelled));
    /// assert_eq!(pool.submit(forever, ()).result(), Err(Error::ShutDown));
    /// # Ok::<(), brigade::BuildError>(())
    /// ```
    pub fn kill_workers(&self) {
        self.stop_workers(rustix::process::Signal::KILL);
    }

    fn stop_workers(&self, signal: rustix::process::Signal) {
        self.owner.shared.terminate(signal);
        self.owner.shutdown(Shutdown::graceful());
    }
}

impl<A, R> Lane<A, fn(A) -> R, R> for ProcessPool
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn workers(&self) -> usize {
        ProcessPool::workers(self)
    }

    fn submit_chunk(
        &self,
        f: &Arc<fn(A) -> R>,
        items: Vec<A>,
        site: &'static Location<'static>,
    ) -> Result<Task<ChunkResults<R>>, Error> {
        let origin = Origin {
            lane: LaneName::Processes,
            site: Some(site),
        };
        let trampoline: Trampoline = call::call_chunk::<A, R>;
        let len = items.len();
        let frame = match self.frame(trampoline, **f as usize, &items) {
            Ok(frame) => frame,
            Err(e) => {
                // Not the pool's fault: the items fail, the map goes on.
                let (promise, task) = Promise::<ChunkResults<R>, ()>::new_at((), (), origin);
                promise.complete(Ok((0..len).map(|_| Err(e.clone())).collect()));
                return Ok(task);
            }
        };
        let (task, job) = self.job(frame, None, call::decode_chunk::<R>, origin);
        self.owner
            .shared
            .enqueue(job)
            .map(|()| task)
            .map_err(|(_, reason)| reason)
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.workers())
            .field("pids", &self.worker_pids())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests;
