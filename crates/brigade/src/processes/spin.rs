//! Polling a socket for a short while before a blocking read, where the next message usually
//! comes within microseconds.
//!
//! A sequential round trip (submit, wait for the result, submit again) used to put three
//! threads to sleep per call: the worker between calls, the slot thread between answers, the
//! caller in `result()`. On a VM a sleeping thread costs tens of microseconds to wake (the
//! idle vCPU halts, and the wake-up is an interrupt to the host), far more than the message
//! itself. So the worker and its slot thread keep polling their socket for up to
//! [`SPIN_FOR`] before they block, when their recent waits were short; the caller still
//! parks, and the core it leaves is the one the polling slot thread uses.
//!
//! The polling yields the core between polls: on a machine with as many busy threads as
//! cores, a poller must not keep the thread it waits for (the caller, about to submit) off
//! the core. Yielding to nobody is one cheap system call.
//!
//! A waiter stops polling after a wait that [`Gate`] counts as long, and starts again after a
//! short one: an idle pool, or calls that come far apart, cost one bounded poll per wait at
//! most, then none.

use std::io;
use std::time::{Duration, Instant};

/// The longest a waiter polls before it blocks: a few round trips on a loaded VM.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(50);

/// A wait that ended later than this, counted from the start of the poll, turns polling off
/// until a wait ends sooner.
const SHORT_WAIT: Duration = Duration::from_micros(200);

/// Whether a waiter polls before it blocks, learnt from how long its waits took.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    on: bool,
}

impl Gate {
    /// Waits for `poll` to have read something into `reader`, by polling (while the gate is open and
    /// `worth` holds) and then by `block`. Returns the read's outcome: the bytes read,
    /// 0 at end of stream.
    pub(crate) fn wait<C>(
        &mut self,
        reader: &mut C,
        worth: bool,
        mut poll: impl FnMut(&mut C) -> io::Result<Option<usize>>,
        block: impl FnOnce(&mut C) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let began = Instant::now();
        if self.on && worth {
            loop {
                if let Some(n) = poll(reader)? {
                    return Ok(n);
                }
                if began.elapsed() >= SPIN_FOR {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let outcome = block(reader);
        self.learn(began.elapsed());
        outcome
    }

    /// A wait took `waited`: poll next time only if it was short.
    fn learn(&mut self, waited: Duration) {
        self.on = waited <= SHORT_WAIT;
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn polls_only_after_a_short_wait_and_when_worth_it() {
        let mut gate = Gate::default();
        // Off at first: straight to the blocking read.
        let read = gate.wait(
            &mut (),
            true,
            |_| unreachable!("polled while off"),
            |_| Ok(1),
        );
        assert_eq!(read.unwrap(), 1);
        gate.learn(SHORT_WAIT);
        // On: what the poll reads is taken, with no blocking read.
        let read = gate.wait(&mut (), true, |_| Ok(Some(7)), |_| unreachable!("blocked"));
        assert_eq!(read.unwrap(), 7);
        // End of stream and errors come through the poll as they are.
        assert_eq!(
            gate.wait(&mut (), true, |_| Ok(Some(0)), |_| unreachable!())
                .unwrap(),
            0
        );
        assert!(
            gate.wait(
                &mut (),
                true,
                |_| Err(io::ErrorKind::BrokenPipe.into()),
                |_| unreachable!()
            )
            .is_err()
        );
        // Not worth it: no polling even while on.
        gate.learn(Duration::ZERO);
        let read = gate.wait(&mut (), false, |_| unreachable!("polled"), |_| Ok(2));
        assert_eq!(read.unwrap(), 2);
        // A long wait turns it off.
        gate.learn(SHORT_WAIT + Duration::from_nanos(1));
        let read = gate.wait(
            &mut (),
            true,
            |_| unreachable!("polled while off"),
            |_| Ok(3),
        );
        assert_eq!(read.unwrap(), 3);
    }
}
