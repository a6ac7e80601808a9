//! The blocking detector: which sites it flags, and that a flagged site no longer stalls the
//! loop. Assertions are on counts and ordering; the only durations are blocking sleeps that
//! are many times the threshold, so that a slow machine makes them slower, not faster.

mod common;

use std::future::Future;
use std::panic::Location;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brigade::{Error, EventLoop, Task};
use common::{DropSignal, PATIENCE, Watchdog, recv};

const THRESHOLD: Duration = Duration::from_millis(20);
/// A blocking call well past the threshold.
const BLOCK: Duration = Duration::from_millis(80);

/// Spawns from the caller's line, and says which line that is.
#[track_caller]
fn spawn_tracked<F>(lp: &EventLoop, future: F) -> (Task<F::Output>, &'static Location<'static>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    (lp.spawn(future), Location::caller())
}

fn site(lp: &EventLoop, at: &Location<'_>) -> brigade::event_loop::SiteReport {
    lp.blocking_report()
        .into_iter()
        .find(|s| s.location == at)
        .expect("the site is in the report")
}

#[test]
fn a_site_that_sleeps_is_flagged_and_one_that_awaits_is_not() {
    let _w = Watchdog::new("a_site_that_sleeps_is_flagged_and_one_that_awaits_is_not");
    // A generous threshold: an awaiting task's polls take microseconds, so not even a badly
    // preempted one gets near it.
    let lp = EventLoop::builder()
        .workers(2)
        .blocking_threshold(Duration::from_millis(100))
        .build()
        .unwrap();
    let (sleeper, sleeper_at) = spawn_tracked(&lp, async {
        std::thread::sleep(Duration::from_millis(300))
    });
    let mut awaiters = Vec::new();
    let mut awaiter_at = None;
    for _ in 0..5 {
        let (task, at) = spawn_tracked(&lp, async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        awaiters.push(task);
        awaiter_at = Some(at);
    }
    sleeper.result().unwrap();
    awaiters.into_iter().for_each(|t| t.result().unwrap());

    let sleeper = site(&lp, sleeper_at);
    assert!(sleeper.flagged);
    assert_eq!((sleeper.polls, sleeper.slow_polls), (1, 1));
    assert!(sleeper.worst >= Duration::from_millis(300));
    let awaiter = site(&lp, awaiter_at.unwrap());
    assert!(!awaiter.flagged);
    assert_eq!(awaiter.slow_polls, 0);
    assert_eq!(
        awaiter.polls,
        5 * 4,
        "five tasks, each polled once per sleep and once more"
    );
    assert!(awaiter.worst <= awaiter.total);
}

/// What a blocker does after its first block: say it started, block until released, log.
type Then = (
    mpsc::Sender<()>,
    mpsc::Receiver<()>,
    Arc<Mutex<Vec<String>>>,
);

/// Spawns, from one site, a task that blocks for `BLOCK` and then waits on `rx` blocking
/// (logging when done) if given one.
fn spawn_blocker(lp: &EventLoop, then: Option<Then>) -> Task<()> {
    lp.spawn(async move {
        match then {
            None => std::thread::sleep(BLOCK),
            Some((started, release, log)) => {
                // Handed-off polls still have the loop's timers and reactor.
                tokio::time::sleep(Duration::from_millis(1)).await;
                started.send(()).unwrap();
                release.recv_timeout(PATIENCE).unwrap();
                log.lock().unwrap().push("blocker done".into());
            }
        }
    })
}

#[test]
fn after_a_site_is_flagged_its_new_tasks_block_no_worker() {
    let _w = Watchdog::new("after_a_site_is_flagged_its_new_tasks_block_no_worker");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    spawn_blocker(&lp, None).result().unwrap(); // stalls the only worker once
    assert!(lp.blocking_report().iter().any(|s| s.flagged));

    let log = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel();
    let blocker = spawn_blocker(&lp, Some((started_tx, released, log.clone())));
    recv(&started); // blocked now, until released

    // The only worker is free: other tasks run to completion meanwhile.
    let others: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            lp.spawn(async move {
                tokio::task::yield_now().await;
                log.lock().unwrap().push(format!("async {i}"));
            })
        })
        .collect();
    for task in others {
        task.result().unwrap();
    }
    release.send(()).unwrap();
    blocker.result().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 51);
    assert_eq!(log.last().map(String::as_str), Some("blocker done"));
}

#[test]
fn a_flagged_sites_task_can_still_be_cancelled() {
    let _w = Watchdog::new("a_flagged_sites_task_can_still_be_cancelled");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let mut dropped_tx = Some(dropped_tx);
    let mut started_tx = Some(started_tx);
    let mut spawn = |first: bool| {
        let signal = (!first).then(|| (dropped_tx.take().unwrap(), started_tx.take().unwrap()));
        lp.spawn(async move {
            std::thread::sleep(if first { BLOCK } else { Duration::ZERO });
            if let Some((dropped, started)) = signal {
                let _signal = DropSignal(Some(dropped), "flagged task dropped");
                started.send(()).unwrap();
                std::future::pending::<()>().await;
            }
        })
    };
    spawn(true).result().unwrap();
    let flagged = spawn(false);
    recv(&started);
    assert!(flagged.cancel());
    assert_eq!(recv(&dropped), "flagged task dropped");
    assert_eq!(flagged.result(), Err(Error::Cancelled));
}

#[test]
fn a_running_task_of_a_newly_flagged_site_hands_its_worker_over() {
    let _w = Watchdog::new("a_running_task_of_a_newly_flagged_site_hands_its_worker_over");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    let (blocking_tx, blocking) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let (task, at) = spawn_tracked(&lp, async move {
        std::thread::sleep(BLOCK); // the first poll flags the site...
        // ...and ends here for sure: `yield_now` is pending once. (An await on a channel the
        // test thread fills could find it full already, and then the whole task would run in
        // its first poll, before the site is flagged: the test hung 1 run in 10 that way.)
        tokio::task::yield_now().await;
        blocking_tx.send(()).unwrap(); // the second poll blocks until released
        released.recv_timeout(PATIENCE).unwrap();
    });
    recv(&blocking);
    // The task blocks its thread, but that thread gave the worker away first.
    assert_eq!(
        lp.spawn(async { "ran meanwhile" }).result(),
        Ok("ran meanwhile")
    );
    release.send(()).unwrap();
    task.result().unwrap();
    let report = site(&lp, at);
    assert!(report.flagged);
    assert_eq!(report.polls, 2);
    assert!(report.slow_polls >= 1);
}

#[test]
fn the_report_counts_polls_per_site() {
    let _w = Watchdog::new("the_report_counts_polls_per_site");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let mut at = None;
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (task, here) = spawn_tracked(&lp, tokio::task::yield_now());
            at = Some(here);
            task
        })
        .collect();
    tasks.into_iter().for_each(|t| t.result().unwrap());
    let report = site(&lp, at.unwrap());
    assert_eq!(report.polls, 10, "yield_now is pending once, then ready");
    assert!(!report.flagged);
    assert_eq!(lp.blocking_report().len(), 1);
}

/// One spawn site for every task of the lane test, whatever future it runs (a generic
/// function: its instantiations are still one line of code).
fn spawn_from_one_site<F>(lp: &EventLoop, future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    lp.spawn(future)
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

#[test]
fn a_flagged_sites_new_tasks_run_on_lane_threads_that_grow_while_they_block() {
    let _w =
        Watchdog::new("a_flagged_sites_new_tasks_run_on_lane_threads_that_grow_while_they_block");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    assert!(
        spawn_from_one_site(&lp, async { thread_name() })
            .result()
            .unwrap()
            .starts_with("brigade-loop")
    );
    spawn_from_one_site(&lp, async { std::thread::sleep(BLOCK) })
        .result()
        .unwrap();

    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let first = spawn_from_one_site(&lp, async move {
        started_tx.send(thread_name()).unwrap();
        released.recv_timeout(PATIENCE).unwrap(); // blocks its lane thread until released
    });
    let first_thread = recv(&started);
    assert!(
        first_thread.starts_with("brigade-loop-lane"),
        "{first_thread}"
    );
    // That lane thread is inside a poll, so the next task gets a thread of its own, and it
    // still has the lane's timers.
    let second = spawn_from_one_site(&lp, async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        thread_name()
    });
    let second_thread = second.result().unwrap();
    assert!(
        second_thread.starts_with("brigade-loop-lane"),
        "{second_thread}"
    );
    assert_ne!(first_thread, second_thread);
    // And the workers never blocked: an ordinary task runs meanwhile.
    assert_eq!(lp.spawn(async { 1 }).result(), Ok(1));
    release.send(()).unwrap();
    first.result().unwrap();
    assert_eq!(lp.blocking_report().iter().filter(|s| s.flagged).count(), 1);
}

#[test]
fn block_on_is_refused_in_a_flagged_sites_tasks_on_the_lane_and_handed_off() {
    let _w =
        Watchdog::new("block_on_is_refused_in_a_flagged_sites_tasks_on_the_lane_and_handed_off");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    // A running task whose first poll flags its site: its next poll is handed off
    // (`block_in_place`), and a `block_on` there is still inside the loop.
    let lp2 = lp.clone();
    let handed_off = spawn_from_one_site(&lp, async move {
        std::thread::sleep(BLOCK);
        tokio::task::yield_now().await; // the first poll ends here, and flags the site
        lp2.block_on(async { 1 }).map_err(|e| e.to_string())
    });
    let refused = handed_off.result().unwrap();
    assert!(refused.unwrap_err().contains("inside an event loop"));
    // A new task of the flagged site runs on a lane thread (a small event loop of its own).
    let lp3 = lp.clone();
    let on_lane = spawn_from_one_site(&lp, async move {
        assert!(thread_name().starts_with("brigade-loop-lane"));
        lp3.block_on(async { 1 }).map_err(|e| e.to_string())
    });
    assert!(
        on_lane
            .result()
            .unwrap()
            .unwrap_err()
            .contains("inside an event loop")
    );
}

#[test]
fn a_few_slow_first_polls_among_many_quick_ones_do_not_flag_the_site() {
    let _w = Watchdog::new("a_few_slow_first_polls_among_many_quick_ones_do_not_flag_the_site");
    // The shape of many connections opening at once: every task's first poll is quick and
    // leaves it pending, except that two of them stall (in the benchmark: asleep in the kernel
    // on a lock another thread held). The site's tasks are asynchronous: flagging it would
    // move them all off the loop for nothing.
    const QUICK: usize = 30;
    // Well above a quick poll on a loaded machine (the counts below are exact), well below
    // the stalls.
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(BLOCK / 2)
        .build()
        .unwrap();
    let (go_tx, go) = tokio::sync::watch::channel(false);
    let (polled_tx, polled) = mpsc::channel();
    let spawn = |stall: bool| {
        let (mut go, polled) = (go.clone(), polled_tx.clone());
        // One line, so one site for every task of the test.
        spawn_tracked(&lp, async move {
            if stall {
                std::thread::sleep(BLOCK);
            }
            polled.send(()).unwrap();
            go.wait_for(|go| *go).await.unwrap();
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            thread_name()
        })
    };
    // Every quick task has had its first poll (and is pending) before the slow ones run.
    let (mut tasks, mut at) = (Vec::new(), None);
    for stall in [false; QUICK].into_iter().chain([true; 2]) {
        let (task, here) = spawn(stall);
        tasks.push(task);
        at = Some(here);
        if !stall {
            recv(&polled);
        }
    }
    (0..2).for_each(|_| recv(&polled));
    // The only worker runs this after it has finished (and recorded) the polls above.
    lp.spawn(async {}).result().unwrap();
    let report = site(&lp, at.unwrap());
    assert!(!report.flagged, "{report:?}");
    assert_eq!(report.slow_polls, 2, "{report:?}");

    go_tx.send(true).unwrap();
    for task in tasks {
        let thread = task.result().unwrap();
        assert!(!thread.contains("lane"), "{thread}");
    }
    // Later tasks from the site still run on the loop's workers, not on the blocking lane.
    assert!(!spawn(false).0.result().unwrap().contains("lane"));
    let report = site(&lp, at.unwrap());
    assert!(!report.flagged, "{report:?}");
    // Five polls each (pending at `go`, then thrice at `yield_now`), the last task four.
    assert_eq!(report.polls, (QUICK as u64 + 2) * 5 + 4, "{report:?}");
}

#[test]
fn a_quick_site_that_starts_blocking_is_flagged_within_a_few_polls() {
    let _w = Watchdog::new("a_quick_site_that_starts_blocking_is_flagged_within_a_few_polls");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(THRESHOLD)
        .build()
        .unwrap();
    // A long quick history first: it must not buy the site many blocking polls later.
    let quick: Vec<_> = (0..500)
        .map(|_| spawn_from_one_site(&lp, async { thread_name() }))
        .collect();
    quick.into_iter().for_each(|t| {
        t.result().unwrap();
    });
    let mut blocked = 0;
    while !lp.blocking_report()[0].flagged {
        spawn_from_one_site(&lp, async {
            std::thread::sleep(BLOCK);
            thread_name()
        })
        .result()
        .unwrap();
        blocked += 1;
        assert!(
            blocked <= 5,
            "still not flagged after {blocked} blocking polls"
        );
    }
    // And from then on its tasks block no worker.
    assert!(
        spawn_from_one_site(&lp, async { thread_name() })
            .result()
            .unwrap()
            .starts_with("brigade-loop-lane")
    );
}

#[test]
fn one_poll_that_blocks_for_many_thresholds_flags_a_site_of_quick_polls() {
    let _w = Watchdog::new("one_poll_that_blocks_for_many_thresholds_flags_a_site_of_quick_polls");
    // The share rule forgives a stall of about one threshold among quick polls; a poll that
    // holds the worker for many thresholds flags its site whatever the share.
    const QUICK: usize = 30;
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(BLOCK / 8)
        .build()
        .unwrap();
    let (polled_tx, polled) = mpsc::channel();
    let spawn = |stall: bool| {
        let polled = polled_tx.clone();
        // One line, so one site for every task of the test.
        spawn_tracked(&lp, async move {
            if stall {
                // Eight thresholds: more than the five that make a poll severe.
                std::thread::sleep(BLOCK);
            }
            polled.send(()).unwrap();
        })
    };
    let mut at = None;
    for stall in [false; QUICK].into_iter().chain([true]) {
        let (task, here) = spawn(stall);
        at = Some(here);
        recv(&polled);
        task.result().unwrap();
    }
    let report = site(&lp, at.unwrap());
    assert_eq!(report.slow_polls, 1, "{report:?}");
    assert!(report.flagged, "{report:?}");
}
