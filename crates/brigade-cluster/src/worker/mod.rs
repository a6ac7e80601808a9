//! The worker: the user's own binary, serving a queue with the functions it registered.
//!
//! Three threads talk to the broker, each on its own connection:
//! * the **fetcher** (the thread that calls [`Worker::run`]) waits for tasks, announces them
//!   as started, hands them to the local lane, and every [`TICK`] runs a maintenance pass
//!   (due retries, expired leases, dead letters);
//! * the **finisher** writes outcomes in batches as the lane finishes tasks;
//! * the **heartbeat** renews the leases of every task the worker holds, three times per
//!   shortest lease, so a long task is never taken from a live worker.
//!
//! Tasks run on brigade's local lanes: threads (a panic fails the task) or processes (a crash
//! of the process fails one delivery; the task goes back to the queue, and the worker lives).

mod args;
mod fetch;
mod finish;
mod heartbeat;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brigade::{ProcessPool, Shutdown, ThreadPool};

pub use args::{LaneKind, WorkerArgs, worker_main, worker_main_from, worker_main_with};

use crate::broker::{Broker, EntryId};
use crate::codec::TaskId;
use crate::error::ClusterError;
use crate::function::{Functions, Handle, Lane, RunOutcome};
use crate::link::Link;
use crate::redis_broker::RedisBroker;

/// How often a worker looks for due retries and expired leases (and how long one wait for
/// new tasks lasts, which bounds how fast it notices a stop).
pub const TICK: Duration = Duration::from_millis(200);

/// The most tasks a worker fetches ahead of its running ones (adaptive prefetch).
pub(crate) const MAX_PREFETCH: usize = 64;
/// Adaptive prefetch keeps about this much work queued per running task: enough to hide the
/// broker's round trips behind short tasks, little enough that a long task does not hold
/// others back while idle workers could run them.
const PREFETCH_WINDOW: Duration = Duration::from_millis(10);

/// A worker serving one queue. Build it with [`Worker::builder`], or let
/// [`worker_main`] build it from the command line.
///
/// ```no_run
/// use brigade_cluster::{Function, Functions, LaneKind, Worker};
///
/// fn sum((from, to): (u64, u64)) -> u64 { (from..to).sum() }
/// const SUM: Function<(u64, u64), u64> = Function::new("sum", 1, sum);
///
/// let worker = Worker::builder("redis://127.0.0.1:6379/?queue=jobs")
///     .functions(Functions::new().register(&SUM))
///     .concurrency(4)
///     .lane(LaneKind::Processes)
///     .build()?;
/// let stop = worker.stop_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(60));
///     stop.stop(); // what SIGTERM does under worker_main: drain, then return
/// });
/// worker.run()?;
/// # Ok::<(), brigade_cluster::ClusterError>(())
/// ```
pub struct Worker {
    state: Arc<State>,
    finished: Receiver<Finished>,
    drain_timeout: Duration,
}

/// Settings for [`Worker::builder`].
#[derive(Debug)]
pub struct WorkerBuilder {
    url: String,
    queue: Option<String>,
    broker: Option<Arc<dyn Broker>>,
    functions: Functions,
    concurrency: Option<usize>,
    prefetch: Option<usize>,
    lane: LaneKind,
    drain_timeout: Duration,
    name: Option<String>,
}

impl WorkerBuilder {
    /// The queue (if the URL does not name one with `?queue=`).
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    /// Uses `broker` instead of the URL.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The functions this worker runs.
    pub fn functions(mut self, functions: Functions) -> Self {
        self.functions = functions;
        self
    }

    /// Tasks run at once (the lane's threads or processes; default: the machine's available
    /// parallelism).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = Some(tasks);
        self
    }

    /// Tasks fetched ahead of the running ones. By default it adapts to how long tasks take:
    /// about 10 ms of work per running task (up to 64), so short tasks flow without waiting
    /// on the broker, and long tasks are fetched only when a slot is free, leaving the rest
    /// to idle workers.
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.prefetch = Some(tasks);
        self
    }

    /// Where tasks run: threads, processes, or `auto` (threads, for now).
    pub fn lane(mut self, lane: LaneKind) -> Self {
        self.lane = lane;
        self
    }

    /// How long a stopping worker waits for its running tasks before it gives them back.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The worker's name in the broker (default `host:pid:random`; must be unique).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Connects and starts the lane; fails if the broker does not answer now.
    pub fn build(self) -> Result<Worker, ClusterError> {
        if self.functions.is_empty() {
            return Err(ClusterError::NoFunctions);
        }
        let broker: Arc<dyn Broker> = match self.broker {
            Some(b) => b,
            None => Arc::new(RedisBroker::with_default_queue(
                &self.url,
                self.queue.as_deref(),
            )?),
        };
        let concurrency = match self.concurrency {
            Some(0) => {
                return Err(ClusterError::Config(
                    "concurrency must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        // Checks the broker now, so that a wrong address fails here, not in a thread.
        let mut probe = broker.connect()?;
        let broker_ms = probe.now_ms()?;
        let lane = match self.lane {
            LaneKind::Threads | LaneKind::Auto => Lane::Threads(
                ThreadPool::builder()
                    .workers(concurrency)
                    .thread_name("brigade-task")
                    .build()?,
            ),
            LaneKind::Processes => {
                Lane::Processes(ProcessPool::builder().workers(concurrency).build()?)
            }
        };
        let (done, finished) = mpsc::channel();
        let name = self.name.unwrap_or_else(default_name);
        let state = Arc::new(State {
            broker: broker.clone(),
            name,
            functions: self.functions,
            lane,
            concurrency,
            prefetch: self.prefetch,
            average_run_ns: AtomicU64::new(0),
            clock_offset_ms: broker_ms as i64 - crate::client::local_ms() as i64,
            inflight: Mutex::new(HashMap::new()),
            room: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads_stop: AtomicBool::new(false),
            done,
            queued_done: AtomicUsize::new(0),
            finisher: Mutex::new(Link::new(broker.clone(), "worker finisher")),
            heartbeat_ms: AtomicU64::new(heartbeat::IDLE_INTERVAL_MS),
            heartbeat_wake: (Mutex::new(false), Condvar::new()),
            initial: Mutex::new(Some(probe)),
        });
        Ok(Worker {
            state,
            finished,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// `host:pid:random`: unique, and readable in `brigade cluster status`.
fn default_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        crate::client::random_u64() & 0xffff
    )
}

/// The pid in a default worker name, if it is one.
pub(crate) fn pid_of(name: &str) -> Option<u32> {
    name.rsplit(':').nth(1)?.parse().ok()
}

/// A lost delivery's reason as kept in the broker: `pid signal|text` (`-` for no signal), so
/// that a dead letter can report the crash's signal.
pub(crate) fn encode_reason(pid: u32, signal: Option<i32>, text: &str) -> String {
    match signal {
        Some(s) => format!("{pid} {s}|{text}"),
        None => format!("{pid} -|{text}"),
    }
}

/// The inverse of [`encode_reason`]; other text comes back whole.
pub(crate) fn decode_reason(reason: &str) -> (Option<u32>, Option<i32>, &str) {
    let Some((head, text)) = reason.split_once('|') else {
        return (None, None, reason);
    };
    let Some((pid, signal)) = head.split_once(' ') else {
        return (None, None, reason);
    };
    match pid.parse() {
        Ok(pid) => (Some(pid), signal.parse().ok(), text),
        Err(_) => (None, None, reason),
    }
}

/// Stops a running worker: it stops fetching, gives back the tasks it has not started,
/// finishes the running ones (up to the drain timeout), and [`Worker::run`] returns.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the worker to drain and stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// The flag itself, for `signal_hook::flag::register`.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Worker {
    /// A worker for the broker at `url` (whose query may name the queue: `?queue=jobs`).
    pub fn builder(url: &str) -> WorkerBuilder {
        WorkerBuilder {
            url: url.to_owned(),
            queue: None,
            broker: None,
            functions: Functions::new(),
            concurrency: None,
            prefetch: None,
            lane: LaneKind::Threads,
            drain_timeout: Duration::from_secs(30),
            name: None,
        }
    }

    /// Its name in the broker.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// A handle that stops it from another thread (or a signal handler's flag).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.state.stop.clone())
    }

    /// Serves the queue until stopped, then drains: returns once every task it held is
    /// finished or given back. Broker outages are waited out, not returned.
    pub fn run(self) -> Result<(), ClusterError> {
        let state = self.state;
        let finisher = {
            let state = state.clone();
            let finished = self.finished;
            std::thread::Builder::new()
                .name("brigade-finisher".into())
                .spawn(move || finish::run(&state, &finished))
                .map_err(|e| ClusterError::Thread(e.to_string()))?
        };
        let beat = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("brigade-heartbeat".into())
                .spawn(move || heartbeat::run(&state))
                .map_err(|e| ClusterError::Thread(e.to_string()))?
        };
        let mut link = fetch::Fetcher::new(&state);
        link.serve();
        link.drain(self.drain_timeout);
        state.threads_stop.store(true, Ordering::Release);
        heartbeat::wake(&state);
        let _ = finisher.join();
        let _ = beat.join();
        link.leave();
        match &state.lane {
            Lane::Threads(pool) => {
                pool.shutdown(Shutdown::graceful().no_wait());
            }
            Lane::Processes(pool) => {
                pool.shutdown(Shutdown::cancel_pending().timeout(Duration::from_secs(5)));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.state.name)
            .field("queue", &self.state.broker.queue())
            .field("functions", &self.state.functions)
            .field("concurrency", &self.state.concurrency)
            .field("prefetch", &self.state.prefetch)
            .finish_non_exhaustive()
    }
}

/// What the worker's threads share.
struct State {
    broker: Arc<dyn Broker>,
    name: String,
    functions: Functions,
    lane: Lane,
    /// Tasks run at once.
    concurrency: usize,
    /// Tasks fetched ahead, if fixed (else adaptive).
    prefetch: Option<usize>,
    /// How long a task runs, on average (exponentially weighted, ns; 0: not known yet).
    average_run_ns: AtomicU64,
    /// Broker clock minus local clock, ms.
    clock_offset_ms: i64,
    /// Every task the worker holds, by entry: its lease is renewed until it leaves.
    inflight: Mutex<HashMap<EntryId, InFlight>>,
    /// Signalled when a task leaves `inflight`.
    room: Condvar,
    /// Drain requested.
    stop: Arc<AtomicBool>,
    /// The finisher and heartbeat stop (after the drain).
    threads_stop: AtomicBool,
    /// Lane callbacks send outcomes here; the finisher reads them.
    done: Sender<Finished>,
    /// Outcomes sent and not yet taken by the finisher.
    queued_done: AtomicUsize,
    /// The finisher's connection (an idle worker's lane thread borrows it).
    finisher: Mutex<Link>,
    /// The heartbeat's current period, ms; a task with a shorter lease wakes it.
    heartbeat_ms: AtomicU64,
    heartbeat_wake: (Mutex<bool>, Condvar),
    /// The connection `build` opened, for the fetcher to start with.
    initial: Mutex<Option<Box<dyn crate::broker::Connection>>>,
}

impl State {
    fn inflight(&self) -> MutexGuard<'_, HashMap<EntryId, InFlight>> {
        // Every operation on the map is a single call, so it is consistent after a panic.
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn threads_stopping(&self) -> bool {
        self.threads_stop.load(Ordering::Acquire)
    }

    /// Tasks held at most: running, and fetched ahead.
    fn capacity(&self) -> usize {
        let ahead = self.prefetch.unwrap_or_else(|| {
            let average = self.average_run_ns.load(Ordering::Relaxed);
            match (PREFETCH_WINDOW.as_nanos() as u64).checked_div(average) {
                // Nothing measured yet: one batch's worth.
                None => self.concurrency,
                Some(per_slot) => (self.concurrency as u64)
                    .saturating_mul(per_slot)
                    .min(MAX_PREFETCH as u64) as usize,
            }
        });
        self.concurrency + ahead
    }

    /// Counts a run of `took` into the average (weight 1/8: follows a change of workload
    /// within a few dozen tasks).
    fn ran_for(&self, took: Duration) {
        let took = (took.as_nanos() as u64).max(1);
        let old = self.average_run_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.average_run_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// The broker's clock now, ms.
    fn broker_now_ms(&self) -> u64 {
        (crate::client::local_ms() as i64 + self.clock_offset_ms).max(0) as u64
    }

    /// Removes tasks the broker is done with, and makes room for more.
    fn forget(&self, entries: impl IntoIterator<Item = EntryId>) {
        let mut inflight = self.inflight();
        for e in entries {
            inflight.remove(&e);
        }
        drop(inflight);
        self.room.notify_all();
    }
}

/// A task the worker holds.
struct InFlight {
    id: TaskId,
    /// The task frame as delivered (decoded again for a retry or a dead letter).
    frame: Vec<u8>,
    lease_ms: u64,
    max_deliveries: u32,
    deliveries: u32,
    attempt: u32,
    retries: u32,
    result_ttl_ms: u64,
    /// The wait before this attempt's retry.
    backoff: Duration,
    /// The lane's handle while it runs (none for tasks that end before reaching the lane).
    handle: Option<Box<dyn Handle>>,
}

/// A task's run ended (or never started, for the reason given).
struct Finished {
    entry: EntryId,
    outcome: RunOutcome,
    /// How long the run took (none: it never reached the lane).
    took: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_deliverys_reason_keeps_its_pid_and_signal() {
        let kept = encode_reason(42, Some(11), "worker process 42 was killed | by SIGSEGV");
        assert_eq!(
            decode_reason(&kept),
            (
                Some(42),
                Some(11),
                "worker process 42 was killed | by SIGSEGV"
            )
        );
        assert_eq!(
            decode_reason(&encode_reason(7, None, "gone")),
            (Some(7), None, "gone")
        );
        assert_eq!(decode_reason("plain words"), (None, None, "plain words"));
        assert_eq!(decode_reason("x y|z"), (None, None, "x y|z"));
    }

    #[test]
    fn a_default_worker_name_carries_its_pid() {
        let name = default_name();
        assert_eq!(pid_of(&name), Some(std::process::id()));
        assert_eq!(pid_of("ghost:1:0"), Some(1));
        assert_eq!(pid_of("no-pid-here"), None);
    }
}
