//! What the pool's handle and its threads share: the settings, the queue of calls, the
//! [slots](super::slot), and the moving of calls from the one to the other.
//!
//! # Who does what
//! * **Submitters** encode the call into a frame and queue it, then [`pump`](Shared::pump):
//!   move queued calls to the slots with room, writing each frame to its worker's socket.
//! * Each **slot thread** ([`supervisor`](super::supervisor)) starts its worker process, reads
//!   its answers, completes the tasks, pumps again, and when the worker dies, settles what it
//!   held and starts another.
//!
//! # No deadlock on full sockets
//! Nobody blocks writing to a worker: frames the socket does not take at once wait in their
//! slot, and the slot thread writes them as the worker makes room (see
//! [`slot`](super::slot#writing-without-blocking)).
//!
//! # Locks
//! The queue's lock and a slot's lock are never held together.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::slot::{Slot, SlotState};
use super::spare::Spares;
use super::timer::Timer;
use super::wire::Verdict;
use crate::error::Error;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

/// The pool's settings, fixed at build time.
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) memory_limit: Option<u64>,
    /// The largest encoded argument or result.
    pub(crate) message_limit: usize,
    pub(crate) initializer: Option<InitCall>,
    pub(crate) task_timeout: Option<Duration>,
    /// How long a worker may take to start; also how long the pool goes on without any worker
    /// before it fails the queued tasks.
    pub(crate) start_timeout: Duration,
    pub(crate) program: PathBuf,
}

/// The initializer as it travels: trampoline and function offsets, and the encoded argument.
#[derive(Debug, Clone)]
pub(crate) struct InitCall {
    pub(crate) trampoline: i64,
    pub(crate) func: i64,
    pub(crate) payload: Vec<u8>,
}

/// How a job's task is completed, with its result type erased.
pub(crate) trait Completion: Send {
    /// Claims the task to run it; false when the handle cancelled it first. Idempotent: a
    /// call sent again after its worker died is still owned.
    fn start(&mut self) -> bool;
    /// Decodes the worker's answer and completes the task.
    fn finish(self: Box<Self>, verdict: Verdict, payload: &[u8]);
    /// Completes the task with `error`.
    fn fail(self: Box<Self>, error: Error);
}

/// A call waiting for, or on its way to, a worker. The frame is kept until the answer comes,
/// so the call can be sent again if its worker dies before taking it.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) frame: Vec<u8>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) completion: Box<dyn Completion>,
}

pub(crate) struct Queue {
    pub(crate) jobs: VecDeque<Job>,
    closed: bool,
    /// The workers were stopped by `terminate_workers`/`kill_workers`: whatever they held fails.
    pub(crate) terminated: bool,
    broken: Option<String>,
    /// Every worker was told to exit (closed and nothing outstanding).
    pub(crate) exit_sent: bool,
    /// Per slot: since when starting its worker has failed, without a success since.
    down_since: Vec<Option<Instant>>,
    /// Set while no worker has been up for a whole start timeout: why.
    unavailable: Option<String>,
}

/// See the module docs.
pub(crate) struct Shared {
    pub(crate) me: Weak<Shared>,
    pub(crate) config: Config,
    pub(crate) queue: Mutex<Queue>,
    /// Accepted and not yet finished: queued or in flight. Counted up under the queue's lock
    /// (with the check that the pool is open) and down without it: the slot threads finish
    /// a call each per answer, and would otherwise meet on the lock (measured: about half a
    /// futex wait and wake per 1 ms call with two workers). Whoever brings it to zero takes
    /// the lock to see whether the pool is closed, and `close` looks again after closing.
    outstanding: AtomicUsize,
    /// Notified when the outstanding count reaches zero, and when the pool closes.
    drained: Condvar,
    /// The machine's cores, as far as this process may use them.
    cores: usize,
    pub(crate) slots: Vec<Slot>,
    pub(crate) timer: Timer,
    /// Warm buffers for large call frames.
    pub(crate) spares: Spares,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        let slots = (0..config.workers).map(|_| Slot::new()).collect();
        // One large frame in flight per worker, and one being encoded.
        let spares = Spares::new(config.workers + 1);
        let down_since = vec![None; config.workers];
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
                terminated: false,
                broken: None,
                exit_sent: false,
                down_since,
                unavailable: None,
            }),
            outstanding: AtomicUsize::new(0),
            drained: Condvar::new(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            slots,
            timer: Timer::default(),
            spares,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether fewer calls are outstanding than there are cores: then a core is likely idle,
    /// and a slot thread that polls for an answer (see `spin`) keeps no one from working.
    /// With more, every core has a worker or a submitter to run, and polling would steal from
    /// them (`cpu-fanout`, pipelined submits).
    pub(crate) fn few_in_flight(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) < self.cores
    }

    /// A fresh call id (never 0, which the ledger reads as "none").
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live workers' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|slot| slot.state.lock().pid)
            .filter(|&pid| pid != 0)
            .collect()
    }

    /// Queues a job; gives it back with the reason when the pool takes no more work.
    pub(crate) fn enqueue(&self, job: Job) -> Result<(), (Job, Error)> {
        {
            let mut queue = self.queue.lock();
            if let Some(reason) = &queue.broken {
                let reason = reason.clone();
                return Err((job, Error::Broken { reason }));
            }
            if queue.closed {
                return Err((job, Error::ShutDown));
            }
            if let Some(message) = &queue.unavailable {
                let message = message.clone();
                return Err((job, Error::WorkerStart { message }));
            }
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            queue.jobs.push_back(job);
        }
        self.pump();
        Ok(())
    }

    /// The slot with the most room, if any has room.
    fn pick_slot(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| (slot.room.load(Ordering::Acquire), index))
            .filter(|(room, _)| *room > 0)
            .max_by_key(|(room, _)| *room)
            .map(|(_, index)| index)
    }

    /// The head of a slot's `in_flight` changed: the worker is starting it now. Arms the
    /// timer when the call has a timeout (a timeout too large for the clock is no limit).
    pub(crate) fn new_head(&self, slot_index: usize, state: &mut SlotState) {
        let Some(head) = state.in_flight.front() else {
            return;
        };
        if let Some(timeout) = head.timeout.or(self.config.task_timeout)
            && let Some(at) = Instant::now().checked_add(timeout)
        {
            self.timer.arm(self, at, slot_index, head.id);
        }
    }

    /// Kills the worker in `slot_index` if it is still running call `id` (the timer's job).
    pub(crate) fn expire(&self, slot_index: usize, id: u64) {
        let mut state = self.slots[slot_index].state.lock();
        let running = state.in_flight.front().is_some_and(|head| head.id == id);
        if running && state.socket.is_some() && state.timed_out.is_none() && state.pid != 0 {
            // Threads cannot be stopped from outside; processes can: this is the point. The
            // pid is not reaped yet (the slot thread clears `socket` before it reaps).
            state.timed_out = Some(id);
            tracing::warn!(
                pid = state.pid,
                "killing a worker process whose task ran past its timeout"
            );
            signal(state.pid, rustix::process::Signal::KILL);
        }
    }

    /// Moves queued jobs to slots with room, each slot's batch written in one system call.
    pub(crate) fn pump(&self) {
        loop {
            let Some(slot_index) = self.pick_slot() else {
                return;
            };
            let slot = &self.slots[slot_index];
            let hint = slot.room.load(Ordering::Acquire).max(1);
            let mut batch: Vec<Job> = {
                let mut queue = self.queue.lock();
                let take = hint.min(queue.jobs.len());
                queue.jobs.drain(..take).collect()
            };
            if batch.is_empty() {
                return;
            }
            let mut state = slot.state.lock();
            let room = state.room(&self.config);
            let back = batch.split_off(room.min(batch.len()));
            let mut cancelled = 0;
            for mut job in batch {
                if !job.completion.start() {
                    // Cancelled while queued: its handle already has its outcome.
                    cancelled += 1;
                    continue;
                }
                state.sent += 1;
                state.push(job);
                if state.in_flight.len() == 1 {
                    self.new_head(slot_index, &mut state);
                }
            }
            // A failed write means the worker died; its slot thread sees the socket close and
            // settles everything in flight, these jobs included (its ledger shows they were
            // never taken, so they go to another worker).
            state.flush();
            slot.room.store(state.room(&self.config), Ordering::Release);
            drop(state);
            if cancelled > 0 {
                self.finished(cancelled);
            }
            if !back.is_empty() {
                // The hint was stale; whatever changed the slot pumps again.
                let mut queue = self.queue.lock();
                for job in back.into_iter().rev() {
                    queue.jobs.push_front(job);
                }
                return;
            }
        }
    }

    /// Counts `n` jobs as finished; tells the workers to exit once a closed pool is drained.
    pub(crate) fn finished(&self, n: usize) {
        if self.outstanding.fetch_sub(n, Ordering::AcqRel) != n {
            return;
        }
        let exit_now = {
            let mut queue = self.queue.lock();
            // Read again under the lock: a submit may have come in meanwhile.
            let drained = self.outstanding.load(Ordering::Acquire) == 0;
            // Only a closed pool is waited on (`wait_drained` follows `close`, which notifies
            // by itself); an open one would pay a system call per call for no one.
            if drained && queue.closed {
                self.drained.notify_all();
            }
            queue.closed && drained && !std::mem::replace(&mut queue.exit_sent, true)
        };
        if exit_now {
            self.tell_all_to_exit();
        }
    }

    fn tell_all_to_exit(&self) {
        for slot in &self.slots {
            let mut state = slot.state.lock();
            state.queue_exit();
            slot.room.store(0, Ordering::Release);
        }
    }

    /// Stops taking work; with `cancel_pending`, cancels what is still queued. Workers exit
    /// once everything accepted has finished.
    pub(crate) fn close(&self, cancel_pending: bool) {
        let cancelled: Vec<Job> = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            self.drained.notify_all();
            if cancel_pending {
                queue.jobs.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        let n = cancelled.len();
        for job in cancelled {
            job.completion.fail(Error::Cancelled);
        }
        self.finished(n);
    }

    /// Stops every worker now with `signal`: the pool closes, queued tasks fail with
    /// [`Error::Cancelled`] at once, and the tasks the workers held fail the same way as each
    /// slot thread sees its worker die.
    pub(crate) fn terminate(&self, signal_to_send: rustix::process::Signal) {
        {
            let mut queue = self.queue.lock();
            queue.terminated = true;
        }
        self.close(true);
        for slot in &self.slots {
            let mut state = slot.state.lock();
            state.exiting = true;
            slot.room.store(0, Ordering::Release);
            if state.socket.is_some() && state.pid != 0 {
                signal(state.pid, signal_to_send);
            }
        }
    }

    /// Marks the pool broken: queued jobs fail with the reason and no more are taken.
    pub(crate) fn break_pool(&self, reason: String) {
        let failed: Vec<Job> = {
            let mut queue = self.queue.lock();
            queue.broken.get_or_insert(reason.clone());
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        tracing::error!(%reason, "the process pool is broken");
        let n = failed.len();
        for job in failed {
            job.completion.fail(Error::Broken {
                reason: reason.clone(),
            });
        }
        self.finished(n);
    }

    /// A worker started in `slot_index`: the pool serves again if it had stopped.
    pub(crate) fn worker_up(&self, slot_index: usize) {
        let mut queue = self.queue.lock();
        queue.down_since[slot_index] = None;
        if queue.unavailable.take().is_some() {
            tracing::info!("a worker process started again; the process pool serves again");
        }
    }

    /// Starting a worker in `slot_index` failed with `message`. Once every slot has failed for
    /// a whole start timeout, the queued tasks fail, and new ones are refused, until a worker
    /// starts again.
    pub(crate) fn worker_start_failed(&self, slot_index: usize, message: &str) {
        let now = Instant::now();
        let failed: Vec<Job> = {
            let mut queue = self.queue.lock();
            queue.down_since[slot_index].get_or_insert(now);
            let patience = self.config.start_timeout;
            let all_down_long = queue.down_since.iter().all(|since| {
                since.is_some_and(|since| now.saturating_duration_since(since) >= patience)
            });
            if !all_down_long {
                return;
            }
            let message = format!(
                "none could be started for {patience:?} (the last attempt: {message}); the pool \
                 keeps trying"
            );
            if queue.unavailable.is_none() {
                tracing::error!(%message, "the process pool has no worker process");
            }
            queue.unavailable = Some(message);
            queue.jobs.drain(..).collect()
        };
        let message = self.queue.lock().unavailable.clone().unwrap_or_default();
        let n = failed.len();
        for job in failed {
            job.completion.fail(Error::WorkerStart {
                message: message.clone(),
            });
        }
        self.finished(n);
    }

    /// Waits up to `pause` before the next attempt at starting a worker; returns early when the
    /// pool closes.
    pub(crate) fn pause(&self, pause: Duration) {
        let deadline = Instant::now().checked_add(pause);
        let mut queue = self.queue.lock();
        while !queue.closed {
            let left = deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return;
            }
            queue = self.drained.wait_timeout(queue, left);
        }
    }

    /// Blocks until every accepted job has finished, or `deadline` passes. True when drained.
    pub(crate) fn wait_drained(&self, deadline: Option<Instant>) -> bool {
        let mut queue = self.queue.lock();
        while self.outstanding.load(Ordering::Acquire) > 0 {
            match deadline {
                None => queue = self.drained.wait(queue),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    queue = self.drained.wait_timeout(queue, left);
                }
            }
        }
        true
    }

    pub(crate) fn done_with_workers(&self) -> bool {
        let queue = self.queue.lock();
        queue.broken.is_some() || (queue.closed && self.outstanding.load(Ordering::Acquire) == 0)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }
}

/// Sends `signal` to a worker (which the slot thread has not reaped yet, so the pid is still
/// the worker's).
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}
