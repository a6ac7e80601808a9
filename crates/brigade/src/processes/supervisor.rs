//! Supervision: one thread per slot keeps a worker process running in it, reads the worker's
//! answers, and when the worker dies, settles what it held and starts another.
//!
//! # Who failed
//! When a worker dies, only the call its [ledger](super::ledger) shows it took can have been
//! running: that one fails (with the crash, the timeout, or the garbage the worker sent); every
//! other call it held never ran and goes back to the front of the queue, for the replacement
//! or another worker. A worker killed while idle fails nobody.
//!
//! # Replacing a worker
//! A replacement that cannot start (out of file descriptors or processes, say) is tried again
//! with a growing pause (10 ms doubling to 1 s), for as long as the pool lives; meanwhile the
//! other slots serve the queue. Only when every slot has failed to start a worker for a whole
//! start timeout do the queued tasks fail ([`Error::WorkerStart`]), and the pool serves again
//! as soon as one starts. An initializer that panics in a replacement breaks the pool instead:
//! running it again would fail again.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Job, Shared};
use super::spare::{IDLE_RELEASE, SPARE_MIN};
use super::spawn::{LiveWorker, StartError, join_forwarders, try_again};
use super::spin::{Gate, SPIN_FOR};
use super::wire::{self, FromWorker, readable_within};
use crate::error::Error;
use crate::sync::atomic::Ordering;

/// The first pause after a failed start of a replacement, and the longest.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a worker's service ended.
enum End {
    /// The socket closed: the worker exited or was killed.
    Closed,
    /// The pool killed it because call `id` ran past its timeout.
    TimedOut { id: u64 },
    /// It went past its memory ceiling and left after its last answer.
    Retired,
    /// It said something the pool could not understand; it was killed.
    Garbled(String),
}

/// The body of a slot's thread: keeps a worker running in the slot until the pool is done.
/// The first start's outcome goes to `started` (the builder waits for it).
pub(crate) fn run_slot(
    shared: Arc<Shared>,
    index: usize,
    started: std::sync::mpsc::Sender<Result<(), StartError>>,
) {
    let mut started = Some(started);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut worker = match shared.start_worker() {
            Ok(worker) => worker,
            Err(e) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Err(e));
                    return;
                }
                match e {
                    StartError::Init(message) => {
                        shared.break_pool(format!(
                            "a replacement worker's initializer failed: {message}"
                        ));
                        return;
                    }
                    StartError::Start(message) => {
                        tracing::warn!(
                            slot = index,
                            %message,
                            retry_in = ?backoff,
                            "could not start a replacement worker process; retrying"
                        );
                        shared.worker_start_failed(index, &message);
                        shared.pause(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        if shared.done_with_workers() {
                            shared.timer.stop();
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        backoff = MIN_BACKOFF;
        shared.worker_up(index);
        let slot = &shared.slots[index];
        {
            let mut state = slot.state.lock();
            state.attach(worker.socket.try_clone().ok(), worker.pid, worker.stream);
            slot.room
                .store(state.room(&shared.config), Ordering::Release);
        }
        if let Some(started) = started.take() {
            // The builder returns once every worker is ready to take calls.
            let _ = started.send(Ok(()));
        } else {
            tracing::info!(pid = worker.pid, slot = index, "started a worker process");
        }
        // The pool may have been drained (or its workers stopped) while this worker started:
        // `tell_all_to_exit` and `terminate` then found no worker here.
        let (exit_sent, terminated) = {
            let queue = shared.queue.lock();
            (queue.exit_sent, queue.terminated)
        };
        if exit_sent || terminated {
            let mut state = slot.state.lock();
            state.queue_exit();
            slot.room.store(0, Ordering::Release);
        }
        shared.pump();
        let end = shared.serve(index, &mut worker);
        let in_flight: Vec<Job> = {
            let mut state = slot.state.lock();
            // Before reaping: the timer and `terminate` signal by pid only while the slot still
            // has a socket.
            let held = state.detach();
            slot.room.store(0, Ordering::Release);
            held.into()
        };
        let status = worker.child.wait();
        let taken = worker.ledger.last_taken();
        settle(&shared, worker.pid, end, status, in_flight, taken);
        // Output written before the worker died is forwarded before anyone learns of it.
        join_forwarders(std::mem::take(&mut worker.forwarders));
        shared.pump();
        if shared.done_with_workers() {
            shared.timer.stop();
            return;
        }
    }
}

/// Settles the calls a dead worker held: the one its ledger shows it took fails with why it
/// died; the rest never ran and go back to the front of the queue.
fn settle(
    shared: &Shared,
    pid: u32,
    end: End,
    status: io::Result<ExitStatus>,
    in_flight: Vec<Job>,
    taken: u64,
) {
    if shared.queue.lock().terminated {
        // Stopped on purpose by `terminate_workers`/`kill_workers`: nothing is sent again.
        let n = in_flight.len();
        for job in in_flight {
            job.completion.fail(Error::Cancelled);
        }
        shared.finished(n);
        return;
    }
    // The worker takes calls in `in_flight`'s order: those up to the one its ledger names ran
    // (or were running); the rest never started. Normally only the head can have run (the
    // answers of the ones before it arrived before the socket closed); after garbage, answers
    // that followed it are lost, and those calls ran all the same.
    let ran = in_flight
        .iter()
        .position(|job| job.id == taken)
        .map_or(0, |k| k + 1);
    let mut in_flight = in_flight.into_iter();
    let error = match end {
        _ if ran == 0 => None,
        End::Retired => None,
        // The call may have finished just before the kill landed; then the one after it was
        // killed for nothing, and fails with the crash it saw.
        End::TimedOut { id } if id == taken => Some(Error::TimedOut),
        End::Garbled(message) => Some(Error::Codec {
            message: format!(
                "worker process {pid} sent bytes that are not a message while this task ran \
                 ({message}); it was replaced"
            ),
        }),
        End::Closed | End::TimedOut { .. } => Some(match status {
            Ok(status) => Error::WorkerCrashed {
                pid,
                signal: status.signal(),
                code: status.code(),
            },
            Err(_) => Error::WorkerCrashed {
                pid,
                signal: None,
                code: None,
            },
        }),
    };
    let mut failed = 0;
    if let Some(error) = error {
        if !matches!(error, Error::TimedOut) {
            tracing::warn!(pid, %error, "a worker process died while running a task");
        }
        for job in in_flight.by_ref().take(ran) {
            job.completion.fail(error.clone());
            failed += 1;
        }
    } else if let Ok(status) = status
        && !status.success()
    {
        tracing::warn!(pid, %status, "a worker process died between tasks; replacing it");
    }
    let back: Vec<Job> = in_flight.collect();
    if !back.is_empty() {
        let mut queue = shared.queue.lock();
        for job in back.into_iter().rev() {
            queue.jobs.push_front(job);
        }
    }
    shared.finished(failed);
}

impl Shared {
    /// Reads a worker's answers until it goes away.
    fn serve(&self, slot_index: usize, worker: &mut LiveWorker) -> End {
        let slot = &self.slots[slot_index];
        let mut garbled = None;
        let mut retiring = false;
        let mut gate = Gate::default();
        // The last call took less time than a poll lasts.
        let mut quick = false;
        loop {
            // Frames already read first.
            while garbled.is_none() {
                let range = match worker.frames.next_frame() {
                    Ok(Some(range)) => range,
                    Ok(None) => break,
                    Err(e) => {
                        garbled = Some(e.to_string());
                        break;
                    }
                };
                let body = worker.frames.body(range);
                match wire::decode_from_worker(body) {
                    Ok(FromWorker::Done {
                        id,
                        busy_nanos,
                        verdict,
                        payload,
                    }) => {
                        let job = {
                            let mut state = slot.state.lock();
                            let job = if state.in_flight.front().is_some_and(|job| job.id == id) {
                                state.pop_answered()
                            } else {
                                None
                            };
                            let Some(job) = job else {
                                garbled = Some(format!(
                                    "an answer to call {id}, which the worker was not running"
                                ));
                                break;
                            };
                            state.record_busy(busy_nanos);
                            quick = busy_nanos <= SPIN_FOR.as_nanos() as u64;
                            self.new_head(slot_index, &mut state);
                            if let Some(max) = self.config.max_tasks
                                && state.sent >= max
                                && state.in_flight.is_empty()
                                && !state.exiting
                            {
                                // Recycled: it leaves cleanly, and a fresh one takes its place.
                                tracing::info!(
                                    pid = worker.pid,
                                    tasks = state.sent,
                                    "recycling a worker process after its task quota"
                                );
                                state.queue_exit();
                            }
                            // The worker reads before it runs its next call: what did not fit
                            // before may fit now.
                            state.flush();
                            slot.room.store(state.room(&self.config), Ordering::Release);
                            job
                        };
                        // The pool's own bookkeeping first, the task's completion last: completing
                        // it wakes its waiter, who typically submits again at once, and would
                        // otherwise find this thread holding the queue's lock (a futex wait and
                        // wake more per call). Whoever waits for the pool to drain still waits
                        // for this thread, which completes the task before it reads again.
                        self.finished(1);
                        self.pump();
                        // The frame is not needed again (no resend after an answer): its warm
                        // memory goes to the next large call before this one's waiter wakes.
                        let Job {
                            frame, completion, ..
                        } = job;
                        self.spares.give(frame);
                        completion.finish(verdict, payload);
                    }
                    Ok(FromWorker::Pull { want }) => self.write_through(slot_index, worker, want),
                    Ok(FromWorker::Retiring { rss }) => {
                        tracing::info!(
                            pid = worker.pid,
                            rss,
                            "a worker process passed its memory ceiling; replacing it"
                        );
                        retiring = true;
                        let mut state = slot.state.lock();
                        state.exiting = true;
                        slot.room.store(0, Ordering::Release);
                    }
                    Ok(other) => garbled = Some(format!("unexpected message {other:?}")),
                    Err(e) => garbled = Some(e.to_string()),
                }
            }
            if let Some(message) = &garbled {
                // Nothing after garbage can be trusted to be framed right: the worker goes, and
                // whatever it held is settled by its ledger.
                tracing::warn!(pid = worker.pid, %message, "a worker process sent garbage; killing it");
                let _ = worker.child.kill();
                break;
            }
            if (self.spares.holds_any() || worker.frames.capacity() > SPARE_MIN)
                && !readable_within(&worker.socket, IDLE_RELEASE)
            {
                // No answer for a while: large buffers go back to the system (those another
                // slot still uses are kept, see `Spares::release_idle`).
                self.spares.release_idle();
                worker.frames.release();
            }
            // Poll a while before blocking when the answer is likely microseconds away: the
            // worker's calls are quick and few are in flight (a sequential caller, see
            // `spin`); a long call, or a pool busy on every core, gets no polling.
            let socket = &worker.socket;
            match gate.wait(
                &mut worker.frames,
                quick && self.few_in_flight(),
                |frames| frames.read_now(socket),
                |frames| frames.read_from(socket),
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if try_again(&e) => {}
                Err(_) => break,
            }
        }
        let timed_out = slot.state.lock().timed_out.take();
        if let Some(message) = garbled {
            End::Garbled(message)
        } else if let Some(id) = timed_out {
            End::TimedOut { id }
        } else if retiring {
            End::Retired
        } else {
            End::Closed
        }
    }

    /// Answers a worker's pull: writes its stream up to byte `want`, waiting for room in its
    /// socket without holding the slot's lock. The worker is reading until it has that byte,
    /// so the wait ends; if it dies instead, the socket reports it and the wait ends too.
    fn write_through(&self, slot_index: usize, worker: &LiveWorker, want: u64) {
        let slot = &self.slots[slot_index];
        loop {
            {
                let mut state = slot.state.lock();
                state.flush();
                if !state.owes(want) {
                    return;
                }
            }
            let mut fds = [rustix::event::PollFd::new(
                &worker.socket,
                rustix::event::PollFlags::OUT,
            )];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) if fds[0].revents() == rustix::event::PollFlags::OUT => {}
                Err(rustix::io::Errno::INTR) => {}
                // Hung up, failed: the worker is gone, and the read that follows says so.
                Ok(_) | Err(_) => return,
            }
        }
    }
}
