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

use std::time::{Duration, Instant};

/// How stale a worker's sample may be at the start of a poll.
const SAMPLE_EVERY: Duration = Duration::from_millis(1);

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::RefCell;
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    struct Probe {
        /// `None` once the file proved unreadable: then nothing is sampled again.
        file: Option<File>,
        sampled_at: Option<Instant>,
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

    pub(super) fn sample_if_stale(now: Instant, every: std::time::Duration) {
        PROBE.with(|probe| {
            let mut probe = probe.borrow_mut();
            if probe
                .sampled_at
                .is_some_and(|at| now.saturating_duration_since(at) < every)
            {
                return;
            }
            match probe.file.as_ref().map(read) {
                Some(Some(waited)) => {
                    probe.sampled_at = Some(now);
                    probe.waited_ns = waited;
                }
                Some(None) => probe.file = None,
                None => {}
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
    pub(super) fn sample_if_stale(_now: std::time::Instant, _every: std::time::Duration) {}

    pub(super) fn waited_since_sample() -> Option<u64> {
        None
    }
}

/// Called at the start of each poll, with the time already read for it.
pub(super) fn poll_starts(now: Instant) {
    imp::sample_if_stale(now, SAMPLE_EVERY);
}

/// For a poll that took `elapsed` (wall time): how much of it the task itself spent, with the
/// time the thread waited for a CPU taken out, where the system says.
pub(super) fn own_time(elapsed: Duration) -> Duration {
    match imp::waited_since_sample() {
        Some(waited) => elapsed.saturating_sub(Duration::from_nanos(waited)),
        None => elapsed,
    }
}

#[cfg(all(test, target_os = "linux", not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_poll_keeps_its_time_and_the_probe_reads_the_file() {
        let start = Instant::now();
        poll_starts(start);
        std::thread::sleep(Duration::from_millis(30));
        // Sleeping is not waiting for a CPU: all of it is the poll's own.
        let own = own_time(start.elapsed());
        assert!(own >= Duration::from_millis(20), "{own:?}");
        assert!(imp::waited_since_sample().is_some());
    }
}
