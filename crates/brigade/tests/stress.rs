//! Many tasks from many threads, every result accounted for exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use brigade::ThreadPool;
use common::Watchdog;

/// 10⁶ tasks: about a second even in a debug build, so no need to scale it down.
const TASKS: u64 = 1_000_000;
const SUBMITTERS: u64 = 8;

#[test]
fn a_million_tasks_from_eight_threads_each_counted_once() {
    let _w = Watchdog::new("a_million_tasks_from_eight_threads_each_counted_once");
    let pool = ThreadPool::new();
    let ran = Arc::new(AtomicU64::new(0));
    let per_thread = TASKS / SUBMITTERS;
    let sums: Vec<u64> = std::thread::scope(|s| {
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let pool = pool.clone();
                let ran = ran.clone();
                s.spawn(move || {
                    let first = t * per_thread;
                    let tasks: Vec<_> = (first..first + per_thread)
                        .map(|i| {
                            let ran = ran.clone();
                            pool.submit(move || {
                                ran.fetch_add(1, Ordering::Relaxed);
                                i
                            })
                        })
                        .collect();
                    // Every handle gives back exactly its own input.
                    tasks
                        .into_iter()
                        .zip(first..)
                        .map(|(task, i)| {
                            assert_eq!(task.result(), Ok(i));
                            i
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        submitters.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let n = per_thread * SUBMITTERS;
    assert_eq!(ran.load(Ordering::Relaxed), n, "each task ran exactly once");
    assert_eq!(sums.iter().sum::<u64>(), n * (n - 1) / 2);
}

#[test]
fn tasks_spawning_tasks_under_load_each_counted_once() {
    let _w = Watchdog::new("tasks_spawning_tasks_under_load_each_counted_once");
    let pool = ThreadPool::new();
    let ran = Arc::new(AtomicU64::new(0));
    let parents = TASKS / 100;
    let outer: Vec<_> = (0..parents)
        .map(|_| {
            let inner = pool.clone();
            let ran = ran.clone();
            pool.submit(move || {
                let kids: Vec<_> = (0..9)
                    .map(|_| {
                        let ran = ran.clone();
                        inner.submit(move || ran.fetch_add(1, Ordering::Relaxed))
                    })
                    .collect();
                ran.fetch_add(1, Ordering::Relaxed);
                let mut finished = 0;
                for kid in kids {
                    kid.result().unwrap();
                    finished += 1;
                }
                finished
            })
        })
        .collect();
    let kids: usize = outer.into_iter().map(|t| t.result().unwrap()).sum();
    assert_eq!(kids as u64, parents * 9);
    assert_eq!(ran.load(Ordering::Relaxed), parents * 10);
}
