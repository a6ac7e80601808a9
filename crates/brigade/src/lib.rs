//! Run work concurrently with the right model for the work, behind one futures API.
//!
//! Every concurrency primer teaches the same three models and a rule for choosing between them.
//! brigade implements them as *lanes* that all hand back the same [`Task`] handle:
//!
//! | model | unit of execution | what it is for in Rust |
//! |---|---|---|
//! | thread pool ("many chefs, one kitchen") — [`ThreadPool`] | OS threads sharing memory | CPU-bound work (Rust has no GIL: threads run in parallel on all cores); blocking I/O with a few connections |
//! | process pool ("separate stations") — [`ProcessPool`] | worker processes, own memory | isolation: a crash, abort, leak or runaway task takes down one worker, not the program; killable timeouts |
//! | event loop ("one chef, never idle") — [`EventLoop`] | tasks on a reactor (tokio's) | I/O-bound work with many slow connections |
//!
//! Python's rule "CPU-bound → multiprocessing" exists because of the GIL. In Rust, CPU-bound
//! work belongs on threads; processes are for isolation. Or let [`Auto`] apply the rule for
//! you, per call site, by measurement (see [`auto`]).
//!
//! # The futures API
//!
//! A pool's [`submit`](ThreadPool::submit) returns a [`Task<T>`]: block on it with
//! [`result`](Task::result), give up after a while with [`result_timeout`](Task::result_timeout),
//! [`cancel`](Task::cancel) it while it is pending, attach
//! [done callbacks](Task::add_done_callback), or `.await` it from async code. [`wait`](wait()) and
//! [`as_completed`] work over any set of tasks, as Python's `concurrent.futures` functions do.
//!
//! ```
//! use std::time::Duration;
//! use brigade::{ThreadPool, Until, as_completed, wait};
//!
//! let pool = ThreadPool::new();
//! let tasks: Vec<_> = (0..8u64).map(|n| (n, pool.submit(move || n.pow(3)))).collect();
//!
//! // Results as they come in, each paired with its input.
//! let mut cubes: Vec<(u64, u64)> = as_completed(tasks, Some(Duration::from_secs(60)))
//!     .map(|done| {
//!         let (n, task) = done.unwrap();
//!         (n, task.result().unwrap())
//!     })
//!     .collect();
//! cubes.sort();
//! assert_eq!(cubes[3], (3, 27));
//!
//! // Or wait for a whole batch at once.
//! let batch: Vec<_> = (0..4).map(|_| pool.submit(|| ())).collect();
//! let waited = wait(&batch, Until::AllCompleted, None);
//! assert_eq!(waited.done.len(), 4);
//! ```
//!
//! # One rule for every pool
//!
//! Every pool ([`ThreadPool`], [`ProcessPool`], [`EventLoop`], [`Auto`]) is learned once, and
//! the cluster client of the `brigade-cluster` crate submits and maps by the same rule:
//!
//! | | the rule |
//! |---|---|
//! | submitting | `submit(work)` (`spawn(future)` on the event loop) returns a [`Task<T>`], never a `Result`: a pool that cannot take the work (shut down, broken, an argument that cannot be encoded) hands back a task that is already failed with the reason. `try_submit` / `try_spawn` return `Result<Task<T>, `[`SubmitError<W>`]`>` instead, and the error gives the work back ([`SubmitError::into_inner`]) for callers that want to run it elsewhere. |
//! | waiting | [`Task::result`] blocks, [`Task::result_timeout`] gives up without cancelling, [`Task::try_result`] never blocks, `.await` works from async code; the same on every lane. |
//! | many at once | [`wait`](wait()) and [`as_completed`] take tasks from any mix of lanes; `map` on every pool returns the same lazy, bounded, ordered [`Map`] (`chunk_size`, `in_flight`, `timeout` for the whole iteration, `unordered`). |
//! | shutting down | `shutdown(`[`Shutdown`]`) -> bool` (graceful, or cancel what is pending; wait, not wait, or wait with a timeout); dropping the last handle does the graceful one. |
//! | sizing | `builder().workers(n)`, else `BRIGADE_WORKERS`, else the cores: one rule ([`pool`]). |
//! | your own tasks | a [`Completer`] makes a [`Task<T>`] that your code completes, and that every waiting function understands. |
//! | failures | one [`Error`] for every task outcome; a task's `Debug` names its lane and the line that submitted it. |
//!
//! ```
//! use brigade::{Error, Shutdown, ThreadPool};
//!
//! let pool = ThreadPool::new();
//! assert_eq!(pool.submit(|| 6 * 7).result(), Ok(42)); // the everyday line: no second unwrap
//! pool.shutdown(Shutdown::graceful());
//! assert_eq!(pool.submit(|| 1).result(), Err(Error::ShutDown)); // refused: already failed
//! let work = pool.try_submit(|| 2).unwrap_err().into_inner(); // or: get the work back
//! assert_eq!(work(), 2);
//! ```
//!
//! # Borrowing instead of copying
//!
//! Threads share memory, so [`ThreadPool::scope`] lets tasks borrow the caller's data:
//!
//! ```
//! let pool = brigade::ThreadPool::new();
//! let data: Vec<u64> = (0..100_000).collect();
//! let sum: u64 = pool.scope(|s| {
//!     let halves: Vec<_> = data.chunks(50_000).map(|h| s.spawn(move || h.iter().sum::<u64>())).collect();
//!     halves.into_iter().map(|t| t.result().unwrap()).sum()
//! });
//! assert_eq!(sum, 4_999_950_000);
//! ```
//!
//! For divide and conquer, [`ThreadPool::join`] runs two closures in parallel without
//! allocating unless a worker actually takes the second one, as `rayon::join` does:
//!
//! ```
//! fn sum(pool: &brigade::ThreadPool, xs: &[u64]) -> u64 {
//!     if xs.len() <= 1024 {
//!         return xs.iter().sum();
//!     }
//!     let (left, right) = xs.split_at(xs.len() / 2);
//!     let (a, b) = pool.join(|| sum(pool, left), || sum(pool, right));
//!     a + b
//! }
//! let pool = brigade::ThreadPool::new();
//! let xs: Vec<u64> = (1..=100_000).collect();
//! assert_eq!(sum(&pool, &xs), 5_000_050_000);
//! ```
//!
//! # Many slow connections: the event loop
//!
//! [`EventLoop::spawn`] runs a future and hands back the same [`Task`]; async code awaits
//! tasks from any lane, and sync code waits with [`Task::result`]. Blocking calls inside async
//! code are caught: a poll that runs past a threshold flags its spawn site, and later tasks
//! from that site run where they cannot stall the loop (see [`event_loop`]).
//!
//! ```
//! use std::time::Duration;
//! use brigade::EventLoop;
//! use brigade::event_loop::{gather, timeout};
//!
//! let lp = EventLoop::new();
//! let replies: Vec<_> = (1..=3u64)
//!     .map(|n| lp.spawn(async move {
//!         tokio::time::sleep(Duration::from_millis(n)).await; // stands in for a slow server
//!         n * 100
//!     }))
//!     .collect();
//! let stuck = lp.spawn(std::future::pending::<u64>());
//! lp.block_on(async {
//!     assert_eq!(gather(replies).await, Ok(vec![100, 200, 300]));
//!     assert_eq!(timeout(Duration::from_millis(5), stuck).await, Err(brigade::Error::TimedOut));
//! }).unwrap();
//! ```
//!
//! # What the compiler checks for you
//!
//! Data races and dangling borrows are compile errors, not test failures. Each of these is a
//! doc test that must *fail* to compile:
//!
//! A closure that is not `Send` (it holds an `Rc`) cannot go to another thread:
//!
//! ```compile_fail,E0277
//! let pool = brigade::ThreadPool::new();
//! let shared = std::rc::Rc::new(5);
//! let task = pool.submit(move || *shared + 1);
//! ```
//!
//! `submit` outlives the caller's frame, so its closure may not borrow from it (use
//! [`ThreadPool::scope`] for that):
//!
//! ```compile_fail,E0597
//! let pool = brigade::ThreadPool::new();
//! let data = vec![1, 2, 3];
//! let borrowed = &data;
//! let task = pool.submit(move || borrowed.len());
//! drop(data);
//! task.result().unwrap();
//! ```
//!
//! A scope's tasks may borrow, but a borrow may not outlive what it borrows: a task that
//! hands out a reference into the scope's data cannot leave the block that owns the data:
//!
//! ```compile_fail,E0597
//! let pool = brigade::ThreadPool::new();
//! let first = {
//!     let data = vec![1, 2, 3];
//!     pool.scope(|s| s.spawn(|| &data[0]))
//! };
//! assert_eq!(first.result(), Ok(&1));
//! ```
//!
//! Nor may the scope itself escape its closure:
//!
//! ```compile_fail,E0521
//! let pool = brigade::ThreadPool::new();
//! let mut leaked = None;
//! pool.scope(|s| leaked = Some(s));
//! ```
//!
//! A process pool's argument must travel to another process, so it must be serializable:
//!
//! ```compile_fail,E0277
//! struct Opaque(u32); // no `Serialize`/`Deserialize`
//! fn count(x: Opaque) -> u32 { x.0 }
//! let pool = brigade::ProcessPool::new().unwrap();
//! let task = pool.submit(count, Opaque(1));
//! ```
//!
//! # Failures stay where they happen
//!
//! A panic inside a task becomes that task's [`Error::Panicked`]; the worker and the pool live
//! on. [`ThreadPool::map`] gives each item its own `Result`, so one bad input fails one slot.
//!
//! Code that can do worse than panic (segfault, abort, hang, leak) belongs in a
//! [`ProcessPool`]: a crash fails only the task that caused it, with
//! [`Error::WorkerCrashed`], and a timeout kills the runaway worker (see [`processes`]).
//!
//! ```
//! use brigade::{Error, ProcessPool};
//!
//! fn fragile(x: i32) -> i32 {
//!     if x < 0 { std::process::abort() }
//!     x * 2
//! }
//!
//! let pool = ProcessPool::builder().workers(2).build()?;
//! let results: Vec<_> = pool.map([1, -1, 3], fragile).collect();
//! assert_eq!(results[0], Ok(2));
//! assert!(matches!(results[1], Err(Error::WorkerCrashed { .. })));
//! assert_eq!(results[2], Ok(6));
//! # Ok::<(), brigade::BuildError>(())
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod auto;
mod error;
pub mod event_loop;
mod map;
pub mod pool;
#[cfg(all(unix, not(brigade_loom)))]
pub mod processes;
mod progress;
mod sync;
mod task;
pub mod threads;
mod wait;

pub use auto::Auto;
pub use error::{BuildError, Error, SubmitError};
pub use event_loop::EventLoop;
pub use map::{Map, Unordered};
pub use pool::Shutdown;
#[cfg(all(unix, not(brigade_loom)))]
pub use processes::ProcessPool;
pub use task::{Completer, Task};
pub use threads::ThreadPool;
pub use wait::{
    AsCompleted, AsCompletedStream, Until, Waitable, Waited, as_completed, as_completed_async,
    wait, wait_async,
};

/// The README's examples, compiled and run as doc tests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
