//! The auto router end to end: where each kind of work lands, moves and hints, the blocking
//! lane's growth and shrinking. Workloads are real (sleeps, CPU loops, sockets), but no test
//! asserts on a duration: each waits, call by call, until the report shows the decision it
//! expects (a watchdog fails the test if it never comes), then checks where the work ran.

mod common;

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use brigade::auto::{Auto, Lane, SiteReport, Work};
use brigade::{Error, Shutdown, Task};
use common::{Watchdog, recv};

/// The most calls a test makes while waiting for a decision: far more than the classifier
/// needs (it places a site after 4 samples), so a failure means a wrong decision, not a slow
/// machine.
const CALLS: usize = 400;

/// Computes until the thread has had `d` of CPU time: CPU-bound work, however busy the
/// machine (a spin on the wall clock would get less CPU time when preempted).
fn spin_cpu(d: Duration) -> u64 {
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let start = cpu();
    let mut x = 0u64;
    while cpu() - start < d {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    x
}

/// Submits from the caller's line, and says which line that is.
#[track_caller]
fn submit_tracked<F, T>(auto: &Auto, work: F) -> (Task<T>, &'static Location<'static>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    (auto.submit(work), Location::caller())
}

/// Spawns from the caller's line, and says which line that is.
#[track_caller]
fn spawn_tracked<F>(auto: &Auto, future: F) -> (Task<F::Output>, &'static Location<'static>)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    (auto.spawn(future), Location::caller())
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

fn site_at(auto: &Auto, at: &Location<'_>, work: Work) -> Option<SiteReport> {
    auto.report()
        .sites
        .into_iter()
        .find(|s| s.location == at && s.work == work)
}

/// Calls `call` (which submits from one line and returns its task and that line) until the
/// site's lane is `want`; returns the thread name the last call ran on.
fn until_placed(
    auto: &Auto,
    want: Lane,
    mut call: impl FnMut() -> (Task<String>, &'static Location<'static>),
) -> String {
    for _ in 0..CALLS {
        let (task, at) = call();
        let ran_on = task.result().unwrap();
        let site = site_at(auto, at, Work::Calls).expect("the site is reported");
        if site.lane == Some(want) {
            // One more call: it must run on the lane the site is placed on.
            let (task, _) = call();
            return task.result().unwrap();
        }
        let _ = ran_on;
    }
    panic!("never placed on {want}:\n{}", auto.report());
}

fn auto() -> Auto {
    Auto::builder().workers(2).measure(true).build().unwrap()
}

#[test]
fn a_cpu_site_lands_on_the_compute_lane() {
    let _w = Watchdog::new("a_cpu_site_lands_on_the_compute_lane");
    let auto = auto();
    let ran_on = until_placed(&auto, Lane::Compute, || {
        submit_tracked(&auto, || {
            spin_cpu(Duration::from_millis(2));
            thread_name()
        })
    });
    assert!(ran_on.contains("-compute"), "{ran_on}");
    let report = auto.report();
    let site = &report.sites[0];
    assert_eq!(site.moves[0].from, None);
    // "…, N% of it blocked, …": the placement rests on a reading that is mostly CPU.
    let blocked: f64 = site.moves[0]
        .reason
        .split("% of it blocked")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the reason gives the blocked share");
    assert!(blocked < 50.0, "{report}");
    assert!(site.moves[0].calls <= 32, "{report}");
}

#[test]
fn a_sleeping_site_lands_on_the_blocking_lane() {
    let _w = Watchdog::new("a_sleeping_site_lands_on_the_blocking_lane");
    let auto = auto();
    let ran_on = until_placed(&auto, Lane::Blocking, || {
        submit_tracked(&auto, || {
            std::thread::sleep(Duration::from_millis(3));
            thread_name()
        })
    });
    assert!(ran_on.contains("-blocking"), "{ran_on}");
    let report = auto.report();
    assert!(report.sites[0].cpu_ratio < 0.5, "{report}");
    assert!(report.sites[0].moves[0].calls <= 32, "{report}");
}

#[test]
fn mutex_waits_and_blocking_reads_count_as_blocking() {
    let _w = Watchdog::new("mutex_waits_and_blocking_reads_count_as_blocking");
    let auto = auto();
    // A lock held elsewhere for a while: the call sleeps on the futex.
    let lock = Arc::new(std::sync::Mutex::new(()));
    let ran_on = until_placed(&auto, Lane::Blocking, || {
        let lock = lock.clone();
        let (held_tx, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let lock = lock.clone();
            move || {
                let _guard = lock.lock().unwrap();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        recv(&held);
        let out = submit_tracked(&auto, move || {
            drop(lock.lock().unwrap());
            thread_name()
        });
        holder.join().unwrap();
        out
    });
    assert!(ran_on.contains("-blocking"), "{ran_on}");

    // A blocking socket read that waits for a peer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for stream in listener.incoming().take(CALLS + 1) {
            let mut stream = stream.unwrap();
            std::thread::sleep(Duration::from_millis(2));
            use std::io::Write;
            if stream.write_all(b"x").is_err() {
                break;
            }
        }
    });
    let ran_on = until_placed(&auto, Lane::Blocking, || {
        submit_tracked(&auto, move || {
            use std::io::Read;
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            let mut byte = [0u8];
            stream.read_exact(&mut byte).unwrap();
            thread_name()
        })
    });
    assert!(ran_on.contains("-blocking"), "{ran_on}");
    // The server thread serves at most CALLS + 1 connections; it is left to end with the test.
    drop(server);
}

#[test]
fn an_async_site_stays_on_the_loop() {
    let _w = Watchdog::new("an_async_site_stays_on_the_loop");
    let auto = auto();
    let mut at = None;
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (task, here) = spawn_tracked(&auto, async {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                thread_name()
            });
            at = Some(here);
            task
        })
        .collect();
    for task in tasks {
        let name = task.result().unwrap();
        assert!(name.contains("-loop"), "{name}");
    }
    let site = site_at(&auto, at.unwrap(), Work::Futures).unwrap();
    assert_eq!(site.lane, Some(Lane::Loop));
    assert!(site.moves.is_empty(), "{:?}", site.moves);
    assert_eq!(site.calls, 300);
}

#[test]
fn futures_with_long_polls_go_where_their_kind_belongs() {
    let _w = Watchdog::new("futures_with_long_polls_go_where_their_kind_belongs");
    let auto = auto();
    // CPU-heavy polls: the compute lane, not the blocking lane.
    let mut placed = None;
    for _ in 0..CALLS {
        let (task, at) = spawn_tracked(&auto, async {
            spin_cpu(Duration::from_millis(3));
            tokio::task::yield_now().await;
            thread_name()
        });
        let name = task.result().unwrap();
        let site = site_at(&auto, at, Work::Futures).unwrap();
        if site.lane == Some(Lane::Compute) {
            placed = Some(at);
            break;
        }
        let _ = name;
    }
    assert!(
        placed.is_some(),
        "CPU polls never moved:\n{}",
        auto.report()
    );
    // Blocking polls: the blocking lane.
    let mut placed = None;
    for _ in 0..CALLS {
        let (task, at) = spawn_tracked(&auto, async {
            std::thread::sleep(Duration::from_millis(3));
            thread_name()
        });
        task.result().unwrap();
        let site = site_at(&auto, at, Work::Futures).unwrap();
        if site.lane == Some(Lane::Blocking) {
            placed = Some(at);
            break;
        }
    }
    assert!(
        placed.is_some(),
        "blocking polls never moved:\n{}",
        auto.report()
    );
    // Both kinds' later polls run off the loop: each spawn below is from a placed line.
    let report = auto.report();
    assert_eq!(
        report.blocking.max,
        brigade::auto::DEFAULT_MAX_BLOCKING_THREADS
    );
}

/// A closure site whose behaviour a test switches: 0 = compute, 1 = sleep.
#[track_caller]
fn switching(auto: &Auto, mode: &Arc<AtomicU8>) -> (Task<String>, &'static Location<'static>) {
    let mode = mode.clone();
    submit_tracked(auto, move || {
        if mode.load(Ordering::Relaxed) == 0 {
            spin_cpu(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
        thread_name()
    })
}

#[test]
fn a_site_that_changes_behaviour_moves_and_moves_back() {
    let _w = Watchdog::new("a_site_that_changes_behaviour_moves_and_moves_back");
    let auto = auto();
    let mode = Arc::new(AtomicU8::new(0));
    let call = || switching(&auto, &mode);
    assert!(until_placed(&auto, Lane::Compute, call).contains("-compute"));
    mode.store(1, Ordering::Relaxed);
    assert!(until_placed(&auto, Lane::Blocking, call).contains("-blocking"));
    mode.store(0, Ordering::Relaxed);
    assert!(until_placed(&auto, Lane::Compute, call).contains("-compute"));
    let report = auto.report();
    let moves: Vec<_> = report.sites[0]
        .moves
        .iter()
        .map(|m| (m.from, m.to))
        .collect();
    assert_eq!(
        moves,
        [
            (None, Lane::Compute),
            (Some(Lane::Compute), Lane::Blocking),
            (Some(Lane::Blocking), Lane::Compute)
        ],
        "{report}"
    );
}

#[test]
fn hints_override_measurement() {
    let _w = Watchdog::new("hints_override_measurement");
    let auto = auto();
    for _ in 0..20 {
        let slept = auto.cpu().submit(|| {
            std::thread::sleep(Duration::from_millis(1));
            thread_name()
        });
        assert!(slept.result().unwrap().contains("-compute"));
        let spun = auto.blocking().submit(|| {
            spin_cpu(Duration::from_millis(1));
            thread_name()
        });
        assert!(spun.result().unwrap().contains("-blocking"));
    }
    let on_loop = auto.cpu().spawn(async { thread_name() });
    assert!(on_loop.result().unwrap().contains("-compute"));
    let report = auto.report();
    let hints: Vec<_> = report.sites.iter().map(|s| s.hint).collect();
    assert!(hints.contains(&Some(Lane::Compute)), "{report}");
    assert!(hints.contains(&Some(Lane::Blocking)), "{report}");
    assert!(report.to_string().contains("(hint)"));

    // Measurement off pins the defaults: closures on the compute lane, futures on the loop.
    let pinned = Auto::builder().workers(2).measure(false).build().unwrap();
    for _ in 0..20 {
        let slept = pinned.submit(|| {
            std::thread::sleep(Duration::from_millis(1));
            thread_name()
        });
        assert!(slept.result().unwrap().contains("-compute"));
    }
    assert!(
        pinned
            .spawn(async { thread_name() })
            .result()
            .unwrap()
            .contains("-loop")
    );
    assert!(pinned.report().sites.is_empty());
    assert!(!pinned.report().measuring);
}

#[test]
fn the_blocking_lane_grows_for_sleeping_calls_and_shrinks_when_idle() {
    let _w = Watchdog::new("the_blocking_lane_grows_for_sleeping_calls_and_shrinks_when_idle");
    let auto = Auto::builder()
        .workers(2)
        .blocking_keep_alive(Duration::from_millis(50))
        .build()
        .unwrap();
    // 16 calls that all wait on one gate: they can only all start if the lane grows to 16.
    let started = Arc::new(AtomicUsize::new(0));
    let (all_in_tx, all_in) = std::sync::mpsc::channel();
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (started, gate, all_in_tx) = (started.clone(), gate.clone(), all_in_tx.clone());
            auto.blocking().submit(move || {
                if started.fetch_add(1, Ordering::SeqCst) == 15 {
                    all_in_tx.send(()).unwrap();
                }
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            })
        })
        .collect();
    recv(&all_in);
    assert!(auto.report().blocking.threads >= 16);
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    for task in tasks {
        task.result().unwrap();
    }
    // Idle threads retire after the keep-alive: wait for it (the watchdog bounds the wait).
    loop {
        let stats = auto.report().blocking;
        if stats.threads == 0 {
            assert!(stats.retired >= 16, "{stats:?}");
            assert!(stats.peak >= 16);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cpu_bound_calls_of_a_new_site_do_not_get_a_thread_each() {
    let _w = Watchdog::new("cpu_bound_calls_of_a_new_site_do_not_get_a_thread_each");
    let auto = auto();
    // A burst of CPU-bound calls before the site is placed: they queue on the blocking lane,
    // whose growth is gated on CPU use, and move to the compute lane once it is placed.
    let tasks: Vec<_> = (0..200)
        .map(|_| auto.submit(|| spin_cpu(Duration::from_millis(1))))
        .collect();
    for task in tasks {
        task.result().unwrap();
    }
    let report = auto.report();
    // 2 cores: a thread per call would be 200.
    assert!(report.blocking.peak <= 8, "{report}");
    assert_eq!(report.sites[0].lane, Some(Lane::Compute), "{report}");
}

#[test]
fn shutdown_waits_for_closures_and_futures_and_refuses_new_work() {
    let _w = Watchdog::new("shutdown_waits_for_closures_and_futures_and_refuses_new_work");
    let auto = auto();
    let slow = auto.blocking().submit(|| {
        std::thread::sleep(Duration::from_millis(20));
        1
    });
    let future = auto.spawn(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        2
    });
    assert!(auto.shutdown(Shutdown::graceful()));
    assert!(slow.is_done() && future.is_done());
    assert_eq!((slow.result(), future.result()), (Ok(1), Ok(2)));
    assert_eq!(auto.submit(|| 3).result(), Err(Error::ShutDown));
    assert_eq!(auto.spawn(async { 4 }).result(), Err(Error::ShutDown));
    let back = auto.try_submit(|| 5).unwrap_err().into_inner();
    assert_eq!(back(), 5);
    assert!(auto.is_shut_down());
}

#[test]
fn a_panicking_site_is_reported_with_a_suggestion() {
    let _w = Watchdog::new("a_panicking_site_is_reported_with_a_suggestion");
    let auto = auto();
    for _ in 0..3 {
        let task = auto.submit(|| -> u32 { panic!("bad input") });
        assert!(matches!(task.result(), Err(Error::Panicked { .. })));
    }
    let report = auto.report();
    assert_eq!(report.sites[0].panics, 3, "{report}");
    assert!(
        report.sites[0]
            .suggestion
            .as_deref()
            .unwrap()
            .contains("ProcessPool")
    );
}

#[test]
fn map_is_routed_by_its_call_site() {
    let _w = Watchdog::new("map_is_routed_by_its_call_site");
    let auto = auto();
    let results: Vec<Result<u64, Error>> = auto
        .map(0..64u64, |x| {
            if x == 7 {
                panic!("seven");
            }
            x * 2
        })
        .collect();
    assert_eq!(results[3], Ok(6));
    assert!(matches!(results[7], Err(Error::Panicked { .. })));
    let names: Vec<String> = auto
        .blocking()
        .map(0..4, |_| thread_name())
        .map(Result::unwrap)
        .collect();
    assert!(names.iter().all(|n| n.contains("-blocking")), "{names:?}");
}

#[test]
fn the_report_reads_as_a_table_with_every_move() {
    let _w = Watchdog::new("the_report_reads_as_a_table_with_every_move");
    let auto = auto();
    until_placed(&auto, Lane::Blocking, || {
        submit_tracked(&auto, || {
            std::thread::sleep(Duration::from_millis(2));
            thread_name()
        })
    });
    let text = auto.report().to_string();
    assert!(text.contains("cpu/wall") && text.contains("p99"), "{text}");
    assert!(text.contains("new -> blocking"), "{text}");
}

#[test]
fn sleeping_calls_of_a_new_site_get_threads_before_any_of_them_finishes() {
    let _w = Watchdog::new("sleeping_calls_of_a_new_site_get_threads_before_any_of_them_finishes");
    let auto = auto();
    // 12 calls from a site never seen before, each asleep until all 12 have started: they can
    // only finish if the blocking lane sees its threads asleep and grows past the cores
    // without waiting for a call to end (none can end first). A lane that waited for samples
    // would hang here, and the watchdog would fail the test.
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (started, gate) = (started.clone(), gate.clone());
            auto.submit(move || {
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                if started.fetch_add(1, Ordering::SeqCst) == 11 {
                    *open = true;
                    cv.notify_all();
                }
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                thread_name()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.result().unwrap().contains("-blocking"));
    }
    let report = auto.report();
    assert!(report.blocking.peak >= 12, "{report}");
    assert_eq!(report.sites[0].lane, Some(Lane::Blocking), "{report}");
}
