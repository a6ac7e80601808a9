//! The Redis Streams broker.
//!
//! One queue is one stream, `brigade:{QUEUE}:tasks`, read by the consumer group `workers`:
//! each worker is a consumer, a delivered entry stays in the group's pending-entries list
//! (its lease) until the worker acknowledges it, and the list's idle times and delivery
//! counts are the leases and the dead-letter counter. Beside it:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `brigade:{Q}:tasks` | stream | queued and leased tasks |
//! | `brigade:{Q}:dead` | stream | dead letters |
//! | `brigade:{Q}:delayed` | sorted set | retries waiting out their backoff |
//! | `brigade:{Q}:lasterr` | hash | what a worker reported when it gave a task back |
//! | `brigade:{Q}:r:ID` | string | a task's outcome (first wins), expires |
//! | `brigade:{Q}:x:ID` | string | a task's cancel mark, expires |
//! | `brigade:{Q}:reply:CLIENT` | stream | a client's start notices and outcomes, expires |
//!
//! Everything that changes more than one key is a Lua script (see `scripts`), so it is atomic.

mod keys;
mod reply;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use crate::broker::{
    Broker, BrokerError, Connection, DeadEntry, DeadLetterRequest, Delivery, EntryId, Finish,
    Maintenance, QueueStatus, Release, Reply, Retry, Start, Submission,
};
use crate::codec::{ClientId, TaskId};
use crate::options::{MIN_LEASE, millis};
use keys::{Keys, check_queue_name, split_queue};
use reply::{is_nogroup, map_err};
use scripts::SCRIPTS;

/// The consumer group every worker of a queue joins.
const GROUP: &str = "workers";
/// The owner of tasks given back, until a worker takes them.
const RELEASED: &str = "released";
/// Replies read at most per call.
const REPLY_BATCH: usize = 1024;
/// Entries a maintenance pass looks at, and takes, at most.
const MAX_SCAN: usize = 2000;
/// Retries a maintenance pass queues at most.
const MAX_PROMOTE: usize = 1000;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer may take beyond a blocking command's own wait: a connection silent for
/// longer is dead (a Redis restart closes connections at once; this catches lost networks).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis Streams as the cluster's broker.
///
/// ```
/// use brigade_cluster::{Broker, RedisBroker};
///
/// let broker = RedisBroker::from_url("redis://127.0.0.1:6379/0?queue=jobs")?;
/// assert_eq!(broker.queue(), "jobs");
/// let broker = RedisBroker::new("redis://127.0.0.1:6379", "emails")?;
/// assert_eq!(broker.queue(), "emails");
/// assert!(RedisBroker::from_url("redis://127.0.0.1:6379").is_err()); // which queue?
/// # Ok::<(), brigade_cluster::BrokerError>(())
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    client: redis::Client,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field(
                "server",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("queue", &self.keys.queue)
            .finish()
    }
}

impl RedisBroker {
    /// The broker at `url` (`redis://[:password@]host[:port][/db]`, `rediss://…`,
    /// `unix:///path`), queue `queue`. Nothing is contacted yet.
    pub fn new(url: &str, queue: &str) -> Result<Self, BrokerError> {
        check_queue_name(queue)?;
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Config(format!("bad broker URL `{url}`: {e}")))?;
        Ok(Self {
            client,
            keys: Arc::new(Keys::new(queue)),
        })
    }

    /// The broker at `url`, whose query names the queue: `redis://host:6379/0?queue=jobs`.
    pub fn from_url(url: &str) -> Result<Self, BrokerError> {
        let (rest, queue) = split_queue(url);
        let queue = queue.ok_or_else(|| {
            BrokerError::Config(format!("no queue in `{url}`: add `?queue=NAME`"))
        })?;
        Self::new(&rest, &queue)
    }

    /// The broker at `url`; the queue is the one in the URL's query if there is one, else
    /// `queue`.
    pub fn with_default_queue(url: &str, queue: Option<&str>) -> Result<Self, BrokerError> {
        let (rest, in_url) = split_queue(url);
        match (in_url, queue) {
            (Some(q), _) => Self::new(&rest, &q),
            (None, Some(q)) => Self::new(&rest, q),
            (None, None) => Err(BrokerError::Config(format!(
                "no queue: add `?queue=NAME` to `{url}` or pass one"
            ))),
        }
    }

    fn open(&self) -> Result<RedisConnection, BrokerError> {
        let con = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(map_err)?;
        con.set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(1)))
            .map_err(map_err)?;
        con.set_write_timeout(Some(ANSWER_TIMEOUT))
            .map_err(map_err)?;
        let mut con = RedisConnection {
            con,
            keys: self.keys.clone(),
            server_started: Instant::now(),
        };
        con.server_started = Instant::now()
            .checked_sub(con.uptime()?)
            .unwrap_or_else(Instant::now);
        con.ensure_group()?;
        Ok(con)
    }
}

impl Broker for RedisBroker {
    fn queue(&self) -> &str {
        &self.keys.queue
    }

    fn connect(&self) -> Result<Box<dyn Connection>, BrokerError> {
        Ok(Box::new(self.open()?))
    }
}

/// A connection to the queue's server.
pub(crate) struct RedisConnection {
    con: redis::Connection,
    keys: Arc<Keys>,
    /// When the server started, by this machine's monotonic clock (its uptime when the
    /// connection opened, counted back): leases run only while the server is up.
    server_started: Instant,
}

impl RedisConnection {
    /// How long the server has been up (whole seconds, rounded down: a lease is never
    /// counted from before the server's start).
    fn uptime(&mut self) -> Result<Duration, BrokerError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.con)
            .map_err(map_err)?;
        let secs = info
            .lines()
            .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| BrokerError::Protocol("INFO server has no uptime_in_seconds".into()))?;
        Ok(Duration::from_secs(secs))
    }

    /// Creates the consumer group (and the stream) unless they exist: from the start of the
    /// stream, so tasks queued before the first worker came are delivered too.
    fn ensure_group(&mut self) -> Result<(), BrokerError> {
        let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.tasks)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut self.con);
        match made {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Runs `f`; if the group is missing (the server restarted without its data), creates
    /// it and runs `f` again.
    fn with_group<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> redis::RedisResult<T>,
    ) -> Result<T, BrokerError> {
        match f(self) {
            Err(e) if is_nogroup(&e) => {
                self.ensure_group()?;
                f(self).map_err(map_err)
            }
            other => other.map_err(map_err),
        }
    }
}

impl Connection for RedisConnection {
    fn now_ms(&mut self) -> Result<u64, BrokerError> {
        let (secs, micros): (u64, u64) =
            redis::cmd("TIME").query(&mut self.con).map_err(map_err)?;
        Ok(secs * 1000 + micros / 1000)
    }

    fn submit(&mut self, tasks: &[Submission]) -> Result<Vec<EntryId>, BrokerError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tasks {
            pipe.cmd("XADD")
                .arg(&self.keys.tasks)
                .arg("*")
                .arg("p")
                .arg(&t.frame)
                .arg("l")
                .arg(t.lease_ms)
                .arg("m")
                .arg(t.max_deliveries);
        }
        let ids: Vec<String> = pipe.query(&mut self.con).map_err(map_err)?;
        Ok(ids.into_iter().map(EntryId).collect())
    }

    fn cancel(&mut self, id: TaskId, entry: &EntryId, ttl_ms: u64) -> Result<bool, BrokerError> {
        let done: i64 = SCRIPTS
            .cancel
            .key(&self.keys.tasks)
            .key(self.keys.result(id))
            .key(self.keys.cancel(id))
            .arg(&entry.0)
            .arg(ttl_ms)
            .invoke(&mut self.con)
            .map_err(map_err)?;
        Ok(done == 1)
    }

    fn replies(
        &mut self,
        client: ClientId,
        cursor: &mut String,
        block: Duration,
    ) -> Result<Vec<Reply>, BrokerError> {
        let key = self.keys.reply(client);
        let mut pipe = redis::pipe();
        // What was read before is done with: trim it (entries below the cursor) in the same
        // round trip as the next read.
        if cursor.as_str() != "0" {
            pipe.cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(cursor.as_str())
                .ignore();
        }
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(REPLY_BATCH)
            .arg("BLOCK")
            .arg(millis(block).max(1))
            .arg("STREAMS")
            .arg(&key)
            .arg(cursor.as_str());
        let (reply,): (Value,) = pipe.query(&mut self.con).map_err(map_err)?;
        reply::replies(&reply, cursor)
    }

    fn outcomes(&mut self, ids: &[TaskId]) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(512) {
            let keys: Vec<String> = chunk.iter().map(|&id| self.keys.result(id)).collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query(&mut self.con)
                .map_err(map_err)?;
            out.extend(values);
        }
        Ok(out)
    }

    fn fetch(
        &mut self,
        worker: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let tasks = self.keys.tasks.clone();
        let reply: Value = self.with_group(|c| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(worker)
                .arg("COUNT")
                .arg(max.max(1))
                .arg("BLOCK")
                .arg(millis(block).max(1))
                .arg("STREAMS")
                .arg(&tasks)
                .arg(">")
                .query(&mut c.con)
        })?;
        reply::deliveries(&reply)
    }

    fn recover(&mut self, worker: &str, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        let tasks = self.keys.tasks.clone();
        let max = max.max(1);
        // The worker's own pending entries (id 0: its history, not new entries), with their
        // delivery counts from the pending-entries list.
        let (history, pending): (Value, Vec<(String, String, u64, u32)>) =
            self.with_group(|c| {
                redis::pipe()
                    .cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(worker)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(&tasks)
                    .arg("0")
                    .cmd("XPENDING")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(max)
                    .arg(worker)
                    .query(&mut c.con)
            })?;
        let counts: HashMap<String, u32> =
            pending.into_iter().map(|(id, _, _, n)| (id, n)).collect();
        let mut out = reply::deliveries(&history)?;
        for d in &mut out {
            d.deliveries = counts.get(&d.entry.0).copied().unwrap_or(1);
        }
        Ok(out)
    }

    fn start(&mut self, tasks: &[Start]) -> Result<Vec<bool>, BrokerError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = SCRIPTS.start.prepare_invoke();
        call.key(&self.keys.tasks).arg(GROUP);
        for t in tasks {
            call.key(self.keys.cancel(t.id))
                .key(self.keys.reply(t.id.client))
                .arg(&t.entry.0)
                .arg(&t.id.to_bytes()[..])
                .arg(t.ttl_ms);
        }
        let go: Vec<i64> = call.invoke(&mut self.con).map_err(map_err)?;
        if go.len() != tasks.len() {
            return Err(BrokerError::Protocol(format!(
                "start: {} answers for {} tasks",
                go.len(),
                tasks.len()
            )));
        }
        Ok(go.into_iter().map(|g| g == 1).collect())
    }

    fn finish(&mut self, done: &[Finish]) -> Result<(), BrokerError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut call = SCRIPTS.finish.prepare_invoke();
        call.key(&self.keys.tasks)
            .key(&self.keys.lasterr)
            .arg(GROUP);
        for f in done {
            call.key(self.keys.result(f.id))
                .key(self.keys.reply(f.id.client))
                .arg(&f.entry.0)
                .arg(f.ttl_ms.max(1))
                .arg(&f.outcome);
        }
        let _stored: i64 = call.invoke(&mut self.con).map_err(map_err)?;
        Ok(())
    }

    fn renew(&mut self, worker: &str, entries: &[EntryId]) -> Result<Vec<EntryId>, BrokerError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let tasks = self.keys.tasks.clone();
        let lost: Vec<String> = self.with_group(|c| {
            let mut call = SCRIPTS.renew.prepare_invoke();
            call.key(&tasks).arg(GROUP).arg(worker);
            for e in entries {
                call.arg(&e.0);
            }
            call.invoke(&mut c.con)
        })?;
        Ok(lost.into_iter().map(EntryId).collect())
    }

    fn release(&mut self, tasks: &[Release]) -> Result<(), BrokerError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let mut call = SCRIPTS.release.prepare_invoke();
        call.key(&self.keys.tasks)
            .key(&self.keys.lasterr)
            .arg(GROUP)
            .arg(RELEASED);
        for t in tasks {
            call.arg(&t.entry.0).arg(t.deliveries).arg(&t.reason);
        }
        let _: i64 = call.invoke(&mut self.con).map_err(map_err)?;
        Ok(())
    }

    fn retry(&mut self, retry: &Retry) -> Result<(), BrokerError> {
        let mut member =
            format!("{} {} ", retry.task.lease_ms, retry.task.max_deliveries).into_bytes();
        member.extend_from_slice(&retry.task.frame);
        let _: i64 = SCRIPTS
            .retry
            .key(&self.keys.tasks)
            .key(&self.keys.delayed)
            .key(&self.keys.lasterr)
            .arg(GROUP)
            .arg(&retry.entry.0)
            .arg(millis(retry.delay))
            .arg(member)
            .invoke(&mut self.con)
            .map_err(map_err)?;
        Ok(())
    }

    fn maintain(&mut self, worker: &str, max_claim: usize) -> Result<Maintenance, BrokerError> {
        let keys = self.keys.clone();
        let uptime = millis(self.server_started.elapsed());
        let reply: Value = self.with_group(|c| {
            SCRIPTS
                .maintain
                .key(&keys.tasks)
                .key(&keys.delayed)
                .key(&keys.lasterr)
                .arg(GROUP)
                .arg(worker)
                .arg(millis(MIN_LEASE))
                .arg(MAX_SCAN)
                .arg(MAX_PROMOTE)
                .arg(max_claim)
                .arg(uptime)
                .arg(RELEASED)
                .invoke(&mut c.con)
        })?;
        reply::maintenance(&reply)
    }

    fn dead_letter(&mut self, dead: &DeadLetterRequest) -> Result<(), BrokerError> {
        let d = &dead.delivery;
        let _: i64 = SCRIPTS
            .dead
            .key(&self.keys.tasks)
            .key(&self.keys.dead)
            .key(self.keys.result(dead.id))
            .key(self.keys.reply(dead.id.client))
            .key(&self.keys.lasterr)
            .arg(GROUP)
            .arg(&d.entry.0)
            .arg(&d.frame)
            .arg(d.deliveries)
            .arg(&dead.reason)
            .arg(&dead.last_worker)
            .arg(dead.ttl_ms.max(1))
            .arg(&dead.outcome)
            .arg(d.lease_ms)
            .arg(d.max_deliveries)
            .invoke(&mut self.con)
            .map_err(map_err)?;
        Ok(())
    }

    fn leave(&mut self, worker: &str) -> Result<(), BrokerError> {
        let status = self.status()?;
        if status
            .workers
            .iter()
            .any(|w| w.name == worker && w.pending == 0)
        {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.keys.tasks)
                .arg(GROUP)
                .arg(worker)
                .query(&mut self.con)
                .map_err(map_err)?;
        }
        Ok(())
    }

    fn status(&mut self) -> Result<QueueStatus, BrokerError> {
        let keys = self.keys.clone();
        let (groups, consumers, dead, delayed): (Value, Value, u64, u64) =
            self.with_group(|c| {
                redis::pipe()
                    .cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&keys.tasks)
                    .cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&keys.tasks)
                    .arg(GROUP)
                    .cmd("XLEN")
                    .arg(&keys.dead)
                    .cmd("ZCARD")
                    .arg(&keys.delayed)
                    .query(&mut c.con)
            })?;
        reply::status(&keys.queue, &groups, &consumers, dead, delayed)
    }

    fn dead_letters(
        &mut self,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        let start = after.map_or_else(|| "-".to_owned(), |e| format!("({}", e.0));
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query(&mut self.con)
            .map_err(map_err)?;
        reply::dead_entries(&reply)
    }

    fn requeue(&mut self, dead: &DeadEntry, id: TaskId) -> Result<bool, BrokerError> {
        let done: i64 = SCRIPTS
            .requeue
            .key(&self.keys.tasks)
            .key(&self.keys.dead)
            .key(self.keys.result(id))
            .arg(&dead.entry.0)
            .arg(&dead.frame)
            .arg(dead.lease_ms.max(millis(MIN_LEASE)))
            .arg(dead.max_deliveries.max(1))
            .invoke(&mut self.con)
            .map_err(map_err)?;
        Ok(done == 1)
    }
}

impl RedisConnection {
    /// Whether the server answers (for tests and health checks).
    #[allow(dead_code)]
    pub(crate) fn ping(&mut self) -> bool {
        self.con.check_connection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_a_config_error() {
        assert!(matches!(
            RedisBroker::new("http://nope", "q"),
            Err(BrokerError::Config(_))
        ));
    }
}
