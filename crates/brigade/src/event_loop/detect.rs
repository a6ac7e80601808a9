//! Blocking detection: per spawn site, how long its tasks' polls take, and whether the site has
//! been caught blocking the loop.
//!
//! A spawn site is the `#[track_caller]` location of the `spawn` call. Sites are the unit of
//! decision because they are what the user wrote: the same line of code spawns tasks that
//! behave alike, so slow polls from a site predict the next task from it. A task keeps its
//! statistics locally and adds them to its site after its first poll, every [`FLUSH_EVERY`]
//! polls after that, and when it ends, so the hot path (one poll of a task) rarely touches a
//! shared cache line; a slow poll is reported at once, because that is the moment the site
//! may have to be flagged.
//!
//! # When a site is flagged
//!
//! Not on any slow poll: when slow polls are at least a [quarter](SLOW_SHARE) of the site's
//! recent polls (the rule the auto pool's classifier applies to futures). A site whose polls
//! all block is flagged at its first slow poll (one of one), and one that had been quick for
//! a long time within a few (the share is over a window of about [`WINDOW`] polls, not over
//! its whole life). What the rule keeps out is the outlier: many connections opening at once
//! (the `io-slow-many` benchmark: a thousand tasks, each first poll a `connect`), where a
//! couple of first polls stall for just over the threshold, asleep in the kernel on a lock
//! that another of the process's threads held while preempted, and both workers at the same
//! moment. That site is asynchronous; flagging it handed every poll of its thousand running
//! tasks to `block_in_place` (each then slower than the threshold itself) and sent every
//! later task to the blocking lane. A task's first poll is flushed at once so that such a
//! burst's quick first polls are counted by the time one of them stalls.
//!
//! A poll that holds its worker for [`SEVERE`] thresholds or more flags its site at once,
//! whatever the share: the share rule is there to forgive a stall of about one threshold, not
//! a site that blocks the loop for half a second now and then.

use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::time::Duration;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A site's recent polls, decayed, as of its last slow poll: touched only by slow polls.
#[derive(Default)]
struct Recent {
    /// The site's poll count (all shards) when this was last brought up to date.
    seen: u64,
    polls: f64,
    slow: f64,
}

impl Recent {
    /// Brings the window up to `polls_now` (the site's count, this slow poll included) and adds
    /// the slow poll; returns the share of slow polls in the window.
    fn slow_poll(&mut self, polls_now: u64) -> f64 {
        let keep = 1.0 - 1.0 / WINDOW;
        // Polls since the last slow poll, this one included. Zero when a concurrent slow poll
        // already counted this one among its quick polls: then it is only added as slow.
        let new = polls_now.saturating_sub(self.seen);
        self.seen = self.seen.max(polls_now);
        let faded = keep.powi(i32::try_from(new).unwrap_or(i32::MAX));
        // The `new` polls weigh 1, keep, keep², ... (a geometric sum); this slow one, the
        // latest of them, weighs 1.
        self.polls = self.polls * faded + (1.0 - faded) * WINDOW;
        self.slow = self.slow * faded + 1.0;
        self.slow / self.polls.max(1.0)
    }
}

/// A task adds its local counts to its site after its first poll, then after this many polls
/// (and when it ends).
const FLUSH_EVERY: u8 = 64;

/// A site is flagged when slow polls are at least this share of its recent polls. (The auto
/// pool's classifier uses the same quarter; see the module docs for the burst it keeps out.)
const SLOW_SHARE: f64 = 0.25;

/// A poll that holds its worker for this many thresholds flags its site whatever the share: a
/// site that blocks the loop for half a second now and then, among many quick polls, is as
/// harmful as one that blocks on every poll. (The burst the share keeps out stalls for just
/// over one threshold.)
const SEVERE: u64 = 5;

/// How many recent polls the share is taken over, roughly: each poll weighs `1 - 1/WINDOW` of
/// the one after it. Short enough that a site with a long quick history that starts blocking
/// on every poll is flagged at its fifth slow poll (1 - (15/16)^5 > 1/4); long enough that two
/// stalls at once (one per worker on the benchmark's machine) among quick polls are not.
const WINDOW: f64 = 16.0;

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
    recent: Mutex<Recent>,
    shards: [Shard; SHARDS],
}

impl Site {
    fn new(location: &'static Location<'static>, threshold_ns: u64) -> Self {
        Self {
            location,
            threshold_ns,
            flagged: AtomicBool::new(false),
            slow_polls: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
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
    fn add(&self, polls: u64, total_ns: u64, worst_ns: u64) {
        let shard = &self.shards[super::stripe::index()];
        shard.polls.fetch_add(polls, Ordering::Relaxed);
        shard.total_ns.fetch_add(total_ns, Ordering::Relaxed);
        // Usually not a new worst: a plain load then spares the read-modify-write.
        if worst_ns > shard.worst_ns.load(Ordering::Relaxed) {
            shard.worst_ns.fetch_max(worst_ns, Ordering::Relaxed);
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

    /// A poll took `ns`, more than the loop's threshold (and its task's counts, this poll
    /// included, are flushed): flag the site if slow polls are now a quarter of its recent
    /// polls, or if this one took [`SEVERE`] thresholds, and warn the first time.
    #[cold]
    fn slow(&self, ns: u64, handed_off: bool) {
        self.slow_polls.fetch_add(1, Ordering::Relaxed);
        // Now, not at the next flush: a report taken while the task still blocks shows it.
        self.shards[super::stripe::index()]
            .worst_ns
            .fetch_max(ns, Ordering::Relaxed);
        // A handed-off poll ran off the workers: its site is flagged already (or it is on the
        // lane), and it stalled nothing.
        if handed_off || self.is_flagged() {
            return;
        }
        // Other tasks' polls since their last flush are not in the sum yet: the share errs
        // towards flagging, by at most `FLUSH_EVERY - 1` polls per running task.
        let share = self.recent.lock().slow_poll(self.sum(|s| &s.polls));
        if share < SLOW_SHARE && ns < self.threshold_ns.saturating_mul(SEVERE) {
            return;
        }
        if !self.flagged.swap(true, Ordering::Relaxed) {
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

/// One task's poll statistics, kept locally until flushed to its site (which the caller
/// passes in: the task keeps it beside these).
///
/// Twelve bytes: the task's cell, where they are kept, must stay within glibc's 128-byte
/// fast bins (a 144-byte cell measured `tiny-async` at 0.74× tokio against 0.98×). A window's
/// total stays within `u32` nanoseconds (4.3 s): a poll that would overflow it flushes the
/// window first, and a single poll that long goes to the site by itself.
#[derive(Default)]
pub(super) struct Stats {
    total_ns: u32,
    worst_ns: u32,
    polls: u8,
    /// Flush when `polls` reaches this: 1 until the first flush (a task's first poll counts
    /// at once, see the module docs), then [`FLUSH_EVERY`]; 0 before the first poll.
    flush_at: u8,
}

impl Stats {
    #[inline]
    pub(super) fn new() -> Self {
        Self {
            flush_at: 1,
            ..Self::default()
        }
    }

    /// Whether no poll has been recorded yet.
    #[inline]
    pub(super) fn is_fresh(&self) -> bool {
        self.flush_at == 1 && self.polls == 0
    }

    /// Records one poll that took `ns` nanoseconds; `handed_off` when it ran off the worker
    /// already.
    ///
    /// Inlined into the driver's poll, with the long-poll case out of line: a call here cost a
    /// task ~20 instructions of saved and restored registers under callgrind.
    #[inline(always)]
    pub(super) fn record(&mut self, site: &Site, ns: u64, handed_off: bool) {
        match u32::try_from(ns)
            .ok()
            .and_then(|ns| Some((ns, self.total_ns.checked_add(ns)?)))
        {
            Some((ns, total)) => {
                self.polls += 1;
                self.total_ns = total;
                self.worst_ns = self.worst_ns.max(ns);
            }
            None => self.record_wide(site, ns),
        }
        if ns > site.threshold_ns {
            self.long_poll(site, ns, handed_off);
        }
        if self.polls >= self.flush_at {
            self.flush(site);
        }
    }

    /// A poll that does not fit the window's `u32` total: the window so far goes to the site,
    /// then this poll by itself.
    #[cold]
    #[inline(never)]
    fn record_wide(&mut self, site: &Site, ns: u64) {
        self.flush(site);
        site.add(1, ns, ns);
        self.flush_at = FLUSH_EVERY;
    }

    /// A poll longer than the threshold, wall time: was it the task, or a busy CPU? Rare, so
    /// the extra system call is affordable.
    #[cold]
    #[inline(never)]
    fn long_poll(&mut self, site: &Site, ns: u64, handed_off: bool) {
        if super::sched::own_time(ns) > site.threshold_ns {
            // The site's share must count this poll and the task's earlier ones.
            self.flush(site);
            site.slow(ns, handed_off);
        }
    }

    /// Adds the counts so far to the site (the task does when it ends, too).
    #[inline]
    pub(super) fn flush(&mut self, site: &Site) {
        if self.polls > 0 {
            site.add(
                u64::from(self.polls),
                u64::from(self.total_ns),
                u64::from(self.worst_ns),
            );
            self.polls = 0;
            self.flush_at = FLUSH_EVERY;
            self.total_ns = 0;
            self.worst_ns = 0;
        }
    }
}

/// What the event loop knows about one spawn site (see
/// [`EventLoop::blocking_report`](super::EventLoop::blocking_report)).
///
/// The counts of a task that is still running lag by up to 63 polls; a finished task's are
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The share after `quick` quick polls and then `slow` slow ones in a row.
    fn share_after(quick: u64, slow: u64) -> f64 {
        let mut recent = Recent::default();
        let mut share = 0.0;
        for i in 1..=slow {
            share = recent.slow_poll(quick + i);
        }
        share
    }

    /// A site with a threshold no poll here reaches (so nothing is flagged or slow).
    fn quiet_site() -> Site {
        Site::new(Location::caller(), u64::MAX)
    }

    fn totals(site: &Site) -> (u64, u64, u64) {
        (
            site.sum(|s| &s.polls),
            site.sum(|s| &s.total_ns),
            site.worst(),
        )
    }

    #[test]
    fn the_first_poll_counts_at_once_then_every_window() {
        let site = quiet_site();
        let mut stats = Stats::new();
        assert!(stats.is_fresh());
        stats.record(&site, 1_000, false);
        assert!(!stats.is_fresh());
        assert_eq!(totals(&site), (1, 1_000, 1_000));
        for _ in 0..u64::from(FLUSH_EVERY) - 1 {
            stats.record(&site, 10, false);
        }
        assert_eq!(
            totals(&site).0,
            1,
            "a window is not flushed before it is full"
        );
        stats.record(&site, 10, false);
        assert_eq!(totals(&site), (65, 1_640, 1_000));
        stats.record(&site, 7, false);
        stats.flush(&site);
        assert_eq!(totals(&site), (66, 1_647, 1_000));
    }

    #[test]
    fn polls_past_a_u32_window_keep_every_nanosecond() {
        let site = quiet_site();
        let mut stats = Stats::new();
        stats.record(&site, 1, false);
        // Three polls of 2 s: the window's u32 total would overflow at the third.
        for _ in 0..3 {
            stats.record(&site, 2_000_000_000, false);
        }
        // One poll longer than a u32 holds goes to the site by itself.
        stats.record(&site, 5_000_000_000, false);
        stats.flush(&site);
        assert_eq!(totals(&site), (5, 11_000_000_001, 5_000_000_000));
    }

    #[test]
    fn the_share_is_over_recent_polls() {
        // A site whose first poll is slow is all slow.
        assert_eq!(share_after(0, 1), 1.0);
        // Two stalls after a burst's thirty quick first polls: an outlier.
        assert!(share_after(30, 2) < SLOW_SHARE);
        // However long the quick history, the fifth blocking poll in a row flags the site at
        // the latest (after a long one, not the fourth).
        for quick in [16, 1_000, 1_000_000_000] {
            assert!(share_after(quick, 5) >= SLOW_SHARE, "{quick}");
        }
        assert!(share_after(1_000, 4) < SLOW_SHARE);
        // One slow poll in two is a blocking site.
        let mut recent = Recent::default();
        let share = (1..=20).map(|i| recent.slow_poll(2 * i)).last().unwrap();
        assert!(share >= 0.45, "{share}");
    }

    #[test]
    fn a_slow_poll_already_counted_by_a_concurrent_one_still_counts_as_slow() {
        let mut recent = Recent::default();
        recent.slow_poll(10);
        // The other slow poll's flush came first, and the first evaluation saw both polls.
        let before = recent.slow;
        recent.slow_poll(10);
        assert_eq!(recent.slow, before + 1.0);
    }
}
