//! Deadlines of running calls, and the thread that kills workers past them. Started on the
//! first timeout, so pools without timeouts never have it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::shared::Shared;
use crate::sync::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct Timer {
    state: Mutex<TimerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TimerState {
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    started: bool,
    stopped: bool,
}

impl Timer {
    /// Kill the worker in `slot` at `at` if it still runs call `id` then.
    pub(crate) fn arm(&self, shared: &Shared, at: Instant, slot: usize, id: u64) {
        let mut state = self.state.lock();
        state.deadlines.push(Reverse((at, slot, id)));
        if !state.started && !state.stopped {
            state.started = true;
            let shared = shared.me.clone();
            let spawned = std::thread::Builder::new()
                .name("brigade-proc-timer".into())
                .spawn(move || {
                    if let Some(shared) = shared.upgrade() {
                        shared.timer.run(&shared);
                    }
                });
            if spawned.is_err() {
                state.started = false;
                tracing::error!("could not start the process pool's timer thread");
            }
        }
        self.wake.notify_one();
    }

    fn run(&self, shared: &Shared) {
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            match state.deadlines.peek() {
                None => state = self.wake.wait(state),
                Some(Reverse((at, _, _))) if *at > now => {
                    let left = *at - now;
                    state = self.wake.wait_timeout(state, left);
                }
                Some(_) => {
                    let Reverse((_, slot, id)) = state.deadlines.pop().expect("peeked");
                    drop(state);
                    shared.expire(slot, id);
                    state = self.state.lock();
                }
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}
