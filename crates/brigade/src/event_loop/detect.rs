//! Blocking detection: per spawn site, how long its tasks' polls take, and whether the site has
//! been caught blocking the loop.
//!
//! A spawn site is the `#[track_caller]` location of the `spawn` call. Sites are the unit of
//! decision because they are what the user wrote: the same line of code spawns tasks that
//! behave alike, so one slow poll from a site predicts the next task from it. A task keeps its
//! statistics locally and adds them to its site every [`FLUSH_EVERY`] polls and when it ends,
//! so the hot path (one poll of a short task) touches no shared cache line; a slow poll is
//! reported at once, because that is the moment the site must be flagged.

use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A task adds its local counts to its site after this many polls (and when it ends).
const FLUSH_EVERY: u32 = 64;

/// One spawn site's record.
pub(super) struct Site {
    location: &'static Location<'static>,
    flagged: AtomicBool,
    polls: AtomicU64,
    total_ns: AtomicU64,
    worst_ns: AtomicU64,
    slow_polls: AtomicU64,
}

impl Site {
    fn new(location: &'static Location<'static>) -> Self {
        Self {
            location,
            flagged: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            worst_ns: AtomicU64::new(0),
            slow_polls: AtomicU64::new(0),
        }
    }

    /// Whether a poll of one of this site's tasks has blocked the loop.
    pub(super) fn is_flagged(&self) -> bool {
        // Relaxed: the flag is advice about where to run; a task that reads it a moment late
        // only runs one more poll where it was.
        self.flagged.load(Ordering::Relaxed)
    }

    fn add(&self, stats: &Stats) {
        self.polls
            .fetch_add(u64::from(stats.polls), Ordering::Relaxed);
        self.total_ns.fetch_add(stats.total_ns, Ordering::Relaxed);
        self.worst_ns.fetch_max(stats.worst_ns, Ordering::Relaxed);
    }

    /// A poll took `ns`, more than the loop's threshold: flag the site, and warn the first time.
    fn slow(&self, ns: u64, on_lane: bool) {
        self.slow_polls.fetch_add(1, Ordering::Relaxed);
        self.worst_ns.fetch_max(ns, Ordering::Relaxed);
        if !on_lane && !self.flagged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                site = %self.location,
                poll_ms = ns as f64 / 1e6,
                "a task spawned at {} blocked the event loop for {:.1} ms in one poll; \
                 tasks from this site now run off the loop's workers",
                self.location,
                ns as f64 / 1e6,
            );
        }
    }
}

/// The sites of one event loop, and its threshold.
pub(super) struct Sites {
    map: Mutex<HashMap<usize, Arc<Site>>>,
    threshold_ns: u64,
}

impl Sites {
    pub(super) fn new(threshold: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            threshold_ns: u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The record for `location`, created on first use.
    pub(super) fn get(&self, location: &'static Location<'static>) -> Arc<Site> {
        // Keyed by address: a call site's `Location` is one static. (A generic function
        // instantiated in several codegen units may have one per unit; those get one record
        // each, and the report merges them.)
        let key = std::ptr::from_ref(location) as usize;
        let mut map = self.map.lock();
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(Site::new(location))),
        )
    }

    pub(super) fn report(&self) -> Vec<SiteReport> {
        let sites: Vec<Arc<Site>> = self.map.lock().values().cloned().collect();
        let mut merged: HashMap<Location<'static>, SiteReport> = HashMap::new();
        for site in sites {
            let entry = merged.entry(*site.location).or_insert(SiteReport {
                location: site.location,
                polls: 0,
                total: Duration::ZERO,
                worst: Duration::ZERO,
                slow_polls: 0,
                flagged: false,
            });
            entry.polls += site.polls.load(Ordering::Relaxed);
            entry.total += Duration::from_nanos(site.total_ns.load(Ordering::Relaxed));
            entry.worst = entry
                .worst
                .max(Duration::from_nanos(site.worst_ns.load(Ordering::Relaxed)));
            entry.slow_polls += site.slow_polls.load(Ordering::Relaxed);
            entry.flagged |= site.is_flagged();
        }
        let mut report: Vec<SiteReport> = merged.into_values().collect();
        report.sort_by(|a, b| b.total.cmp(&a.total).then(a.location.cmp(b.location)));
        report
    }
}

/// One task's poll statistics, kept locally until flushed to its site.
pub(super) struct Stats {
    site: Arc<Site>,
    threshold_ns: u64,
    polls: u32,
    total_ns: u64,
    worst_ns: u64,
}

impl Stats {
    pub(super) fn new(site: Arc<Site>, sites: &Sites) -> Self {
        Self {
            site,
            threshold_ns: sites.threshold_ns,
            polls: 0,
            total_ns: 0,
            worst_ns: 0,
        }
    }

    pub(super) fn site(&self) -> &Site {
        &self.site
    }

    /// Records one poll that took `elapsed`.
    pub(super) fn record(&mut self, elapsed: Duration, on_lane: bool) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.polls += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.worst_ns = self.worst_ns.max(ns);
        if ns > self.threshold_ns {
            self.site.slow(ns, on_lane);
        }
        if self.polls >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.polls > 0 {
            self.site.add(self);
            self.polls = 0;
            self.total_ns = 0;
            self.worst_ns = 0;
        }
    }
}

impl Drop for Stats {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the event loop knows about one spawn site (see
/// [`EventLoop::blocking_report`](super::EventLoop::blocking_report)).
///
/// The counts of a task that is still running lag by up to 64 polls; a finished task's are
/// complete.
///
/// ```
/// use brigade::EventLoop;
///
/// let lp = EventLoop::new();
/// lp.spawn(async { 1 + 1 }).result().unwrap();
/// let report = lp.blocking_report();
/// assert_eq!(report.len(), 1);
/// assert_eq!(report[0].polls, 1);
/// assert!(!report[0].flagged);
/// assert!(report[0].location.file().ends_with(".rs"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteReport {
    /// Where the tasks were spawned: the `spawn` call in the user's code.
    pub location: &'static Location<'static>,
    /// How many times tasks from this site were polled.
    pub polls: u64,
    /// Their total time inside polls.
    pub total: Duration,
    /// The longest single poll.
    pub worst: Duration,
    /// How many polls took longer than the loop's blocking threshold.
    pub slow_polls: u64,
    /// Whether the site was caught blocking: its new tasks run off the loop's workers.
    pub flagged: bool,
}

impl fmt::Debug for SiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteReport")
            .field("location", &format_args!("{}", self.location))
            .field("polls", &self.polls)
            .field("total", &self.total)
            .field("worst", &self.worst)
            .field("slow_polls", &self.slow_polls)
            .field("flagged", &self.flagged)
            .finish()
    }
}
