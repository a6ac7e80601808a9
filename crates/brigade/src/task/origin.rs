//! Where a task comes from: its lane and the line of code that submitted it, for `Debug`
//! output and diagnostics.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

/// Which kind of pool runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneName {
    /// Made by code that does not say (an internal, already-failed task, say).
    Unknown,
    /// The compute lane, [`ThreadPool`](crate::ThreadPool).
    Threads,
    /// [`ProcessPool`](crate::ProcessPool).
    Processes,
    /// [`EventLoop`](crate::EventLoop).
    EventLoop,
    /// A blocking thread of a lane (`EventLoop::to_thread`, say).
    Blocking,
    /// The user's own code, through a [`Completer`](crate::Completer).
    Completer,
}

/// How long a waiter polls for a process task: as long as the process lane's own pollers poll
/// (`processes/spin.rs`), a few round trips on a loaded VM.
const PROCESS_WAITER_POLL: Duration = Duration::from_micros(50);

impl LaneName {
    const ALL: [LaneName; 6] = [
        LaneName::Unknown,
        LaneName::Threads,
        LaneName::Processes,
        LaneName::EventLoop,
        LaneName::Blocking,
        LaneName::Completer,
    ];

    /// The lane whose `as usize` is `index` (tasks keep it in three bits of their state).
    pub(crate) fn from_index(index: usize) -> Self {
        Self::ALL.get(index).copied().unwrap_or(LaneName::Unknown)
    }

    /// How long a plain thread waiting for this lane's task polls it, yielding, before it
    /// parks. Zero for every lane but the process pool: a process task's answer is read by a
    /// slot thread that itself polls for it, so a waiter that polls too is never woken through
    /// the scheduler, which costs 15–20 µs on a VM when the two threads sit on different vCPUs
    /// (see `block::block_until_polling`).
    pub(crate) fn waiter_poll(self) -> Duration {
        match self {
            LaneName::Processes => PROCESS_WAITER_POLL,
            _ => Duration::ZERO,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            LaneName::Unknown => "unknown",
            LaneName::Threads => "thread pool",
            LaneName::Processes => "process pool",
            LaneName::EventLoop => "event loop",
            LaneName::Blocking => "blocking thread",
            LaneName::Completer => "completer",
        }
    }
}

/// A task's lane and submission site. Two words, written once when the task is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) lane: LaneName,
    pub(crate) site: Option<&'static Location<'static>>,
}

impl Origin {
    pub(crate) const UNKNOWN: Origin = Origin {
        lane: LaneName::Unknown,
        site: None,
    };

    /// `lane`, submitted from the caller's caller (use under `#[track_caller]`).
    #[track_caller]
    pub(crate) fn here(lane: LaneName) -> Self {
        Self {
            lane,
            site: Some(Location::caller()),
        }
    }

    pub(crate) fn lane(&self) -> &'static str {
        self.lane.as_str()
    }
}

impl fmt::Display for Origin {
    /// "thread pool task submitted at src/main.rs:10:5".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} task", self.lane.as_str())?;
        if let Some(site) = self.site {
            write!(f, " submitted at {site}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
