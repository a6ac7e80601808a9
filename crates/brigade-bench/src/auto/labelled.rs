//! The classifier's labelled set: workloads whose right lane is known from what their code
//! does, run under a fresh auto pool each, and the decisions counted as right or wrong.
//!
//! A **false positive** is a site moved off its default lane (compute for closures, the loop
//! for futures) although its work does not block or compute for long: the burst of
//! connection starts is the case that matters. A **false negative** is a site that blocks (or
//! whose polls compute for long) left on, or brought back to, its default lane. A **wrong
//! kind** is a site moved to the other off-default lane (CPU polls on the blocking lane, say).
//! The same futures run under the event loop's own detector too, for comparison: it has one
//! off-loop lane, so "flagged" is its positive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brigade::auto::{Auto, Lane, Work};
use brigade::{EventLoop, Task};
use serde_json::{Value, json};

use super::{Kit, async_work, blocking_work, cpu_work};
use crate::measure::{emit, merge};

/// What a workload submits.
#[derive(Clone, Copy)]
enum Shape {
    /// `calls` closures, `at_once` in flight.
    Calls { calls: usize, at_once: usize },
    /// `tasks` futures, all spawned at once.
    Futures { tasks: usize },
}

struct Workload {
    name: &'static str,
    shape: Shape,
    expected: Lane,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let calls = if quick { 24 } else { 64 };
    let burst = if quick { 100 } else { 1000 };
    let c = Shape::Calls { calls, at_once: 8 };
    let f = Shape::Futures { tasks: calls };
    let w = |name, shape, expected| Workload {
        name,
        shape,
        expected,
    };
    vec![
        w("closure: cpu 1 ms", c, Lane::Compute),
        w("closure: cpu 100 us", c, Lane::Compute),
        w("closure: no-op", c, Lane::Compute),
        w("closure: cpu 1 ms, preempted", c, Lane::Compute),
        w("closure: thread::sleep 5 ms", c, Lane::Blocking),
        w("closure: blocking socket read", c, Lane::Blocking),
        w("closure: mutex wait", c, Lane::Blocking),
        w("closure: file write + fsync", c, Lane::Blocking),
        w(
            "future: async GET, burst of connections",
            Shape::Futures { tasks: burst },
            Lane::Loop,
        ),
        w("future: async sleeps", f, Lane::Loop),
        w("future: no-op", f, Lane::Loop),
        w("future: cpu polls 5 ms", f, Lane::Compute),
        w("future: thread::sleep 10 ms", f, Lane::Blocking),
        w("future: blocking read", f, Lane::Blocking),
    ]
}

/// Spinning threads that keep the cores busy for the "preempted" workload.
struct Hogs(
    Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Hogs {
    fn start(n: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self(stop, threads)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// One closure of workload `name` (each workload is one call site: the match arm).
fn closure(
    name: &'static str,
    kit: &Kit,
    lock: &Arc<std::sync::Mutex<()>>,
) -> Box<dyn FnOnce() -> u64 + Send> {
    let kit = kit.clone();
    let lock = lock.clone();
    let scratch = std::env::temp_dir().join(format!("brigade-bench-fsync-{}", std::process::id()));
    match name {
        "closure: cpu 1 ms" | "closure: cpu 1 ms, preempted" => {
            Box::new(move || cpu_work(kit.cpu_iters))
        }
        "closure: cpu 100 us" => Box::new(move || cpu_work(kit.cpu_iters / 10)),
        "closure: no-op" => Box::new(|| 1),
        "closure: thread::sleep 5 ms" => Box::new(|| {
            std::thread::sleep(Duration::from_millis(5));
            1
        }),
        "closure: blocking socket read" => {
            let kit = Kit {
                sleep: false,
                ..kit
            };
            Box::new(move || blocking_work(&kit))
        }
        "closure: mutex wait" => Box::new(move || {
            drop(
                lock.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            1
        }),
        "closure: file write + fsync" => Box::new(move || {
            use std::io::Write;
            let path = scratch.with_extension(
                format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""),
            );
            let mut f = std::fs::File::create(&path).expect("scratch file");
            f.write_all(&[7u8; 4096]).expect("write");
            f.sync_all().expect("fsync");
            drop(f);
            let _ = std::fs::remove_file(&path);
            1
        }),
        other => unreachable!("not a closure workload: {other}"),
    }
}

async fn future(name: &'static str, addr: SocketAddr, path: Arc<str>, kit: Kit) -> u64 {
    match name {
        "future: async GET, burst of connections" => async_work(addr, path).await,
        "future: async sleeps" => {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            1
        }
        "future: no-op" => 1,
        "future: cpu polls 5 ms" => {
            let a = cpu_work(kit.cpu_iters * 5);
            tokio::task::yield_now().await;
            a ^ cpu_work(kit.cpu_iters * 5)
        }
        "future: thread::sleep 10 ms" => {
            std::thread::sleep(Duration::from_millis(10));
            1
        }
        "future: blocking read" => blocking_work(&Kit {
            sleep: false,
            ..kit
        }),
        other => unreachable!("not a future workload: {other}"),
    }
}

/// Runs one trial of `w` under a fresh auto pool: the site's final lane and every lane it
/// was on.
fn trial_auto(
    w: &Workload,
    kit: &Kit,
    workers: usize,
) -> anyhow::Result<(Option<Lane>, Vec<Lane>)> {
    let auto = Auto::builder().workers(workers).build()?;
    run_workload(w, kit, |job| match job {
        Job::Call(f) => auto.submit(f),
        Job::Future(f) => auto.spawn(f),
    })?;
    let report = auto.report();
    let site = report
        .sites
        .iter()
        .filter(|s| {
            s.work
                == if matches!(w.shape, Shape::Calls { .. }) {
                    Work::Calls
                } else {
                    Work::Futures
                }
        })
        .max_by_key(|s| s.calls)
        .ok_or_else(|| anyhow::anyhow!("{}: no site in the report", w.name))?;
    if std::env::var_os("BRIGADE_BENCH_DEBUG").is_some() {
        eprintln!("{}: {report}", w.name);
    }
    let mut visited: Vec<Lane> = site.moves.iter().map(|m| m.to).collect();
    if site.work == Work::Futures {
        visited.insert(0, Lane::Loop);
    }
    Ok((site.lane, visited))
}

/// The same futures under the event loop's own detector: was the site flagged?
fn trial_detector(w: &Workload, kit: &Kit, workers: usize) -> anyhow::Result<bool> {
    let lp = EventLoop::builder().workers(workers).build()?;
    run_workload(w, kit, |job| match job {
        Job::Future(f) => lp.spawn(f),
        Job::Call(_) => unreachable!("futures only"),
    })?;
    Ok(lp.blocking_report().iter().any(|s| s.flagged))
}

enum Job {
    Call(Box<dyn FnOnce() -> u64 + Send>),
    Future(std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>),
}

fn run_workload(
    w: &Workload,
    kit: &Kit,
    mut submit: impl FnMut(Job) -> Task<u64>,
) -> anyhow::Result<()> {
    let lock = Arc::new(std::sync::Mutex::new(()));
    let _hogs = w.name.ends_with("preempted").then(|| Hogs::start(4));
    match w.shape {
        Shape::Calls { calls, at_once } => {
            let mut done = 0;
            while done < calls {
                // The mutex workload: a holder keeps the lock for 2 ms while the wave waits.
                let holder = (w.name == "closure: mutex wait").then(|| {
                    let lock = lock.clone();
                    let (held_tx, held) = std::sync::mpsc::channel();
                    let t = std::thread::spawn(move || {
                        let _g = lock
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        held_tx.send(()).ok();
                        std::thread::sleep(Duration::from_millis(2));
                    });
                    held.recv().ok();
                    t
                });
                let wave: Vec<Task<u64>> = (0..at_once.min(calls - done))
                    .map(|_| submit(Job::Call(closure(w.name, kit, &lock))))
                    .collect();
                for t in wave {
                    t.result()?;
                }
                if let Some(h) = holder {
                    let _ = h.join();
                }
                done += at_once;
            }
        }
        Shape::Futures { tasks } => {
            let all: Vec<Task<u64>> = (0..tasks)
                .map(|_| {
                    submit(Job::Future(Box::pin(future(
                        w.name,
                        kit.addr,
                        kit.path.clone(),
                        kit.clone(),
                    ))))
                })
                .collect();
            for t in all {
                t.result()?;
            }
        }
    }
    Ok(())
}

pub(super) fn run(
    kit: &Kit,
    workers: usize,
    reps: usize,
    quick: bool,
    base: &Value,
) -> anyhow::Result<()> {
    let (mut fp, mut fn_, mut wrong, mut trials) = (0, 0, 0, 0);
    let (mut det_fp, mut det_fn, mut det_trials) = (0, 0, 0);
    let started = Instant::now();
    for w in workloads(quick) {
        let default = match w.shape {
            Shape::Calls { .. } => Lane::Compute,
            Shape::Futures { .. } => Lane::Loop,
        };
        let positive = w.expected != default;
        let mut outcomes = Vec::new();
        let (mut w_fp, mut w_fn, mut w_wrong) = (0, 0, 0);
        for _ in 0..reps {
            let (lane, visited) = trial_auto(&w, kit, workers)?;
            trials += 1;
            let lane = lane.unwrap_or(default);
            if !positive && visited.iter().any(|l| *l != default) {
                w_fp += 1;
            } else if positive && lane == default {
                w_fn += 1;
            } else if positive && lane != w.expected {
                w_wrong += 1;
            }
            outcomes.push(json!({
                "final": lane.to_string(),
                "visited": visited.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }));
        }
        fp += w_fp;
        fn_ += w_fn;
        wrong += w_wrong;
        let mut detector = Value::Null;
        if matches!(w.shape, Shape::Futures { .. }) {
            let mut flagged = 0;
            for _ in 0..reps {
                if trial_detector(&w, kit, workers)? {
                    flagged += 1;
                }
            }
            det_trials += reps;
            if positive {
                det_fn += reps - flagged;
            } else {
                det_fp += flagged;
            }
            detector = json!({ "flagged": flagged, "of": reps });
        }
        let mut line = base.clone();
        merge(
            &mut line,
            &json!({
                "suite": "auto", "workload": "labelled", "case": w.name,
                "expected": w.expected.to_string(), "reps": reps,
                "false_positives": w_fp, "false_negatives": w_fn, "wrong_kind": w_wrong,
                "outcomes": outcomes, "event_loop_detector": detector,
            }),
        );
        emit(&line);
    }
    let mut line = base.clone();
    merge(
        &mut line,
        &json!({
            "suite": "auto", "workload": "labelled", "summary": true,
            "trials": trials, "false_positives": fp, "false_negatives": fn_, "wrong_kind": wrong,
            "event_loop_detector": { "trials": det_trials, "false_positives": det_fp, "false_negatives": det_fn },
            "secs": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        }),
    );
    emit(&line);
    Ok(())
}
