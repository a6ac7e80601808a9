//! `ThreadPool::join`: results, parallelism, panics, shutdown.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};

use brigade::{Shutdown, ThreadPool};
use common::{Watchdog, recv};

fn fib(pool: &ThreadPool, n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let (a, b) = pool.join(|| fib(pool, n - 1), || fib(pool, n - 2));
    a + b
}

#[test]
fn join_computes_both_halves_from_inside_and_outside() {
    let _w = Watchdog::new("join_computes_both_halves_from_inside_and_outside");
    for workers in [1, 2, 4] {
        let pool = ThreadPool::builder().workers(workers).build().unwrap();
        assert_eq!(fib(&pool, 22), 17_711);
        let inner = pool.clone();
        let from_task = pool.submit(move || fib(&inner, 18)).result();
        assert_eq!(from_task, Ok(2584));
    }
}

#[test]
fn join_borrows_the_callers_data() {
    let _w = Watchdog::new("join_borrows_the_callers_data");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let mut left = vec![1u32; 1000];
    let mut right = vec![2u32; 1000];
    let (l, r) = pool.join(
        || {
            left.iter_mut().for_each(|x| *x += 1);
            left.iter().sum::<u32>()
        },
        || {
            right.iter_mut().for_each(|x| *x *= 3);
            right.iter().sum::<u32>()
        },
    );
    assert_eq!((l, r), (2000, 6000));
    assert!(left.iter().all(|&x| x == 2) && right.iter().all(|&x| x == 6));
}

#[test]
fn the_halves_run_in_parallel_when_a_worker_is_free() {
    let _w = Watchdog::new("the_halves_run_in_parallel_when_a_worker_is_free");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    // Each half waits for the other at a barrier: this only returns if they run at once,
    // which means the second half was stolen by the other worker.
    let barrier = Barrier::new(2);
    let (a, b) = pool.join(
        || {
            barrier.wait();
            std::thread::current().name().map(String::from)
        },
        || {
            barrier.wait();
            std::thread::current().name().map(String::from)
        },
    );
    assert_ne!(a, b, "two workers ran the two halves");
}

#[test]
fn a_panic_in_either_half_comes_out_after_both_are_done() {
    let _w = Watchdog::new("a_panic_in_either_half_comes_out_after_both_are_done");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    for panicking_half in ["a", "b"] {
        let finished = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pool.join(
                || {
                    if panicking_half == "a" {
                        panic!("a broke");
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                },
                || {
                    if panicking_half == "b" {
                        panic!("b broke");
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                },
            )
        }));
        let payload = outcome.unwrap_err();
        let message = payload.downcast_ref::<&str>().unwrap();
        assert_eq!(*message, format!("{panicking_half} broke"));
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the other half ran to the end"
        );
    }
    // The pool is intact.
    assert_eq!(fib(&pool, 10), 55);
}

#[test]
fn a_shut_down_pool_runs_both_halves_on_the_caller() {
    let _w = Watchdog::new("a_shut_down_pool_runs_both_halves_on_the_caller");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    pool.shutdown(Shutdown::graceful());
    let here = std::thread::current().id();
    let (a, b) = pool.join(
        || std::thread::current().id(),
        || std::thread::current().id(),
    );
    assert_eq!((a, b), (here, here));
}

#[test]
fn a_half_drained_by_shutdown_is_handed_back_and_run_by_its_owner() {
    let _w = Watchdog::new("a_half_drained_by_shutdown_is_handed_back_and_run_by_its_owner");
    // One worker: nobody can steal `b`, so it sits in the worker's deque while `a` blocks.
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (a_started_tx, a_started) = mpsc::channel();
    let (go, wait_for_go) = mpsc::channel::<()>();
    let inner = pool.clone();
    let task = pool.submit(move || {
        inner.join(
            move || {
                a_started_tx.send(()).unwrap();
                recv(&wait_for_go);
                std::thread::current().id()
            },
            || std::thread::current().id(),
        )
    });
    recv(&a_started);
    // Cancelling what is queued drains `b` from the deque: it must come back to its owner.
    pool.shutdown(Shutdown::cancel_pending().no_wait());
    go.send(()).unwrap();
    let (a, b) = task.result().unwrap();
    assert_eq!(a, b, "the owner ran the handed-back half itself");
}
