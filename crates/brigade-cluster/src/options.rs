//! Per-task options: retries with backoff, lease, delivery limit, result lifetime, deadline.

use std::time::Duration;

use crate::codec::WireOptions;

/// The shortest lease a task may have: a worker renews leases every third of the shortest
/// lease it holds, and every worker scans for expired leases about this often.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// How a task is run: set per client ([`ClientBuilder::options`](crate::ClientBuilder::options))
/// or per task ([`Client::submit_with`](crate::Client::submit_with)).
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`retries`](Self::retries) | 0 | runs again after a panic, this many times at most |
/// | [`backoff`](Self::backoff) | 1 s, doubling, at most 60 s | the wait before each retry |
/// | [`lease`](Self::lease) | 30 s | how long a silent worker keeps the task (its heartbeat renews it while it runs, so a long task is never taken from a live worker) |
/// | [`max_deliveries`](Self::max_deliveries) | 5 | deliveries that end with the worker gone before the task moves to the dead-letter stream |
/// | [`result_ttl`](Self::result_ttl) | 24 h | how long the broker keeps the outcome |
/// | [`deadline`](Self::deadline) | none | latest start, counted from submission |
///
/// ```
/// use std::time::Duration;
/// use brigade_cluster::Options;
///
/// let options = Options::default()
///     .retries(3)
///     .backoff(Duration::from_millis(200), Duration::from_secs(5))
///     .lease(Duration::from_secs(10))
///     .max_deliveries(3)
///     .result_ttl(Duration::from_secs(3600))
///     .deadline(Duration::from_secs(60));
/// assert_eq!(options.backoff_for(0), Duration::from_millis(200));
/// assert_eq!(options.backoff_for(2), Duration::from_millis(800));
/// assert_eq!(options.backoff_for(10), Duration::from_secs(5)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    lease: Duration,
    max_deliveries: u32,
    result_ttl: Duration,
    deadline: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retries: 0,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            max_deliveries: 5,
            result_ttl: Duration::from_secs(24 * 3600),
            deadline: None,
        }
    }
}

impl Options {
    /// Runs the task again after a panic, up to `retries` more times (a crash of the worker
    /// is not a retry: it counts against [`max_deliveries`](Self::max_deliveries)).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Waits `first` before the first retry, doubling each time up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.backoff_max = max.max(first);
        self
    }

    /// How long a worker that stops renewing keeps the task before another takes it
    /// (at least [`MIN_LEASE`]).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(MIN_LEASE);
        self
    }

    /// How many deliveries the task may have before it is dead-lettered (at least 1).
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// How long the broker keeps the outcome (at least 1 ms).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The task must start within `deadline` of its submission, or it fails with
    /// [`brigade::Error::TimedOut`] without running. On the process lane a running task is
    /// also killed at the deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The lease.
    pub fn lease_length(&self) -> Duration {
        self.lease
    }

    /// The wait before retry number `retry` (0 for the first).
    pub fn backoff_for(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// The wire form; `now_ms` is the broker's clock at submission.
    pub(crate) fn to_wire(self, now_ms: u64) -> WireOptions {
        WireOptions {
            retries: self.retries,
            backoff_ms: millis(self.backoff),
            backoff_max_ms: millis(self.backoff_max),
            lease_ms: millis(self.lease),
            max_deliveries: self.max_deliveries,
            result_ttl_ms: millis(self.result_ttl).max(1),
            deadline_ms: self.deadline.map(|d| now_ms.saturating_add(millis(d))),
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl WireOptions {
    /// The wait before retry number `retry`.
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        Options::default()
            .backoff(
                Duration::from_millis(self.backoff_ms),
                Duration::from_millis(self.backoff_max_ms),
            )
            .backoff_for(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped() {
        let o = Options::default()
            .lease(Duration::ZERO)
            .max_deliveries(0)
            .result_ttl(Duration::ZERO);
        assert_eq!(o.lease_length(), MIN_LEASE);
        let w = o.to_wire(1000);
        assert_eq!(w.max_deliveries, 1);
        assert_eq!(w.result_ttl_ms, 1);
        assert_eq!(w.deadline_ms, None);
        assert_eq!(
            Options::default()
                .deadline(Duration::from_secs(2))
                .to_wire(1000)
                .deadline_ms,
            Some(3000)
        );
    }

    #[test]
    fn backoff_doubles_and_caps_without_overflow() {
        let o = Options::default().backoff(Duration::from_secs(1), Duration::from_secs(10));
        let waits: Vec<u64> = (0..6).map(|r| o.backoff_for(r).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(o.backoff_for(u32::MAX), Duration::from_secs(10));
        assert_eq!(
            o.to_wire(0).backoff_for(2),
            Duration::from_secs(4),
            "the wire form computes the same waits"
        );
    }
}
