//! How many threads the blocking lane needs: the pure logic of its controller, fed one
//! observation per tick.
//!
//! The rules and the prior art they come from (Little's law, Go's sysmon hand-off, .NET's
//! starvation detection, Netflix's Gradient2) are described in the [module docs of
//! `auto`](super#the-blocking-lane). In order, each tick:
//!
//! 1. nothing queued, memory short, or at the cap: no growth;
//! 2. past the cores with service time rising (Gradient2): no growth;
//! 3. queued calls from sites known to sleep: a thread each;
//! 4. every busy thread asleep: double;
//! 5. threads not known to sleep fewer than the cores: fill the cores;
//! 6. threads on the CPU fill the cores: no growth;
//! 7. a quarter of the way towards Little's law.

/// One tick's view of the lane.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Observed {
    /// Threads alive (or starting).
    pub(crate) threads: usize,
    /// Jobs waiting for a thread.
    pub(crate) queued: usize,
    /// Of those, jobs from call sites known to sleep.
    pub(crate) queued_waiting: usize,
    /// Busy threads seen asleep, on the CPU, or not yet judged (running for under a tick).
    pub(crate) asleep: usize,
    pub(crate) on_cpu: usize,
    pub(crate) unjudged: usize,
    /// Jobs that arrived, and finished, since the last tick; their total service time.
    pub(crate) arrived: u64,
    pub(crate) finished: u64,
    pub(crate) service_ns: u64,
    /// Seconds since the last tick.
    pub(crate) dt_s: f64,
    /// Whether memory allows more threads.
    pub(crate) memory_ok: bool,
}

/// Why the controller grew the lane (for tests and tracing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Growth {
    /// Nothing to do, or a gate is shut.
    None,
    /// Queued jobs from sites that sleep: a thread each.
    Waiting,
    /// Every busy thread asleep while work waits: double.
    Starved,
    /// Under the core count with work waiting.
    Cores,
    /// Stepping towards Little's law.
    Little,
}

/// A decaying average.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    primed: bool,
}

impl Ewma {
    fn add(&mut self, x: f64, weight: f64) {
        if self.primed {
            self.value += weight * (x - self.value);
        } else {
            self.value = x;
            self.primed = true;
        }
    }
}

/// The controller's memory between ticks.
#[derive(Debug, Clone)]
pub(crate) struct Sizing {
    cores: usize,
    max: usize,
    arrivals_per_s: Ewma,
    service_short: Ewma,
    service_long: Ewma,
    /// Ticks since the lane last grew past the core count.
    since_growth: u32,
}

impl Sizing {
    pub(crate) fn new(cores: usize, max: usize) -> Self {
        Self {
            cores: cores.max(1),
            max: max.max(1),
            arrivals_per_s: Ewma::default(),
            service_short: Ewma::default(),
            service_long: Ewma::default(),
            since_growth: u32::MAX,
        }
    }

    /// The threads Little's law asks for, from the measured rates (0 until measured).
    pub(crate) fn little(&self) -> usize {
        if !self.service_long.primed {
            return 0;
        }
        let l = self.arrivals_per_s.value * self.service_long.value / 1e9;
        l.ceil().min(self.max as f64) as usize
    }

    /// Whether service time is rising: more threads are only queueing elsewhere (Gradient2).
    fn saturating(&self) -> bool {
        self.service_long.primed && self.service_short.value > 2.0 * self.service_long.value
    }

    /// Whether growth past the cores is on hold (service time rising since the last growth).
    pub(crate) fn saturating_now(&self) -> bool {
        self.saturating() && self.since_growth < 100
    }

    /// How many threads to start now, and why.
    pub(crate) fn plan(&mut self, o: &Observed) -> (usize, Growth) {
        if o.dt_s > 0.0 {
            self.arrivals_per_s.add(o.arrived as f64 / o.dt_s, 0.2);
        }
        if o.finished > 0 {
            let mean = o.service_ns as f64 / o.finished as f64;
            self.service_short.add(mean, 0.5);
            self.service_long.add(mean, 0.02);
        }
        self.since_growth = self.since_growth.saturating_add(1);
        if o.queued == 0 || !o.memory_ok || o.threads >= self.max {
            return (0, Growth::None);
        }
        let room = self.max - o.threads;
        let busy = o.asleep + o.on_cpu + o.unjudged;
        // Past the cores, rising service time means more threads only queue elsewhere.
        if o.threads >= self.cores && self.saturating_now() {
            return (0, Growth::None);
        }
        // Jobs known to sleep get a thread each.
        if o.queued_waiting > 0 {
            return self.grew(o.queued_waiting.min(room), Growth::Waiting);
        }
        if busy > 0 && o.asleep == busy {
            // Every thread asleep and work waiting: double (grow fast).
            return self.grew(busy.min(o.queued).min(room), Growth::Starved);
        }
        // Threads not known to sleep fill the cores, like a compute pool would.
        let cpu_busy = o.on_cpu + o.unjudged;
        if cpu_busy < self.cores {
            let n = (self.cores - cpu_busy).min(o.queued).min(room);
            return self.grew(n, Growth::Cores);
        }
        if o.on_cpu >= self.cores {
            return (0, Growth::None);
        }
        let target = self.little();
        if target > o.threads {
            // Step a quarter of the way: the estimate is noisy, and overshooting costs memory.
            let step = ((target - o.threads) / 4).max(1).min(o.queued).min(room);
            return self.grew(step, Growth::Little);
        }
        (0, Growth::None)
    }

    fn grew(&mut self, n: usize, why: Growth) -> (usize, Growth) {
        if n == 0 {
            return (0, Growth::None);
        }
        self.since_growth = 0;
        (n, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick() -> Observed {
        Observed {
            dt_s: 0.001,
            memory_ok: true,
            ..Observed::default()
        }
    }

    #[test]
    fn nothing_queued_nothing_started() {
        let mut s = Sizing::new(2, 512);
        assert_eq!(s.plan(&tick()).0, 0);
    }

    #[test]
    fn jobs_that_sleep_get_a_thread_each_up_to_the_cap() {
        let mut s = Sizing::new(2, 512);
        let o = Observed {
            threads: 2,
            queued: 398,
            queued_waiting: 398,
            asleep: 2,
            ..tick()
        };
        assert_eq!(s.plan(&o), (398, Growth::Waiting));
        let mut capped = Sizing::new(2, 100);
        assert_eq!(capped.plan(&o), (98, Growth::Waiting));
        // …but not when memory is short.
        assert_eq!(
            s.plan(&Observed {
                memory_ok: false,
                ..o
            })
            .0,
            0
        );
    }

    #[test]
    fn all_asleep_doubles_and_cpu_bound_work_stays_at_the_core_count() {
        let mut s = Sizing::new(2, 512);
        let starved = Observed {
            threads: 4,
            queued: 100,
            asleep: 4,
            ..tick()
        };
        assert_eq!(s.plan(&starved), (4, Growth::Starved));

        let mut s = Sizing::new(2, 512);
        let cpu_bound = Observed {
            threads: 2,
            queued: 1000,
            on_cpu: 2,
            arrived: 1000,
            finished: 2,
            service_ns: 2_000_000,
            ..tick()
        };
        for _ in 0..100 {
            assert_eq!(s.plan(&cpu_bound).0, 0);
        }
    }

    #[test]
    fn under_the_core_count_unknown_work_gets_threads() {
        let mut s = Sizing::new(4, 512);
        let o = Observed {
            threads: 1,
            queued: 10,
            unjudged: 1,
            ..tick()
        };
        assert_eq!(s.plan(&o), (3, Growth::Cores));
    }

    #[test]
    fn littles_law_steps_towards_arrival_rate_times_service_time() {
        let mut s = Sizing::new(2, 512);
        // 2,000 arrivals per second, 20 ms each: 40 threads busy in the steady state.
        let o = Observed {
            threads: 8,
            queued: 5,
            asleep: 4,
            on_cpu: 1,
            unjudged: 3,
            arrived: 2,
            finished: 2,
            service_ns: 40_000_000,
            ..tick()
        };
        for _ in 0..50 {
            s.plan(&o);
        }
        assert_eq!(s.little(), 40);
        let (n, why) = s.plan(&o);
        assert_eq!(why, Growth::Little);
        assert_eq!(n, 5); // a quarter of the way (8), no more than is queued (5)
    }

    #[test]
    fn rising_service_time_stops_growth_past_the_cores() {
        let mut s = Sizing::new(2, 512);
        let calm = Observed {
            threads: 8,
            queued: 0,
            finished: 10,
            service_ns: 10 * 10_000_000,
            ..tick()
        };
        for _ in 0..100 {
            s.plan(&calm);
        }
        // Service time quadruples (a saturated disk, say) while every thread sleeps.
        let slow = Observed {
            queued: 50,
            asleep: 8,
            finished: 10,
            service_ns: 10 * 40_000_000,
            ..calm
        };
        s.since_growth = 0;
        assert_eq!(s.plan(&slow), (0, Growth::None));
    }
}
