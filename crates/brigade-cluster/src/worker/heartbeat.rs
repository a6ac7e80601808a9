//! The heartbeat: renews the leases of every task the worker holds, three times per shortest
//! lease, so that only a dead or stalled worker loses its tasks.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::State;
use crate::broker::EntryId;
use crate::link::Link;

/// The period while the worker holds nothing (it is woken when a task comes).
pub(super) const IDLE_INTERVAL_MS: u64 = 1000;

pub(super) fn run(state: &State) {
    let mut link = Link::new(state.broker.clone(), "worker heartbeat");
    loop {
        let period = Duration::from_millis(state.heartbeat_ms.load(Ordering::Acquire));
        {
            let (woken, wake) = &state.heartbeat_wake;
            let mut woken = woken.lock().unwrap_or_else(PoisonError::into_inner);
            if !*woken {
                woken = wake
                    .wait_timeout(woken, period)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            *woken = false;
        }
        if state.threads_stopping() {
            return;
        }
        let (entries, shortest): (Vec<EntryId>, u64) = {
            let inflight = state.inflight();
            let shortest = inflight.values().map(|t| t.lease_ms).min();
            (
                inflight.keys().cloned().collect(),
                shortest.unwrap_or(u64::MAX),
            )
        };
        state
            .heartbeat_ms
            .store(period_for(shortest), Ordering::Release);
        if entries.is_empty() {
            continue;
        }
        let name = &state.name;
        match link.run(|c| c.renew(name, &entries), || state.threads_stopping()) {
            Ok(lost) if !lost.is_empty() => {
                // Another worker took them (this one stalled past a lease, or the broker lost
                // track): the run here goes on, and the first outcome written wins.
                tracing::warn!(
                    tasks = lost.len(),
                    "lost the lease of tasks still running here"
                );
            }
            Ok(_) => {}
            Err(e) if e.is_transient() => return, // stopping
            Err(e) => tracing::error!(error = %e, "renewing leases failed"),
        }
    }
}

/// A third of the shortest lease (the idle period when there is none).
fn period_for(shortest_lease_ms: u64) -> u64 {
    if shortest_lease_ms == u64::MAX {
        IDLE_INTERVAL_MS
    } else {
        (shortest_lease_ms / 3).clamp(1, IDLE_INTERVAL_MS)
    }
}

/// A task with a lease of `lease_ms` arrived: wake the heartbeat if its period is too long.
pub(super) fn lease_added(state: &State, lease_ms: u64) {
    if period_for(lease_ms) < state.heartbeat_ms.load(Ordering::Acquire) {
        state
            .heartbeat_ms
            .store(period_for(lease_ms), Ordering::Release);
        wake(state);
    }
}

/// Wakes the heartbeat now.
pub(super) fn wake(state: &State) {
    let (woken, wake) = &state.heartbeat_wake;
    *woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
    wake.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_third_of_the_shortest_lease_within_bounds() {
        assert_eq!(period_for(u64::MAX), IDLE_INTERVAL_MS);
        assert_eq!(period_for(300), 100);
        assert_eq!(period_for(30_000), IDLE_INTERVAL_MS);
        assert_eq!(period_for(1), 1);
    }
}
