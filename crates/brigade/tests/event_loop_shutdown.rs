//! The event loop's shutdown and submit rules: what it still accepts, what `shutdown` waits
//! for, and what dropping the last handle does, from outside and from inside async code.
//! Every wait is on an event under a watchdog; the one sleep is inside a task that a graceful
//! drop must wait for, so a slow machine makes it slower, not wrong.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use brigade::event_loop::BlockOnError;
use brigade::{Error, EventLoop, Shutdown};
use common::{DropSignal, PATIENCE, Watchdog, recv};
use tokio::sync::oneshot;

fn small_loop() -> EventLoop {
    EventLoop::builder().workers(2).build().unwrap()
}

#[test]
fn a_shut_down_loop_refuses_work_and_try_spawn_gives_it_back() {
    let _w = Watchdog::new("a_shut_down_loop_refuses_work_and_try_spawn_gives_it_back");
    let lp = small_loop();
    assert!(!lp.is_shut_down());
    assert!(lp.shutdown(Shutdown::graceful()));
    assert!(lp.is_shut_down());
    assert_eq!(lp.spawn(async { 1 }).result(), Err(Error::ShutDown));
    assert_eq!(lp.shield(async { 1 }).result(), Err(Error::ShutDown));
    assert_eq!(lp.to_thread(|| 1).result(), Err(Error::ShutDown));
    let refused = lp.try_spawn(async { 2 }).unwrap_err();
    assert_eq!(refused.reason(), &Error::ShutDown);
    assert_eq!(small_loop().block_on(refused.into_inner()), Ok(2));
    assert_eq!(lp.block_on(async { 3 }), Err(BlockOnError::ShutDown));
    let group = lp.group();
    assert_eq!(
        group.spawn(async { Ok::<_, ()>(()) }).result(),
        Err(Error::ShutDown)
    );
    assert_eq!(lp.block_on(group.join()), Err(BlockOnError::ShutDown));
    assert!(lp.shutdown(Shutdown::cancel_pending()), "twice is harmless");
}

#[test]
fn a_graceful_shutdown_waits_for_running_tasks_and_a_timeout_bounds_the_wait() {
    let _w =
        Watchdog::new("a_graceful_shutdown_waits_for_running_tasks_and_a_timeout_bounds_the_wait");
    let lp = small_loop();
    let (started_tx, started) = mpsc::channel();
    let (release, released) = oneshot::channel::<()>();
    let running = lp.spawn(async move {
        started_tx.send(()).unwrap();
        released.await.unwrap();
        "finished"
    });
    let on_thread = lp.to_thread(|| "thread work");
    recv(&started);
    // Gated on an event that has not happened: the bounded wait gives up, the task runs on.
    assert!(!lp.shutdown(Shutdown::graceful().timeout(Duration::from_millis(10))));
    assert!(!running.is_done());
    assert!(!lp.shutdown(Shutdown::graceful().no_wait()));
    release.send(()).unwrap();
    assert!(lp.shutdown(Shutdown::graceful()));
    assert_eq!(running.result(), Ok("finished"));
    assert_eq!(on_thread.result(), Ok("thread work"));
}

#[test]
fn cancel_pending_cancels_every_unfinished_task_at_its_await() {
    let _w = Watchdog::new("cancel_pending_cancels_every_unfinished_task_at_its_await");
    let lp = EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .build()
        .unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let signal = |what| DropSignal(Some(dropped_tx.clone()), what);
    let (running_signal, shielded_signal) = (signal("running"), signal("shielded"));
    let running = lp.spawn(async move {
        let _signal = running_signal;
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await
    });
    let shielded = lp.shield(async move {
        let _signal = shielded_signal;
        std::future::pending::<()>().await
    });
    recv(&started);
    // The only worker is held, so this one is still pending when the shutdown comes.
    let (hold_tx, hold) = mpsc::channel::<()>();
    let (holding_tx, holding) = mpsc::channel();
    let holder = lp.spawn(async move {
        holding_tx.send(()).unwrap();
        hold.recv_timeout(PATIENCE).unwrap();
    });
    recv(&holding);
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    let pending = lp.spawn(async move { ran2.store(true, SeqCst) });
    let shutting = std::thread::spawn({
        let lp = lp.clone();
        move || lp.shutdown(Shutdown::cancel_pending())
    });
    // The poll in progress is never cut short: it ends, then everything stops.
    while !lp.is_shut_down() {
        std::thread::yield_now();
    }
    hold_tx.send(()).unwrap();
    assert!(shutting.join().unwrap());
    assert_eq!(holder.result(), Ok(()));
    let mut seen = [recv(&dropped), recv(&dropped)];
    seen.sort();
    assert_eq!(seen, ["running", "shielded"]);
    assert_eq!(running.result(), Err(Error::Cancelled));
    assert_eq!(shielded.result(), Err(Error::Cancelled));
    assert_eq!(pending.result(), Err(Error::Cancelled));
    assert!(!ran.load(SeqCst), "a pending task never runs");
}

#[test]
fn a_shutdown_from_inside_the_loop_does_not_wait_for_itself() {
    let _w = Watchdog::new("a_shutdown_from_inside_the_loop_does_not_wait_for_itself");
    let lp = small_loop();
    let (release, released) = oneshot::channel::<()>();
    let other = lp.spawn(async move {
        released.await.unwrap();
        "other finished"
    });
    let inner = lp.clone();
    let from_inside = lp.spawn(async move { inner.shutdown(Shutdown::graceful()) });
    assert_eq!(from_inside.result(), Ok(false));
    assert!(lp.is_shut_down());
    release.send(()).unwrap();
    assert_eq!(other.result(), Ok("other finished"));
    assert!(
        lp.shutdown(Shutdown::graceful()),
        "the background finish completes"
    );
}

#[test]
fn dropping_the_last_handle_waits_for_running_tasks() {
    let _w = Watchdog::new("dropping_the_last_handle_waits_for_running_tasks");
    let lp = EventLoop::builder()
        .workers(1)
        .drop_grace(PATIENCE)
        .build()
        .unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let task = lp.spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        flag.store(true, SeqCst);
        "done"
    });
    drop(lp);
    assert!(finished.load(SeqCst), "the drop waited for the task");
    assert_eq!(task.result(), Ok("done"));
}

#[test]
fn dropping_the_last_handle_cancels_a_task_that_never_ends_after_the_grace() {
    let _w =
        Watchdog::new("dropping_the_last_handle_cancels_a_task_that_never_ends_after_the_grace");
    let lp = EventLoop::builder()
        .workers(1)
        .drop_grace(Duration::from_millis(20))
        .build()
        .unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let forever = lp.spawn(async move {
        let _signal = DropSignal(Some(dropped_tx), "never-ending task dropped");
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await
    });
    recv(&started);
    drop(lp); // returns once the grace has run out
    assert_eq!(recv(&dropped), "never-ending task dropped");
    assert_eq!(forever.result(), Err(Error::Cancelled));
}

#[test]
fn the_last_handle_dropped_inside_async_code_never_waits() {
    let _w = Watchdog::new("the_last_handle_dropped_inside_async_code_never_waits");
    // A grace far past the watchdog's patience: waiting for it would abort the test.
    let patient = || {
        EventLoop::builder()
            .workers(1)
            .drop_grace(Duration::from_secs(3600))
            .build()
            .unwrap()
    };

    // Inside one of its own tasks, while another of its tasks waits forever.
    let lp = patient();
    let forever = lp.spawn(std::future::pending::<()>());
    let (go, wait_for_go) = oneshot::channel::<()>();
    let inner = lp.clone();
    let dropper = lp.spawn(async move {
        wait_for_go.await.unwrap();
        drop(inner); // the last handle: the loop shuts down from inside itself
        "dropped"
    });
    drop(lp);
    go.send(()).unwrap();
    assert_eq!(dropper.result(), Ok("dropped"));
    assert!(
        !forever.is_done(),
        "graceful: it is left to run, in the background"
    );
    forever.cancel();

    // Inside another runtime's block_on, and inside a to_thread closure.
    let lp = patient();
    let forever = lp.spawn(std::future::pending::<()>());
    let other = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    other.block_on(async move { drop(lp) });
    forever.cancel();
    let lp = patient();
    let forever = lp.spawn(std::future::pending::<()>());
    let inner = lp.clone();
    // The closure drops its handle only after this thread dropped its own: so the closure's
    // is the last (without the signal, a fast closure could drop first, and then this
    // thread's drop would be the last one, outside async code, and rightly wait).
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let on_thread = lp.to_thread(move || {
        wait_for_go.recv().unwrap();
        drop(inner)
    });
    drop(lp);
    go.send(()).unwrap();
    assert_eq!(on_thread.result(), Ok(()));
    forever.cancel();
}
