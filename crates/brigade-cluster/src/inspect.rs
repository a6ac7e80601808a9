//! Looking into a queue: its state, its dead letters, and putting them back.

use std::sync::Arc;

use crate::broker::{Broker, BrokerError, Connection, DeadEntry, QueueStatus};
use crate::codec::{TaskFrame, decode_frame};
use crate::error::ClusterError;
use crate::redis_broker::RedisBroker;

/// A dead letter, decoded for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its entry in the dead-letter stream (what `requeue` takes).
    pub entry: String,
    /// The task's id, if its frame could be read.
    pub task: Option<String>,
    /// The function's name and version, if the frame could be read.
    pub function: Option<String>,
    /// The function's version.
    pub version: Option<u32>,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it died.
    pub reason: String,
    /// The worker that had the last delivery.
    pub worker: String,
    /// When it was dead-lettered, ms since the Unix epoch (the broker's clock).
    pub at_ms: u64,
}

impl DeadLetter {
    fn from_entry(d: &DeadEntry) -> Self {
        let decoded = decode_frame::<TaskFrame>(&d.frame);
        let (task, function, version) = match &decoded {
            Ok((id, f)) => (
                Some(id.to_string()),
                Some(f.function.clone()),
                Some(f.version),
            ),
            Err((Some(id), _)) => (Some(id.to_string()), None, None),
            Err((None, _)) => (None, None, None),
        };
        Self {
            entry: d.entry.0.clone(),
            task,
            function,
            version,
            deliveries: d.deliveries,
            reason: d.reason.clone(),
            worker: d.worker.clone(),
            at_ms: d.at_ms,
        }
    }
}

/// Inspects and repairs a queue (what `brigade cluster` runs).
///
/// ```no_run
/// use brigade_cluster::Admin;
///
/// let mut admin = Admin::connect("redis://127.0.0.1:6379", Some("jobs"))?;
/// let status = admin.status()?;
/// println!("{} waiting, {} leased, {} dead", status.waiting, status.pending, status.dead);
/// for dead in admin.dead_letters(10)? {
///     println!("{:?} {}: {}", dead.function, dead.entry, dead.reason);
/// }
/// let requeued = admin.requeue(None)?; // every dead letter, with fresh delivery counts
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Admin {
    con: Box<dyn Connection>,
}

impl Admin {
    /// Connects to the queue at `url` (named in the URL's `?queue=`, or by `queue`).
    pub fn connect(url: &str, queue: Option<&str>) -> Result<Self, ClusterError> {
        let broker = RedisBroker::with_default_queue(url, queue)?;
        Self::with_broker(Arc::new(broker))
    }

    /// Connects through `broker`.
    pub fn with_broker(broker: Arc<dyn Broker>) -> Result<Self, ClusterError> {
        Ok(Self {
            con: broker.connect()?,
        })
    }

    /// Queue length, tasks leased per worker, retries waiting, dead letters.
    pub fn status(&mut self) -> Result<QueueStatus, BrokerError> {
        self.con.status()
    }

    /// Up to `limit` dead letters, oldest first.
    pub fn dead_letters(&mut self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Ok(self
            .con
            .dead_letters(None, limit)?
            .iter()
            .map(DeadLetter::from_entry)
            .collect())
    }

    /// Puts dead letters back in the queue with fresh delivery counts: those whose entries
    /// are given, or all of them. Returns how many went back.
    pub fn requeue(&mut self, entries: Option<&[String]>) -> Result<usize, BrokerError> {
        let mut requeued = 0;
        let mut cursor = None;
        loop {
            let page = self.con.dead_letters(cursor.as_ref(), 1000)?;
            let Some(last) = page.last() else {
                return Ok(requeued);
            };
            cursor = Some(last.entry.clone());
            for d in &page {
                if entries.is_some_and(|wanted| !wanted.contains(&d.entry.0)) {
                    continue;
                }
                let id = match decode_frame::<TaskFrame>(&d.frame) {
                    Ok((id, _)) | Err((Some(id), _)) => id,
                    Err((None, _)) => continue, // nothing a worker could run
                };
                if self.con.requeue(d, id)? {
                    requeued += 1;
                }
            }
        }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}
