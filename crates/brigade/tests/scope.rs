//! Scoped tasks: borrowing, joining, nesting, panics.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use brigade::{Error, Shutdown, ThreadPool};
use common::Watchdog;

#[test]
fn tasks_borrow_and_mutate_the_callers_data_in_place() {
    let _w = Watchdog::new("tasks_borrow_and_mutate_the_callers_data_in_place");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let mut data: Vec<u64> = (0..10_000).collect();
    pool.scope(|s| {
        for chunk in data.chunks_mut(1_000) {
            drop(s.spawn(move || chunk.iter_mut().for_each(|x| *x *= 2)));
        }
    });
    // Every task finished before scope returned: all the writes are visible.
    assert!(data.iter().enumerate().all(|(i, &x)| x == 2 * i as u64));
}

#[test]
fn every_task_is_finished_when_scope_returns() {
    let _w = Watchdog::new("every_task_is_finished_when_scope_returns");
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    let finished = AtomicUsize::new(0);
    let value = pool.scope(|s| {
        for _ in 0..1_000 {
            drop(s.spawn(|| {
                finished.fetch_add(1, Ordering::SeqCst);
            }));
        }
        "body's value"
    });
    assert_eq!(value, "body's value");
    assert_eq!(finished.load(Ordering::SeqCst), 1_000);
}

#[test]
fn tasks_spawn_more_tasks_into_the_same_scope() {
    let _w = Watchdog::new("tasks_spawn_more_tasks_into_the_same_scope");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let leaves = AtomicUsize::new(0);
    fn fan<'s>(s: &'s brigade::threads::Scope<'s, '_>, leaves: &'s AtomicUsize, depth: u32) {
        if depth == 0 {
            leaves.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(s.spawn(move || fan(s, leaves, depth - 1)));
        drop(s.spawn(move || fan(s, leaves, depth - 1)));
    }
    pool.scope(|s| fan(s, &leaves, 12));
    assert_eq!(leaves.load(Ordering::Relaxed), 4096);
}

#[test]
fn scoped_handles_give_results_and_can_be_waited_on_inside_tasks() {
    let _w = Watchdog::new("scoped_handles_give_results_and_can_be_waited_on_inside_tasks");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let text = String::from("one chef, never idle");
    let words = pool.scope(|s| {
        // The outer task waits on an inner one on a one-worker pool: it helps, no deadlock.
        let outer = s.spawn(|| {
            let inner = s.spawn(|| text.split(' ').count());
            inner.result().unwrap()
        });
        outer.result().unwrap()
    });
    assert_eq!(words, 4);
}

#[test]
fn a_panicking_task_panics_the_scope_after_all_tasks_finish() {
    let _w = Watchdog::new("a_panicking_task_panics_the_scope_after_all_tasks_finish");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let finished = AtomicUsize::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.scope(|s| {
            for i in 0..100 {
                let finished = &finished;
                drop(s.spawn(move || {
                    if i % 25 == 7 {
                        panic!("task {i} failed");
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                }));
            }
        })
    }));
    let payload = outcome.expect_err("scope reports the panics");
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.starts_with("4 task(s) spawned in a brigade scope panicked; the first: task "));
    assert!(message.ends_with(" failed"));
    assert_eq!(finished.load(Ordering::SeqCst), 96, "the others all ran");
    // The pool is intact.
    assert_eq!(pool.submit(|| 1).result(), Ok(1));
}

#[test]
fn a_panic_in_the_body_is_resumed_after_the_tasks_finish() {
    let _w = Watchdog::new("a_panic_in_the_body_is_resumed_after_the_tasks_finish");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let finished = AtomicUsize::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.scope(|s| {
            for _ in 0..50 {
                drop(s.spawn(|| {
                    finished.fetch_add(1, Ordering::SeqCst);
                }));
            }
            panic!("the body gives up");
        })
    }));
    let payload = outcome.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the body gives up"));
    assert_eq!(finished.load(Ordering::SeqCst), 50);
}

#[test]
fn a_scope_on_a_shut_down_pool_fails_its_tasks_instead_of_hanging() {
    let _w = Watchdog::new("a_scope_on_a_shut_down_pool_fails_its_tasks_instead_of_hanging");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    pool.shutdown(Shutdown::graceful());
    let ran = AtomicUsize::new(0);
    let outcome = pool.scope(|s| {
        s.spawn(|| {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .result()
    });
    assert_eq!(outcome, Err(Error::ShutDown));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn the_huge_list_sum_of_the_primers() {
    let _w = Watchdog::new("the_huge_list_sum_of_the_primers");
    let pool = ThreadPool::new();
    let numbers: Vec<u64> = (1..=2_000_000).collect();
    let chunk = numbers.len().div_ceil(pool.workers() * 8);
    let total: u64 = pool.scope(|s| {
        let parts: Vec<_> = numbers
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().sum::<u64>()))
            .collect();
        parts.into_iter().map(|t| t.result().unwrap()).sum()
    });
    assert_eq!(total, 2_000_000 * 2_000_001 / 2);
}
