//! The Task<T> handle: states, cancel, results, callbacks, await, detach.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use brigade::{Error, ThreadPool, Until, wait};
use common::{DropSignal, Watchdog, blocker, recv};

fn one_worker() -> ThreadPool {
    ThreadPool::builder().workers(1).build().unwrap()
}

#[test]
fn states_go_pending_running_finished() {
    let _w = Watchdog::new("states_go_pending_running_finished");
    let pool = one_worker();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let queued = pool.submit(|| 5);

    assert!(running.is_running() && !running.is_done() && !running.is_cancelled());
    assert!(!queued.is_running() && !queued.is_done() && !queued.is_cancelled());
    assert!(format!("{queued:?}").ends_with(r#"status: "pending" }"#));
    assert!(format!("{running:?}").ends_with(r#"status: "running" }"#));

    b.release();
    assert_eq!(running.result(), Ok(()));
    let mut queued = queued;
    assert_eq!(queued.result_timeout(common::PATIENCE), Ok(5));
    assert!(queued.is_done() && !queued.is_running() && !queued.is_cancelled());
    assert!(format!("{queued:?}").ends_with(r#"status: "finished" }"#));
}

#[test]
fn cancel_succeeds_only_while_pending_and_the_work_never_runs() {
    let _w = Watchdog::new("cancel_succeeds_only_while_pending_and_the_work_never_runs");
    let pool = one_worker();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();

    let ran = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, dropped) = mpsc::channel();
    let signal = DropSignal(Some(dropped_tx), "closure");
    let queued = {
        let ran = ran.clone();
        pool.submit(move || {
            let _keep = &signal;
            ran.fetch_add(1, Ordering::SeqCst);
        })
    };
    assert!(queued.cancel(), "a pending task can be cancelled");
    assert_eq!(
        recv(&dropped),
        "closure",
        "cancel drops the closure at once"
    );
    assert!(queued.cancel(), "cancelling again still reports cancelled");
    assert!(queued.is_cancelled() && queued.is_done() && !queued.is_running());
    assert!(format!("{queued:?}").ends_with(r#"status: "cancelled" }"#));
    assert!(!running.cancel(), "a running task cannot be cancelled");

    b.release();
    assert_eq!(running.result(), Ok(()));
    // The worker has moved past the cancelled job; a task queued after it runs.
    pool.submit(|| ()).result().unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a cancelled task never starts"
    );
    assert_eq!(queued.result(), Err(Error::Cancelled));

    let finished = pool.submit(|| 1);
    let mut finished = finished;
    assert_eq!(finished.result_timeout(common::PATIENCE), Ok(1));
    assert!(!finished.cancel(), "a finished task cannot be cancelled");
    assert!(!finished.is_cancelled());
}

#[test]
fn result_timeout_does_not_cancel_and_a_later_wait_gets_the_value() {
    let _w = Watchdog::new("result_timeout_does_not_cancel_and_a_later_wait_gets_the_value");
    let pool = one_worker();
    let (go, wait_for_go) = mpsc::channel::<()>();
    let mut task = pool.submit(move || {
        recv(&wait_for_go);
        "late"
    });
    assert_eq!(
        task.result_timeout(Duration::from_millis(5)),
        Err(Error::TimedOut)
    );
    assert_eq!(task.result_timeout(Duration::ZERO), Err(Error::TimedOut));
    assert!(!task.is_cancelled());
    assert_eq!(task.try_result(), None);
    go.send(()).unwrap();
    assert_eq!(task.result(), Ok("late"));
}

#[test]
fn the_outcome_is_taken_once() {
    let _w = Watchdog::new("the_outcome_is_taken_once");
    let pool = one_worker();
    let mut task = pool.submit(|| 3);
    assert_eq!(task.result_timeout(common::PATIENCE), Ok(3));
    assert_eq!(task.try_result(), Some(Err(Error::Consumed)));
    assert_eq!(task.result_timeout(Duration::ZERO), Err(Error::Consumed));
    let (tx, rx) = mpsc::channel();
    task.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
    assert_eq!(recv(&rx), Err(Error::Consumed));
    assert_eq!(task.result(), Err(Error::Consumed));
}

#[test]
fn try_result_never_blocks() {
    let _w = Watchdog::new("try_result_never_blocks");
    let pool = one_worker();
    let (b, work) = blocker();
    let mut task = pool.submit(work);
    b.wait_started();
    assert_eq!(task.try_result(), None);
    b.release();
    wait([&task], Until::AllCompleted, None);
    assert_eq!(task.try_result(), Some(Ok(())));
    assert_eq!(task.try_result(), Some(Err(Error::Consumed)));
}

#[test]
fn a_panic_becomes_an_error_and_the_worker_survives() {
    let _w = Watchdog::new("a_panic_becomes_an_error_and_the_worker_survives");
    let pool = one_worker();
    let before = pool
        .submit(|| std::thread::current().id())
        .result()
        .unwrap();
    let boom = pool.submit(|| -> u8 { panic!("boom {}", 42) });
    assert_eq!(
        boom.result(),
        Err(Error::Panicked {
            message: "boom 42".into()
        })
    );
    let static_msg = pool.submit(|| -> u8 { panic!("static") });
    assert_eq!(
        static_msg.result(),
        Err(Error::Panicked {
            message: "static".into()
        })
    );
    let odd = pool.submit(|| -> u8 { std::panic::panic_any(17_i32) });
    assert!(
        matches!(odd.result(), Err(Error::Panicked { message }) if message.contains("not a string"))
    );
    let after = pool
        .submit(|| std::thread::current().id())
        .result()
        .unwrap();
    assert_eq!(before, after, "the same worker thread runs on");
    assert_eq!(pool.started_workers(), 1);
}

#[test]
fn panics_keep_the_pool_at_full_size() {
    let _w = Watchdog::new("panics_keep_the_pool_at_full_size");
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    let panics: Vec<_> = (0..30)
        .map(|i| pool.submit(move || -> u8 { panic!("p{i}") }))
        .collect();
    for t in panics {
        assert!(matches!(t.result(), Err(Error::Panicked { .. })));
    }
    // Three tasks that each wait until all three run at once prove three live workers.
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let barrier = barrier.clone();
            pool.submit(move || {
                barrier.wait();
            })
        })
        .collect();
    for t in tasks {
        t.result().unwrap();
    }
}

#[test]
fn done_callbacks_run_once_in_order_and_survive_panics() {
    let _w = Watchdog::new("done_callbacks_run_once_in_order_and_survive_panics");
    let pool = one_worker();
    let (b, work) = blocker();
    let task = pool.submit(move || {
        work();
        7
    });
    b.wait_started();
    let log = Arc::new(Mutex::new(Vec::new()));
    let worker_thread = Arc::new(Mutex::new(None));
    for i in 0..3 {
        let log = log.clone();
        let worker_thread = worker_thread.clone();
        task.add_done_callback(move |outcome| {
            assert_eq!(outcome, &Ok(7));
            *worker_thread.lock().unwrap() = std::thread::current().name().map(String::from);
            log.lock().unwrap().push(i);
            if i == 1 {
                panic!("a callback panics");
            }
        });
    }
    b.release();
    let (tx, rx) = mpsc::channel();
    // Added after completion (or racing it): runs once, after the others.
    task.add_done_callback(move |_| tx.send(()).unwrap());
    recv(&rx);
    assert_eq!(*log.lock().unwrap(), [0, 1, 2]);
    assert_eq!(
        worker_thread.lock().unwrap().as_deref(),
        Some("brigade-0"),
        "callbacks registered before completion run in the worker"
    );

    // Callbacks run once the task counts as done (Python's order): seeing a callback's
    // effect proves `is_done`.
    assert!(task.is_done());
    // `wait` returns once the callbacks have run.
    wait([&task], Until::AllCompleted, None);

    // Once done, a new callback runs immediately, in the caller's thread.
    let here = std::thread::current().id();
    let ran_in = Arc::new(Mutex::new(None));
    {
        let ran_in = ran_in.clone();
        task.add_done_callback(move |_| {
            *ran_in.lock().unwrap() = Some(std::thread::current().id())
        });
    }
    assert_eq!(*ran_in.lock().unwrap(), Some(here));
    assert_eq!(task.result(), Ok(7), "the handle still has the value");
    // The worker survived the panicking callback.
    assert_eq!(pool.submit(|| 1).result(), Ok(1));
}

#[test]
fn cancelling_runs_the_callbacks_with_cancelled() {
    let _w = Watchdog::new("cancelling_runs_the_callbacks_with_cancelled");
    let pool = one_worker();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let queued = pool.submit(|| 1);
    let (tx, rx) = mpsc::channel();
    queued.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
    assert!(queued.cancel());
    assert_eq!(
        rx.try_recv(),
        Ok(Err(Error::Cancelled)),
        "ran inside cancel()"
    );
    b.release();
    running.result().unwrap();
}

#[test]
fn tasks_can_be_awaited() {
    let _w = Watchdog::new("tasks_can_be_awaited");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let (b, work) = blocker();
    let slow = pool.submit(move || {
        work();
        "slow"
    });
    let fast = pool.submit(|| "fast");
    b.wait_started();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20)); // make the await really wait
        b.release();
    });
    let (s, f) = futures::executor::block_on(async { (slow.await, fast.await) });
    assert_eq!((s, f), (Ok("slow"), Ok("fast")));
    releaser.join().unwrap();

    let failed = pool.submit(|| -> u8 { panic!("async sees it") });
    assert!(matches!(
        futures::executor::block_on(failed),
        Err(Error::Panicked { .. })
    ));
}

#[test]
fn polling_after_completion_is_consumed_not_a_panic() {
    let _w = Watchdog::new("polling_after_completion_is_consumed_not_a_panic");
    let pool = one_worker();
    let mut task = pool.submit(|| 1);
    futures::executor::block_on(async {
        assert_eq!((&mut task).await, Ok(1));
        assert_eq!((&mut task).await, Err(Error::Consumed));
    });
}

#[test]
fn dropping_a_handle_detaches_and_the_work_still_runs() {
    let _w = Watchdog::new("dropping_a_handle_detaches_and_the_work_still_runs");
    let pool = one_worker();
    let (tx, rx) = mpsc::channel();
    drop(pool.submit(move || tx.send("ran").unwrap()));
    assert_eq!(recv(&rx), "ran");
}

#[test]
fn the_pool_keeps_nothing_of_a_finished_task() {
    let _w = Watchdog::new("the_pool_keeps_nothing_of_a_finished_task");
    let pool = one_worker();
    // The closure's captures are gone once the result is visible.
    let captured = Arc::new(());
    let task = {
        let captured = captured.clone();
        pool.submit(move || Arc::strong_count(&captured))
    };
    assert_eq!(task.result(), Ok(2));
    assert_eq!(Arc::strong_count(&captured), 1, "the closure was dropped");

    // A detached task's value is dropped when it finishes, not kept by the pool.
    let (tx, rx) = mpsc::channel();
    let (b, work) = blocker();
    let detached = pool.submit(move || {
        work();
        DropSignal(Some(tx), "value")
    });
    b.wait_started();
    drop(detached);
    b.release();
    assert_eq!(recv(&rx), "value");
}

#[test]
fn handles_are_send_and_sync_when_the_value_is() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<brigade::Task<Vec<u8>>>();
    sync::<brigade::Task<Vec<u8>>>();
    send::<brigade::Task<std::cell::Cell<u8>>>();
    send::<ThreadPool>();
    sync::<ThreadPool>();
}

#[test]
fn a_value_whose_drop_panics_does_not_kill_the_worker() {
    let _w = Watchdog::new("a_value_whose_drop_panics_does_not_kill_the_worker");
    struct Grenade;
    impl Drop for Grenade {
        fn drop(&mut self) {
            panic!("the value's drop panicked");
        }
    }
    let pool = one_worker();
    let (b, work) = blocker();
    let detached = pool.submit(move || {
        work();
        Grenade
    });
    b.wait_started();
    drop(detached); // the worker will hold the last reference, and drop the value
    b.release();
    let worker = std::thread::current().id();
    let after = pool.submit(|| std::thread::current().id()).result();
    assert!(
        after.is_ok_and(|id| id != worker),
        "the one worker still runs tasks"
    );
    assert_eq!(pool.started_workers(), 1);
    pool.shutdown(brigade::Shutdown::graceful()); // would hang if the worker had died
}

#[test]
fn a_panicking_waker_does_not_kill_the_worker() {
    let _w = Watchdog::new("a_panicking_waker_does_not_kill_the_worker");
    struct Boom;
    impl std::task::Wake for Boom {
        fn wake(self: Arc<Self>) {
            panic!("a broken executor's waker");
        }
    }
    let pool = one_worker();
    let (b, work) = blocker();
    let mut task = pool.submit(work);
    b.wait_started();
    let waker = std::task::Waker::from(Arc::new(Boom));
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut task).poll(&mut cx).is_pending());
    b.release();
    assert_eq!(task.result(), Ok(()));
    assert_eq!(pool.submit(|| 7).result(), Ok(7));
    pool.shutdown(brigade::Shutdown::graceful()); // would hang if the worker had died
}

#[test]
fn inside_a_done_callback_the_task_is_done_already() {
    let _w = Watchdog::new("inside_a_done_callback_the_task_is_done_already");
    let pool = one_worker();
    let (b, work) = blocker();
    let task = Arc::new(pool.submit(move || {
        work();
        3
    }));
    b.wait_started();
    let (tx, rx) = mpsc::channel();
    let seen = Arc::clone(&task);
    task.add_done_callback(move |outcome| {
        let state = (seen.is_done(), seen.is_running(), outcome.clone());
        drop(seen); // let go before telling, so the test can take the task back
        tx.send(state).unwrap()
    });
    b.release();
    assert_eq!(recv(&rx), (true, false, Ok(3)));
    let task = Arc::try_unwrap(task).unwrap_or_else(|_| panic!("the callback let go"));
    assert_eq!(task.result(), Ok(3));
}

#[test]
fn a_task_debug_names_its_lane_and_the_line_that_submitted_it() {
    let _w = Watchdog::new("a_task_debug_names_its_lane_and_the_line_that_submitted_it");
    let pool = one_worker();
    let line = line!() + 1;
    let task = pool.submit(|| 1);
    let shown = format!("{task:?}");
    assert!(shown.contains("thread pool"), "{shown}");
    assert!(shown.contains(&format!("tests/task.rs:{line}:")), "{shown}");
    task.result().unwrap();

    let (completer, task) = brigade::Completer::<u8>::new();
    let shown = format!("{task:?}");
    assert!(
        shown.contains("completer") && shown.contains("pending"),
        "{shown}"
    );
    completer.set_result(1);
    assert!(format!("{task:?}").contains("finished"));
}
