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
//! samples it at the start of a poll when its last sample is older than [`SAMPLE_EVERY`], and
//! reads it again only at the end of a poll that was slow. The waiting between the sample and
//! the poll's start (at most `SAMPLE_EVERY`) is counted as if it happened during the poll,
//! which errs towards not flagging by at most that much. Elsewhere than Linux, or where the file
//! cannot be read, nothing is subtracted.
//!
//! Every poll reads the clock twice, so the clock here is plain nanoseconds ([`now_ns`]):
//! `Instant` arithmetic (normalizing seconds and nanoseconds, checking for overflow) cost more
//! than the clock reads themselves under callgrind.

/// How stale a worker's sample may be at the start of a poll, in nanoseconds.
const SAMPLE_EVERY_NS: u64 = 1_000_000;

/// The monotonic clock (the one `Instant` reads), in nanoseconds from an arbitrary origin.
#[cfg(unix)]
#[inline]
pub(super) fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration. CLOCK_MONOTONIC
    // always exists, so the call cannot fail (and on failure `t` would stay zero: harmless).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    // Seconds and nanoseconds are never negative on the monotonic clock.
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The monotonic clock, in nanoseconds since the first call.
#[cfg(not(unix))]
pub(super) fn now_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        ORIGIN
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    struct Probe {
        /// `None` once the file proved unreadable: then nothing is sampled again.
        file: Option<File>,
        /// When the last sample was taken ([`now_ns`](super::now_ns)); `None` before the first.
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
        /// When this thread's sample goes stale ([`now_ns`](super::now_ns)); `u64::MAX` once
        /// the file proved unreadable. Kept apart from the probe, in a const-initialized
        /// `Cell`, so that the per-poll check is one load and one comparison.
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

/// Called at the start of each poll, with the time already read for it ([`now_ns`]).
#[inline]
pub(super) fn poll_starts(now: u64) {
    imp::sample_if_stale(now, SAMPLE_EVERY_NS);
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
        let start = now_ns();
        poll_starts(start);
        std::thread::sleep(Duration::from_millis(30));
        // Sleeping is not waiting for a CPU: all of it is the poll's own.
        let own = own_time(now_ns() - start);
        assert!(own >= 20_000_000, "{own}");
        // The clock is the one `Instant` reads: 30 ms of sleep is 30 ms on it.
        assert!(now_ns() - start >= 30_000_000);
        assert!(imp::waited_since_sample().is_some());
    }
}
