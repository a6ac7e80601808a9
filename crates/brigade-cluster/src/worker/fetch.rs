//! The fetcher: takes tasks from the broker, starts them on the lane, runs maintenance, and
//! drains on stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Finished, InFlight, MAX_PREFETCH, State, TICK, heartbeat, pid_of};
use crate::broker::{DeadLetterRequest, Delivery, Expired, Release, Start};
use crate::codec::{
    ClientId, OutcomeFrame, TaskFrame, TaskId, WireError, decode_frame, encode_frame,
};
use crate::function::RunOutcome;
use crate::link::Link;

/// How long a dead letter's failure outcome is kept when its frame cannot say.
const DEFAULT_TTL_MS: u64 = 24 * 3600 * 1000;

pub(super) struct Fetcher<'a> {
    state: &'a Arc<State>,
    link: Link,
    last_maintenance: Option<Instant>,
}

/// A delivery ready to run.
struct Ready {
    delivery: Delivery,
    id: TaskId,
    frame: TaskFrame,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(state: &'a Arc<State>) -> Self {
        let initial = state
            .initial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let link = match initial {
            Some(con) => Link::with(state.broker.clone(), con, "worker fetcher"),
            None => Link::new(state.broker.clone(), "worker fetcher"),
        };
        Self {
            state,
            link,
            last_maintenance: None,
        }
    }

    /// Fetches and starts tasks until a stop is asked for.
    pub(super) fn serve(&mut self) {
        let state = self.state;
        while !state.stopping() {
            let room = self.wait_for_room();
            if self.last_maintenance.is_none_or(|t| t.elapsed() >= TICK) {
                self.last_maintenance = Some(Instant::now());
                self.maintain(room);
            }
            let room = state.capacity().saturating_sub(state.inflight().len());
            if room == 0 || state.stopping() {
                continue;
            }
            let name = &state.name;
            let fetched = self
                .link
                .run(|c| c.fetch(name, room, TICK), || state.stopping());
            if self.link.take_reconnected() {
                self.recover();
            }
            match fetched {
                Ok(deliveries) => self.accept(deliveries),
                Err(e) if e.is_transient() => {} // stopping
                Err(e) => {
                    tracing::error!(error = %e, "fetching tasks failed");
                    std::thread::sleep(TICK);
                }
            }
        }
    }

    /// After a reconnect: takes up the tasks the broker delivered to this worker whose
    /// answer was lost with the connection (a fetch or a takeover in flight when it
    /// dropped). Without this they would wait out a lease.
    fn recover(&mut self) {
        let state = self.state;
        let name = &state.name;
        let max = state.concurrency * 4 + MAX_PREFETCH * 2;
        match self.link.run(|c| c.recover(name, max), || state.stopping()) {
            Ok(mine) => {
                if !mine.is_empty() {
                    tracing::info!(
                        tasks = mine.len(),
                        "recovered tasks delivered before a reconnect"
                    );
                }
                self.accept(mine);
            }
            Err(e) => tracing::warn!(error = %e, "could not recover delivered tasks"),
        }
    }

    /// Room for more tasks; waits up to a tick for some when full.
    fn wait_for_room(&self) -> usize {
        let state = self.state;
        let mut inflight = state.inflight();
        if inflight.len() >= state.capacity() {
            inflight = state
                .room
                .wait_timeout(inflight, TICK)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.capacity().saturating_sub(inflight.len())
    }

    /// Due retries back to the queue; expired leases taken over (up to `room`) or, on their
    /// last delivery, dead-lettered.
    fn maintain(&mut self, room: usize) {
        let state = self.state;
        let name = &state.name;
        let done = match self
            .link
            .run(|c| c.maintain(name, room), || state.stopping())
        {
            Ok(done) => done,
            Err(e) => {
                if !e.is_transient() {
                    tracing::error!(error = %e, "maintenance pass failed");
                }
                return;
            }
        };
        if !done.reclaimed.is_empty() {
            tracing::info!(
                tasks = done.reclaimed.len(),
                "took over tasks whose lease expired"
            );
        }
        for expired in done.expired {
            self.dead_letter(expired);
        }
        self.accept(done.reclaimed);
    }

    fn dead_letter(&mut self, expired: Expired) {
        let d = &expired.delivery;
        let (id, ttl_ms) = match decode_frame::<TaskFrame>(&d.frame) {
            Ok((id, frame)) => (id, frame.options.result_ttl_ms),
            Err((Some(id), _)) => (id, DEFAULT_TTL_MS),
            // Not even an id: the record is kept; no client can be told.
            Err((None, _)) => (
                TaskId {
                    client: ClientId(0),
                    seq: 0,
                },
                DEFAULT_TTL_MS,
            ),
        };
        let (pid, signal, reason) = match &expired.last_error {
            Some(last) => {
                let (pid, signal, text) = super::decode_reason(last);
                (pid, signal, text.to_owned())
            }
            None => (
                pid_of(&expired.last_worker),
                None,
                format!(
                    "its lease expired on delivery {} of {} (the worker died or stalled); \
                     last held by {}",
                    d.deliveries, d.max_deliveries, expired.last_worker
                ),
            ),
        };
        tracing::warn!(task = %id, deliveries = d.deliveries, %reason, "dead-lettering a task");
        let outcome = OutcomeFrame {
            outcome: Err(WireError::DeadLettered {
                deliveries: d.deliveries,
                last_error: reason.clone(),
                pid,
                signal,
            }),
        };
        let request = DeadLetterRequest {
            delivery: expired.delivery.clone(),
            id,
            reason,
            last_worker: expired.last_worker,
            ttl_ms,
            outcome: encode_frame(id, &outcome),
        };
        let state = self.state;
        if let Err(e) = self
            .link
            .run(|c| c.dead_letter(&request), || state.stopping())
        {
            // Not lost: its lease runs out again and another pass retries.
            tracing::warn!(task = %id, error = %e, "could not dead-letter");
        }
    }

    /// Starts delivered tasks: those that cannot run (unreadable, unknown function, past
    /// their deadline) end at once with a typed error; the others are announced to their
    /// clients (unless cancelled meanwhile) and go to the lane.
    fn accept(&mut self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let state = self.state;
        let now = state.broker_now_ms();
        let mut ready: Vec<Ready> = Vec::with_capacity(deliveries.len());
        let mut ended: Vec<(Delivery, TaskId, u64, WireError)> = Vec::new();
        {
            let inflight = state.inflight();
            for delivery in deliveries {
                // Our own expired lease taken back while the task still runs here: keep the
                // run going rather than start a second one.
                if inflight.contains_key(&delivery.entry) {
                    continue;
                }
                match decode_frame::<TaskFrame>(&delivery.frame) {
                    Ok((id, frame)) => {
                        let ttl = frame.options.result_ttl_ms;
                        if frame.options.deadline_ms.is_some_and(|d| now > d) {
                            ended.push((delivery, id, ttl, WireError::DeadlinePassed));
                        } else if let Err(e) = state.functions.check(&frame.function, frame.version)
                        {
                            ended.push((delivery, id, ttl, e));
                        } else {
                            ready.push(Ready {
                                delivery,
                                id,
                                frame,
                            });
                        }
                    }
                    Err((Some(id), e)) => ended.push((delivery, id, DEFAULT_TTL_MS, e.into())),
                    Err((None, e)) => {
                        tracing::error!(entry = %delivery.entry, error = %e, "unreadable task frame");
                        ended.push((
                            delivery,
                            TaskId {
                                client: ClientId(0),
                                seq: 0,
                            },
                            DEFAULT_TTL_MS,
                            e.into(),
                        ));
                    }
                }
            }
        }
        for (delivery, id, ttl, error) in ended {
            self.end_now(delivery, id, ttl, error);
        }
        if ready.is_empty() {
            return;
        }
        let starts: Vec<Start> = ready
            .iter()
            .map(|r| Start {
                entry: r.delivery.entry.clone(),
                id: r.id,
                ttl_ms: r.frame.options.result_ttl_ms,
            })
            .collect();
        let go = match self.link.run(|c| c.start(&starts), || state.stopping()) {
            Ok(go) => go,
            Err(e) => {
                // Stopping during an outage, or a broker that refuses: give the tasks back
                // uncounted (they never started) for another worker.
                tracing::warn!(error = %e, "could not start {} tasks", ready.len());
                let releases: Vec<Release> = ready
                    .iter()
                    .map(|r| Release {
                        entry: r.delivery.entry.clone(),
                        deliveries: r.delivery.deliveries.saturating_sub(1),
                        reason: String::new(),
                    })
                    .collect();
                let _ = self.link.run(|c| c.release(&releases), || true);
                return;
            }
        };
        let mut shortest_lease = u64::MAX;
        for (r, go) in ready.into_iter().zip(go) {
            if !go {
                continue; // cancelled: the start script removed it
            }
            shortest_lease = shortest_lease.min(r.delivery.lease_ms);
            self.run_on_lane(r, now);
        }
        heartbeat::lease_added(state, shortest_lease);
    }

    /// Records a task and hands it to the lane.
    fn run_on_lane(&self, r: Ready, now: u64) {
        let state = self.state;
        let Ready {
            delivery,
            id,
            frame,
        } = r;
        let entry = delivery.entry.clone();
        let o = frame.options;
        state.inflight().insert(
            entry.clone(),
            InFlight {
                id,
                frame: delivery.frame,
                lease_ms: delivery.lease_ms,
                max_deliveries: delivery.max_deliveries,
                deliveries: delivery.deliveries,
                attempt: frame.attempt,
                retries: o.retries,
                result_ttl_ms: o.result_ttl_ms,
                backoff: o.backoff_for(frame.attempt),
                handle: None,
            },
        );
        // On the thread lane the outcome is written from the lane thread when the worker is
        // idle; the process lane reports on brigade's own thread, which must not wait on I/O.
        let on_threads = matches!(state.lane, crate::function::Lane::Threads(_));
        let for_done = state.clone();
        let done_entry = entry.clone();
        let done: crate::function::Done = Box::new(move |outcome, took| {
            let finished = Finished {
                entry: done_entry,
                outcome,
                took,
            };
            if on_threads {
                super::finish::finish(&for_done, finished);
            } else {
                for_done
                    .queued_done
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let _ = for_done.done.send(finished);
            }
        });
        let limit = o
            .deadline_ms
            .map(|d| Duration::from_millis(d.saturating_sub(now).max(1)));
        match state.functions.start(
            &frame.function,
            frame.version,
            &state.lane,
            frame.args,
            limit,
            done,
        ) {
            Ok(handle) => {
                if let Some(task) = state.inflight().get_mut(&entry) {
                    task.handle = Some(handle);
                }
            }
            Err((error, done)) => done(RunOutcome::Failed(error), None),
        }
    }

    /// Ends a task that will not run: its outcome goes to the finisher like any other.
    fn end_now(&self, delivery: Delivery, id: TaskId, ttl: u64, error: WireError) {
        let state = self.state;
        let entry = delivery.entry.clone();
        state.inflight().insert(
            entry.clone(),
            InFlight {
                id,
                frame: delivery.frame,
                lease_ms: delivery.lease_ms,
                max_deliveries: delivery.max_deliveries,
                deliveries: delivery.deliveries,
                attempt: 0,
                retries: 0,
                result_ttl_ms: ttl,
                backoff: Duration::ZERO,
                handle: None,
            },
        );
        state
            .queued_done
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = state.done.send(Finished {
            entry,
            outcome: RunOutcome::Failed(error),
            took: None,
        });
    }

    /// After a stop: gives back the tasks the lane has not started (their delivery does not
    /// count), waits up to `timeout` for the running ones, and gives back what is left.
    pub(super) fn drain(&mut self, timeout: Duration) {
        let state = self.state;
        let unstarted: Vec<Release> = {
            let mut inflight = state.inflight();
            let cancelled: Vec<_> = inflight
                .iter()
                .filter(|(_, t)| t.handle.as_ref().is_some_and(|h| h.cancel()))
                .map(|(e, t)| Release {
                    entry: e.clone(),
                    deliveries: t.deliveries.saturating_sub(1),
                    reason: String::new(),
                })
                .collect();
            for r in &cancelled {
                inflight.remove(&r.entry);
            }
            cancelled
        };
        if !unstarted.is_empty() {
            tracing::info!(
                tasks = unstarted.len(),
                "stopping: giving back tasks not started"
            );
            self.release(&unstarted);
        }
        let deadline = Instant::now() + timeout;
        let mut inflight = state.inflight();
        while !inflight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inflight = state
                .room
                .wait_timeout(inflight, left.min(TICK))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let stuck: Vec<Release> = inflight
            .drain()
            .map(|(entry, t)| Release {
                entry,
                deliveries: t.deliveries,
                reason: "its worker stopped while running it (drain timeout)".into(),
            })
            .collect();
        drop(inflight);
        if !stuck.is_empty() {
            tracing::warn!(
                tasks = stuck.len(),
                "drain timed out: giving back running tasks"
            );
            self.release(&stuck);
        }
    }

    fn release(&mut self, tasks: &[Release]) {
        // A few attempts: if the broker is down, the leases run out and others take them.
        let tries = std::cell::Cell::new(0);
        let give_up = || {
            tries.set(tries.get() + 1);
            tries.get() > 20
        };
        if let Err(e) = self.link.run(|c| c.release(tasks), give_up) {
            tracing::warn!(error = %e, "could not give tasks back; their leases will expire");
        }
    }

    /// Leaves the broker's list of workers (if it holds nothing).
    pub(super) fn leave(&mut self) {
        let name = &self.state.name;
        let tries = std::cell::Cell::new(0);
        let _ = self.link.run(
            |c| c.leave(name),
            || {
                tries.set(tries.get() + 1);
                tries.get() > 5
            },
        );
    }
}
