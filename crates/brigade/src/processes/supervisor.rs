//! The pool's side of its workers: the queue, one supervising thread per worker slot, and what
//! happens when a worker dies.
//!
//! # Who does what
//! * **Submitters** encode the call into a frame and queue it, then [`pump`](Shared::pump):
//!   move queued calls to the slots with room, writing each frame to its worker's socket.
//! * Each **slot thread** starts its worker process, reads its answers, completes the tasks,
//!   pumps again, and when the worker dies, settles what it was running and starts another.
//! * Two small threads per worker forward its stdout and stderr to ours, whole lines at a time.
//!
//! # What a worker is running
//! A worker runs calls one at a time, in the order their frames arrived, and the pool writes
//! frames to a slot under the slot's lock in the order it records them in `in_flight`. So the
//! head of `in_flight` is the call the worker is running, and the rest are waiting in its
//! socket. When the worker dies, only the head failed; the rest go back to the front of the
//! queue for another worker. Sending calls ahead (`depth`) hides the round trip; how many is
//! sized from the worker's measured busy time (see `SlotIo::record_busy`), and calls longer
//! than 10 ms are sent one at a time, so they never wait behind a long call while a worker is
//! free.
//!
//! # No deadlock on full sockets
//! Writers block while a worker's socket buffer is full; the worker's reader thread drains it
//! into memory independently of the call it is running, so a write always completes. The slot
//! thread never writes while a worker is blocked on answering it... except through `pump`, and
//! that write completes for the same reason.
//!
//! # Locks
//! The queue's lock and a slot's lock are never held together.

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::call;
use super::wire::{self, FrameReader, FrameWriter, FromWorker, Status};
use super::worker::{WORKER_ARG, WORKER_ENV};
use crate::error::Error;
use crate::sync::{Condvar, Mutex};

/// The pool's settings, fixed at build time.
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) initializer: Option<i64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) start_timeout: Duration,
    pub(crate) program: PathBuf,
}

/// A task's producing side, with its result type erased.
pub(crate) trait Pending: Send {
    /// Claims the task to run it; false when the handle cancelled it first. Idempotent: a
    /// call sent again after its worker died is still owned.
    fn start(&mut self) -> bool;
    /// Decodes the worker's answer and completes the task.
    fn finish(self: Box<Self>, status: Status, payload: &[u8]);
    /// Completes the task with `error`.
    fn fail(self: Box<Self>, error: Error);
}

/// A call waiting for, or on its way to, a worker. The frame is kept until the answer comes,
/// so the call can be sent again if its worker dies before starting it.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) frame: Vec<u8>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pending: Box<dyn Pending>,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Accepted and not yet finished: queued or in flight.
    outstanding: usize,
    closed: bool,
    broken: Option<String>,
    /// Every worker was told to exit (closed and nothing outstanding).
    exit_sent: bool,
}

struct Slot {
    io: Mutex<SlotIo>,
    /// Hints for choosing a slot without locking each one; exact under the lock.
    room: AtomicUsize,
}

struct SlotIo {
    /// Our end of the live, ready worker's socket; `None` between workers.
    socket: Option<UnixStream>,
    in_flight: VecDeque<Job>,
    /// Calls sent to the current worker, for recycling.
    sent: usize,
    /// Calls this worker may hold at once (running plus waiting in its socket).
    depth: usize,
    /// Smoothed time the worker spends per call, in nanoseconds.
    busy_nanos: f64,
    /// Told to exit, or retiring: send nothing more.
    exiting: bool,
    /// The live worker's pid (0 between workers).
    pid: u32,
    /// The call whose timeout killed the worker.
    timed_out: Option<u64>,
}

/// What the pool shares between its handle and its threads.
pub(crate) struct Shared {
    me: std::sync::Weak<Shared>,
    pub(crate) config: Config,
    queue: Mutex<Queue>,
    drained: Condvar,
    slots: Vec<Slot>,
    timer: Timer,
    next_id: AtomicU64,
}

/// The time a round trip to a worker costs, roughly, beside which a call counts as tiny: a
/// slot holds about this much work ahead so that the worker never waits for the pool.
const ROUND_TRIP_NANOS: f64 = 40_000.0;
const MAX_DEPTH: usize = 32;
/// Calls longer than this are sent one at a time (see `SlotIo::record_busy`).
const LONG_CALL_NANOS: f64 = 10_000_000.0;
/// Attempts at starting a replacement worker before the pool is declared broken.
const RESTART_ATTEMPTS: usize = 3;

/// Why starting a worker failed.
pub(crate) enum StartError {
    Start(String),
    Init(String),
}

impl Shared {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        let slots = (0..config.workers)
            .map(|_| Slot {
                io: Mutex::new(SlotIo {
                    socket: None,
                    in_flight: VecDeque::new(),
                    sent: 0,
                    depth: 1,
                    // Unknown work counts as long until measured: sent one call at a time.
                    busy_nanos: LONG_CALL_NANOS,
                    exiting: false,
                    pid: 0,
                    timed_out: None,
                }),
                room: AtomicUsize::new(0),
            })
            .collect();
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                outstanding: 0,
                closed: false,
                broken: None,
                exit_sent: false,
            }),
            drained: Condvar::new(),
            slots,
            timer: Timer::default(),
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live workers' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|slot| slot.io.lock().pid)
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
            queue.outstanding += 1;
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
    /// timer when the call has a timeout.
    fn new_head(&self, slot_index: usize, io: &mut SlotIo) {
        let Some(head) = io.in_flight.front() else {
            return;
        };
        if let Some(timeout) = head.timeout.or(self.config.task_timeout) {
            self.timer
                .arm(self, Instant::now() + timeout, slot_index, head.id);
        }
    }

    /// Kills the worker in `slot_index` if it is still running call `id` (the timer's job).
    fn expire(&self, slot_index: usize, id: u64) {
        let mut io = self.slots[slot_index].io.lock();
        let running = io.in_flight.front().is_some_and(|head| head.id == id);
        if running && io.socket.is_some() && io.timed_out.is_none() && io.pid != 0 {
            // Threads cannot be stopped from outside; processes can: this is the point. The
            // pid is not reaped yet (the slot thread clears `socket` before it reaps).
            io.timed_out = Some(id);
            if let Some(pid) = rustix::process::Pid::from_raw(io.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Moves queued jobs to slots with room.
    pub(crate) fn pump(&self) {
        loop {
            let Some(slot_index) = self.pick_slot() else {
                return;
            };
            let slot = &self.slots[slot_index];
            let Some(mut job) = self.queue.lock().jobs.pop_front() else {
                return;
            };
            let mut io = slot.io.lock();
            if io.room(&self.config) == 0 {
                // The hint was stale; whatever changed the slot pumps again.
                drop(io);
                self.queue.lock().jobs.push_front(job);
                return;
            }
            if !job.pending.start() {
                // Cancelled while queued: its handle already has its outcome.
                drop(io);
                self.finished(1);
                continue;
            }
            io.sent += 1;
            let socket = io.socket.as_ref().expect("a slot with room has a worker");
            // A failed write means the worker died; its slot thread sees the socket close
            // and settles everything in flight, this job included.
            let _ = send_all(socket, &job.frame);
            io.in_flight.push_back(job);
            if io.in_flight.len() == 1 {
                self.new_head(slot_index, &mut io);
            }
            slot.room.store(io.room(&self.config), Ordering::Release);
        }
    }

    /// Counts `n` jobs as finished; tells the workers to exit once a closed pool is drained.
    fn finished(&self, n: usize) {
        let exit_now = {
            let mut queue = self.queue.lock();
            queue.outstanding -= n;
            if queue.outstanding == 0 {
                self.drained.notify_all();
            }
            queue.closed && queue.outstanding == 0 && !std::mem::replace(&mut queue.exit_sent, true)
        };
        if exit_now {
            self.tell_all_to_exit();
        }
    }

    fn tell_all_to_exit(&self) {
        let exit = FrameWriter::exit().seal().expect("tiny frame");
        for slot in &self.slots {
            let mut io = slot.io.lock();
            io.exiting = true;
            slot.room.store(0, Ordering::Release);
            if let Some(socket) = &io.socket {
                let _ = send_all(socket, &exit);
            }
        }
    }

    /// Stops taking work; with `cancel_pending`, cancels what is still queued. Workers exit
    /// once everything accepted has finished.
    pub(crate) fn close(&self, cancel_pending: bool) {
        let cancelled: Vec<Job> = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            if cancel_pending {
                queue.jobs.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        let n = cancelled.len();
        for job in cancelled {
            job.pending.fail(Error::Cancelled);
        }
        self.finished(n);
    }

    /// Marks the pool broken: queued jobs fail with the reason and no more are taken.
    fn break_pool(&self, reason: String) {
        let failed: Vec<Job> = {
            let mut queue = self.queue.lock();
            queue.broken.get_or_insert(reason.clone());
            queue.closed = true;
            queue.jobs.drain(..).collect()
        };
        tracing::error!(%reason, "the process pool is broken");
        let n = failed.len();
        for job in failed {
            job.pending.fail(Error::Broken {
                reason: reason.clone(),
            });
        }
        self.finished(n);
    }

    /// Blocks until every accepted job has finished, or `deadline` passes. True when drained.
    pub(crate) fn wait_drained(&self, deadline: Option<Instant>) -> bool {
        let mut queue = self.queue.lock();
        while queue.outstanding > 0 {
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

    fn done_with_workers(&self) -> bool {
        let queue = self.queue.lock();
        queue.broken.is_some() || (queue.closed && queue.outstanding == 0)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }
}

impl SlotIo {
    fn room(&self, config: &Config) -> usize {
        if self.socket.is_none() || self.exiting {
            return 0;
        }
        // Refill in batches, once half the calls are answered: fewer wake-ups of the worker's
        // reader per call.
        if self.in_flight.len() > self.depth / 2 {
            return 0;
        }
        let mut room = self.depth - self.in_flight.len();
        if let Some(max) = config.max_tasks {
            room = room.min(max.saturating_sub(self.sent));
        }
        room
    }

    /// Learns from a finished call how many calls to keep ahead of this worker.
    ///
    /// Tiny calls: enough queued to cover a round trip, so the worker never waits for the
    /// pool. Calls up to `LONG_CALL_NANOS`: one queued behind the running one, so the worker
    /// goes straight on to the next instead of idling for a round trip (3–6 % of a 1 ms call);
    /// the price is that this one call may wait while another worker is free, for less than
    /// one call's time. Longer calls go one at a time: the round trip is then noise, and a call
    /// must not wait behind a long one.
    fn record_busy(&mut self, busy_nanos: u64) {
        self.busy_nanos = 0.8 * self.busy_nanos + 0.2 * busy_nanos as f64;
        let ahead = (ROUND_TRIP_NANOS / self.busy_nanos.max(1.0)).floor() as usize;
        let ahead = if self.busy_nanos < LONG_CALL_NANOS {
            ahead.max(3)
        } else {
            ahead
        };
        self.depth = (1 + ahead).clamp(1, MAX_DEPTH);
    }
}

/// Writes a whole frame without raising `SIGPIPE` if the worker is gone.
fn send_all(socket: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(socket, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A live worker process, as its slot thread holds it.
struct Worker {
    child: Child,
    pid: u32,
    socket: UnixStream,
    frames: FrameReader,
    forwarders: Vec<JoinHandle<()>>,
}

/// Whether a failed read is worth retrying: interrupted, or a read timeout ran out.
fn try_again(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads more bytes into `frames`; `Ok(0)` at end of stream.
fn read_some(socket: &mut UnixStream, frames: &mut FrameReader) -> io::Result<usize> {
    let want = frames.wanted().max(64 * 1024);
    let spare = frames.spare(want);
    let got = socket.read(spare);
    frames.filled(want, *got.as_ref().unwrap_or(&0));
    got
}

/// Forwards a worker's output stream to ours, one whole line per write; a last line without
/// a newline gets one, so it is not glued to someone else's output.
fn forward(from: impl Read + Send + 'static, to_stdout: bool) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("brigade-proc-output".into())
        .spawn(move || {
            let mut from = BufReader::with_capacity(64 * 1024, from);
            let mut line = Vec::new();
            loop {
                line.clear();
                match from.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() != Some(&b'\n') {
                            line.push(b'\n');
                        }
                        let _ = if to_stdout {
                            io::stdout().lock().write_all(&line)
                        } else {
                            io::stderr().lock().write_all(&line)
                        };
                    }
                }
            }
        })
}

impl Shared {
    /// Starts one worker and takes it through the handshake.
    fn start_worker(&self) -> Result<Worker, StartError> {
        let start = |e: io::Error| StartError::Start(e.to_string());
        let (mut socket, theirs) = UnixStream::pair().map_err(start)?;
        let mut child = Command::new(&self.config.program)
            .arg(WORKER_ARG)
            .env(WORKER_ENV, wire::VERSION.to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError::Start(format!("{}: {e}", self.config.program.display())))?;
        let pid = child.id();
        let mut forwarders = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            forwarders.extend(forward(out, true).ok());
        }
        if let Some(err) = child.stderr.take() {
            forwarders.extend(forward(err, false).ok());
        }
        let mut worker = Worker {
            child,
            pid,
            socket: socket.try_clone().map_err(start)?,
            frames: FrameReader::default(),
            forwarders,
        };
        match self.handshake(&mut worker, &mut socket) {
            Ok(()) => Ok(worker),
            Err(e) => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                Err(e)
            }
        }
    }

    fn handshake(&self, worker: &mut Worker, socket: &mut UnixStream) -> Result<(), StartError> {
        let deadline = Instant::now() + self.config.start_timeout;
        let pid = worker.pid;
        let no_answer = |what: &str| {
            StartError::Start(format!(
                "worker process {pid} {what} before finishing brigade's handshake; is {} a \
                 program that links this build of brigade?",
                self.config.program.display()
            ))
        };
        let next = |worker: &mut Worker| -> Result<Vec<u8>, StartError> {
            loop {
                if let Some(range) = worker
                    .frames
                    .next_frame()
                    .map_err(|e| StartError::Start(e.to_string()))?
                {
                    return Ok(worker.frames.body(range).to_vec());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(no_answer(&format!(
                        "did not answer within {:?}",
                        self.config.start_timeout
                    )));
                }
                worker
                    .socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| StartError::Start(e.to_string()))?;
                match read_some(&mut worker.socket, &mut worker.frames) {
                    Ok(0) => {
                        let status = worker.child.wait().ok();
                        let how = status.map_or("vanished".into(), |s| format!("exited ({s})"));
                        return Err(no_answer(&how));
                    }
                    Ok(_) => {}
                    // A read timeout (the handshake's deadline is checked above) or a signal.
                    Err(e) if try_again(&e) => {}
                    Err(e) => return Err(StartError::Start(e.to_string())),
                }
            }
        };
        let hello = next(worker)?;
        match wire::decode_from_worker(&hello) {
            Ok(FromWorker::Hello {
                version, layout, ..
            }) if version == wire::VERSION && layout == call::layout_check() => {}
            Ok(FromWorker::Hello { .. }) => {
                return Err(StartError::Start(
                    "the worker process runs a different build of brigade".into(),
                ));
            }
            other => return Err(StartError::Start(format!("unexpected hello: {other:?}"))),
        }
        let init = FrameWriter::init(
            self.config.initializer,
            self.config.memory_limit.unwrap_or(0),
        )
        .seal()
        .expect("tiny frame");
        send_all(socket, &init).map_err(|e| StartError::Start(e.to_string()))?;
        let answer = next(worker)?;
        let result = match wire::decode_from_worker(&answer) {
            Ok(FromWorker::Ready) => Ok(()),
            Ok(FromWorker::InitFailed { message }) => Err(StartError::Init(message.to_owned())),
            other => Err(StartError::Start(format!(
                "unexpected answer to init: {other:?}"
            ))),
        };
        worker
            .socket
            .set_read_timeout(None)
            .map_err(|e| StartError::Start(e.to_string()))?;
        result
    }
}

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
    let mut failures = 0;
    loop {
        let mut worker = match shared.start_worker() {
            Ok(worker) => worker,
            Err(e) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Err(e));
                    return;
                }
                failures += 1;
                match e {
                    StartError::Init(message) => {
                        shared.break_pool(format!(
                            "a replacement worker's initializer failed: {message}"
                        ));
                        return;
                    }
                    StartError::Start(message) if failures >= RESTART_ATTEMPTS => {
                        shared
                            .break_pool(format!("could not start a replacement worker: {message}"));
                        return;
                    }
                    StartError::Start(message) => {
                        tracing::warn!(%message, "could not start a replacement worker; retrying");
                        continue;
                    }
                }
            }
        };
        failures = 0;
        let slot = &shared.slots[index];
        {
            let mut io = slot.io.lock();
            io.socket = worker.socket.try_clone().ok();
            io.pid = worker.pid;
            io.timed_out = None;
            io.sent = 0;
            io.exiting = false;
            slot.room.store(io.room(&shared.config), Ordering::Release);
        }
        // The builder returns once every worker is ready to take calls.
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        // The pool may have been drained while this worker started: `tell_all_to_exit` then
        // found no socket here.
        if shared.queue.lock().exit_sent {
            let mut io = slot.io.lock();
            io.exiting = true;
            slot.room.store(0, Ordering::Release);
            let exit = FrameWriter::exit().seal().expect("tiny frame");
            let _ = send_all(&worker.socket, &exit);
        }
        shared.pump();
        let end = shared.serve(index, &mut worker);
        let in_flight: Vec<Job> = {
            let mut io = slot.io.lock();
            // Before reaping: the timer kills by pid only while the slot still has a socket.
            io.socket = None;
            io.pid = 0;
            io.exiting = false;
            slot.room.store(0, Ordering::Release);
            io.in_flight.drain(..).collect()
        };
        let status = worker.child.wait();
        settle(&shared, worker.pid, end, status, in_flight);
        // Output written before the worker died is forwarded before anyone learns of it
        // (bounded: a grandchild holding the pipes must not stall the pool).
        join_forwarders(worker.forwarders);
        shared.pump();
        if shared.done_with_workers() {
            shared.timer.stop();
            return;
        }
    }
}

fn join_forwarders(forwarders: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    for handle in forwarders {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}

/// Settles the calls a dead worker held: the one it was running fails with why it died, the
/// rest go back to the front of the queue.
fn settle(
    shared: &Shared,
    pid: u32,
    end: End,
    status: io::Result<ExitStatus>,
    in_flight: Vec<Job>,
) {
    let mut in_flight = in_flight.into_iter();
    let mut failed = 0;
    let head_error = match end {
        End::Retired => None,
        End::TimedOut { id } => {
            // The call may have finished just before the kill landed; then the one after it
            // was killed for nothing and goes back to the queue like the rest.
            if in_flight
                .as_slice()
                .first()
                .is_some_and(|head| head.id == id)
            {
                Some(Error::TimedOut)
            } else {
                None
            }
        }
        End::Garbled(message) => Some(Error::Codec { message }),
        End::Closed => Some(match status {
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
    if let Some(error) = head_error
        && let Some(head) = in_flight.next()
    {
        if !matches!(error, Error::TimedOut) {
            tracing::warn!(pid, %error, "a worker process died while running a task");
        }
        head.pending.fail(error);
        failed = 1;
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
    fn serve(&self, slot_index: usize, worker: &mut Worker) -> End {
        let slot = &self.slots[slot_index];
        let mut garbled = None;
        let mut retiring = false;
        loop {
            // Frames already read first.
            loop {
                let range = match worker.frames.next_frame() {
                    Ok(Some(range)) => range,
                    Ok(None) => break,
                    Err(e) => {
                        garbled = Some(e.to_string());
                        let _ = worker.child.kill();
                        break;
                    }
                };
                let body = worker.frames.body(range);
                match wire::decode_from_worker(body) {
                    Ok(FromWorker::Done {
                        id,
                        busy_nanos,
                        status,
                        payload,
                    }) => {
                        let job = {
                            let mut io = slot.io.lock();
                            match io.in_flight.front() {
                                Some(job) if job.id == id => {}
                                _ => {
                                    drop(io);
                                    garbled = Some(format!(
                                        "an answer to call {id}, which the worker was not running"
                                    ));
                                    let _ = worker.child.kill();
                                    break;
                                }
                            }
                            let job = io.in_flight.pop_front().expect("checked");
                            io.record_busy(busy_nanos);
                            self.new_head(slot_index, &mut io);
                            if let Some(max) = self.config.max_tasks
                                && io.sent >= max
                                && io.in_flight.is_empty()
                                && !io.exiting
                            {
                                // Recycled: it leaves cleanly, and a fresh one takes its place.
                                io.exiting = true;
                                let exit = FrameWriter::exit().seal().expect("tiny frame");
                                let _ = send_all(&worker.socket, &exit);
                            }
                            slot.room.store(io.room(&self.config), Ordering::Release);
                            job
                        };
                        job.pending.finish(status, payload);
                        self.finished(1);
                        self.pump();
                    }
                    Ok(FromWorker::Retiring { rss }) => {
                        tracing::info!(
                            pid = worker.pid,
                            rss,
                            "a worker passed its memory ceiling; replacing it"
                        );
                        retiring = true;
                        let mut io = slot.io.lock();
                        io.exiting = true;
                        slot.room.store(0, Ordering::Release);
                    }
                    Ok(other) => {
                        garbled = Some(format!("unexpected message {other:?}"));
                        let _ = worker.child.kill();
                    }
                    Err(e) => {
                        garbled = Some(e.to_string());
                        let _ = worker.child.kill();
                    }
                }
            }
            match read_some(&mut worker.socket, &mut worker.frames) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if try_again(&e) => {}
                Err(_) => break,
            }
        }
        let timed_out = slot.io.lock().timed_out.take();
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
}

/// Deadlines of running calls, and the thread that kills workers past them. Started on the
/// first timeout, so pools without timeouts never have it.
#[derive(Default)]
struct Timer {
    state: Mutex<TimerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TimerState {
    deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
    started: bool,
    stopped: bool,
}

impl Timer {
    /// Kill the worker in `slot` at `at` if it still runs call `id` then.
    fn arm(&self, shared: &Shared, at: Instant, slot: usize, id: u64) {
        let mut state = self.state.lock();
        state.deadlines.push(std::cmp::Reverse((at, slot, id)));
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
                Some(std::cmp::Reverse((at, _, _))) if *at > now => {
                    let left = *at - now;
                    state = self.wake.wait_timeout(state, left);
                }
                Some(_) => {
                    let std::cmp::Reverse((_, slot, id)) = state.deadlines.pop().expect("peeked");
                    drop(state);
                    shared.expire(slot, id);
                    state = self.state.lock();
                }
            }
        }
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}
