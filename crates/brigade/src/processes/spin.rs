//! Polling a socket for a short while before a blocking read, where the next message usually
//! comes within microseconds.
//!
//! A sequential round trip (submit, wait for the result, submit again) used to put three
//! threads to sleep per call: the worker between calls, the slot thread between answers, the
//! caller in `result()`. On a VM a sleeping thread costs tens of microseconds to wake (the
//! idle vCPU halts, and the wake-up is an interrupt to the host), far more than the message
//! itself. So the worker and its slot thread keep polling their socket for up to
//! [`SPIN_FOR`] before they block, unless their recent polls missed, and a plain thread
//! waiting on a process task polls the task for as long before it parks
//! (`task::block::block_until_polling`). The caller's poll matters as much as the others: a
//! parked caller is woken by the slot thread, and when the two sit on different vCPUs that
//! wake-up is an interrupt through the host, 15–20 µs from the wake to the caller running
//! (perf sched traces of the 31–52 µs runs), more than the rest of the round trip. With all
//! three polling, a sequential round trip puts nobody to sleep (0.01–0.03 sleeps per call,
//! against one per call before).
//!
//! The polling yields the core between polls: on a machine with as many busy threads as
//! cores, a poller must not keep the thread it waits for (the caller, about to submit) off
//! the core. Yielding to nobody is one cheap system call. (Measured: polling with pause
//! instructions instead of yields made a sequential call 91–159 µs, against 10–20 µs.)
//!
//! A poll that did not end within [`SHORT_WAIT`] (no message came, or the poller lost the
//! core to another process while it yielded, which costs up to a scheduler tick: a sleeper
//! woken by the message would have got the core back at once) is a miss, and the waiter then
//! blocks without polling for a number of waits that doubles with each miss, up to
//! [`MAX_SKIP`], and shrinks by one with each hit. So an idle pool, calls that come far apart, or a machine
//! whose cores another process keeps busy cost one poll per thousand waits or so, while a
//! sequential caller's calls are polled for every time.

use std::io;
use std::time::{Duration, Instant};

/// The longest a waiter polls before it blocks: a few round trips on a loaded VM.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(50);

/// A wait that ended later than this, counted from the start of the poll, counts as a miss.
const SHORT_WAIT: Duration = Duration::from_micros(200);

/// The most waits a gate skips polling for after misses in a row: under a steady CPU hog, one
/// poll (and up to a tick lost) per this many waits.
const MAX_SKIP: u32 = 1024;

/// Whether a waiter polls before it blocks, learnt from how its polls went.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Waits left to block in without polling.
    skip: u32,
    /// What `skip` is set to after the next miss (doubled by each miss, less one per hit).
    penalty: u32,
}

impl Gate {
    /// Waits for `poll` to have read something into `reader`, by polling (unless skipping,
    /// or `worth` does not hold) and then by `block`. Returns the read's outcome: the bytes
    /// read, 0 at end of stream.
    pub(crate) fn wait<C>(
        &mut self,
        reader: &mut C,
        worth: bool,
        mut poll: impl FnMut(&mut C) -> io::Result<Option<usize>>,
        block: impl FnOnce(&mut C) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if !worth {
            return block(reader);
        }
        if self.skip > 0 {
            self.skip -= 1;
            return block(reader);
        }
        let began = Instant::now();
        loop {
            if let Some(n) = poll(reader)? {
                self.learn(began.elapsed() <= SHORT_WAIT);
                return Ok(n);
            }
            if began.elapsed() >= SPIN_FOR {
                break;
            }
            std::thread::yield_now();
        }
        let outcome = block(reader);
        self.learn(began.elapsed() <= SHORT_WAIT);
        outcome
    }

    /// A poll hit (the message came soon, with the core to ourselves) or missed.
    fn learn(&mut self, hit: bool) {
        if hit {
            // Down by one per hit, up twofold per miss: a waiter that misses every other
            // time (a hog takes the core at one yield in two) still ends up skipping most
            // waits, where a reset on each hit kept it losing a tick every few calls.
            self.penalty = self.penalty.saturating_sub(1);
        } else {
            self.penalty = (self.penalty * 2).clamp(1, MAX_SKIP);
            self.skip = self.penalty;
        }
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn polls_unless_skipping_or_not_worth_it() {
        let mut gate = Gate::default();
        // A fresh gate polls; what the poll reads is taken, with no blocking read.
        let read = gate.wait(&mut (), true, |_| Ok(Some(7)), |_| unreachable!("blocked"));
        assert_eq!(read.unwrap(), 7);
        // End of stream and errors come through the poll as they are.
        let mut gate = Gate::default();
        let read = gate.wait(&mut (), true, |_| Ok(Some(0)), |_| unreachable!("blocked"));
        assert_eq!(read.unwrap(), 0);
        let mut gate = Gate::default();
        let failed = gate.wait(
            &mut (),
            true,
            |_| Err(io::ErrorKind::BrokenPipe.into()),
            |_| unreachable!("blocked"),
        );
        assert!(failed.is_err());
        // Not worth it: no polling, and nothing learnt.
        let mut gate = Gate::default();
        let read = gate.wait(&mut (), false, |_| unreachable!("polled"), |_| Ok(2));
        assert_eq!(read.unwrap(), 2);
        assert_eq!((gate.skip, gate.penalty), (0, 0));
        // Skipping: blocks without polling, and counts the wait.
        gate.skip = 1;
        let read = gate.wait(&mut (), true, |_| unreachable!("polled"), |_| Ok(3));
        assert_eq!(read.unwrap(), 3);
        assert_eq!(gate.skip, 0);
    }

    #[test]
    fn misses_skip_more_waits_and_hits_fewer() {
        let mut gate = Gate::default();
        for expected in [1, 2, 4, 8] {
            gate.learn(false);
            assert_eq!(gate.skip, expected);
        }
        // Missing every other time still grows the skip.
        gate.learn(true);
        gate.learn(false);
        assert_eq!(gate.skip, 14);
        // Hits bring it back down, one each.
        for _ in 0..14 {
            gate.learn(true);
        }
        gate.learn(false);
        assert_eq!(gate.skip, 1);
        for _ in 0..20 {
            gate.learn(false);
        }
        assert_eq!(gate.skip, MAX_SKIP);
    }
}
