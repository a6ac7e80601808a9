//! Reading what a thread did: the per-thread clocks and counters behind a [`Sample`].
//!
//! | what | where it comes from | cost here (2-core VM) |
//! |---|---|---|
//! | a tick passed | the coarse monotonic clock (vDSO) | ~0.005 µs |
//! | wall time | the monotonic clock (`Instant`, vDSO) | ~0.03 µs |
//! | CPU time | `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` | ~0.5–0.7 µs |
//! | voluntary and involuntary switches | `getrusage(RUSAGE_THREAD)` | ~0.4 µs |
//! | time waiting for a core | `/proc/thread-self/schedstat`, second field | ~1.2 µs |
//!
//! (`getrusage` also returns CPU time, but for the running thread it lags by up to a
//! scheduler tick: the kernel brings it up to date only at a tick or a switch, so a 1 ms
//! computation read as ~30 µs. The thread CPU clock is brought up to date on every read.
//! `schedstat`'s CPU time lags the same way; its wait for a core does not, for a running
//! thread, since that is added when the thread gets the CPU.) Wall time is read around every call of a site whose calls
//! are long enough for it not to matter; the rest is read around *sampled* calls only (see
//! `site.rs` for how many). The wait for a core is read at the start of a call from a sample
//! at most [`RUNQ_STALE`] old and again at the end of a call that lasted long enough for it to
//! matter: the stale start counts waits just before the call as if they were during it, which
//! errs towards calling a call preempted rather than blocked.
//!
//! On Linux all three are read; on other Unixes CPU time comes from the thread CPU clock and
//! switches are unknown (every moment off the CPU then counts as blocked); elsewhere only wall
//! time is known and every call reads as CPU-bound.

use std::time::{Duration, Instant};

use super::classify::Sample;

/// How stale the start-of-call reading of the wait for a core may be.
pub(crate) const RUNQ_STALE: Duration = Duration::from_millis(1);
/// Calls shorter than this do not read the wait for a core at their end.
const RUNQ_WORTH_NS: u64 = 200_000;

/// The counters at the start of a probed call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    at: Instant,
    usage: Usage,
    runq_ns: Option<u64>,
}

/// CPU time and switch counts of the calling thread.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
    /// Whether the switch counts are real (else every moment off the CPU counts as blocked).
    switches: bool,
}

/// Starts probing a call on this thread. `precise`: read the wait for a core now rather than
/// from the cached sample (worth it for calls known to be long).
pub(crate) fn start(precise: bool) -> Start {
    let runq_ns = runq::at_start(precise);
    let usage = usage();
    Start {
        at: Instant::now(),
        usage,
        runq_ns,
    }
}

/// Ends the probe begun by `start`, on the same thread.
pub(crate) fn finish(start: &Start) -> Sample {
    let wall_ns = nanos(start.at.elapsed());
    let usage = usage();
    let runq_ns = match start.runq_ns {
        Some(before) if wall_ns >= RUNQ_WORTH_NS => runq::now()
            .map(|now| now.saturating_sub(before))
            .unwrap_or(0),
        _ => 0,
    };
    let switched = |now: u64, then: u64| now.saturating_sub(then);
    Sample {
        wall_ns,
        cpu_ns: usage.cpu_ns.saturating_sub(start.usage.cpu_ns),
        runq_ns,
        voluntary: if usage.switches {
            switched(usage.voluntary, start.usage.voluntary)
        } else {
            // Unknown: say it slept, so that time off the CPU counts as blocked.
            1
        },
        involuntary: switched(usage.involuntary, start.usage.involuntary),
    }
}

/// The coarse monotonic clock (Linux's `CLOCK_MONOTONIC_COARSE`: the time of the last
/// scheduler tick, read from the vDSO for a few ns), in ns; 0 elsewhere. Two reads that differ
/// say a tick passed between them: a call that crossed one is worth a closer look.
#[inline]
pub(crate) fn coarse_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `timespec` is plain old data; clock_gettime writes only into the struct we
        // own.
        let ts = unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
            ts
        };
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Whether a scheduler tick passed since this thread last asked (one coarse clock read): asked
/// after each unprobed short call, it says the call may have run long. A thread that idled
/// between two calls may say yes for nothing; that costs one extra probe, at most once per
/// tick (4 ms) per thread.
#[inline]
pub(crate) fn tick_passed() -> bool {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<u64> = const { Cell::new(0) };
    }
    let now = coarse_ns();
    LAST.with(|last| last.replace(now) != now)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(target_os = "linux")]
fn usage() -> Usage {
    // SAFETY: `rusage` is plain old data, so all-zero bytes are a valid value, and getrusage
    // only writes into the struct we own for the duration of the call.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
            return Usage::default();
        }
        ru
    };
    Usage {
        // Not `ru_utime + ru_stime`: for the running thread those lag by up to a scheduler
        // tick (the kernel does not bring them up to date), so a 1 ms computation read as
        // 30 µs. The thread CPU clock is brought up to date on every read.
        cpu_ns: thread_cpu_ns(),
        voluntary: u64::try_from(ru.ru_nvcsw).unwrap_or(0),
        involuntary: u64::try_from(ru.ru_nivcsw).unwrap_or(0),
        switches: true,
    }
}

/// The calling thread's CPU time, up to date.
#[cfg(unix)]
fn thread_cpu_ns() -> u64 {
    // SAFETY: `timespec` is plain old data; clock_gettime writes only into the struct we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) != 0 {
            return 0;
        }
        ts
    };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn usage() -> Usage {
    Usage {
        cpu_ns: thread_cpu_ns(),
        voluntary: 0,
        involuntary: 0,
        switches: false,
    }
}

#[cfg(not(unix))]
fn usage() -> Usage {
    // No per-thread CPU clock: report the thread as always on the CPU.
    thread_local! { static BORN: Instant = Instant::now(); }
    Usage {
        cpu_ns: BORN.with(|b| nanos(b.elapsed())),
        voluntary: 0,
        involuntary: 0,
        switches: true,
    }
}

/// A thread's scheduler state, readable from other threads: how the blocking lane's
/// controller sees whether a running job's thread is asleep, without the job's help (as Go's
/// sysmon looks at threads in system calls).
#[derive(Debug)]
pub(crate) struct Watch {
    #[cfg(target_os = "linux")]
    file: std::fs::File,
}

impl Watch {
    /// A watch on the calling thread; `None` where the system does not say.
    #[cfg(test)]
    pub(crate) fn current() -> Option<Self> {
        Self::of_thread(thread_id()?)
    }

    /// A watch on thread `tid` of this process; `None` where the system does not say.
    pub(crate) fn of_thread(tid: u64) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            // The file is bound to that thread's task, whoever reads it later.
            std::fs::File::open(format!("/proc/self/task/{tid}/stat"))
                .ok()
                .map(|file| Self { file })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tid;
            None
        }
    }

    /// Whether the watched thread is asleep right now (`S` or `D` in `/proc/…/stat`), rather
    /// than running or waiting for a core (`R`). `None` when it cannot be read.
    pub(crate) fn asleep(&self) -> Option<bool> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 512];
            let n = self.file.read_at(&mut buf, 0).ok()?;
            // "tid (comm) S …": the name may hold spaces and parentheses, so look for the
            // last ')'.
            let close = buf[..n].iter().rposition(|&b| b == b')')?;
            let state = *buf.get(close + 2)?;
            Some(matches!(state, b'S' | b'D'))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

#[cfg(target_os = "linux")]
mod runq {
    use std::cell::RefCell;
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    use super::RUNQ_STALE;

    struct Cached {
        /// Opened on first need; `Some(None)` once it proved unreadable.
        file: Option<Option<File>>,
        at: Option<Instant>,
        runq_ns: u64,
    }

    impl Cached {
        fn file(&mut self) -> Option<&File> {
            self.file
                .get_or_insert_with(|| File::open("/proc/thread-self/schedstat").ok())
                .as_ref()
        }
    }

    thread_local! {
        static CACHED: RefCell<Cached> = const {
            RefCell::new(Cached {
                file: None,
                at: None,
                runq_ns: 0,
            })
        };
    }

    /// `schedstat`'s wait for a core (its second field: CPU time, wait, time slices).
    fn read_runq(file: &File) -> Option<u64> {
        let mut buf = [0u8; 96];
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        text.split_ascii_whitespace().nth(1)?.parse().ok()
    }

    /// The wait for a core so far, from a sample at most `RUNQ_STALE` old (or fresh).
    ///
    /// A thread's first call, unless `precise`, counts from 0 without reading: the file is
    /// opened only if the call proves long enough to read it at its end. Then the wait since
    /// the thread began counts as the call's, which errs towards "preempted" by at most the
    /// thread's wait for its first slice; in exchange, a burst of new blocking-lane threads
    /// does not each open a `/proc` file before its first call.
    pub(super) fn at_start(precise: bool) -> Option<u64> {
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if !precise && cached.file.is_none() {
                return Some(0);
            }
            let now = Instant::now();
            let fresh = cached
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < RUNQ_STALE);
            if !precise && fresh {
                return Some(cached.runq_ns);
            }
            match cached.file().map(read_runq) {
                Some(Some(runq_ns)) => {
                    cached.at = Some(now);
                    cached.runq_ns = runq_ns;
                    Some(runq_ns)
                }
                Some(None) => {
                    cached.file = Some(None);
                    None
                }
                None => None,
            }
        })
    }

    /// The wait for a core so far, read now.
    pub(super) fn now() -> Option<u64> {
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            read_runq(cached.file()?)
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod runq {
    pub(super) fn at_start(_precise: bool) -> Option<u64> {
        None
    }

    pub(super) fn now() -> Option<u64> {
        None
    }
}

/// The calling thread's id in the kernel (Linux), for watching it from another thread.
pub(crate) fn thread_id() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments, cannot fail and touches no memory of ours.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        u64::try_from(tid).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// A cheap per-thread random number, for sampling 1 call in N without aliasing (a shared
/// counter would sample the same site every time when two sites alternate).
pub(crate) fn coin(period_mask: u32) -> bool {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u32> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // Seeded from the thread-local's address: different per thread, never zero.
            x = (std::ptr::from_ref(state) as usize as u32) | 1;
        }
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        x & period_mask == 0
    })
}

#[cfg(all(test, target_os = "linux", not(brigade_loom)))]
mod tests {
    use super::*;
    use crate::auto::classify::{Reading, SHORT_CALL_NS};

    #[test]
    fn a_spinning_call_reads_as_cpu_and_a_sleeping_one_as_waiting() {
        let started = start(true);
        let until = Instant::now() + Duration::from_millis(30);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = finish(&started);
        assert!(spun.cpu_ns > 0);
        // A busy machine may preempt the spin, but it never sleeps.
        assert_eq!(spun.split(SHORT_CALL_NS).reading, Reading::Cpu, "{spun:?}");

        let started = start(true);
        std::thread::sleep(Duration::from_millis(30));
        let slept = finish(&started);
        assert!(slept.voluntary >= 1, "{slept:?}");
        assert_eq!(
            slept.split(SHORT_CALL_NS).reading,
            Reading::Waits,
            "{slept:?}"
        );
    }

    #[test]
    fn a_watch_tells_a_sleeping_thread_from_a_spinning_one() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::spawn(move || {
            tx.send(Watch::current().expect("linux has /proc")).unwrap();
            while stop.try_recv().is_err() {
                std::hint::spin_loop();
            }
        });
        let watch = rx.recv().unwrap();
        // Runnable (on the CPU or waiting for one): never "asleep", however often we look.
        for _ in 0..100 {
            assert_eq!(watch.asleep(), Some(false));
        }
        stop_tx.send(()).unwrap();
        spinner.join().unwrap();

        let (tx, rx) = std::sync::mpsc::channel();
        let (wake_tx, wake) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tx.send(Watch::current().unwrap()).unwrap();
            wake.recv().unwrap();
        });
        let watch = rx.recv().unwrap();
        // It goes to sleep in `recv` soon after sending: wait for that (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        while watch.asleep() != Some(true) {
            assert!(Instant::now() < deadline, "never seen asleep");
            std::thread::yield_now();
        }
        wake_tx.send(()).unwrap();
        sleeper.join().unwrap();
    }

    #[test]
    fn the_coin_lands_about_once_per_period() {
        let heads = (0..64_000).filter(|_| coin(63)).count();
        assert!((500..2000).contains(&heads), "{heads}");
        assert!((0..100).all(|_| coin(0)));
    }
}
