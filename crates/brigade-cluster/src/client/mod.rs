//! The client: submits tasks to the queue and completes their [`Task`]s as outcomes arrive.
//!
//! Two threads per client talk to the broker: a writer that queues submissions in pipelined
//! batches (and sends cancellations), and a reader that waits on the client's own reply
//! stream and completes the tasks' [`Completer`]s. Nobody polls: the reader blocks in the
//! broker until a worker writes, and a waiting `result()` or `.await` is woken by its
//! completer.

mod map;
mod threads;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brigade::{Completer, Error, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::broker::{Broker, EntryId, Submission};
use crate::codec::{
    ClientId, TaskFrame, TaskId, WireError, decode_value, encode_frame, encode_value,
};
use crate::error::ClusterError;
use crate::function::Function;
use crate::link::Link;
use crate::options::Options;
use crate::redis_broker::RedisBroker;
pub use map::ClusterMap;

/// A connection to a queue that runs tasks on the cluster's workers.
///
/// `submit` returns the same [`Task<T>`] every brigade pool returns: `result()`,
/// `result_timeout()`, `cancel()`, `wait`, `as_completed` and `.await` all work. Cloning
/// gives another handle to the same client.
///
/// **Cancelling.** A task is *pending* until the client hears that a worker started it (a
/// start notice on the client's reply stream; [`Task::is_running`] turns true), and
/// `cancel()` succeeds while it is pending: the task ends [`Error::Cancelled`] at once, and
/// the cancel goes to the broker, which removes the task from the queue and marks it. A
/// worker checks that mark atomically as it starts a task, so a task whose cancel reached the
/// broker first never runs. Only in the moment between a worker starting the task and its
/// notice arriving can a cancelled task still run; its outcome is then dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use brigade_cluster::{Client, Function, Options};
///
/// fn sum((from, to): (u64, u64)) -> u64 { (from..to).sum() }
/// const SUM: Function<(u64, u64), u64> = Function::new("sum", 1, sum);
///
/// let client = Client::connect("redis://127.0.0.1:6379/?queue=jobs")?;
/// let task = client.submit(&SUM, (0, 1_000_000));
/// assert_eq!(task.result()?, 499_999_500_000);
///
/// // Per-task options, and a bounded wait that never hangs on a broker that went away.
/// let mut task = client.submit_with(&SUM, (0, 10), Options::default().retries(2));
/// assert_eq!(task.result_timeout(Duration::from_secs(5))?, 45);
///
/// // An ordered, lazy map with at most 100 tasks in flight.
/// let total: u64 = client
///     .map(&SUM, (0..1000u64).map(|i| (i * 1000, (i + 1) * 1000)))
///     .in_flight(100)
///     .map(Result::unwrap)
///     .sum();
/// assert_eq!(total, 499_999_500_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The part that closes the client when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
    commands: Sender<Command>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The threads finish what is pending (tasks outlive their client) and then stop.
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// What the client's threads share.
pub(crate) struct Shared {
    broker: Arc<dyn Broker>,
    id: ClientId,
    seq: AtomicU64,
    options: Options,
    /// Broker clock minus local clock, ms: deadlines are set in the broker's clock.
    clock_offset_ms: i64,
    pending: Mutex<HashMap<TaskId, Pending>>,
    closed: AtomicBool,
    /// The writer's connection: the writer thread writes batches through it, and a submit
    /// that comes alone writes itself through it (one thread hop less on an idle client).
    writer: Mutex<Link>,
    /// Commands sent to the writer and not yet taken.
    queued: AtomicUsize,
    /// When the last submit happened (ns since `epoch`): a submit within `ALONE` of the
    /// previous one is part of a burst, and goes to the writer to be batched.
    last_submit_ns: AtomicU64,
    epoch: Instant,
}

/// A submit this long after the previous one counts as alone.
const ALONE: Duration = Duration::from_millis(1);

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Pending>> {
        // The map is consistent after any panic in between (every operation is one call on
        // it), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Link> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this submit comes alone: nothing queued for the writer, and no submit just
    /// before (which would make it part of a burst worth batching).
    fn submit_alone(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.last_submit_ns.swap(now, Ordering::Relaxed);
        self.queued.load(Ordering::Acquire) == 0
            && now.saturating_sub(last) >= ALONE.as_nanos() as u64
    }

    /// Writes one submission on the caller's thread, if the writer's connection is free.
    /// One attempt: on failure the caller hands it to the writer, which retries.
    fn write_alone(&self, submission: &Submission) -> bool {
        let Ok(mut link) = self.writer.try_lock() else {
            return false;
        };
        match link.run(|c| c.submit(std::slice::from_ref(submission)), || true) {
            Ok(mut entries) => {
                if let (Some(p), Some(entry)) =
                    (self.pending().get_mut(&submission.id), entries.pop())
                {
                    p.entry = Some(entry);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Hands a command to the writer thread.
    fn send(&self, commands: &Sender<Command>, command: Command) -> bool {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if commands.send(command).is_ok() {
            true
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }
}

/// A submitted task the client has not completed yet.
struct Pending {
    waiter: Box<dyn Waiter>,
    /// Where the task sits in the broker, once the writer has queued it.
    entry: Option<EntryId>,
    /// Its result lifetime (for the cancel mark).
    ttl_ms: u64,
}

/// A typed completer with its type erased: decodes the result.
trait Waiter: Send {
    fn started(&mut self);
    fn is_cancelled(&self) -> bool;
    fn finish(self: Box<Self>, outcome: Result<Vec<u8>, WireError>);
}

impl<R: DeserializeOwned + Send + 'static> Waiter for Completer<R> {
    fn started(&mut self) {
        self.set_running();
    }

    fn is_cancelled(&self) -> bool {
        Completer::is_cancelled(self)
    }

    fn finish(self: Box<Self>, outcome: Result<Vec<u8>, WireError>) {
        let outcome = outcome
            .and_then(|bytes| decode_value::<R>(&bytes, "result"))
            .map_err(WireError::into_error);
        self.complete(outcome);
    }
}

/// Work for the writer thread.
enum Command {
    Submit(Submission),
    Cancel(TaskId),
}

/// Settings for [`Client::builder`].
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    queue: Option<String>,
    options: Options,
    broker: Option<Arc<dyn Broker>>,
}

impl ClientBuilder {
    /// The queue (if the URL does not name one with `?queue=`).
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    /// The options of every task submitted without its own.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Uses `broker` instead of the URL (another backend, or one shared with workers).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Connects: fails if the broker does not answer now (later outages are survived).
    pub fn connect(self) -> Result<Client, ClusterError> {
        let broker: Arc<dyn Broker> = match self.broker {
            Some(b) => b,
            None => Arc::new(RedisBroker::with_default_queue(
                &self.url,
                self.queue.as_deref(),
            )?),
        };
        let mut con = broker.connect()?;
        let broker_ms = con.now_ms()?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            id: ClientId(random_u64()),
            seq: AtomicU64::new(0),
            options: self.options,
            clock_offset_ms: broker_ms as i64 - local_ms() as i64,
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            writer: Mutex::new(Link::with(broker.clone(), con, "client writer")),
            queued: AtomicUsize::new(0),
            last_submit_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let (commands, rx) = mpsc::channel();
        let reader_link = Link::new(broker, "client reader");
        threads::spawn(shared.clone(), rx, reader_link)?;
        Ok(Client {
            inner: Arc::new(Inner { shared, commands }),
        })
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 64 random bits, from the standard library's randomly seeded hasher, the time and the
/// process: enough to keep client ids apart without another dependency.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl Client {
    /// Connects to the broker at `url`, whose query names the queue:
    /// `redis://host:6379/0?queue=jobs`.
    pub fn connect(url: &str) -> Result<Self, ClusterError> {
        Self::builder(url).connect()
    }

    /// A client to configure: queue, default options, or another broker.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use brigade_cluster::{Client, Options};
    ///
    /// let client = Client::builder("redis://127.0.0.1:6379")
    ///     .queue("jobs")
    ///     .options(Options::default().lease(Duration::from_secs(5)))
    ///     .connect()?;
    /// # Ok::<(), brigade_cluster::ClusterError>(())
    /// ```
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            queue: None,
            options: Options::default(),
            broker: None,
        }
    }

    /// This client's id (its tasks' ids start with it).
    pub fn id(&self) -> ClientId {
        self.inner.shared.id
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        self.inner.shared.broker.queue()
    }

    /// Runs `f(arg)` on a worker, with the client's default options.
    ///
    /// Returns at once; the task is queued by the client's writer thread, and survives broker
    /// outages (it is written when the broker is back). A task whose argument cannot be
    /// encoded is returned already failed with [`Error::Codec`].
    pub fn submit<A, R>(&self, f: &Function<A, R>, arg: A) -> Task<R>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        self.submit_with(f, arg, self.inner.shared.options)
    }

    /// Runs `f(arg)` on a worker with `options`.
    pub fn submit_with<A, R>(&self, f: &Function<A, R>, arg: A, options: Options) -> Task<R>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let (completer, task) = Completer::<R>::new();
        let args = match encode_value(&arg) {
            Ok(args) => args,
            Err(e) => {
                completer.set_error(e.into_error());
                return task;
            }
        };
        let shared = &self.inner.shared;
        let id = TaskId {
            client: shared.id,
            seq: shared.seq.fetch_add(1, Ordering::Relaxed),
        };
        let broker_now = (local_ms() as i64 + shared.clock_offset_ms).max(0) as u64;
        let wire = options.to_wire(broker_now);
        let frame = TaskFrame {
            function: f.name().to_owned(),
            version: f.version(),
            attempt: 0,
            options: wire,
            args,
        };
        let submission = Submission {
            id,
            frame: encode_frame(id, &frame),
            lease_ms: wire.lease_ms,
            max_deliveries: wire.max_deliveries,
        };
        shared.pending().insert(
            id,
            Pending {
                waiter: Box::new(completer),
                entry: None,
                ttl_ms: wire.result_ttl_ms,
            },
        );
        // A cancel through the handle reaches the broker through the writer.
        let commands = self.inner.commands.clone();
        let for_cancel = shared.clone();
        task.add_done_callback(move |outcome| {
            if matches!(outcome, Err(Error::Cancelled)) {
                for_cancel.send(&commands, Command::Cancel(id));
            }
        });
        if shared.submit_alone() && shared.write_alone(&submission) {
            return task;
        }
        if !shared.send(&self.inner.commands, Command::Submit(submission)) {
            // The writer is gone (it only stops once the client is closed): fail the task
            // rather than leave it waiting.
            shared.pending().remove(&id);
        }
        task
    }

    /// Runs `f` over `inputs` on the workers: results in input order, lazily, with a bounded
    /// number of tasks in flight (see [`ClusterMap`]).
    pub fn map<A, R, I>(&self, f: &Function<A, R>, inputs: I) -> ClusterMap<I::IntoIter, A, R>
    where
        I: IntoIterator<Item = A>,
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        ClusterMap::new(self.clone(), *f, inputs.into_iter())
    }

    /// How many submitted tasks have no outcome yet.
    pub fn pending(&self) -> usize {
        self.inner.shared.pending().len()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.inner.shared.id)
            .field("queue", &self.queue())
            .field("pending", &self.pending())
            .finish()
    }
}
