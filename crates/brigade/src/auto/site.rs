//! Per call site: where its work runs now, how often it is sampled, and what it has done.
//!
//! A call site is the `#[track_caller]` location of `submit` or `spawn`: the same line of
//! code submits work that behaves alike, so what the last calls did predicts the next. The
//! hot path of a call reads two relaxed atomics here (the route and the sampling mask) and
//! touches nothing shared unless the call is sampled; the classifier's state sits behind a
//! lock taken once per sampled call.
//!
//! # How often a call is sampled
//!
//! A probe (CPU time, switches, wait for a core) costs about 3–4 µs all told. Every call of a
//! site is probed until the site is placed; after that, one call in N, with N the power of two
//! that keeps probing under ~1 % of the site's time (N = 1 for calls of 400 µs and more, up to
//! [`MAX_PERIOD`] for tiny calls). Calls of a site whose calls take 20 µs or more also read the
//! wall clock (2 × ~30 ns), and one that takes four times the site's typical duration makes
//! the next calls probed again. After a shorter call, the thread reads only the coarse clock
//! (~5 ns), which moves once per scheduler tick: if it moved since the thread's last call ended,
//! this call may have crossed a tick, and the next calls are probed. So a tiny site that starts
//! blocking is seen within a call or a few; a busy thread pays an extra probe at most once per
//! tick. The sampling never stops: that is the occasional probe that keeps a placed site
//! from being locked in.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::Location;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::classify::{Calls, Decision, Lane, Polls, Sample};
use super::probe;
use super::report::{Move, SiteReport, Work};
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// The longest sampling period: at least one call in this many is probed.
pub(crate) const MAX_PERIOD: u32 = 1024;
/// What a probe costs, all told, in ns (measured on the development VM, rounded up).
const PROBE_COST_NS: u64 = 4_000;
/// Sites whose calls take at least this long read the wall clock around every call.
const TIMED_NS: u64 = 20_000;
/// Calls known to be at least this long read the wait for a core at their start too.
const PRECISE_NS: u64 = 500_000;

/// Where a site's work goes now (the `route` atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Not placed yet: every call is probed.
    New,
    To(Lane),
}

impl Route {
    /// The lane, once placed.
    pub(crate) fn lane(self) -> Option<Lane> {
        match self {
            Route::New => None,
            Route::To(lane) => Some(lane),
        }
    }

    fn encode(self) -> u8 {
        match self {
            Route::New => 0,
            Route::To(Lane::Compute) => 1,
            Route::To(Lane::Blocking) => 2,
            Route::To(Lane::Loop) => 3,
        }
    }

    fn decode(v: u8) -> Self {
        match v {
            1 => Route::To(Lane::Compute),
            2 => Route::To(Lane::Blocking),
            3 => Route::To(Lane::Loop),
            _ => Route::New,
        }
    }
}

/// The classifier for the kind of work the site submits.
#[derive(Debug, Clone)]
enum Classifier {
    Calls(Calls),
    Polls(Polls),
}

#[derive(Debug)]
struct State {
    classifier: Classifier,
    moves: Vec<Move>,
    samples: u64,
    cpu_ns: u64,
    wall_ns: u64,
    /// Probed calls or polls by the lane they ran on: compute, blocking, loop.
    ran: [u64; 3],
}

/// Wall-time histogram: quarter-octave buckets from 1 ns to ~18 minutes, for p50/p99.
struct Histogram([AtomicU64; BUCKETS]);

const BUCKETS: usize = 160;

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < 4 {
            return ns as usize;
        }
        let log = 63 - ns.leading_zeros() as usize;
        let quarter = ((ns >> (log - 2)) & 3) as usize;
        (log * 4 + quarter).min(BUCKETS - 1)
    }

    /// The middle of a bucket's range.
    fn value(bucket: usize) -> f64 {
        if bucket < 4 {
            return bucket as f64;
        }
        let (log, quarter) = (bucket / 4, bucket % 4);
        let low = (1u64 << log) as f64 * (1.0 + quarter as f64 / 4.0);
        low * (1.0 + 1.0 / 8.0 / (1.0 + quarter as f64 / 4.0))
    }

    fn add(&self, ns: u64) {
        self.0[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    fn quantiles(&self, qs: [f64; 2]) -> Option<[Duration; 2]> {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        Some(qs.map(|q| {
            let rank = ((total as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            let bucket = counts
                .iter()
                .position(|&c| {
                    seen += c;
                    seen >= rank
                })
                .unwrap_or(BUCKETS - 1);
            Duration::from_nanos(Self::value(bucket) as u64)
        }))
    }
}

/// One call site's record. Leaked on purpose (see [`Sites::get`]).
pub(crate) struct Site {
    pub(crate) location: &'static Location<'static>,
    pub(crate) work: Work,
    epoch: Instant,
    // Read on every call: one line, rarely written.
    route: AtomicU8,
    /// The lane a hint pinned this site's last call to, for the report (0: none).
    hint: AtomicU8,
    /// A call is probed when a per-thread random number has these bits clear.
    period_mask: AtomicU32,
    /// Typical wall time of a call (a decayed mean, updated racily: advice only).
    typical_ns: AtomicU64,
    /// When the blocking lane last saw one of this site's calls asleep (ns since `epoch`,
    /// 0: never): such a call gets a thread at once, before the site is placed.
    seen_waiting_ns: AtomicU64,
    /// Written by every call: kept off the line above.
    calls: CachePadded<AtomicU64>,
    panics: AtomicU64,
    histogram: Histogram,
    state: Mutex<State>,
}

impl Site {
    fn new(location: &'static Location<'static>, work: Work, epoch: Instant) -> Self {
        let classifier = match work {
            Work::Calls => Classifier::Calls(Calls::default()),
            Work::Futures => Classifier::Polls(Polls::default()),
        };
        let route = match work {
            Work::Calls => Route::New,
            Work::Futures => Route::To(Lane::Loop),
        };
        Self {
            location,
            work,
            epoch,
            route: AtomicU8::new(route.encode()),
            hint: AtomicU8::new(0),
            // A new closure site is probed at every call until placed. A future's site starts
            // on the loop, where every poll is timed anyway: its polls are probed 1 in
            // MAX_PERIOD until one is long.
            period_mask: AtomicU32::new(match work {
                Work::Calls => 0,
                Work::Futures => MAX_PERIOD - 1,
            }),
            typical_ns: AtomicU64::new(0),
            seen_waiting_ns: AtomicU64::new(0),
            calls: CachePadded::new(AtomicU64::new(0)),
            panics: AtomicU64::new(0),
            histogram: Histogram(std::array::from_fn(|_| AtomicU64::new(0))),
            state: Mutex::new(State {
                classifier,
                moves: Vec::new(),
                samples: 0,
                cpu_ns: 0,
                wall_ns: 0,
                ran: [0; 3],
            }),
        }
    }

    /// Where the site's work goes now.
    #[inline]
    pub(crate) fn route(&self) -> Route {
        // Relaxed: advice about where to run; a call that reads it late runs once more where
        // the last ones ran.
        Route::decode(self.route.load(Ordering::Relaxed))
    }

    /// Counts a call (or a spawn). A load and a store rather than an atomic add (which costs
    /// a locked instruction on every call): exact when one thread submits from the site, an
    /// undercount when several race — the count is for the report, not for decisions.
    #[inline]
    pub(crate) fn count_call(&self) {
        let calls = self.calls.load(Ordering::Relaxed);
        self.calls.store(calls + 1, Ordering::Relaxed);
    }

    pub(crate) fn note_hint(&self, lane: Lane) {
        self.hint.store(Route::To(lane).encode(), Ordering::Relaxed);
    }

    pub(crate) fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// How this call is to be measured: probed, timed (wall clock only), or not at all.
    #[inline]
    pub(crate) fn measure(&self) -> Measure {
        let mask = self.period_mask.load(Ordering::Relaxed);
        if mask == 0 || probe::coin(mask) {
            Measure::Probe {
                precise: self.typical_ns.load(Ordering::Relaxed) >= PRECISE_NS,
            }
        } else if self.typical_ns.load(Ordering::Relaxed) >= TIMED_NS {
            Measure::Time
        } else {
            Measure::Tick
        }
    }

    /// A call measured with the coarse clock saw a tick pass: probe the next calls.
    #[cold]
    pub(crate) fn ticked(&self) {
        self.period_mask.store(0, Ordering::Relaxed);
    }

    /// Records the wall time of a call that was timed but not probed.
    pub(crate) fn timed(&self, wall_ns: u64) {
        self.histogram.add(wall_ns);
        let typical = self.typical_ns.load(Ordering::Relaxed);
        if wall_ns > typical.saturating_mul(4) && wall_ns >= TIMED_NS {
            // A surprise: probe the next calls until the classifier has seen what changed.
            self.period_mask.store(0, Ordering::Relaxed);
        }
        self.update_typical(typical, wall_ns);
    }

    fn update_typical(&self, typical: u64, wall_ns: u64) {
        // A decayed mean, 1/8 per call; racy on purpose (a lost update is harmless advice).
        let next = if typical == 0 {
            wall_ns
        } else {
            typical - typical / 8 + wall_ns / 8
        };
        self.typical_ns.store(next, Ordering::Relaxed);
    }

    /// Sets the sampling period from the typical duration (see the module docs).
    fn set_period(&self, typical: u64) {
        let want = PROBE_COST_NS * 100 / typical.max(1);
        let period = u32::try_from(want)
            .unwrap_or(MAX_PERIOD)
            .clamp(1, MAX_PERIOD)
            .next_power_of_two();
        self.period_mask.store(period - 1, Ordering::Relaxed);
    }

    /// Records a probed call or long poll that ran on `ran`; applies the move it causes.
    /// `poll`: the sample is one poll of a future (else a whole call).
    pub(crate) fn probed(&self, sample: &Sample, ran: Lane) {
        self.histogram.add(sample.wall_ns);
        let typical = self.typical_ns.load(Ordering::Relaxed);
        self.update_typical(typical, sample.wall_ns);
        let mut state = self.state.lock();
        state.samples += 1;
        // A tiny call's CPU time includes a share of the clock reads themselves.
        state.cpu_ns = state
            .cpu_ns
            .saturating_add(sample.cpu_ns.min(sample.wall_ns));
        state.wall_ns = state.wall_ns.saturating_add(sample.wall_ns);
        state.ran[lane_index(ran)] += 1;
        let decision = match &mut state.classifier {
            Classifier::Calls(c) => c.observe(sample),
            Classifier::Polls(p) => p.probed(sample),
        };
        self.apply(&mut state, decision);
        let poll_mask = Self::poll_mask(&state);
        drop(state);
        match poll_mask {
            Some(mask) => self.period_mask.store(mask, Ordering::Relaxed),
            None if self.route() != Route::New => {
                self.set_period(self.typical_ns.load(Ordering::Relaxed));
            }
            None => {}
        }
    }

    /// A future's site probes every poll while long polls are more than a few of its recent
    /// ones (their kind needs their CPU time), and 1 in [`MAX_PERIOD`] otherwise: its polls'
    /// wall time is read anyway. (Its polls are too unlike each other for `set_period`: a
    /// long poll is often followed by a short one, which would set the period back.)
    /// `None` for a closure site.
    fn poll_mask(state: &State) -> Option<u32> {
        match &state.classifier {
            Classifier::Polls(p) if p.long_share() >= Polls::LONG_SHARE / 4.0 => Some(0),
            Classifier::Polls(_) => Some(MAX_PERIOD - 1),
            Classifier::Calls(_) => None,
        }
    }

    /// A future's poll that took `wall_ns` and was long, but not probed.
    pub(crate) fn long_poll(&self, own_ns: u64) {
        self.histogram.add(own_ns);
        // Probe the next polls: the kind of a long poll needs its CPU time.
        self.period_mask.store(0, Ordering::Relaxed);
        let mut state = self.state.lock();
        let decision = match &mut state.classifier {
            Classifier::Polls(p) => p.long(own_ns),
            Classifier::Calls(_) => None,
        };
        self.apply(&mut state, decision);
    }

    /// `n` short polls, `own_ns` in all, of one of this site's futures.
    pub(crate) fn short_polls(&self, n: u32, own_ns: u64) {
        let mut state = self.state.lock();
        let decision = match &mut state.classifier {
            Classifier::Polls(p) => p.short(n, own_ns),
            Classifier::Calls(_) => None,
        };
        self.apply(&mut state, decision);
        let mask = Self::poll_mask(&state);
        drop(state);
        if let Some(mask) = mask {
            self.period_mask.store(mask, Ordering::Relaxed);
        }
    }

    fn apply(&self, state: &mut State, decision: Option<Decision>) {
        let Some(decision) = decision else { return };
        let reason = decision.why.to_string();
        let calls = self.calls.load(Ordering::Relaxed);
        let at = self.epoch.elapsed();
        let from = decision.from;
        tracing::info!(
            site = %self.location,
            from = from.map_or("new", Lane::as_str),
            to = decision.to.as_str(),
            calls,
            reason = %reason,
            "brigade auto: work submitted at {} now runs on the {} lane",
            self.location,
            decision.to,
        );
        self.route
            .store(Route::To(decision.to).encode(), Ordering::Relaxed);
        let samples = state.samples;
        state.moves.push(Move {
            at,
            calls,
            samples,
            from,
            to: decision.to,
            reason,
        });
    }

    /// The blocking lane saw one of this site's calls asleep.
    pub(crate) fn seen_waiting(&self) {
        let now = nanos_since(self.epoch).max(1);
        self.seen_waiting_ns.store(now, Ordering::Relaxed);
    }

    /// Whether this site's calls are known to sleep: placed on the blocking lane, or seen
    /// asleep there in the last second.
    pub(crate) fn waits(&self) -> bool {
        if self.route() == Route::To(Lane::Blocking) {
            return true;
        }
        let seen = self.seen_waiting_ns.load(Ordering::Relaxed);
        seen != 0 && nanos_since(self.epoch).saturating_sub(seen) < 1_000_000_000
    }

    pub(crate) fn report(&self) -> SiteReport {
        let state = self.state.lock();
        let [p50, p99] = self
            .histogram
            .quantiles([0.5, 0.99])
            .unwrap_or([Duration::ZERO; 2]);
        let lane = self.route().lane();
        let hint = Route::decode(self.hint.load(Ordering::Relaxed)).lane();
        let panics = self.panics.load(Ordering::Relaxed);
        let mut suggestion = None;
        if panics > 0 {
            let mut s = String::new();
            let _ = write!(
                s,
                "{panics} task(s) panicked: if a failure here can be worse than a panic \
                 (a crash, an abort, a leak), submit it to a ProcessPool for isolation"
            );
            suggestion = Some(s);
        }
        SiteReport {
            location: self.location,
            work: self.work,
            lane,
            hint,
            calls: self.calls.load(Ordering::Relaxed),
            samples: state.samples,
            cpu_ratio: if state.wall_ns > 0 {
                state.cpu_ns as f64 / state.wall_ns as f64
            } else {
                0.0
            },
            p50,
            p99,
            ran_on: [
                (Lane::Compute, state.ran[0]),
                (Lane::Blocking, state.ran[1]),
                (Lane::Loop, state.ran[2]),
            ],
            moves: state.moves.clone(),
            panics,
            suggestion,
        }
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Compute => 0,
        Lane::Blocking => 1,
        Lane::Loop => 2,
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    probe::nanos(epoch.elapsed())
}

/// How one call is measured (see [`Site::measure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// CPU time, switches, wait for a core.
    Probe { precise: bool },
    /// Wall time.
    Time,
    /// Whether a scheduler tick passed since the thread's last call (the coarse clock).
    Tick,
}

/// The sites of one auto pool.
pub(crate) struct Sites {
    /// Which pool this is, for the per-thread cache (never reused, unlike an address).
    id: u64,
    epoch: Instant,
    map: Mutex<HashMap<(Location<'static>, Work), &'static Site>>,
}

thread_local! {
    /// The last site this thread looked up: submitting many tasks from one line in a row is
    /// the common case, and then finding the site takes no lock.
    static LAST: std::cell::Cell<Option<(u64, usize, Work, &'static Site)>> =
        const { std::cell::Cell::new(None) };
}

impl Sites {
    pub(crate) fn new() -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            epoch: Instant::now(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The record for `location`, created on first use.
    ///
    /// Records are leaked on purpose: a call may still finish on a lane thread after the
    /// pool's last handle is gone, and it must still be able to record itself. Their number
    /// is bounded by the program's call sites times its auto pools.
    #[inline]
    pub(crate) fn get(&self, location: &'static Location<'static>, work: Work) -> &'static Site {
        let address = std::ptr::from_ref(location) as usize;
        if let Some((id, at, w, site)) = LAST.with(std::cell::Cell::get)
            && id == self.id
            && at == address
            && w == work
        {
            return site;
        }
        self.get_slow(location, address, work)
    }

    #[cold]
    fn get_slow(
        &self,
        location: &'static Location<'static>,
        address: usize,
        work: Work,
    ) -> &'static Site {
        // Keyed by value, not address: a generic function instantiated in several codegen
        // units may have a `Location` static in each, and it is still one line of code.
        let site = *self
            .map
            .lock()
            .entry((*location, work))
            .or_insert_with(|| Box::leak(Box::new(Site::new(location, work, self.epoch))));
        LAST.with(|last| last.set(Some((self.id, address, work, site))));
        site
    }

    pub(crate) fn all(&self) -> Vec<&'static Site> {
        self.map.lock().values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let h = Histogram(std::array::from_fn(|_| AtomicU64::new(0)));
        for _ in 0..98 {
            h.add(1_000_000);
        }
        h.add(50_000_000);
        h.add(50_000_000);
        let [p50, p99] = h.quantiles([0.5, 0.99]).unwrap();
        let near = |d: Duration, ns: f64| (d.as_nanos() as f64 / ns - 1.0).abs() < 0.15;
        assert!(near(p50, 1e6), "{p50:?}");
        assert!(near(p99, 5e7), "{p99:?}");
        for ns in [0, 3, 4, 7, 1000, 1 << 40, u64::MAX] {
            assert!(Histogram::bucket(ns) < BUCKETS);
        }
    }

    #[test]
    fn a_future_site_with_frequent_long_polls_probes_every_poll() {
        // Each task: one long poll (not probed: it made the next one probed), then a short one.
        // The short one must not set the period back, or the long ones are never probed and
        // their kind never known.
        let site = Site::new(Location::caller(), Work::Futures, Instant::now());
        assert_eq!(site.period_mask.load(Ordering::Relaxed), MAX_PERIOD - 1);
        let short = Sample {
            wall_ns: 40_000,
            cpu_ns: 40_000,
            ..Sample::default()
        };
        for _ in 0..8 {
            site.long_poll(3_000_000);
            site.probed(&short, Lane::Loop);
            assert_eq!(site.period_mask.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn the_sampling_period_follows_the_typical_duration() {
        let site = Site::new(Location::caller(), Work::Calls, Instant::now());
        site.set_period(1_000_000);
        assert_eq!(site.period_mask.load(Ordering::Relaxed), 0);
        site.set_period(100);
        assert_eq!(site.period_mask.load(Ordering::Relaxed), MAX_PERIOD - 1);
        site.set_period(100_000);
        assert_eq!(site.period_mask.load(Ordering::Relaxed), 3);
        // A surprise makes the next calls probed.
        site.typical_ns.store(30_000, Ordering::Relaxed);
        site.timed(10_000_000);
        assert_eq!(site.period_mask.load(Ordering::Relaxed), 0);
    }
}
