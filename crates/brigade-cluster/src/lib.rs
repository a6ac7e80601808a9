//! brigade's [`Task<T>`](brigade::Task) across machines: a task queue on **Redis Streams**.
//!
//! When one machine is not enough, point a [`Client`] at a Redis server you already run,
//! start workers on other machines — your own binary, with a [`worker_main`] line — and keep
//! the same code: [`Client::submit`] returns the same `Task<T>` every brigade pool returns,
//! so `result()`, `result_timeout()`, `cancel()`, [`brigade::wait`],
//! [`brigade::as_completed`] and `.await` work unchanged.
//!
//! ```no_run
//! use brigade_cluster::{Client, Function, Functions};
//!
//! // Shared by the client and the workers: a stable name and version, never code.
//! fn sum((from, to): (u64, u64)) -> u64 { (from..to).sum() }
//! pub const SUM: Function<(u64, u64), u64> = Function::new("sum", 1, sum);
//!
//! // On each worker machine (SIGTERM drains it):
//! //   my-app --broker redis://redis.internal:6379 --queue jobs --concurrency 8
//! fn worker() -> std::process::ExitCode {
//!     brigade_cluster::worker_main(Functions::new().register(&SUM))
//! }
//!
//! // Anywhere:
//! let client = Client::connect("redis://redis.internal:6379/?queue=jobs")?;
//! let tasks: Vec<_> = (0..10u64)
//!     .map(|i| client.submit(&SUM, (i * 1_000_000, (i + 1) * 1_000_000)))
//!     .collect();
//! let total: u64 = tasks.into_iter().map(|t| t.result().unwrap()).sum();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it guarantees
//!
//! * **No lost tasks.** Delivery is at-least-once: a delivered task stays leased to its
//!   worker (Redis's pending-entries list) until its outcome is written. A worker killed
//!   mid-task loses its lease and another worker takes the task over, one lease later.
//! * **Long tasks are not run twice.** A worker's heartbeat renews the leases of everything
//!   it holds three times per lease, so only a dead or stalled worker loses a task — however
//!   long the task runs. (The lease is a crash detector, not a time limit.)
//! * **Poison tasks stop.** A task whose worker dies on each of
//!   [`max_deliveries`](Options::max_deliveries) deliveries moves to a dead-letter stream and
//!   fails with [`brigade::Error::DeadLettered`]; the other tasks go on.
//!   `brigade cluster dead` lists dead letters, `brigade cluster requeue` puts them back.
//! * **One outcome per task.** The first outcome written for a task id wins (`SET NX`); a
//!   task that did run twice (its worker stalled past its lease) still completes once.
//!   Outcomes expire ([`result_ttl`](Options::result_ttl), 24 h by default), and so does a
//!   client's reply stream: nothing leaks when clients go away.
//! * **Waiters are woken, not polling.** Each client has a reply stream and one reader
//!   thread blocked on it; an outcome completes the task's [`Completer`](brigade::Completer)
//!   at once.
//! * **Broker trouble is waited out.** A dropped connection or a Redis restart costs a
//!   reconnect: clients and workers retry with backoff and go on (a client also reads the
//!   stored outcomes of its pending tasks after reconnecting). Leases only run while Redis
//!   is up, so a long outage does not make every running task look abandoned. A bounded
//!   wait, [`Task::result_timeout`](brigade::Task::result_timeout), returns
//!   [`brigade::Error::TimedOut`] whatever the broker does.
//! * **Typed failures, never a crashed worker.** An unknown function name or version, an
//!   argument that does not decode, a frame from another release: each fails its own task
//!   with a typed error ([`WireError`], surfaced as a [`brigade::Error`]).
//!
//! # Redis must be durable
//!
//! Run Redis with **`appendonly yes`**. With the default `appendfsync everysec`, Redis writes
//! every command to its append-only file before answering, and fsyncs once a second: a
//! crash of the Redis *process* loses nothing acknowledged, but a crash of the *machine*
//! (power, kernel) can lose the last second or so of writes — tasks queued, outcomes stored
//! — and, if the disk stalls, up to about two seconds. `appendfsync always` loses nothing
//! acknowledged at a large cost in throughput. Without an append-only file, a restart loses
//! the whole queue.
//!
//! # Workers
//!
//! A worker is your binary with [`worker_main`] (flags `--broker`, `--queue`,
//! `--concurrency`, `--lane threads|processes|auto`, `--prefetch`, `--drain-timeout`), or a
//! [`Worker`] you build. Rust cannot load a function by name, so each worker runs the
//! functions it [registered](Functions::register). Inside the worker, tasks run on brigade's
//! local lanes:
//! * `threads`: a [`brigade::ThreadPool`]; a panic fails the task (or retries it, see
//!   [`Options::retries`]).
//! * `processes`: a [`brigade::ProcessPool`]; a task that segfaults or aborts costs one
//!   delivery (the task goes back to the queue), not the worker. A deadline kills a running
//!   task.
//! * `auto`: accepted, and runs on threads — brigade's measuring router does not exist yet.
//!
//! SIGTERM (or SIGINT) drains a worker: it stops fetching, gives back the tasks it fetched
//! but did not start (their delivery does not count), finishes the running ones (up to the
//! drain timeout), and exits.
//!
//! # The broker behind it
//!
//! Everything the client and the workers ask of the broker is the [`Broker`] and
//! [`Connection`] traits; [`RedisBroker`] implements them with streams, a consumer group,
//! the pending-entries list, `XCLAIM` with per-task leases, delivery counts and Lua scripts
//! (see its docs for the keys). PostgreSQL (`SKIP LOCKED`) or NATS JetStream can follow.

#![warn(missing_docs, unreachable_pub)]

mod broker;
mod client;
mod codec;
mod error;
mod function;
mod inspect;
mod link;
mod local_redis;
mod options;
mod redis_broker;
mod worker;

pub use broker::{
    Broker, BrokerError, Connection, DeadEntry, DeadLetterRequest, Delivery, EntryId, Expired,
    Finish, Maintenance, QueueStatus, Release, Reply, Retry, Start, Submission, WorkerStatus,
};
pub use client::{Client, ClientBuilder, ClusterMap};
pub use codec::{ClientId, FrameError, TaskId, WIRE_VERSION, WireError};
pub use error::ClusterError;
pub use function::{Function, Functions};
pub use inspect::{Admin, DeadLetter};
pub use local_redis::{LocalRedis, LocalRedisError};
pub use options::{MIN_LEASE, Options};
pub use redis_broker::RedisBroker;
pub use worker::{
    LaneKind, StopHandle, TICK, Worker, WorkerArgs, WorkerBuilder, worker_main, worker_main_from,
    worker_main_with,
};
