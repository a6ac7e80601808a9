//! Telling a poll that blocked from a poll that was merely preempted.
//!
//! A poll's wall time counts every moment the operating system ran something else on its CPU.
//! On a busy machine (more runnable threads than cores) a perfectly asynchronous poll can take
//! longer than the blocking threshold, and flagging its site would be a false alarm. Linux
//! keeps, per thread, the total time it spent runnable but waiting for a CPU (the second field
//! of `/proc/thread-self/schedstat`). A slow poll's wall time minus the waiting that happened
//! during it is what the task itself spent: that is what the threshold is held against.
//!
//! Reading the file costs a system call, so it is not read around every poll: a worker
//! samples it at the start of a poll when its last sample is older than [`SAMPLE_EVERY_NS`], and
//! reads it again only at the end of a poll that was slow. The waiting between the sample and
//! the poll's start (at most `SAMPLE_EVERY_NS`) is counted as if it happened during the poll,
//! which errs towards not flagging by at most that much. Elsewhere than Linux, or where the file
//! cannot be read, nothing is subtracted.
//!
//! Every poll reads the clock twice, so the stopwatch is the cheapest monotonic counter there is
//! ([`Stopwatch`]): the CPU's time-stamp counter where it is invariant, read and scaled by
//! `quanta` (its calibration against the monotonic clock runs once per process, when the first
//! loop is built: 40–600 µs). On the 2-core VM the benchmarks run on, `clock_gettime` cost
//! 46–53 ns a call and a raw counter read 20–23 ns: the two reads were a third of what a
//! spawned no-op task costs tokio in all. Elsewhere quanta falls back to the monotonic clock,
//! in nanoseconds. Stamps are compared only through [`Stopwatch::elapsed_ns`], which scales their
//! difference; a stamp is never a point in time the user sees.

use std::sync::OnceLock;

/// How stale a worker's sample may be at the start of a poll, in nanoseconds.
const SAMPLE_EVERY_NS: u64 = 1_000_000;

/// The stopwatch, and how many of its ticks make [`SAMPLE_EVERY_NS`].
pub(super) struct Stopwatch {
    clock: quanta::Clock,
    sample_every: u64,
}

static STOPWATCH: OnceLock<Stopwatch> = OnceLock::new();

/// The process's stopwatch. A poll fetches it once and reads it twice.
#[inline]
pub(super) fn stopwatch() -> &'static Stopwatch {
    match STOPWATCH.get() {
        Some(stopwatch) => stopwatch,
        None => calibrate(),
    }
}

/// Calibrates the stopwatch (building a loop does, so that no poll pays for it).
#[cold]
#[inline(never)]
pub(super) fn calibrate() -> &'static Stopwatch {
    STOPWATCH.get_or_init(|| {
        let clock = quanta::Clock::new();
        // Ticks per `SAMPLE_EVERY_NS`, from the scale of a span long enough (2^24 ticks) for
        // the integer division to be exact to a few parts in a million.
        const SPAN: u64 = 1 << 24;
        let span_ns = clock.delta_as_nanos(0, SPAN).max(1);
        let sample_every =
            u64::try_from(u128::from(SAMPLE_EVERY_NS) * u128::from(SPAN) / u128::from(span_ns))
                .unwrap_or(u64::MAX);
        Stopwatch {
            clock,
            sample_every,
        }
    })
}

impl Stopwatch {
    /// A reading, for [`elapsed_ns`](Self::elapsed_ns) (ticks, not nanoseconds).
    #[inline]
    pub(super) fn stamp(&self) -> u64 {
        self.clock.raw()
    }

    /// Nanoseconds from `start` to `end` (two [`stamp`](Self::stamp)s); 0 if `end` is not
    /// later (a counter read on two CPUs whose counters disagree).
    #[inline]
    pub(super) fn elapsed_ns(&self, start: u64, end: u64) -> u64 {
        self.clock.delta_as_nanos(start, end)
    }

    /// Called at the start of each poll, with the [`stamp`](Self::stamp) already read for it.
    #[inline]
    pub(super) fn poll_starts(&self, now: u64) {
        imp::sample_if_stale(now, self.sample_every);
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    struct Probe {
        /// `None` once the file proved unreadable: then nothing is sampled again.
        file: Option<File>,
        /// When the last sample was taken (a [`Stopwatch::stamp`](super::Stopwatch::stamp));
        /// `None` before the first.
        sampled_at: Option<u64>,
        waited_ns: u64,
    }

    thread_local! {
        static PROBE: RefCell<Probe> = RefCell::new(Probe {
            file: File::open("/proc/thread-self/schedstat").ok(),
            sampled_at: None,
            waited_ns: 0,
        });
    }

    /// The thread's total time spent waiting for a CPU, in nanoseconds.
    fn read(file: &File) -> Option<u64> {
        let mut buf = [0u8; 96];
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        text.split_ascii_whitespace().nth(1)?.parse().ok()
    }

    thread_local! {
        /// When this thread's sample goes stale (a [`Stopwatch::stamp`](super::Stopwatch::stamp));
        /// `u64::MAX` once the file proved unreadable. Kept apart from the probe, in a
        /// const-initialized `Cell`, so that the per-poll check is one load and one comparison.
        static DUE: Cell<u64> = const { Cell::new(0) };
    }

    #[inline]
    pub(super) fn sample_if_stale(now: u64, every: u64) {
        if now < DUE.with(Cell::get) {
            return;
        }
        sample(now, every);
    }

    #[cold]
    fn sample(now: u64, every: u64) {
        PROBE.with(|probe| {
            let mut probe = probe.borrow_mut();
            match probe.file.as_ref().map(read) {
                Some(Some(waited)) => {
                    probe.sampled_at = Some(now);
                    probe.waited_ns = waited;
                    DUE.with(|due| due.set(now.saturating_add(every)));
                }
                Some(None) | None => {
                    probe.file = None;
                    DUE.with(|due| due.set(u64::MAX));
                }
            }
        });
    }

    pub(super) fn waited_since_sample() -> Option<u64> {
        PROBE.with(|probe| {
            let probe = probe.borrow();
            probe.sampled_at?;
            let now = read(probe.file.as_ref()?)?;
            Some(now.saturating_sub(probe.waited_ns))
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn sample_if_stale(_now: u64, _every: u64) {}

    pub(super) fn waited_since_sample() -> Option<u64> {
        None
    }
}

/// For a poll that took `elapsed_ns` (wall time): how much of it the task itself spent, with
/// the time the thread waited for a CPU taken out, where the system says.
pub(super) fn own_time(elapsed_ns: u64) -> u64 {
    match imp::waited_since_sample() {
        Some(waited) => elapsed_ns.saturating_sub(waited),
        None => elapsed_ns,
    }
}

#[cfg(all(test, target_os = "linux", not(brigade_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sleeping_poll_keeps_its_time_and_the_probe_reads_the_file() {
        let watch = stopwatch();
        let start = watch.stamp();
        let wall = std::time::Instant::now();
        watch.poll_starts(start);
        std::thread::sleep(Duration::from_millis(30));
        // Sleeping is not waiting for a CPU: all of it is the poll's own.
        let own = own_time(watch.elapsed_ns(start, watch.stamp()));
        assert!(own >= 20_000_000, "{own}");
        // The stopwatch agrees with `Instant` to within a few percent.
        let measured = watch.elapsed_ns(start, watch.stamp());
        let reference = wall.elapsed().as_nanos() as u64;
        assert!(measured >= 30_000_000, "{measured}");
        assert!(
            measured.abs_diff(reference) < reference / 20,
            "{measured} vs {reference}"
        );
        assert!(imp::waited_since_sample().is_some());
    }
}
