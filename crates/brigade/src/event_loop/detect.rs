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
use std::time::Duration;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A task adds its local counts to its site after this many polls (and when it ends).
const FLUSH_EVERY: u32 = 64;

/// How many stripes a site's counters are spread over, so that workers flushing their tasks'
/// statistics do not fight over one cache line.
const SHARDS: usize = super::stripe::STRIPES;

/// A site's counters, as one thread adds to them.
#[derive(Default)]
#[repr(align(128))] // a stripe per cache-line pair: no false sharing between stripes
struct Shard {
    polls: AtomicU64,
    total_ns: AtomicU64,
    worst_ns: AtomicU64,
}

/// One spawn site's record.
///
/// Records live as long as the process (see [`Sites::get`]): a few hundred bytes per spawn site
/// per loop, in exchange for tasks that reach theirs with no reference count to bounce
/// between the spawning thread and the workers.
pub(super) struct Site {
    location: &'static Location<'static>,
    /// The loop's threshold, kept here so that a task's statistics need not carry it.
    threshold_ns: u64,
    flagged: AtomicBool,
    slow_polls: AtomicU64,
    shards: [Shard; SHARDS],
}

impl Site {
    fn new(location: &'static Location<'static>, threshold_ns: u64) -> Self {
        Self {
            location,
            threshold_ns,
            flagged: AtomicBool::new(false),
            slow_polls: AtomicU64::new(0),
            shards: Default::default(),
        }
    }

    /// Whether a poll of one of this site's tasks has blocked the loop.
    #[inline]
    pub(super) fn is_flagged(&self) -> bool {
        // Relaxed: the flag is advice about where to run; a task that reads it a moment late
        // only runs one more poll where it was.
        self.flagged.load(Ordering::Relaxed)
    }

    #[inline]
    fn add(&self, stats: &Stats) {
        let shard = &self.shards[super::stripe::index()];
        shard
            .polls
            .fetch_add(u64::from(stats.polls), Ordering::Relaxed);
        shard.total_ns.fetch_add(stats.total_ns, Ordering::Relaxed);
        // Usually not a new worst: a plain load then spares the read-modify-write.
        if stats.worst_ns > shard.worst_ns.load(Ordering::Relaxed) {
            shard.worst_ns.fetch_max(stats.worst_ns, Ordering::Relaxed);
        }
    }

    fn sum(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .sum()
    }

    fn worst(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.worst_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// A poll took `ns`, more than the loop's threshold: flag the site, and warn the first time.
    #[cold]
    fn slow(&self, ns: u64, handed_off: bool) {
        self.slow_polls.fetch_add(1, Ordering::Relaxed);
        // Now, not at the next flush: a report taken while the task still blocks shows it.
        self.shards[super::stripe::index()]
            .worst_ns
            .fetch_max(ns, Ordering::Relaxed);
        if !handed_off && !self.flagged.swap(true, Ordering::Relaxed) {
            // Once per site, at the moment it is flagged; silent unless the program installed
            // a `tracing` subscriber. The fields let a subscriber route or count it without
            // parsing the message.
            tracing::warn!(
                target: "brigade::event_loop",
                site = %self.location,
                file = self.location.file(),
                line = self.location.line(),
                column = self.location.column(),
                poll_ms = ns as f64 / 1e6,
                threshold_ms = self.threshold_ns as f64 / 1e6,
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
    /// Which loop this is, for the per-thread cache (never reused, unlike an address).
    id: u64,
    map: Mutex<HashMap<Location<'static>, &'static Site>>,
    threshold_ns: u64,
}

thread_local! {
    /// The last site this thread looked up: spawning many tasks from one line in a row is the
    /// common case, and then a spawn takes no lock.
    static LAST: std::cell::Cell<Option<(u64, usize, &'static Site)>> =
        const { std::cell::Cell::new(None) };
}

impl Sites {
    pub(super) fn new(threshold: Duration) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            map: Mutex::new(HashMap::new()),
            threshold_ns: u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The record for `location`, created on first use.
    ///
    /// Records are leaked on purpose: a task may still be dropped on a worker after its loop's
    /// last handle is gone (shutdown does not wait), and it must still be able to flush its
    /// counts. Their number is bounded by the program's spawn sites times its loops.
    #[inline]
    pub(super) fn get(&self, location: &'static Location<'static>) -> &'static Site {
        let address = std::ptr::from_ref(location) as usize;
        if let Some((id, at, site)) = LAST.with(std::cell::Cell::get)
            && id == self.id
            && at == address
        {
            return site;
        }
        self.get_slow(location, address)
    }

    /// [`get`](Self::get) past the per-thread cache: out of line, so that the spawn path
    /// (generic, so compiled in the caller's crate) inlines only the cache check.
    #[cold]
    #[inline(never)]
    fn get_slow(&self, location: &'static Location<'static>, address: usize) -> &'static Site {
        // Keyed by value, not address: a generic function instantiated in several codegen
        // units may have a `Location` static in each, and it is still one line of code.
        let site = *self
            .map
            .lock()
            .entry(*location)
            .or_insert_with(|| Box::leak(Box::new(Site::new(location, self.threshold_ns))));
        LAST.with(|last| last.set(Some((self.id, address, site))));
        site
    }

    pub(super) fn report(&self) -> Vec<SiteReport> {
        let sites: Vec<&'static Site> = self.map.lock().values().copied().collect();
        let mut report: Vec<SiteReport> = sites
            .into_iter()
            .map(|site| SiteReport {
                location: site.location,
                polls: site.sum(|s| &s.polls),
                total: Duration::from_nanos(site.sum(|s| &s.total_ns)),
                worst: Duration::from_nanos(site.worst()),
                slow_polls: site.slow_polls.load(Ordering::Relaxed),
                flagged: site.is_flagged(),
            })
            .collect();
        report.sort_by(|a, b| b.total.cmp(&a.total).then(a.location.cmp(b.location)));
        report
    }
}

/// One task's poll statistics, kept locally until flushed to its site.
pub(super) struct Stats {
    site: &'static Site,
    polls: u32,
    total_ns: u64,
    worst_ns: u64,
}

impl Stats {
    #[inline]
    pub(super) fn new(site: &'static Site) -> Self {
        Self {
            site,
            polls: 0,
            total_ns: 0,
            worst_ns: 0,
        }
    }

    #[inline]
    pub(super) fn site(&self) -> &Site {
        self.site
    }

    /// Records one poll that took `ns` nanoseconds; `handed_off` when it ran off the worker
    /// already.
    #[inline]
    pub(super) fn record(&mut self, ns: u64, handed_off: bool) {
        self.polls += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.worst_ns = self.worst_ns.max(ns);
        if ns > self.site.threshold_ns {
            // Rare, so the extra system call is affordable: was it the task, or a busy CPU?
            let own = super::sched::own_time(ns);
            if own > self.site.threshold_ns {
                self.site.slow(ns, handed_off);
            }
        }
        if self.polls >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Adds the counts so far to the site (also done on drop).
    #[inline]
    pub(super) fn flush(&mut self) {
        if self.polls > 0 {
            self.site.add(self);
            self.polls = 0;
            self.total_ns = 0;
            self.worst_ns = 0;
        }
    }
}

impl Drop for Stats {
    #[inline]
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
    /// How many polls took longer than the loop's blocking threshold, not counting time the
    /// thread spent waiting for a CPU (on Linux; see the module docs).
    pub slow_polls: u64,
    /// Whether the site was caught blocking: its tasks' polls now hand their worker over.
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
