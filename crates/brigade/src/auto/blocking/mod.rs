//! The elastic blocking lane: threads that may sleep, started when work needs them and
//! retired when idle.
//!
//! A job is handed straight to an idle thread (the most recently idle one, so the coldest
//! retire first), else it gets a new thread at once when its call site is known to sleep
//! (placed on this lane, or seen asleep here: a sleeping thread costs no CPU, so waiting work
//! gets a thread each, up to the cap, as tokio's `spawn_blocking` does), or while the threads
//! not known to sleep are fewer than the cores. Otherwise it queues, and the controller
//! decides (see `sizing.rs`): every half millisecond while work is queued or running, it reads each
//! busy thread's `schedstat` to see whether it is asleep or on the CPU, marks the call sites of
//! sleeping jobs, and starts threads as the sizing rules say. A thread idle for the lane's
//! keep-alive exits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::probe::{self, Watch};
use super::report::BlockingStats;
use super::site::Site;
use super::sizing::{Observed, Sizing};
use crate::error::Error;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

/// What a job is told to do when its turn comes.
pub(crate) enum Go {
    Run,
    /// Its site was placed on the compute lane while it queued: go there (only jobs marked
    /// [`forwardable`](Job::forwardable) are told this, by the controller's sweep).
    Forward,
    /// Do not run: end the task with this error (shutdown with `cancel_pending`, no thread).
    Fail(Error),
}

/// One unit of work for the lane.
pub(crate) struct Job {
    run: Box<dyn FnOnce(Go) + Send>,
    site: Option<&'static Site>,
    /// From a site known to sleep (or hinted blocking): a thread at once.
    waits: bool,
    /// Understands [`Go::Forward`].
    forwardable: bool,
}

impl Job {
    pub(crate) fn new(
        site: Option<&'static Site>,
        waits: bool,
        run: impl FnOnce(Go) + Send + 'static,
    ) -> Self {
        Self {
            run: Box::new(run),
            site,
            waits,
            forwardable: false,
        }
    }

    /// Marks the job as one that can be forwarded to the compute lane instead of running.
    pub(crate) fn forwardable(mut self) -> Self {
        self.forwardable = true;
        self
    }

    /// Queued, but its site now belongs on the compute lane.
    fn belongs_on_compute(&self) -> bool {
        self.forwardable
            && self.site.is_some_and(|s| {
                s.route() == super::site::Route::To(super::classify::Lane::Compute)
            })
    }

    fn waits_now(&self) -> bool {
        self.waits || self.site.is_some_and(Site::waits)
    }
}

/// A worker thread's public face: how the controller watches it and hands it work.
struct Slot {
    /// The thread's id, for the controller to open its watch the first time it needs it
    /// (most threads run calls known to sleep, which are never watched: a thread that had to
    /// open a `/proc` file before its first call would start later).
    tid: Option<u64>,
    watch: std::sync::OnceLock<Option<Watch>>,
    /// When its current job started (ns since the lane's epoch); 0 while idle.
    busy_since: AtomicU64,
    /// The current job's site (a `&'static Site` as an address; 0: none).
    site: AtomicUsize,
    /// The current job is known to sleep (so it is not watched).
    waits: AtomicBool,
    handoff: Mutex<Option<Job>>,
    wake: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads alive or starting.
    threads: usize,
    /// Idle threads, most recently idle last.
    idle: Vec<Arc<Slot>>,
    /// Every live thread's slot.
    slots: Vec<Arc<Slot>>,
    /// Threads busy with a job not known to sleep (they count against the cores).
    busy_plain: usize,
    closed: bool,
    arrived: u64,
    finished: u64,
    service_ns: u64,
    peak: usize,
    started: u64,
    retired: u64,
    /// The controller is parked, waiting for work.
    controller_parked: bool,
    controller_running: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the controller, and whoever waits for the threads to exit.
    changed: Condvar,
    name: String,
    cores: usize,
    max: usize,
    keep_alive: Duration,
    epoch: Instant,
    memory_ok: AtomicBool,
    /// Service times are rising (see `sizing.rs`): no growth past the cores.
    saturated: AtomicBool,
}

/// The elastic blocking lane (cloning shares it).
#[derive(Clone)]
pub(crate) struct BlockingLane {
    shared: Arc<Shared>,
}

thread_local! {
    /// The lane this thread works for, if any (its `Shared`'s address).
    static LANE_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl BlockingLane {
    pub(crate) fn new(name: &str, cores: usize, max: usize, keep_alive: Duration) -> Self {
        let lane = Self::unstarted(name, cores, max, keep_alive);
        // The controller starts now, parked, rather than with the first job: a burst from a
        // new call site then does not wait for a thread to start before anyone looks at it.
        lane.shared.state.lock().controller_running = true;
        lane.start_controller();
        lane
    }

    fn unstarted(name: &str, cores: usize, max: usize, keep_alive: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: Vec::new(),
                    slots: Vec::new(),
                    busy_plain: 0,
                    closed: false,
                    arrived: 0,
                    finished: 0,
                    service_ns: 0,
                    peak: 0,
                    started: 0,
                    retired: 0,
                    controller_parked: false,
                    controller_running: false,
                }),
                changed: Condvar::new(),
                name: format!("{name}-blocking"),
                cores: cores.max(1),
                max: max.max(1),
                keep_alive,
                epoch: Instant::now(),
                memory_ok: AtomicBool::new(true),
                saturated: AtomicBool::new(false),
            }),
        }
    }

    /// Runs `job` on the lane; hands it back when the lane is shut down.
    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        let shared = &self.shared;
        let waits = job.waits_now();
        let mut state = shared.state.lock();
        if state.closed {
            return Err(job);
        }
        state.arrived += 1;
        if let Some(slot) = state.idle.pop() {
            if !waits {
                state.busy_plain += 1;
            }
            *slot.handoff.lock() = Some(job);
            drop(state);
            slot.wake.notify_one();
            return Ok(());
        }
        let may_grow = state.threads < shared.max
            && shared.memory_ok.load(Ordering::Relaxed)
            && if waits {
                !shared.saturated.load(Ordering::Relaxed) || state.threads < shared.cores
            } else {
                state.busy_plain < shared.cores
            };
        if may_grow {
            if !waits {
                state.busy_plain += 1;
            }
            self.reserve_thread(&mut state);
            let start_controller = self.controller_needed(&mut state);
            drop(state);
            self.start_thread(job, waits);
            if start_controller {
                self.start_controller();
            }
            return Ok(());
        }
        state.queue.push_back(job);
        let start_controller = self.controller_needed(&mut state);
        let parked = state.controller_parked;
        drop(state);
        if start_controller {
            self.start_controller();
        } else if parked {
            shared.changed.notify_all();
        }
        Ok(())
    }

    fn reserve_thread(&self, state: &mut State) {
        state.threads += 1;
        state.started += 1;
        state.peak = state.peak.max(state.threads);
    }

    fn controller_needed(&self, state: &mut State) -> bool {
        if state.controller_running {
            return false;
        }
        state.controller_running = true;
        true
    }

    /// Starts a thread (already counted in `threads`) whose first job is `job`.
    fn start_thread(&self, job: Job, waits: bool) {
        self.start_threads(vec![(job, waits)]);
    }

    /// Starts a thread for each of `jobs` (already counted in `threads`), each taking one as
    /// its first job. One after another, on this thread: starting them from the new threads
    /// in a tree measured slower here (the kernel serializes much of a thread's creation).
    fn start_threads(&self, jobs: Vec<(Job, bool)>) {
        for job in jobs {
            self.start_one(job);
        }
    }

    fn start_one(&self, job: (Job, bool)) {
        let jobs = vec![job];
        let lane = self.clone();
        // The jobs wait here until the thread takes them, so that a failed start can give
        // them back (the closure given to `spawn` is lost with the error).
        let first = Arc::new(Mutex::new(Some(jobs)));
        let given = first.clone();
        let spawned = std::thread::Builder::new()
            .name(self.shared.name.clone())
            .spawn(move || {
                let job = given.lock().take().and_then(|mut jobs| jobs.pop());
                if let Some((job, waits)) = job {
                    lane.work(job, waits);
                }
            });
        if let Err(e) = spawned {
            let jobs = first.lock().take().expect("the thread never started");
            // No thread (out of memory or of threads): stop growing for a while, and put the
            // jobs back where a live thread or the controller will find them.
            self.shared.memory_ok.store(false, Ordering::Relaxed);
            let mut state = self.shared.state.lock();
            state.threads -= jobs.len();
            state.started -= jobs.len() as u64;
            state.busy_plain -= jobs.iter().filter(|(_, waits)| !waits).count();
            if state.threads == 0 {
                drop(state);
                for (job, _) in jobs {
                    (job.run)(Go::Fail(Error::Spawn {
                        message: e.to_string(),
                    }));
                }
            } else {
                for (job, _) in jobs.into_iter().rev() {
                    state.queue.push_front(job);
                }
            }
        }
    }

    /// A worker thread's life: its first job, then whatever comes, until it idles out.
    fn work(&self, first: Job, first_waits: bool) {
        let shared = &self.shared;
        LANE_OF.with(|l| l.set(Arc::as_ptr(shared) as usize));
        let slot = Arc::new(Slot {
            tid: probe::thread_id(),
            watch: std::sync::OnceLock::new(),
            busy_since: AtomicU64::new(0),
            site: AtomicUsize::new(0),
            waits: AtomicBool::new(false),
            handoff: Mutex::new(None),
            wake: Condvar::new(),
        });
        // The controller watches threads running calls not known to sleep: such a thread shows
        // itself before its first call. One started for a call known to sleep shows itself
        // after it, under the lock it takes then anyway (a burst of hundreds of new threads
        // would otherwise queue on that lock before their first calls).
        let mut registered = !first_waits;
        if registered {
            shared.state.lock().slots.push(slot.clone());
        }
        let mut next = Some((first, first_waits));
        loop {
            if let Some((job, waits)) = next.take() {
                let took = self.run(&slot, job, waits);
                let mut state = shared.state.lock();
                state.finished += 1;
                state.service_ns = state.service_ns.saturating_add(took);
                if !registered {
                    state.slots.push(slot.clone());
                    registered = true;
                }
                if !waits {
                    state.busy_plain -= 1;
                }
                // Drain the queue before idling.
                if let Some(job) = state.queue.pop_front() {
                    let waits = job.waits_now();
                    if !waits {
                        state.busy_plain += 1;
                    }
                    next = Some((job, waits));
                    continue;
                }
                if state.closed {
                    self.exit(&mut state, &slot, false);
                    return;
                }
                state.idle.push(slot.clone());
            }
            // Idle: wait for a hand-off, or retire.
            let mut handoff = slot.handoff.lock();
            let deadline = Instant::now() + shared.keep_alive;
            loop {
                if let Some(job) = handoff.take() {
                    let waits = job.waits_now();
                    next = Some((job, waits));
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                handoff = slot.wake.wait_timeout(handoff, deadline - now);
            }
            drop(handoff);
            if next.is_some() {
                continue;
            }
            let mut state = shared.state.lock();
            if let Some(i) = state.idle.iter().position(|s| Arc::ptr_eq(s, &slot)) {
                // Still idle, nobody handing it work: retire (or leave, when shut down).
                state.idle.remove(i);
                let retired = !state.closed;
                self.exit(&mut state, &slot, retired);
                return;
            }
            // Taken off the idle list by a push that is handing it a job: wait for it.
            drop(state);
            let mut handoff = slot.handoff.lock();
            loop {
                if let Some(job) = handoff.take() {
                    let waits = job.waits_now();
                    next = Some((job, waits));
                    break;
                }
                handoff = slot.wake.wait(handoff);
            }
        }
    }

    fn exit(&self, state: &mut State, slot: &Arc<Slot>, retired: bool) {
        state.threads -= 1;
        if retired {
            state.retired += 1;
        }
        state.slots.retain(|s| !Arc::ptr_eq(s, slot));
        self.shared.changed.notify_all();
    }

    /// Runs `job`; returns how long it took, in ns.
    fn run(&self, slot: &Slot, job: Job, waits: bool) -> u64 {
        let shared = &self.shared;
        let started = Instant::now();
        slot.waits.store(waits, Ordering::Relaxed);
        slot.site.store(
            job.site.map_or(0, |s| std::ptr::from_ref(s) as usize),
            Ordering::Relaxed,
        );
        slot.busy_since.store(
            probe::nanos(started - shared.epoch).max(1),
            Ordering::Relaxed,
        );
        // The job catches its own panics (it completes a task with them).
        (job.run)(Go::Run);
        slot.busy_since.store(0, Ordering::Relaxed);
        probe::nanos(started.elapsed())
    }

    /// Stops taking work; see [`Shutdown`](crate::Shutdown). True when every thread is gone.
    pub(crate) fn shutdown(&self, cancel_pending: bool, wait: Option<Option<Instant>>) -> bool {
        let shared = &self.shared;
        let mut state = shared.state.lock();
        state.closed = true;
        let cancelled: Vec<Job> = if cancel_pending {
            state.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        // Queued work with no thread left to run it (a failed start): give it one.
        let orphan = if state.threads == 0 {
            state.queue.pop_front()
        } else {
            None
        };
        if let Some(job) = &orphan {
            let waits = job.waits_now();
            if !waits {
                state.busy_plain += 1;
            }
            self.reserve_thread(&mut state);
        }
        let idle: Vec<Arc<Slot>> = state.idle.drain(..).collect();
        drop(state);
        shared.changed.notify_all();
        for slot in idle {
            // Woken with nothing: it finds itself off the idle list and the lane closed. It
            // is off the list, so a hand-off is what it waits for: give it a no-op.
            *slot.handoff.lock() = Some(Job::new(None, true, |_| {}));
            slot.wake.notify_one();
        }
        for job in cancelled {
            (job.run)(Go::Fail(Error::Cancelled));
        }
        if let Some(job) = orphan {
            let waits = job.waits_now();
            self.start_thread(job, waits);
        }
        let Some(deadline) = wait else { return false };
        if LANE_OF.with(std::cell::Cell::get) == Arc::as_ptr(shared) as usize {
            return false; // a job of this lane cannot wait for its own thread
        }
        let mut state = shared.state.lock();
        while state.threads > 0 || state.controller_running {
            match deadline {
                None => state = shared.changed.wait(state),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    state = shared.changed.wait_timeout(state, deadline - now);
                }
            }
        }
        true
    }

    pub(crate) fn stats(&self) -> BlockingStats {
        let state = self.shared.state.lock();
        BlockingStats {
            threads: state.threads,
            idle: state.idle.len(),
            peak: state.peak,
            started: state.started,
            retired: state.retired,
            queued: state.queue.len(),
            max: self.shared.max,
        }
    }
}

mod control;
