//! The finisher: turns the lane's outcomes into broker writes, in batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError};

use super::{Finished, State, TICK};
use crate::broker::{EntryId, Finish, Release, Retry, Submission};
use crate::codec::{OutcomeFrame, TaskFrame, WireError, decode_frame, encode_frame};
use crate::function::RunOutcome;
use crate::link::Link;

/// Outcomes written in one round trip at most.
const BATCH: usize = 256;

pub(super) fn run(state: &State, finished: &Receiver<Finished>) {
    let mut link = Link::new(state.broker.clone(), "worker finisher");
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
        write(state, &mut link, &mut batch);
    }
}

/// Writes a batch: outcomes stored (first wins), panics with retries left rescheduled, runs
/// lost with their process given back. Then the tasks leave the worker.
fn write(state: &State, link: &mut Link, batch: &mut Vec<Finished>) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
    let mut retries: Vec<Retry> = Vec::new();
    let mut releases: Vec<Release> = Vec::new();
    let mut entries: Vec<EntryId> = Vec::with_capacity(batch.len());
    {
        let inflight = state.inflight();
        for Finished {
            entry,
            outcome,
            took,
        } in batch.drain(..)
        {
            if let Some(took) = took {
                state.ran_for(took);
            }
            let Some(task) = inflight.get(&entry) else {
                continue; // given back by a drain that timed out
            };
            let outcome = match outcome {
                RunOutcome::Value(bytes) => Ok(bytes),
                RunOutcome::Failed(WireError::Panicked { message })
                    if task.attempt < task.retries =>
                {
                    match retry(task, &entry) {
                        Some(r) => {
                            tracing::info!(task = %task.id, attempt = task.attempt, %message,
                                "task panicked; retrying after {:?}", r.delay);
                            retries.push(r);
                            entries.push(entry);
                            continue;
                        }
                        None => Err(WireError::Panicked { message }),
                    }
                }
                RunOutcome::Failed(e) => Err(e),
                RunOutcome::Lost {
                    reason,
                    pid,
                    signal,
                } => {
                    tracing::warn!(task = %task.id, %reason, "a delivery failed; giving it back");
                    releases.push(Release {
                        entry: entry.clone(),
                        deliveries: task.deliveries,
                        reason: super::encode_reason(pid, signal, &reason),
                    });
                    entries.push(entry);
                    continue;
                }
            };
            finishes.push(Finish {
                entry: entry.clone(),
                id: task.id,
                ttl_ms: task.result_ttl_ms,
                outcome: encode_frame(task.id, &OutcomeFrame { outcome }),
            });
            entries.push(entry);
        }
    }
    // Each write is retried through outages: the task stays leased (its heartbeat goes on)
    // until it is written, and repeating a write is harmless (first outcome wins).
    let never = || state.threads_stopping();
    if let Err(e) = link.run(|c| c.finish(&finishes), never) {
        tracing::error!(error = %e, "could not store {} outcomes", finishes.len());
    }
    for r in &retries {
        if let Err(e) = link.run(|c| c.retry(r), never) {
            tracing::error!(error = %e, "could not schedule a retry");
        }
    }
    if let Err(e) = link.run(|c| c.release(&releases), never) {
        tracing::error!(error = %e, "could not give back {} tasks", releases.len());
    }
    state.forget(entries);
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
