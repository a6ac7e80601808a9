//! Where a task comes from: its lane and the line of code that submitted it, for `Debug`
//! output and diagnostics.

use std::fmt;
use std::panic::Location;

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
