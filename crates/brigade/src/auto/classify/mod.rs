//! The classifier's pure logic: given what a thread did during a call or a poll, which lane the
//! call site belongs on. No clocks, no threads, no lanes: samples in, decisions out, so that it
//! is unit-tested with synthetic samples and any lane can call it (the event loop's detector
//! included, see the report on adopting it).
//!
//! # What a sample says
//!
//! Wall time alone cannot tell a call that blocked from one that computed, nor either from one
//! that was merely preempted on a busy machine. A [`Sample`] splits the wall time the way the
//! kernel sees it:
//!
//! * **CPU time**: the thread ran (user or system time);
//! * **waiting for a core**: the thread was runnable but another thread had the CPU (Linux
//!   keeps this per thread in `schedstat`); and when the thread never went to sleep (no
//!   *voluntary* context switch) every moment it spent off the CPU was such a wait, whatever
//!   `schedstat` says;
//! * **blocked**: the rest. The thread slept: on a socket, a file, a timer, a lock.
//!
//! The call's *own* time is CPU plus blocked: what it would have taken on an idle machine. A
//! [`Reading`] is `Short` when its own time is under the threshold (it matters little where
//! such a call runs), `Waits` when at least half of its own time was blocked, `Cpu` otherwise.
//!
//! # Hysteresis
//!
//! A site is judged on decayed sums over its recent samples (each sample weighs 7/8 of the one
//! after it for calls, 63/64 for polls), never on one sample: a site is first placed after
//! [`MIN_SAMPLES`] samples; it moves to the blocking lane as soon as its recent time is mostly
//! waiting (a blocked compute thread costs the whole pool), and moves back only after a
//! stable run of [`BACK_STREAK`] samples that say so. Polls move a future off the loop only when
//! long polls are both a quarter of its polls or more and most of its poll time: the site's
//! typical behaviour, not an outlier. A burst of slow polls among many quick ones (a thousand
//! connections opening at once, whose first polls sleep in the kernel on locks the loop's own
//! threads hold) is no reason to move.

use std::fmt;

/// Where work runs.
///
/// ```
/// use brigade::auto::Lane;
/// assert_eq!(Lane::Compute.to_string(), "compute");
/// assert_eq!(Lane::Blocking.to_string(), "blocking");
/// assert_eq!(Lane::Loop.to_string(), "event loop");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Lane {
    /// The compute lane: one thread per core, never grown.
    Compute,
    /// The elastic blocking lane: threads that may sleep, sized by feedback.
    Blocking,
    /// The event loop.
    Loop,
}

impl Lane {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Lane::Compute => "compute",
            Lane::Blocking => "blocking",
            Lane::Loop => "event loop",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one thread did during one call or poll (all times in nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Monotonic clock time from start to end.
    pub(crate) wall_ns: u64,
    /// The thread's CPU time (user and system).
    pub(crate) cpu_ns: u64,
    /// Time the thread spent runnable but waiting for a core (0 where unknown).
    pub(crate) runq_ns: u64,
    /// Voluntary context switches: the thread went to sleep.
    pub(crate) voluntary: u64,
    /// Involuntary context switches: the thread was preempted.
    pub(crate) involuntary: u64,
}

/// How a sample reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Its own time is under the threshold.
    Short,
    /// Mostly on the CPU.
    Cpu,
    /// Mostly blocked.
    Waits,
}

/// A sample split into the call's own time and its blocked part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// CPU plus blocked time: the call's duration on an idle machine.
    pub(crate) own_ns: u64,
    /// The part of `own_ns` the thread was on the CPU.
    pub(crate) cpu_ns: u64,
    /// The part of `own_ns` the thread slept.
    pub(crate) blocked_ns: u64,
    pub(crate) reading: Reading,
}

impl Sample {
    /// Splits the sample (see the module docs); `short_ns` is the `Short` threshold.
    pub(crate) fn split(&self, short_ns: u64) -> Split {
        // The two clocks are read at slightly different moments: CPU time may exceed wall time
        // by the read's own cost.
        let cpu = self.cpu_ns.min(self.wall_ns);
        let off_cpu = self.wall_ns - cpu;
        let blocked = if self.voluntary == 0 {
            // Never went to sleep: every moment off the CPU was spent waiting for a core.
            0
        } else {
            off_cpu.saturating_sub(self.runq_ns)
        };
        let own = cpu + blocked;
        let reading = if own < short_ns {
            Reading::Short
        } else if blocked * 2 >= own {
            Reading::Waits
        } else {
            Reading::Cpu
        };
        Split {
            own_ns: own,
            cpu_ns: cpu,
            blocked_ns: blocked,
            reading,
        }
    }
}

/// Samples before a site is first placed: every call of a new site is sampled, so a site is
/// placed after its first four calls finish.
pub(crate) const MIN_SAMPLES: u64 = 4;
/// Samples after a move before the next one.
pub(crate) const MOVE_AFTER: u64 = 4;
/// Consecutive samples that must agree before a site moves back (off the blocking lane, or
/// back onto the loop).
pub(crate) const BACK_STREAK: u32 = 8;

/// A closure call shorter than this (own time) is `Short`: where it runs matters less than
/// what moving it would cost.
pub(crate) const SHORT_CALL_NS: u64 = 50_000;
/// A poll at least this long (own time) is long: it holds a loop worker for a while.
pub(crate) const LONG_POLL_NS: u64 = 1_000_000;

/// Why a site moved, in numbers (rendered into the report's sentence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Why {
    /// Samples the decision rests on (decayed weight, rounded).
    pub(crate) samples: u64,
    /// Share of the recent own time spent blocked.
    pub(crate) waiting: f64,
    /// Typical own time of a recent call or long poll, in ns.
    pub(crate) typical_ns: f64,
    /// Polls only: share of recent polls that were long, and of poll time in long polls.
    pub(crate) long_polls: Option<(f64, f64)>,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((count, time)) = self.long_polls {
            write!(
                f,
                "{:.0}% of recent polls long ({:.0}% of poll time), ",
                count * 100.0,
                time * 100.0
            )?;
        }
        write!(
            f,
            "typical {} own time, {:.0}% of it blocked, {:.0}% on the CPU",
            Millis(self.typical_ns),
            self.waiting * 100.0,
            (1.0 - self.waiting) * 100.0
        )
    }
}

/// Nanoseconds printed with a unit that suits them.
pub(crate) struct Millis(pub(crate) f64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns >= 1e9 {
            write!(f, "{:.2} s", ns / 1e9)
        } else if ns >= 1e6 {
            write!(f, "{:.2} ms", ns / 1e6)
        } else if ns >= 1e3 {
            write!(f, "{:.1} µs", ns / 1e3)
        } else {
            write!(f, "{ns:.0} ns")
        }
    }
}

/// A decision to move a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    /// `None` for a site's first placement.
    pub(crate) from: Option<Lane>,
    pub(crate) to: Lane,
    pub(crate) why: Why,
}

/// Decayed sums over recent samples.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    weight: f64,
    own: f64,
    blocked: f64,
}

impl Sums {
    fn decay(&mut self, keep: f64) {
        self.weight *= keep;
        self.own *= keep;
        self.blocked *= keep;
    }

    fn add(&mut self, split: &Split) {
        self.weight += 1.0;
        self.own += split.own_ns as f64;
        self.blocked += split.blocked_ns as f64;
    }

    fn waiting(&self) -> f64 {
        if self.own > 0.0 {
            self.blocked / self.own
        } else {
            0.0
        }
    }

    fn typical(&self) -> f64 {
        if self.weight > 0.0 {
            self.own / self.weight
        } else {
            0.0
        }
    }
}

/// A closure call site: compute lane or blocking lane.
#[derive(Debug, Clone, Default)]
pub(crate) struct Calls {
    lane: Option<Lane>,
    sums: Sums,
    samples: u64,
    since_move: u64,
    streak: u32,
}

impl Calls {
    /// Each sample weighs this much of the one after it.
    const KEEP: f64 = 7.0 / 8.0;

    /// Where the site runs now; `None` until placed.
    #[cfg(test)]
    pub(crate) fn lane(&self) -> Option<Lane> {
        self.lane
    }

    /// Samples seen.
    #[cfg(test)]
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }

    /// Feeds one sample; returns the move it causes, if any.
    pub(crate) fn observe(&mut self, sample: &Sample) -> Option<Decision> {
        let split = sample.split(SHORT_CALL_NS);
        self.sums.decay(Self::KEEP);
        self.sums.add(&split);
        self.samples += 1;
        self.since_move += 1;
        let waiting = self.sums.waiting();
        let typical = self.sums.typical();
        let short = typical < SHORT_CALL_NS as f64;
        let to = match self.lane {
            None if self.samples >= MIN_SAMPLES => {
                if !short && waiting >= 0.5 {
                    Lane::Blocking
                } else {
                    Lane::Compute
                }
            }
            None => return None,
            // A blocked compute thread costs the pool a core: move out at once.
            Some(Lane::Compute) if !short && waiting >= 0.6 && self.since_move >= MOVE_AFTER => {
                Lane::Blocking
            }
            // CPU work on the blocking lane costs little (its growth is gated on CPU use), so
            // the way back waits for a stable reading.
            Some(Lane::Blocking) => {
                if short || waiting <= 0.3 {
                    self.streak += 1;
                } else {
                    self.streak = 0;
                }
                if self.streak >= BACK_STREAK && self.since_move >= MOVE_AFTER {
                    Lane::Compute
                } else {
                    return None;
                }
            }
            Some(_) => return None,
        };
        let decision = Decision {
            from: self.lane,
            to,
            why: Why {
                samples: self.sums.weight.round() as u64,
                waiting,
                typical_ns: typical,
                long_polls: None,
            },
        };
        self.lane = Some(to);
        self.since_move = 0;
        self.streak = 0;
        Some(decision)
    }
}

/// A future's spawn site: on the loop, or each poll shipped to the compute or blocking lane.
#[derive(Debug, Clone)]
pub(crate) struct Polls {
    lane: Lane,
    /// Decayed count of polls, and of long ones.
    polls: f64,
    long: f64,
    /// Decayed poll time, and long-poll time (own time).
    time: f64,
    long_time: f64,
    /// Long polls that were probed (their CPU time is known).
    probed: Sums,
    probed_since_move: u64,
    since_move: u64,
    streak: u32,
}

impl Default for Polls {
    fn default() -> Self {
        Self {
            lane: Lane::Loop,
            polls: 0.0,
            long: 0.0,
            time: 0.0,
            long_time: 0.0,
            probed: Sums::default(),
            probed_since_move: 0,
            since_move: 0,
            streak: 0,
        }
    }
}

impl Polls {
    /// Each poll weighs this much of the one after it: a window of about 64 polls.
    const KEEP: f64 = 63.0 / 64.0;
    /// Long polls must be at least this share of the polls… (A burst of a thousand
    /// connections opening at once made 7 % of its polls long, all of them asleep in the
    /// kernel on locks the loop's own threads held: that is the outlier this keeps out.)
    pub(crate) const LONG_SHARE: f64 = 1.0 / 4.0;
    /// …and at least this share of the poll time, for the site to leave the loop.
    const LONG_TIME_SHARE: f64 = 0.5;
    /// Probed long polls before the site may leave the loop.
    const MIN_LONG: u64 = 4;

    #[cfg(test)]
    pub(crate) fn lane(&self) -> Lane {
        self.lane
    }

    /// Share of recent polls that were long.
    pub(crate) fn long_share(&self) -> f64 {
        if self.polls > 0.0 {
            self.long / self.polls
        } else {
            0.0
        }
    }

    fn long_time_share(&self) -> f64 {
        if self.time > 0.0 {
            self.long_time / self.time
        } else {
            0.0
        }
    }

    /// `n` short polls took `own_ns` in all (batched by the caller, never decided on).
    pub(crate) fn short(&mut self, n: u32, own_ns: u64) -> Option<Decision> {
        if n == 0 {
            return None;
        }
        let keep = Self::KEEP.powi(n as i32);
        self.polls = self.polls * keep + f64::from(n);
        self.long *= keep;
        self.time = self.time * keep + own_ns as f64;
        self.long_time *= keep;
        self.since_move += u64::from(n);
        self.decide(n)
    }

    /// One poll that was probed (its CPU time is known), long or not.
    pub(crate) fn probed(&mut self, sample: &Sample) -> Option<Decision> {
        let split = sample.split(LONG_POLL_NS);
        if split.reading == Reading::Short {
            return self.short(1, split.own_ns);
        }
        self.probed.decay(Self::KEEP);
        self.probed.add(&split);
        self.probed_since_move += 1;
        self.long(split.own_ns)
    }

    /// One long poll whose CPU time is unknown (it was not probed): it counts towards the
    /// long-poll shares, not towards the kind.
    pub(crate) fn long(&mut self, own_ns: u64) -> Option<Decision> {
        self.polls = self.polls * Self::KEEP + 1.0;
        self.long = self.long * Self::KEEP + 1.0;
        self.time = self.time * Self::KEEP + own_ns as f64;
        self.long_time = self.long_time * Self::KEEP + own_ns as f64;
        self.since_move += 1;
        self.decide(1)
    }

    fn decide(&mut self, polls: u32) -> Option<Decision> {
        let long_share = self.long_share();
        let time_share = self.long_time_share();
        let long_enough = long_share >= Self::LONG_SHARE && time_share >= Self::LONG_TIME_SHARE;
        let waiting = self.probed.waiting();
        let kind = if waiting >= 0.5 {
            Lane::Blocking
        } else {
            Lane::Compute
        };
        let to = match self.lane {
            Lane::Loop => {
                if long_enough && self.probed_since_move >= Self::MIN_LONG {
                    kind
                } else {
                    return None;
                }
            }
            off => {
                if long_share < Self::LONG_SHARE / 4.0 || time_share < 0.2 {
                    self.streak = self.streak.saturating_add(polls);
                } else {
                    self.streak = 0;
                }
                if self.streak >= BACK_STREAK * 2 {
                    Lane::Loop
                } else if self.probed_since_move >= MOVE_AFTER
                    && kind != off
                    && (waiting >= 0.6 || waiting <= 0.4)
                {
                    kind
                } else {
                    return None;
                }
            }
        };
        let decision = Decision {
            from: Some(self.lane),
            to,
            why: Why {
                samples: self.polls.round() as u64,
                waiting,
                typical_ns: self.probed.typical(),
                long_polls: Some((long_share, time_share)),
            },
        };
        self.lane = to;
        self.since_move = 0;
        self.probed_since_move = 0;
        self.streak = 0;
        Some(decision)
    }
}

#[cfg(test)]
mod tests;
