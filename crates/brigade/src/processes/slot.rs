//! A slot: the place of one worker process in the pool, and what the pool knows about the
//! worker in it.
//!
//! # What a worker is running
//! A worker runs calls one at a time, in the order their frames arrived, and the pool writes
//! frames to a slot under the slot's lock in the order it records them in `in_flight`. So the
//! head of `in_flight` is the call the worker is running or about to take (its
//! [ledger](super::ledger) says which), and the rest are waiting in its socket. Sending calls
//! ahead (`depth`) hides the round trip; how many is sized from the worker's measured busy
//! time (see [`SlotState::record_busy`]), and calls longer than 10 ms are sent one at a time,
//! so they never wait behind a long call while a worker is free.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;

use crate::sync::Mutex;
use crate::sync::atomic::AtomicUsize;

use super::shared::{Config, Job};

/// The time a round trip to a worker costs, roughly, beside which a call counts as tiny: a
/// slot holds about this much work ahead so that the worker never waits for the pool.
const ROUND_TRIP_NANOS: f64 = 40_000.0;
const MAX_DEPTH: usize = 32;
/// Calls longer than this are sent one at a time (see [`SlotState::record_busy`]).
const LONG_CALL_NANOS: f64 = 10_000_000.0;

pub(crate) struct Slot {
    pub(crate) state: Mutex<SlotState>,
    /// Hints for choosing a slot without locking each one; exact under the lock.
    pub(crate) room: AtomicUsize,
}

pub(crate) struct SlotState {
    /// Our end of the live, ready worker's socket; `None` between workers.
    pub(crate) socket: Option<UnixStream>,
    pub(crate) in_flight: VecDeque<Job>,
    /// Calls sent to the current worker, for recycling.
    pub(crate) sent: usize,
    /// Calls this worker may hold at once (running plus waiting in its socket).
    depth: usize,
    /// Smoothed time the worker spends per call, in nanoseconds.
    busy_nanos: f64,
    /// Told to exit, or retiring: send nothing more.
    pub(crate) exiting: bool,
    /// The live worker's pid (0 between workers).
    pub(crate) pid: u32,
    /// The call whose timeout killed the worker.
    pub(crate) timed_out: Option<u64>,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(SlotState {
                socket: None,
                in_flight: VecDeque::new(),
                sent: 0,
                depth: 1,
                // Unknown work counts as long until measured: sent one call at a time.
                busy_nanos: LONG_CALL_NANOS,
                exiting: false,
                pid: 0,
                timed_out: None,
            }),
            room: AtomicUsize::new(0),
        }
    }
}

impl SlotState {
    /// How many more calls may be sent to this slot's worker now.
    pub(crate) fn room(&self, config: &Config) -> usize {
        if self.socket.is_none() || self.exiting {
            return 0;
        }
        // Refill in batches, once half the calls are answered: fewer wake-ups of the worker's
        // reader per call.
        if self.in_flight.len() > self.depth / 2 {
            return 0;
        }
        let mut room = self.depth - self.in_flight.len();
        if let Some(max) = config.max_tasks {
            room = room.min(max.saturating_sub(self.sent));
        }
        room
    }

    /// Learns from a finished call how many calls to keep ahead of this worker.
    ///
    /// Tiny calls: enough queued to cover a round trip, so the worker never waits for the
    /// pool. Calls up to `LONG_CALL_NANOS`: one queued behind the running one, so the worker
    /// goes straight on to the next instead of idling for a round trip (3–6 % of a 1 ms call);
    /// the price is that this one call may wait while another worker is free, for less than
    /// one call's time. Longer calls go one at a time: the round trip is then noise, and a call
    /// must not wait behind a long one.
    pub(crate) fn record_busy(&mut self, busy_nanos: u64) {
        self.busy_nanos = 0.8 * self.busy_nanos + 0.2 * busy_nanos as f64;
        let ahead = (ROUND_TRIP_NANOS / self.busy_nanos.max(1.0)).floor() as usize;
        let ahead = if self.busy_nanos < LONG_CALL_NANOS {
            ahead.max(3)
        } else {
            ahead
        };
        self.depth = (1 + ahead).clamp(1, MAX_DEPTH);
    }
}
