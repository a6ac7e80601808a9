//! The compute lane: sizing, naming, on-demand workers, shutdown, and waits inside the pool.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};

use brigade::{BuildError, Error, Shutdown, ThreadPool};
use common::{Watchdog, blocker, recv};

#[test]
fn default_size_is_the_available_parallelism() {
    if std::env::var_os(brigade::pool::WORKERS_ENV).is_some() {
        return; // the child run below sets it on purpose
    }
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(ThreadPool::new().workers(), cores);
    assert_eq!(ThreadPool::default().workers(), cores);
}

/// Re-runs this test binary with `BRIGADE_WORKERS` set (environment variables are
/// process-wide, so the check runs in a process of its own).
#[test]
fn the_environment_variable_sets_the_default_and_the_builder_overrides_it() {
    const CHILD: &str = "BRIGADE_TEST_ENV_CHILD";
    if let Ok(expected) = std::env::var(CHILD) {
        let expected: usize = expected.parse().unwrap();
        assert_eq!(ThreadPool::new().workers(), expected);
        assert_eq!(
            ThreadPool::builder().workers(3).build().unwrap().workers(),
            3
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for (value, expected) in [("5", 5), ("0", 1), ("100000", brigade::pool::MAX_WORKERS)] {
        let child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "the_environment_variable_sets_the_default_and_the_builder_overrides_it",
                "--test-threads=1",
            ])
            .env(brigade::pool::WORKERS_ENV, value)
            .env(CHILD, expected.to_string())
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "child with {value} failed:\n{}",
            String::from_utf8_lossy(&child.stdout)
        );
    }
}

#[test]
fn bad_sizes_are_typed_errors() {
    assert_eq!(
        ThreadPool::builder().workers(0).build().unwrap_err(),
        BuildError::NoWorkers(0)
    );
    let too_many = ThreadPool::builder().workers(5000).build().unwrap_err();
    assert_eq!(
        too_many.to_string(),
        "a pool can have at most 1024 workers (asked for 5000)"
    );
}

#[test]
fn workers_are_named_and_start_on_demand() {
    let _w = Watchdog::new("workers_are_named_and_start_on_demand");
    let pool = ThreadPool::builder()
        .workers(3)
        .thread_name("kitchen")
        .build()
        .unwrap();
    assert_eq!(pool.started_workers(), 0, "no thread before any work");
    let barrier = Arc::new(Barrier::new(3));
    let names: Vec<_> = (0..3)
        .map(|_| {
            let barrier = barrier.clone();
            pool.submit(move || {
                barrier.wait(); // all three must run at once: three workers
                std::thread::current().name().unwrap().to_owned()
            })
        })
        .collect();
    let mut names: Vec<String> = names.into_iter().map(|t| t.result().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["kitchen-0", "kitchen-1", "kitchen-2"]);
    assert_eq!(pool.started_workers(), 3);
}

#[test]
fn idle_workers_are_reused_before_new_ones_start() {
    let _w = Watchdog::new("idle_workers_are_reused_before_new_ones_start");
    let pool = ThreadPool::builder().workers(8).build().unwrap();
    for i in 0..500 {
        assert_eq!(pool.submit(move || i).result(), Ok(i));
    }
    // One task at a time never needs more than one worker: when a result is visible, its
    // worker already counts as idle, so the next task goes to it.
    assert_eq!(pool.started_workers(), 1);
}

#[test]
fn a_pool_that_cannot_start_a_thread_refuses_work_and_hands_it_back() {
    let pool = ThreadPool::builder()
        .workers(1)
        .stack_size(usize::MAX / 2)
        .build()
        .unwrap();
    let refused = pool.try_submit(|| 42).unwrap_err();
    assert!(matches!(refused.reason(), Error::Spawn { .. }), "{refused}");
    assert_eq!(refused.into_inner()(), 42);
}

#[test]
fn a_task_waiting_on_a_task_of_its_own_pool_does_not_deadlock() {
    let _w = Watchdog::new("a_task_waiting_on_a_task_of_its_own_pool_does_not_deadlock");
    // One worker: the waiting task must run the awaited one itself.
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let inner = pool.clone();
    let outer = pool.submit(move || {
        let child = inner.submit(|| 20);
        child.result().unwrap() + 1
    });
    assert_eq!(outer.result(), Ok(21));

    // A whole tree of tasks that wait on their children, on two workers.
    fn tree(pool: &ThreadPool, depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let p = pool.clone();
        let left = pool.submit(move || tree(&p, depth - 1));
        let p = pool.clone();
        let right = pool.submit(move || tree(&p, depth - 1));
        left.result().unwrap() + right.result().unwrap()
    }
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let p = pool.clone();
    assert_eq!(pool.submit(move || tree(&p, 10)).result(), Ok(1024));
}

#[test]
fn waiting_with_a_timeout_inside_the_pool_times_out() {
    let _w = Watchdog::new("waiting_with_a_timeout_inside_the_pool_times_out");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let (b, work) = blocker();
    let blocked = pool.submit(work);
    b.wait_started();
    let outer = pool.submit(move || {
        let mut blocked = blocked;
        let first = blocked.result_timeout(std::time::Duration::from_millis(5));
        (first, blocked)
    });
    let (first, blocked) = outer.result().unwrap();
    assert_eq!(first, Err(Error::TimedOut));
    b.release();
    assert_eq!(blocked.result(), Ok(()));
}

#[test]
fn graceful_shutdown_runs_what_was_queued() {
    let _w = Watchdog::new("graceful_shutdown_runs_what_was_queued");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let queued: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
    pool.shutdown(Shutdown::graceful().no_wait());
    assert!(pool.is_shut_down());
    let refused = pool.try_submit(|| "late").unwrap_err();
    assert_eq!(refused.reason(), &Error::ShutDown);
    assert_eq!(refused.into_inner()(), "late", "the work comes back");
    b.release();
    pool.shutdown(Shutdown::graceful()); // idempotent, and now waits
    assert_eq!(running.result(), Ok(()));
    let values: Vec<_> = queued.into_iter().map(|t| t.result().unwrap()).collect();
    assert_eq!(values, (0..10).collect::<Vec<_>>());
}

#[test]
fn shutdown_can_cancel_what_has_not_started_but_never_interrupts() {
    let _w = Watchdog::new("shutdown_can_cancel_what_has_not_started_but_never_interrupts");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let ran = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let ran = ran.clone();
            pool.submit(move || ran.fetch_add(1, Ordering::SeqCst))
        })
        .collect();
    pool.shutdown(Shutdown::cancel_pending().no_wait());
    for t in queued {
        assert_eq!(t.result(), Err(Error::Cancelled));
    }
    assert!(!running.is_done(), "the running task goes on");
    b.release();
    pool.shutdown(Shutdown::graceful());
    assert_eq!(running.result(), Ok(()));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn dropping_the_last_handle_waits_and_runs_the_queue() {
    let _w = Watchdog::new("dropping_the_last_handle_waits_and_runs_the_queue");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i * 2)).collect();
    let clone = pool.clone();
    drop(pool); // not the last handle: nothing happens
    assert!(!clone.is_shut_down());
    let (dropped_tx, dropped) = mpsc::channel();
    let dropper = std::thread::spawn(move || {
        drop(clone);
        dropped_tx.send(()).unwrap();
    });
    // The drop is blocked on the running task; let it finish.
    b.release();
    recv(&dropped);
    dropper.join().unwrap();
    assert_eq!(running.result(), Ok(()));
    let values: Vec<_> = queued.into_iter().map(|t| t.result().unwrap()).collect();
    assert_eq!(values, [0, 2, 4, 6, 8]);
}

#[test]
fn shutdown_from_inside_a_task_does_not_deadlock() {
    let _w = Watchdog::new("shutdown_from_inside_a_task_does_not_deadlock");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let inner = pool.clone();
    let task = pool.submit(move || {
        inner.shutdown(Shutdown::default());
        // Submitting after shutdown is refused even from inside; the work comes back.
        let refused = inner.try_submit(|| 5).unwrap_err();
        refused.into_inner()()
    });
    assert_eq!(task.result(), Ok(5));
    pool.shutdown(Shutdown::graceful());
}

#[test]
fn the_last_handle_dropped_inside_a_task_does_not_deadlock() {
    let _w = Watchdog::new("the_last_handle_dropped_inside_a_task_does_not_deadlock");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let inner = pool.clone();
    let (b, work) = blocker();
    drop(pool.submit(work));
    b.wait_started();
    drop(pool.submit(move || {
        drop(inner); // the last handle, by then
        tx.send("dropped inside").unwrap();
    }));
    drop(pool);
    b.release();
    assert_eq!(recv(&rx), "dropped inside");
}

#[test]
fn a_job_pushed_by_a_task_after_shutdown_still_runs_in_a_scope() {
    let _w = Watchdog::new("a_job_pushed_by_a_task_after_shutdown_still_runs_in_a_scope");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let inner = pool.clone();
    let task = pool.submit(move || {
        inner.shutdown(Shutdown::graceful().no_wait());
        // A running task's structured work is part of the task: it completes.
        inner.scope(|s| {
            let parts: Vec<_> = (0..4).map(|i| s.spawn(move || i * 10)).collect();
            parts.into_iter().map(|t| t.result().unwrap()).sum::<i32>()
        })
    });
    assert_eq!(task.result(), Ok(60));
}

#[test]
fn the_initializer_runs_on_each_worker_before_its_first_task() {
    let _w = Watchdog::new("the_initializer_runs_on_each_worker_before_its_first_task");
    thread_local! { static READY: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) }; }
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = inits.clone();
    let pool = ThreadPool::builder()
        .workers(2)
        .initializer(move |index| {
            counted.fetch_add(1, Ordering::SeqCst);
            READY.set(Some(index));
        })
        .build()
        .unwrap();
    // Two tasks that meet at a barrier occupy both workers, so both have started.
    let barrier = Arc::new(Barrier::new(2));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            pool.submit(move || {
                barrier.wait();
                READY.get()
            })
        })
        .collect();
    let mut seen: Vec<_> = tasks.into_iter().map(|t| t.result().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [Some(0), Some(1)]);
    assert_eq!(inits.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panicking_initializer_breaks_the_pool_and_says_why() {
    let _w = Watchdog::new("a_panicking_initializer_breaks_the_pool_and_says_why");
    let pool = ThreadPool::builder()
        .workers(1)
        .initializer(|_| panic!("no database"))
        .build()
        .unwrap();
    let first = pool.submit(|| 1);
    match first.result() {
        Err(Error::Broken { reason }) => assert!(reason.contains("no database"), "{reason}"),
        other => panic!("expected Broken, got {other:?}"),
    }
    assert!(pool.is_shut_down());
    let refused = pool.try_submit(|| 2).unwrap_err();
    assert!(matches!(refused.reason(), Error::Broken { .. }));
    assert!(matches!(
        pool.submit(|| 3).result(),
        Err(Error::Broken { .. })
    ));
}
