//! `wait` and `as_completed` over sets of tasks.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use brigade::{Error, Task, ThreadPool, Until, Waitable, as_completed, wait};
use common::{Watchdog, blocker, recv};

/// A task that finishes with `value` when `go` is sent.
fn gated<T: Send + 'static>(pool: &ThreadPool, value: T) -> (mpsc::Sender<()>, Task<T>) {
    let (go, wait_for_go) = mpsc::channel::<()>();
    let task = pool.submit(move || {
        recv(&wait_for_go);
        value
    });
    (go, task)
}

fn pool() -> ThreadPool {
    ThreadPool::builder().workers(4).build().unwrap()
}

#[test]
fn first_completed_returns_as_soon_as_one_is_done() {
    let _w = Watchdog::new("first_completed_returns_as_soon_as_one_is_done");
    let pool = pool();
    let (go_a, a) = gated(&pool, 'a');
    let (go_b, b) = gated(&pool, 'b');
    go_b.send(()).unwrap();
    let waited = wait([&a, &b], Until::FirstCompleted, None);
    assert_eq!(waited.done.len(), 1);
    assert!(std::ptr::eq(waited.done[0], &b));
    assert!(std::ptr::eq(waited.pending[0], &a));
    go_a.send(()).unwrap();
    assert_eq!(a.result(), Ok('a'));
}

#[test]
fn first_error_returns_on_a_failure_but_not_on_a_cancellation() {
    let _w = Watchdog::new("first_error_returns_on_a_failure_but_not_on_a_cancellation");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let (blocked, work) = blocker();
    let running = pool.submit(work);
    blocked.wait_started();
    let (go, slow) = gated(&pool, 1u8);
    let cancelled = pool.submit(|| 0u8);
    // Both workers are busy now; the third task is queued and can be cancelled.
    assert!(cancelled.cancel());
    let ok = pool.submit(|| 2u8);
    let failing = pool.submit(|| -> u8 { panic!("failed first") });
    blocked.release();
    running.result().unwrap();
    let waited = wait([&slow, &cancelled, &ok, &failing], Until::FirstError, None);
    assert!(waited.done.iter().any(|t| std::ptr::eq(*t, &failing)));
    assert!(waited.pending.iter().any(|t| std::ptr::eq(*t, &slow)));
    go.send(()).unwrap();

    // Without a failure, FirstError waits for everything (a cancellation is no error).
    let cancelled = {
        let (b1, work1) = blocker();
        let (b2, work2) = blocker();
        let r1 = pool.submit(work1);
        let r2 = pool.submit(work2);
        b1.wait_started();
        b2.wait_started();
        let c = pool.submit(|| 0u8);
        assert!(c.cancel());
        b1.release();
        b2.release();
        r1.result().unwrap();
        r2.result().unwrap();
        c
    };
    let (go, slow) = gated(&pool, 1u8);
    // The cancelled task is done but is no error, so the wait runs to its deadline (a lower
    // bound on time: a wrong early return is caught, a slow machine cannot fail this).
    let patience = Duration::from_millis(50);
    let started = std::time::Instant::now();
    let waited = wait([&slow, &cancelled], Until::FirstError, Some(patience));
    assert!(
        started.elapsed() >= patience,
        "returned early on a cancellation"
    );
    assert_eq!((waited.done.len(), waited.pending.len()), (1, 1));
    go.send(()).unwrap();
    let waited = wait([&slow, &cancelled], Until::FirstError, None);
    assert_eq!((waited.done.len(), waited.pending.len()), (2, 0));
}

#[test]
fn all_completed_waits_for_all_and_duplicates_count_once() {
    let _w = Watchdog::new("all_completed_waits_for_all_and_duplicates_count_once");
    let pool = pool();
    let tasks: Vec<_> = (0..20).map(|i| pool.submit(move || i)).collect();
    let with_duplicates: Vec<&Task<i32>> = tasks.iter().chain(tasks.iter().take(5)).collect();
    let waited = wait(with_duplicates, Until::AllCompleted, None);
    assert_eq!(waited.done.len(), 20);
    assert!(waited.pending.is_empty());
    // Input order is kept.
    for (i, t) in waited.done.iter().enumerate() {
        assert!(std::ptr::eq(*t, &tasks[i]));
    }
}

#[test]
fn a_cancelled_task_counts_as_done_at_once() {
    let _w = Watchdog::new("a_cancelled_task_counts_as_done_at_once");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (b, work) = blocker();
    let running = pool.submit(work);
    b.wait_started();
    let queued = pool.submit(|| ());
    // Cancelled before the wait.
    assert!(queued.cancel());
    let waited = wait([&running, &queued], Until::FirstCompleted, None);
    assert_eq!(waited.done.len(), 1);
    assert!(std::ptr::eq(waited.done[0], &queued));

    // Cancelled during the wait (gh-92001: CPython's wait misses this).
    let queued = pool.submit(|| ());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            wait([&running, &queued], Until::FirstCompleted, None)
                .done
                .len()
        });
        assert!(queued.cancel());
        assert_eq!(waiter.join().unwrap(), 1);
    });
    b.release();
    running.result().unwrap();
}

#[test]
fn a_timeout_returns_partial_results_not_an_error() {
    let _w = Watchdog::new("a_timeout_returns_partial_results_not_an_error");
    let pool = pool();
    let (go, slow) = gated(&pool, 1);
    let fast = pool.submit(|| 2);
    let waited = wait(
        [&fast, &slow],
        Until::AllCompleted,
        Some(Duration::from_millis(20)),
    );
    assert!(waited.pending.iter().any(|t| std::ptr::eq(*t, &slow)));
    let waited = wait([&slow], Until::AllCompleted, Some(Duration::ZERO));
    assert_eq!((waited.done.len(), waited.pending.len()), (0, 1));
    go.send(()).unwrap();
    assert_eq!(slow.result(), Ok(1));
    let empty: Vec<&Task<()>> = Vec::new();
    let waited = wait(empty, Until::FirstCompleted, None);
    assert!(waited.done.is_empty() && waited.pending.is_empty());
}

#[test]
fn owned_tasks_and_keyed_pairs_come_back_out() {
    let _w = Watchdog::new("owned_tasks_and_keyed_pairs_come_back_out");
    let pool = pool();
    let pairs: Vec<(&str, Task<usize>)> = ["x", "yy", "zzz"]
        .into_iter()
        .map(|k| (k, pool.submit(move || k.len())))
        .collect();
    let waited = wait(pairs, Until::AllCompleted, None);
    let got: Vec<(&str, usize)> = waited
        .done
        .into_iter()
        .map(|(k, t)| (k, t.result().unwrap()))
        .collect();
    assert_eq!(got, [("x", 1), ("yy", 2), ("zzz", 3)]);

    let a = pool.submit(|| 1u8);
    let b = pool.submit(|| "two");
    let mixed: [&dyn Waitable; 2] = [&a, &b];
    assert_eq!(wait(mixed, Until::AllCompleted, None).done.len(), 2);
}

#[test]
fn as_completed_gives_finished_tasks_first_then_completion_order() {
    let _w = Watchdog::new("as_completed_gives_finished_tasks_first_then_completion_order");
    let pool = pool();
    let done_early = pool.submit(|| 0);
    let also_early = pool.submit(|| 9);
    for t in [&done_early, &also_early] {
        let (tx, rx) = mpsc::channel();
        t.add_done_callback(move |_| tx.send(()).unwrap());
        recv(&rx);
    }
    let (go1, first) = gated(&pool, 1);
    let (go2, second) = gated(&pool, 2);
    let tasks = vec![first, second, done_early, also_early];
    let (order_tx, order_rx) = mpsc::channel();
    let consumer = std::thread::spawn(move || {
        for done in as_completed(tasks, None) {
            order_tx.send(done.unwrap().result().unwrap()).unwrap();
        }
    });
    // Already finished: first, in input order.
    assert_eq!(recv(&order_rx), 0);
    assert_eq!(recv(&order_rx), 9);
    // Then in the order they finish: release the second before the first.
    go2.send(()).unwrap();
    assert_eq!(recv(&order_rx), 2);
    go1.send(()).unwrap();
    assert_eq!(recv(&order_rx), 1);
    consumer.join().unwrap();
}

#[test]
fn as_completed_times_out_with_the_count_and_gives_the_rest_back() {
    let _w = Watchdog::new("as_completed_times_out_with_the_count_and_gives_the_rest_back");
    let pool = pool();
    let quick = pool.submit(|| 5);
    let (go_a, slow_a) = gated(&pool, 6);
    let (go_b, slow_b) = gated(&pool, 7);
    let mut it = as_completed(
        [(0, quick), (1, slow_a), (2, slow_b)],
        Some(Duration::from_millis(30)),
    );
    let (key, task) = it.next().unwrap().unwrap();
    assert_eq!((key, task.result()), (0, Ok(5)));
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::Unfinished {
            unfinished: 2,
            total: 3
        }
    );
    assert_eq!(err.to_string(), "timed out: 2 (of 3) tasks unfinished");
    assert!(it.next().is_none());
    let rest = it.into_remaining();
    assert_eq!(rest.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
    go_a.send(()).unwrap();
    go_b.send(()).unwrap();
    let values: Vec<_> = rest.into_iter().map(|(_, t)| t.result().unwrap()).collect();
    assert_eq!(values, [6, 7]);
}

#[test]
fn as_completed_dedups_and_handles_nothing() {
    let _w = Watchdog::new("as_completed_dedups_and_handles_nothing");
    let pool = pool();
    let t = pool.submit(|| 1);
    assert_eq!(as_completed([&t, &t, &t], None).count(), 1);
    let none: Vec<Task<()>> = Vec::new();
    assert_eq!(as_completed(none, Some(Duration::ZERO)).count(), 0);
}

#[test]
fn waiting_inside_a_pool_task_does_not_deadlock_a_one_worker_pool() {
    let _w = Watchdog::new("waiting_inside_a_pool_task_does_not_deadlock_a_one_worker_pool");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let inner = pool.clone();
    let outer = pool.submit(move || {
        let children: Vec<_> = (0..10).map(|i| inner.submit(move || i)).collect();
        let all = wait(&children, Until::AllCompleted, None);
        let firsts = as_completed(&children, None).count();
        (all.done.len(), firsts)
    });
    assert_eq!(outer.result(), Ok((10, 10)));
}
