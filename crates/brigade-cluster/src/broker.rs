//! The broker behind the cluster, as a trait: every operation the client, the workers and the
//! inspection commands need, in terms of opaque frames. Redis Streams implement it
//! ([`RedisBroker`](crate::RedisBroker)); PostgreSQL (`SKIP LOCKED`) or NATS JetStream can
//! follow without touching the client or the worker.
//!
//! What an implementation promises:
//! * **At-least-once delivery.** A delivered task stays owned by its worker (leased) until it
//!   is finished, released or retried; [`maintain`](Connection::maintain) hands tasks whose
//!   lease expired to another worker, and reports those out of deliveries instead.
//! * **First result wins.** [`finish`](Connection::finish) stores an outcome only if the task
//!   has none yet, and tells the task's client only then.
//! * **Batches are atomic per task.** A task is never half finished: storing its outcome,
//!   telling its client and removing it from the queue happen together.

use std::fmt;
use std::time::Duration;

use crate::codec::{ClientId, TaskId};

/// A backend's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The connection failed or dropped (the broker restarting, a network hiccup): reconnect
    /// and try again.
    #[error("broker connection: {0}")]
    Connection(String),
    /// The broker answered something this build does not understand, or refused a command.
    #[error("broker protocol: {0}")]
    Protocol(String),
    /// The broker address or settings are wrong: retrying will not help.
    #[error("broker configuration: {0}")]
    Config(String),
}

impl BrokerError {
    /// Whether reconnecting may fix it.
    pub fn is_transient(&self) -> bool {
        matches!(self, BrokerError::Connection(_))
    }
}

/// Where a delivered task sits in the broker (for Redis, its stream entry id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub String);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task to queue: its encoded frame, and the two settings the broker itself acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The task's id.
    pub id: TaskId,
    /// The encoded task frame.
    pub frame: Vec<u8>,
    /// How long a silent worker keeps it.
    pub lease_ms: u64,
    /// Deliveries before it is dead-lettered.
    pub max_deliveries: u32,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where it sits.
    pub entry: EntryId,
    /// How many times it has been delivered, this time included.
    pub deliveries: u32,
    /// The encoded task frame.
    pub frame: Vec<u8>,
    /// Its lease.
    pub lease_ms: u64,
    /// Its delivery limit.
    pub max_deliveries: u32,
}

/// A delivered task whose lease expired on its last allowed delivery: the worker that got it
/// dead-letters it (see [`Connection::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The task.
    pub delivery: Delivery,
    /// The worker that held it last.
    pub last_worker: String,
    /// What the last worker reported about it, if anything (a crash of its process, say).
    pub last_error: Option<String>,
}

/// What a maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Retries whose backoff had passed, put back in the queue.
    pub promoted: usize,
    /// Tasks whose lease had expired, now delivered to the caller.
    pub reclaimed: Vec<Delivery>,
    /// Tasks whose lease expired on their last allowed delivery.
    pub expired: Vec<Expired>,
}

/// A task a worker is about to run, announced to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Where it sits.
    pub entry: EntryId,
    /// Its id.
    pub id: TaskId,
    /// How long the client's reply stream lives.
    pub ttl_ms: u64,
}

/// A task's outcome, to store and send to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// Where it sits (removed from the queue).
    pub entry: EntryId,
    /// Its id.
    pub id: TaskId,
    /// How long the outcome is kept.
    pub ttl_ms: u64,
    /// The encoded outcome frame.
    pub outcome: Vec<u8>,
}

/// A delivered task given back unfinished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Where it sits.
    pub entry: EntryId,
    /// The delivery count it keeps: the current one when the delivery failed (its worker
    /// process crashed), one less when it never started (a worker draining on shutdown).
    pub deliveries: u32,
    /// Why, for the dead-letter record (empty: nothing to say).
    pub reason: String,
}

/// A task to run again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Where the failed run sits (removed from the queue).
    pub entry: EntryId,
    /// The wait before it is queued again.
    pub delay: Duration,
    /// The task as it is to be queued again (its attempt number advanced).
    pub task: Submission,
}

/// A task to move to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRequest {
    /// The task (as [`Expired::delivery`] gave it).
    pub delivery: Delivery,
    /// Its id.
    pub id: TaskId,
    /// Why, for the record.
    pub reason: String,
    /// The worker that had the last delivery.
    pub last_worker: String,
    /// How long the failure outcome is kept.
    pub ttl_ms: u64,
    /// The failure outcome frame for the client.
    pub outcome: Vec<u8>,
}

/// A message on a client's reply stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// These tasks started on a worker.
    Started(Vec<TaskId>),
    /// A task's outcome frame.
    Outcome(Vec<u8>),
}

/// A queue's state, for `brigade cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    /// The queue's name.
    pub queue: String,
    /// Tasks queued and not yet delivered to any worker.
    pub waiting: u64,
    /// Tasks delivered and not finished (leased by a worker).
    pub pending: u64,
    /// Tasks waiting out a retry backoff.
    pub delayed: u64,
    /// Tasks in the dead-letter stream.
    pub dead: u64,
    /// Every worker the broker knows, with its leased tasks.
    pub workers: Vec<WorkerStatus>,
}

/// One worker, for [`QueueStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStatus {
    /// The worker's name (`host:pid:nonce`).
    pub name: String,
    /// Tasks it holds.
    pub pending: u64,
    /// Milliseconds since it last talked to the broker.
    pub idle_ms: u64,
}

/// A dead-lettered task as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadEntry {
    /// Its entry in the dead-letter stream.
    pub entry: EntryId,
    /// The task frame.
    pub frame: Vec<u8>,
    /// Deliveries it had.
    pub deliveries: u32,
    /// Why it died.
    pub reason: String,
    /// The worker that had the last delivery.
    pub worker: String,
    /// When it was dead-lettered (ms since the Unix epoch, the broker's clock).
    pub at_ms: u64,
    /// Its lease and delivery limit (kept for a requeue).
    pub lease_ms: u64,
    /// Its delivery limit.
    pub max_deliveries: u32,
}

/// A broker: a queue on a server, and a way to open connections to it.
///
/// Clients, workers and [`Admin`](crate::Admin) take one as an `Arc<dyn Broker>`, so another
/// backend plugs in without touching them:
///
/// ```no_run
/// use std::sync::Arc;
/// use brigade_cluster::{Broker, Client, RedisBroker};
///
/// let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new("redis://127.0.0.1:6379", "jobs")?);
/// let client = Client::builder("unused").broker(broker.clone()).connect()?;
/// let mut con = broker.connect()?; // a raw connection, as the worker's threads hold
/// println!("{} tasks waiting", con.status()?.waiting);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Broker: Send + Sync + fmt::Debug {
    /// The queue's name.
    fn queue(&self) -> &str;
    /// A new connection (each thread of a client or worker has its own).
    fn connect(&self) -> Result<Box<dyn Connection>, BrokerError>;
}

/// One connection to a broker's queue. Every method may fail with a
/// [transient](BrokerError::is_transient) error; callers reconnect and retry, so each
/// operation must be safe to repeat (see each method).
pub trait Connection: Send {
    /// The broker's clock, in ms since the Unix epoch (deadlines are in this clock, so that
    /// machines' clocks need not agree).
    fn now_ms(&mut self) -> Result<u64, BrokerError>;

    /// Queues tasks. Repeating it after a dropped connection may queue a task twice
    /// (at-least-once); its outcome is still stored once.
    fn submit(&mut self, tasks: &[Submission]) -> Result<Vec<EntryId>, BrokerError>;

    /// Marks a task cancelled and removes it from the queue if no worker started it. True
    /// when it had no outcome yet.
    fn cancel(&mut self, id: TaskId, entry: &EntryId, ttl_ms: u64) -> Result<bool, BrokerError>;

    /// Waits up to `block` for messages on `client`'s reply stream after `cursor`, and moves
    /// the cursor past them. Repeating from the same cursor gives the same messages.
    fn replies(
        &mut self,
        client: ClientId,
        cursor: &mut String,
        block: Duration,
    ) -> Result<Vec<Reply>, BrokerError>;

    /// The stored outcome frames of these tasks (`None`: none yet, or expired).
    fn outcomes(&mut self, ids: &[TaskId]) -> Result<Vec<Option<Vec<u8>>>, BrokerError>;

    /// Waits up to `block` for at most `max` new tasks, leased to `worker`.
    fn fetch(
        &mut self,
        worker: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError>;

    /// The tasks leased to `worker` (at most `max`): after a reconnect, those whose delivery
    /// the broker made but whose answer was lost with the connection.
    fn recover(&mut self, worker: &str, max: usize) -> Result<Vec<Delivery>, BrokerError>;

    /// Announces tasks as started, except those cancelled meanwhile (removed instead): one
    /// flag per task, true to run it.
    fn start(&mut self, tasks: &[Start]) -> Result<Vec<bool>, BrokerError>;

    /// Stores outcomes (first wins), tells their clients, and removes the tasks.
    fn finish(&mut self, done: &[Finish]) -> Result<(), BrokerError>;

    /// Renews `worker`'s leases; returns the entries it no longer holds.
    fn renew(&mut self, worker: &str, entries: &[EntryId]) -> Result<Vec<EntryId>, BrokerError>;

    /// Gives delivered tasks back for another worker to take at once.
    fn release(&mut self, tasks: &[Release]) -> Result<(), BrokerError>;

    /// Removes a failed run and queues the task again after a delay.
    fn retry(&mut self, retry: &Retry) -> Result<(), BrokerError>;

    /// Queues retries that are due, and takes over at most `max_claim` tasks whose lease
    /// expired (for `worker`), reporting those out of deliveries.
    fn maintain(&mut self, worker: &str, max_claim: usize) -> Result<Maintenance, BrokerError>;

    /// Moves a task to the dead-letter stream and stores its failure outcome.
    fn dead_letter(&mut self, dead: &DeadLetterRequest) -> Result<(), BrokerError>;

    /// Forgets `worker` if it holds no task (a worker leaving cleanly).
    fn leave(&mut self, worker: &str) -> Result<(), BrokerError>;

    /// The queue's state.
    fn status(&mut self) -> Result<QueueStatus, BrokerError>;

    /// Up to `limit` dead letters after `after` (from the first if `None`), oldest first.
    fn dead_letters(
        &mut self,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError>;

    /// Puts a dead letter back in the queue with a fresh delivery count, forgetting its
    /// failure outcome (`result_of` is the task's id, so its stored outcome can be removed).
    fn requeue(&mut self, dead: &DeadEntry, id: TaskId) -> Result<bool, BrokerError>;
}
