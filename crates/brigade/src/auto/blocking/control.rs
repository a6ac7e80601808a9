//! The blocking lane's controller: the thread that looks at the busy threads while the lane
//! has work, marks the call sites of sleeping jobs, and starts threads as the sizing rules
//! say (see `sizing.rs`).

use super::*;

/// How often the controller looks while the lane has work: a job is judged asleep when seen
/// asleep at two ticks in a row, so a burst of sleeping calls from a new site gets its
/// threads about a millisecond after it arrives.
const TICK: Duration = Duration::from_micros(500);
/// How often the controller reads the system's available memory.
const MEMORY_EVERY: Duration = Duration::from_millis(100);

impl BlockingLane {
    pub(super) fn start_controller(&self) {
        let lane = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-ctl", self.shared.name))
            .spawn(move || lane.control());
        if spawned.is_err() {
            self.shared.state.lock().controller_running = false;
        }
    }

    /// The controller: one tick per [`TICK`] while the lane has work, parked otherwise.
    fn control(&self) {
        let shared = &self.shared;
        let mut sizing = Sizing::new(shared.cores, shared.max);
        // Per watched slot: the job it was running at the last tick (its start) and whether
        // it was asleep then. A job counts as asleep when seen asleep twice in a row: a
        // computing thread may sleep a moment (a lock, a page fault).
        let mut last: Vec<(Arc<Slot>, u64, bool)> = Vec::new();
        let mut memory_read: Option<Instant> = None;
        let mut last_tick = Instant::now();
        let (mut arrived, mut finished, mut service) = (0u64, 0u64, 0u64);
        let mut suspects = 0;
        loop {
            let mut state = shared.state.lock();
            loop {
                if state.closed && state.queue.is_empty() {
                    state.controller_running = false;
                    drop(state);
                    shared.changed.notify_all();
                    return;
                }
                if !state.queue.is_empty() || state.busy_plain > 0 {
                    break;
                }
                state.controller_parked = true;
                state = shared.changed.wait_timeout(state, Duration::from_secs(1));
                state.controller_parked = false;
            }
            let slots = state.slots.clone();
            drop(state);
            // A thread seen asleep once is looked at again soon: the second sighting is what
            // marks its site, and a burst of that site's calls is waiting for it.
            std::thread::sleep(if suspects > 0 { TICK / 4 } else { TICK });
            let now = Instant::now();
            if memory_read.is_none_or(|at| now - at >= MEMORY_EVERY) {
                memory_read = Some(now);
                shared
                    .memory_ok
                    .store(memory_allows_growth(), Ordering::Relaxed);
            }
            // Which busy threads are asleep, which on (or waiting for) a CPU? Threads running
            // jobs known to sleep are not looked at: there may be hundreds.
            let (mut asleep, mut on_cpu, mut unjudged) = (0, 0, 0);
            suspects = 0;
            let mut seen = Vec::new();
            for slot in slots {
                let job = slot.busy_since.load(Ordering::Relaxed);
                if job == 0 {
                    continue;
                }
                if slot.waits.load(Ordering::Relaxed) {
                    asleep += 1;
                    continue;
                }
                let watch = slot
                    .watch
                    .get_or_init(|| slot.tid.and_then(Watch::of_thread));
                let Some(now_asleep) = watch.as_ref().and_then(Watch::asleep) else {
                    unjudged += 1;
                    continue;
                };
                let before = last
                    .iter()
                    .find(|(s, j, _)| Arc::ptr_eq(s, &slot) && *j == job)
                    .map(|(_, _, was)| *was);
                match (before, now_asleep) {
                    (_, false) => on_cpu += 1,
                    (Some(true), true) => {
                        asleep += 1;
                        let site = slot.site.load(Ordering::Relaxed);
                        if site != 0 {
                            // SAFETY: `run` stores the address of a `&'static Site`, which
                            // lives as long as the process.
                            let site = unsafe { &*(site as *const Site) };
                            site.seen_waiting();
                        }
                    }
                    (_, true) => {
                        unjudged += 1;
                        suspects += 1;
                    }
                }
                seen.push((slot, job, now_asleep));
            }
            last = seen;
            let mut state = shared.state.lock();
            // Jobs of sites placed on the compute lane while they queued go there now, rather
            // than when a thread of this lane comes free (which, with every thread asleep in
            // a slow call, could be a while).
            let mut forward = Vec::new();
            if state.queue.iter().any(Job::belongs_on_compute) {
                let (go, stay): (VecDeque<Job>, VecDeque<Job>) =
                    state.queue.drain(..).partition(Job::belongs_on_compute);
                state.queue = stay;
                forward = go.into();
            }
            let queued_waiting = state.queue.iter().filter(|j| j.waits_now()).count();
            let observed = Observed {
                threads: state.threads,
                queued: state.queue.len(),
                queued_waiting,
                asleep,
                on_cpu,
                unjudged,
                arrived: state.arrived - arrived,
                finished: state.finished - finished,
                service_ns: state.service_ns - service,
                dt_s: (now - last_tick).as_secs_f64(),
                memory_ok: shared.memory_ok.load(Ordering::Relaxed),
            };
            (arrived, finished, service) = (state.arrived, state.finished, state.service_ns);
            last_tick = now;
            let (grow, why) = sizing.plan(&observed);
            shared
                .saturated
                .store(sizing.saturating_now(), Ordering::Relaxed);
            let mut starts = Vec::with_capacity(grow);
            for _ in 0..grow {
                // Jobs that sleep first: they are why the lane grows.
                let at = state.queue.iter().position(Job::waits_now).unwrap_or(0);
                let Some(job) = state.queue.remove(at) else {
                    break;
                };
                let waits = job.waits_now();
                if !waits {
                    state.busy_plain += 1;
                }
                self.reserve_thread(&mut state);
                starts.push((job, waits));
            }
            drop(state);
            for job in forward {
                (job.run)(Go::Forward);
            }
            if !starts.is_empty() {
                tracing::debug!(lane = %shared.name, started = starts.len(), ?why, "brigade auto: blocking lane grows");
            }
            self.start_threads(starts);
        }
    }
}

/// Whether the system has memory to spare for more threads: at least 5 % of it, and 64 MiB,
/// available (Linux's `MemAvailable`; elsewhere, always).
fn memory_allows_growth() -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
            return true;
        };
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_ascii_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        };
        match (field("MemTotal:"), field("MemAvailable:")) {
            (Some(total), Some(available)) => available >= (total / 20).max(64 * 1024),
            _ => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}
