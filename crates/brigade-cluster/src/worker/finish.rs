//! The finisher: turns the lane's outcomes into broker writes, in batches. A task that ends
//! on an idle worker is written by the lane thread that ran it, one thread hop sooner.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use super::{Finished, State, TICK};
use crate::broker::{BrokerError, EntryId, Finish, Release, Retry, Submission};
use crate::codec::{OutcomeRef, TaskFrame, WireError, decode_frame, encode_frame};
use crate::function::RunOutcome;
use crate::link::Link;

/// Outcomes written in one round trip at most.
const BATCH: usize = 256;

pub(super) fn run(state: &State, finished: &Receiver<Finished>) {
    let mut batch: Vec<Finished> = Vec::with_capacity(BATCH);
    loop {
        match finished.recv_timeout(TICK) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {
                // Stops once the fetcher has drained (nothing more can arrive that it waits
                // for) and every outcome that came is written.
                if state.threads_stopping() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH {
            match finished.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        state.queued_done.fetch_sub(batch.len(), Ordering::AcqRel);
        let plan = plan(state, &batch);
        batch.clear();
        let mut link = state
            .finisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Retried through outages: the tasks stay leased (the heartbeat goes on) until they
        // are written, and repeating a write is harmless (the first outcome wins).
        if let Err(e) = apply(&mut link, &plan, || state.threads_stopping()) {
            tracing::error!(error = %e, "could not write {} outcomes", plan.entries.len());
        }
        drop(link);
        state.forget(plan.entries);
    }
}

/// Hands an outcome to the finisher, or, when the worker is idle (nothing else waiting to be
/// written, no task fetched ahead), writes it from this thread at once: one attempt, then
/// the finisher's way.
pub(super) fn finish(state: &State, finished: Finished) {
    let idle = state.queued_done.load(Ordering::Acquire) == 0
        && state.inflight().len() <= state.concurrency;
    if idle && let Ok(mut link) = state.finisher.try_lock() {
        let plan = plan(state, std::slice::from_ref(&finished));
        if apply(&mut link, &plan, || true).is_ok() {
            drop(link);
            state.forget(plan.entries);
            return;
        }
    }
    state.queued_done.fetch_add(1, Ordering::AcqRel);
    let _ = state.done.send(finished);
}

/// What a batch of outcomes asks of the broker.
struct Plan {
    finishes: Vec<Finish>,
    retries: Vec<Retry>,
    releases: Vec<Release>,
    /// The tasks that leave the worker once it is written.
    entries: Vec<EntryId>,
}

/// Outcomes to store (first wins), panics with retries left to reschedule, runs lost with
/// their process to give back.
fn plan(state: &State, batch: &[Finished]) -> Plan {
    let mut plan = Plan {
        finishes: Vec::with_capacity(batch.len()),
        retries: Vec::new(),
        releases: Vec::new(),
        entries: Vec::with_capacity(batch.len()),
    };
    let inflight = state.inflight();
    for Finished {
        entry,
        outcome,
        took,
    } in batch
    {
        if let Some(took) = took {
            state.ran_for(*took);
        }
        let Some(task) = inflight.get(entry) else {
            continue; // given back by a drain that timed out
        };
        let outcome = match outcome {
            RunOutcome::Value(bytes) => Ok(bytes.as_slice()),
            RunOutcome::Failed(e) => {
                if let WireError::Panicked { message } = e
                    && task.attempt < task.retries
                    && let Some(r) = retry(task, entry)
                {
                    tracing::info!(task = %task.id, attempt = task.attempt, %message,
                        "task panicked; retrying after {:?}", r.delay);
                    plan.retries.push(r);
                    plan.entries.push(entry.clone());
                    continue;
                }
                Err(e)
            }
            RunOutcome::Lost {
                reason,
                pid,
                signal,
            } => {
                tracing::warn!(task = %task.id, %reason, "a delivery failed; giving it back");
                plan.releases.push(Release {
                    entry: entry.clone(),
                    deliveries: task.deliveries,
                    reason: super::encode_reason(*pid, *signal, reason),
                });
                plan.entries.push(entry.clone());
                continue;
            }
        };
        plan.finishes.push(Finish {
            entry: entry.clone(),
            id: task.id,
            ttl_ms: task.result_ttl_ms,
            outcome: encode_frame(task.id, &OutcomeRef { outcome }),
        });
        plan.entries.push(entry.clone());
    }
    plan
}

/// Writes a plan: outcomes, then retries, then give-backs.
fn apply(
    link: &mut Link,
    plan: &Plan,
    give_up: impl Fn() -> bool + Copy,
) -> Result<(), BrokerError> {
    if !plan.finishes.is_empty() {
        link.run(|c| c.finish(&plan.finishes), give_up)?;
    }
    for r in &plan.retries {
        link.run(|c| c.retry(r), give_up)?;
    }
    if !plan.releases.is_empty() {
        link.run(|c| c.release(&plan.releases), give_up)?;
    }
    Ok(())
}

/// The task queued again with its attempt advanced; `None` if its frame no longer decodes.
fn retry(task: &super::InFlight, entry: &EntryId) -> Option<Retry> {
    let (id, mut frame) = decode_frame::<TaskFrame>(&task.frame).ok()?;
    frame.attempt += 1;
    Some(Retry {
        entry: entry.clone(),
        delay: task.backoff,
        task: Submission {
            id,
            frame: encode_frame(id, &frame),
            lease_ms: task.lease_ms,
            max_deliveries: task.max_deliveries,
        },
    })
}
