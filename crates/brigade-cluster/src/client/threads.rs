//! The client's two threads: the writer (submissions, cancellations) and the reader (start
//! notices and outcomes from the client's reply stream).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::{Command, Shared};
use crate::broker::{Reply, Submission};
use crate::codec::{OutcomeFrame, TaskId, decode_frame};
use crate::error::ClusterError;
use crate::link::Link;

/// Submissions written in one pipelined round trip at most.
const WRITE_BATCH: usize = 512;
/// How long one wait on the reply stream lasts: bounds how long the reader takes to notice
/// that its client is gone. Outcomes wake it at once.
const REPLY_WAIT: Duration = Duration::from_millis(500);

pub(super) fn spawn(
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    reader: Link,
) -> Result<(), ClusterError> {
    let name = format!("brigade-client-{}", shared.id);
    let s = shared.clone();
    std::thread::Builder::new()
        .name(format!("{name}-w"))
        .spawn(move || write_loop(&s, &commands))
        .map_err(|e| ClusterError::Thread(e.to_string()))?;
    std::thread::Builder::new()
        .name(format!("{name}-r"))
        .spawn(move || read_loop(&shared, reader))
        .map_err(|e| ClusterError::Thread(e.to_string()))?;
    Ok(())
}

/// Queues submissions in batches (whatever arrived while the last batch was being written),
/// then sends the cancellations that came with them. Ends when every sender is gone: the
/// client and every task that could still be cancelled.
fn write_loop(shared: &Shared, commands: &Receiver<Command>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Ok(first) = commands.recv() {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match commands.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let mut link = shared.writer();
        let mut submissions: Vec<Submission> = Vec::new();
        let mut cancels: Vec<TaskId> = Vec::new();
        {
            let mut pending = shared.pending();
            for command in batch.drain(..) {
                match command {
                    // A task cancelled before it was written is never written.
                    Command::Submit(s) => match pending.get(&s.id) {
                        Some(p) if p.waiter.is_cancelled() => {
                            pending.remove(&s.id);
                        }
                        Some(_) => submissions.push(s),
                        None => {}
                    },
                    Command::Cancel(id) => cancels.push(id),
                }
            }
        }
        if !submissions.is_empty() {
            // Retried until the broker takes them; given up only once the client is closed,
            // which fails (abandons) the tasks instead of leaving them waiting.
            let written = link.run(|c| c.submit(&submissions), || shared.is_closed());
            let mut pending = shared.pending();
            match written {
                Ok(entries) => {
                    for (s, entry) in submissions.iter().zip(entries) {
                        if let Some(p) = pending.get_mut(&s.id) {
                            p.entry = Some(entry);
                        }
                    }
                }
                Err(e) => {
                    // Dropping the completers fails the tasks with `Error::Abandoned`.
                    tracing::error!(error = %e, "could not queue {} tasks", submissions.len());
                    let failed: Vec<_> = submissions
                        .iter()
                        .filter_map(|s| pending.remove(&s.id))
                        .collect();
                    drop(pending);
                    drop(failed);
                }
            }
        }
        for id in cancels {
            let Some(p) = shared.pending().remove(&id) else {
                continue; // finished meanwhile: nothing to cancel
            };
            let Some(entry) = p.entry else { continue };
            if let Err(e) = link.run(|c| c.cancel(id, &entry, p.ttl_ms), || shared.is_closed()) {
                tracing::warn!(task = %id, error = %e, "could not cancel in the broker");
            }
        }
    }
}

/// Completes tasks from the reply stream. After a reconnect it also reads the stored
/// outcomes of every pending task, so an outcome whose notice was lost (a broker restart
/// between the two) still arrives. Ends once the client is closed and nothing is pending.
fn read_loop(shared: &Shared, mut link: Link) {
    let mut cursor = String::from("0");
    let done = || shared.is_closed() && shared.pending().is_empty();
    while !done() {
        let replies = link.run(|c| c.replies(shared.id, &mut cursor, REPLY_WAIT), done);
        if link.take_reconnected() {
            catch_up(shared, &mut link);
        }
        match replies {
            Ok(replies) => {
                for reply in replies {
                    match reply {
                        Reply::Started(ids) => {
                            let mut pending = shared.pending();
                            for id in ids {
                                if let Some(p) = pending.get_mut(&id) {
                                    p.waiter.started();
                                }
                            }
                        }
                        Reply::Outcome(frame) => deliver(shared, &frame),
                    }
                }
            }
            Err(e) if e.is_transient() => {} // closed meanwhile; the loop condition decides
            Err(e) => {
                tracing::error!(error = %e, "reading replies failed");
                std::thread::sleep(REPLY_WAIT);
            }
        }
    }
}

/// Completes the task an outcome frame is for, if it is still pending (a task is completed
/// once: later frames for it are ignored).
fn deliver(shared: &Shared, frame: &[u8]) {
    let (id, outcome) = match decode_frame::<OutcomeFrame>(frame) {
        Ok((id, body)) => (id, body.outcome),
        Err((Some(id), e)) => (id, Err(e.into())),
        Err((None, e)) => {
            tracing::error!(error = %e, "unreadable outcome frame");
            return;
        }
    };
    // Completed outside the lock: completing runs the task's done callbacks.
    let waiter = shared.pending().remove(&id).map(|p| p.waiter);
    if let Some(waiter) = waiter {
        waiter.finish(outcome);
    }
}

/// Reads the stored outcome of every pending task that was queued.
fn catch_up(shared: &Shared, link: &mut Link) {
    let ids: Vec<TaskId> = shared
        .pending()
        .iter()
        .filter(|(_, p)| p.entry.is_some())
        .map(|(id, _)| *id)
        .collect();
    if ids.is_empty() {
        return;
    }
    match link.run(|c| c.outcomes(&ids), || shared.is_closed()) {
        Ok(outcomes) => {
            for frame in outcomes.into_iter().flatten() {
                deliver(shared, &frame);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read stored outcomes"),
    }
}
