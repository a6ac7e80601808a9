//! What the suite runs: the kinds of task, the mixes, and the instruments around a run (the
//! ticker, the thread-count sampler).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brigade_http::{blocking_connection, hyper_connection};

use super::DELAY_MS;

/// One kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Cpu,
    Blocking,
    Async,
    Tiny,
}

/// A mix: phases, each a burst of tasks in the order they are submitted.
pub(super) struct Mix {
    pub(super) name: &'static str,
    pub(super) phases: Vec<Vec<Kind>>,
}

impl Mix {
    pub(super) fn tasks(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }

    pub(super) fn has(&self, kind: Kind) -> bool {
        self.phases.iter().flatten().any(|k| *k == kind)
    }
}

/// `counts` of each kind, interleaved as evenly as they go (a, b, c, a, b, c, …).
pub(super) fn interleave(counts: &[(Kind, usize)]) -> Vec<Kind> {
    let total: usize = counts.iter().map(|c| c.1).sum();
    let mut out = Vec::with_capacity(total);
    let mut placed = vec![0usize; counts.len()];
    // Each kind's next slot is at (placed + 0.5) / count of the way through: merge by that.
    while out.len() < total {
        let (i, _) = counts
            .iter()
            .enumerate()
            .filter(|(i, c)| placed[*i] < c.1)
            .map(|(i, c)| (i, (placed[i] as f64 + 0.5) / c.1 as f64))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("some kind has tasks left");
        out.push(counts[i].0);
        placed[i] += 1;
    }
    out
}

pub(super) fn mixes(quick: bool) -> Vec<Mix> {
    let s = |n: usize| if quick { (n / 20).max(2) } else { n };
    use Kind::{Async, Blocking, Cpu, Tiny};
    let phase = |c, b, a| interleave(&[(Cpu, s(c)), (Blocking, s(b)), (Async, s(a))]);
    vec![
        Mix {
            name: "cpu",
            phases: vec![vec![Cpu; s(1000)]],
        },
        Mix {
            name: "blocking",
            phases: vec![vec![Blocking; s(400)]],
        },
        Mix {
            name: "async",
            phases: vec![vec![Async; s(400)]],
        },
        Mix {
            name: "tiny",
            phases: vec![vec![Tiny; if quick { 2_000 } else { 100_000 }]],
        },
        Mix {
            name: "thirds",
            phases: vec![phase(200, 200, 200)],
        },
        Mix {
            name: "shifting",
            phases: vec![
                phase(600, 40, 40),
                phase(40, 200, 40),
                phase(40, 40, 400),
                phase(600, 40, 40),
                phase(40, 200, 40),
                phase(40, 40, 400),
            ],
        },
    ]
}

/// What every impl's tasks need.
#[derive(Clone)]
pub(super) struct Kit {
    pub(super) addr: SocketAddr,
    pub(super) path: Arc<str>,
    /// Iterations of the CPU kernel that take ~1 ms here.
    pub(super) cpu_iters: u64,
    /// The blocking kind sleeps instead of calling the server.
    pub(super) sleep: bool,
}

impl Kit {
    /// The checksum of one task of `kind`: every impl must agree.
    pub(super) fn expected(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Cpu => cpu_work(self.cpu_iters),
            Kind::Blocking if self.sleep => 1,
            Kind::Blocking | Kind::Async => brigade_http::BODY.len() as u64,
            Kind::Tiny => 1,
        }
    }
}

/// ~1 ms of arithmetic (with `Kit::cpu_iters`): an LCG and a xor-shift, folded.
pub(super) fn cpu_work(iters: u64) -> u64 {
    let mut x = iters;
    for _ in 0..iters {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x & 0xffff
}

/// Iterations of `cpu_work` per millisecond: the fastest of several timed runs, so that a
/// preempted run (a busy machine) does not shrink the work.
pub(super) fn calibrate() -> u64 {
    let mut iters = 1_000u64;
    loop {
        let start = Instant::now();
        std::hint::black_box(cpu_work(std::hint::black_box(iters)));
        if start.elapsed() >= Duration::from_millis(10) {
            break;
        }
        iters *= 2;
    }
    let fastest = (0..7)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(cpu_work(std::hint::black_box(iters)));
            start.elapsed()
        })
        .min()
        .expect("seven runs");
    (iters as f64 * 1e-3 / fastest.as_secs_f64()) as u64
}

pub(super) fn blocking_work(kit: &Kit) -> u64 {
    if kit.sleep {
        std::thread::sleep(Duration::from_millis(DELAY_MS));
        return 1;
    }
    blocking_connection(kit.addr, &kit.path, 1, || {}).expect("blocking GET")
}

pub(super) async fn async_work(addr: SocketAddr, path: Arc<str>) -> u64 {
    hyper_connection(addr, path.to_string(), 1, || {})
        .await
        .expect("async GET")
}

/// The 1 ms ticker: how late each wake-up was, in µs, until `stop`.
pub(super) async fn ticker(stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut late = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(deadline).await;
        late.push((tokio::time::Instant::now() - deadline).as_secs_f64() * 1e6);
    }
    late
}

/// The process's thread count.
pub(super) fn threads_now() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_ascii_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the thread count every millisecond until dropped; gives the peak.
pub(super) struct ThreadPeak {
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<usize>>,
    baseline: usize,
}

impl ThreadPeak {
    pub(super) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // Counted before the sampler starts, so the sampler itself is not "added".
        let baseline = threads_now();
        let stop2 = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !stop2.load(Ordering::Relaxed) {
                peak = peak.max(threads_now());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(threads_now())
        });
        Self {
            stop,
            sampler: Some(sampler),
            baseline,
        }
    }

    /// Threads above the baseline at the peak (the sampler itself not counted).
    pub(super) fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.take().map_or(0, |s| s.join().unwrap_or(0));
        peak.saturating_sub(self.baseline + 1)
    }
}
