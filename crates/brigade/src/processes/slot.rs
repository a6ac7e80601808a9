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
//!
//! # Writing without blocking
//! A worker reads its socket only between calls (the thread that runs calls reads it, so a
//! call's frame costs the worker one wake-up, not two). So nothing on the pool's side ever
//! waits for room in a worker's socket while holding a lock or while it should be reading
//! answers: a worker blocked writing a large answer to a pool thread blocked writing to it
//! would never finish. Frames are written with non-blocking writes, under the slot's lock, in
//! `in_flight`'s order; what the socket does not take now stays behind, as the frames of
//! `in_flight` not yet written whole (and a queued exit frame after them). The rest goes out
//! when the worker has room again, and only the worker knows when that is:
//! * after each answer the slot thread writes what now fits (the worker reads before it runs
//!   its next call);
//! * a worker that has part of a frame and waits for the rest says so
//!   ([`FromWorker::Pull`](super::wire::FromWorker::Pull), with the byte of its stream it
//!   waits for), and the slot thread writes up to that byte, waiting for room without the
//!   lock: the worker is reading until it has that byte, so this wait ends.
//!
//! Every read of the worker either ends inside a frame (so it pulls) or hands it whole calls
//! (so it answers): either way the slot thread writes again, and no frame is left behind.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::unix::net::UnixStream;

use crate::sync::Mutex;
use crate::sync::atomic::AtomicUsize;

use super::shared::{Config, Job};
use super::wire::{self, EXIT_FRAME};

/// The time a round trip to a worker costs, roughly, beside which a call counts as tiny: a
/// slot holds about this much work ahead so that the worker never waits for the pool.
const ROUND_TRIP_NANOS: f64 = 40_000.0;
const MAX_DEPTH: usize = 32;
/// Calls longer than this are sent one at a time (see [`SlotState::record_busy`]).
const LONG_CALL_NANOS: f64 = 10_000_000.0;
/// Frames written per system call at most.
const SLICES: usize = 32;

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
    /// How many frames of `in_flight`, from the front, are written whole.
    written_whole: usize,
    /// Bytes written of the frame after those.
    written_part: usize,
    /// Bytes of the exit frame written, once one is queued (after every frame in flight).
    exit_written: Option<usize>,
    /// Bytes written to the current worker's socket, from the first byte of its init frame:
    /// the worker's [pulls](super::wire::FromWorker::Pull) count the same way.
    pub(crate) stream: u64,
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
                written_whole: 0,
                written_part: 0,
                exit_written: None,
                stream: 0,
            }),
            room: AtomicUsize::new(0),
        }
    }
}

impl SlotState {
    /// A new worker moves in: its socket, and how much of its stream the handshake wrote.
    pub(crate) fn attach(&mut self, socket: Option<UnixStream>, pid: u32, stream: u64) {
        self.socket = socket;
        self.pid = pid;
        self.stream = stream;
        self.timed_out = None;
        self.sent = 0;
        self.exiting = false;
        self.written_whole = 0;
        self.written_part = 0;
        self.exit_written = None;
    }

    /// The worker went away: what it held, for the slot thread to settle.
    pub(crate) fn detach(&mut self) -> VecDeque<Job> {
        self.socket = None;
        self.pid = 0;
        self.exiting = false;
        self.written_whole = 0;
        self.written_part = 0;
        self.exit_written = None;
        std::mem::take(&mut self.in_flight)
    }

    /// The head of `in_flight` was answered: takes it out. `None` when the head had not been
    /// written whole, so the worker cannot have run it (the answer is garbage).
    pub(crate) fn pop_answered(&mut self) -> Option<Job> {
        if self.written_whole == 0 {
            return None;
        }
        self.written_whole -= 1;
        self.in_flight.pop_front()
    }

    /// Queues a call (written by the next [`flush`](Self::flush)).
    pub(crate) fn push(&mut self, job: Job) {
        debug_assert!(self.exit_written.is_none(), "nothing is sent after exit");
        self.in_flight.push_back(job);
    }

    /// Tells the worker to exit once it has run what it was sent (the exit frame goes out
    /// after them); nothing more is sent to it.
    pub(crate) fn queue_exit(&mut self) {
        self.exiting = true;
        if self.socket.is_some() {
            self.exit_written.get_or_insert(0);
            self.flush();
        }
    }

    /// Whether some bytes wait to be written.
    fn unwritten(&self) -> bool {
        self.written_whole < self.in_flight.len()
            || self.exit_written.is_some_and(|n| n < EXIT_FRAME.len())
    }

    /// Writes what the socket takes now of the frames not yet written whole, without
    /// blocking (see the module docs). A write that fails means the worker is gone; its slot
    /// thread sees the socket close and settles what it held.
    pub(crate) fn flush(&mut self) {
        while self.unwritten() {
            let Some(socket) = &self.socket else { return };
            let mut slices = [IoSlice::new(&[]); SLICES];
            let mut n = 0;
            for (k, job) in self.in_flight.iter().enumerate().skip(self.written_whole) {
                if n == SLICES {
                    break;
                }
                let skip = if k == self.written_whole {
                    self.written_part
                } else {
                    0
                };
                slices[n] = IoSlice::new(&job.frame[skip..]);
                n += 1;
            }
            if n < SLICES
                && let Some(done) = self.exit_written
            {
                slices[n] = IoSlice::new(&EXIT_FRAME[done..]);
                n += 1;
            }
            match wire::send_some(socket, &slices[..n]) {
                Ok(0) | Err(_) => return,
                Ok(wrote) => self.advance(wrote),
            }
        }
    }

    /// Counts `wrote` bytes as written, frame by frame.
    fn advance(&mut self, wrote: usize) {
        self.stream += wrote as u64;
        let mut left = wrote;
        while left > 0 {
            if let Some(job) = self.in_flight.get(self.written_whole) {
                let rest = job.frame.len() - self.written_part;
                if left >= rest {
                    left -= rest;
                    self.written_whole += 1;
                    self.written_part = 0;
                } else {
                    self.written_part += left;
                    left = 0;
                }
            } else if let Some(done) = &mut self.exit_written {
                *done += left;
                left = 0;
            } else {
                unreachable!("the socket took more bytes than were offered");
            }
        }
    }

    /// Whether the worker still waits for bytes before `want` that this slot has queued: a
    /// [pull](super::wire::FromWorker::Pull) to answer. Capped at what is queued, so a pull
    /// past that (garbage) waits for nothing.
    pub(crate) fn owes(&self, want: u64) -> bool {
        want > self.stream && self.unwritten() && self.socket.is_some()
    }

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
