//! How calls and answers travel: frames larger than a socket's buffer in both directions at
//! once, frames that wait behind a running call, a worker killed while the pool is still
//! writing to it, and the thread calls run on in a worker.
//!
//! A worker reads its socket only between calls, and the pool never waits for room in a
//! worker's socket (see `processes::slot`): these tests hold workers inside calls while large
//! frames are queued for them, so that a missed write or a wait in the wrong place hangs (and
//! the watchdog fails the test) instead of passing by luck.

mod common;
mod processes_common;

use std::cell::Cell;

use brigade::{Error, ProcessPool};
use common::Watchdog;
use processes_common::*;
use serde_bytes::ByteBuf;

const MIB: usize = 1 << 20;

/// Larger than a worker's socket buffer (4 MiB each way), so it never fits at once.
const LARGE: usize = 12 * MIB;

fn pattern(seed: u8, len: usize) -> ByteBuf {
    ByteBuf::from(
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect::<Vec<u8>>(),
    )
}

fn flip(mut bytes: ByteBuf) -> ByteBuf {
    bytes.iter_mut().for_each(|b| *b = !*b);
    bytes
}

fn is_flipped(seed: u8, len: usize, out: &ByteBuf) -> bool {
    out.len() == len
        && out
            .iter()
            .enumerate()
            .all(|(i, &b)| b == !seed.wrapping_add((i % 251) as u8))
}

/// Waits at the gate, then answers with `len` bytes.
fn gated_then_large((gate, len): (String, usize)) -> ByteBuf {
    gated(gate);
    pattern(9, len)
}

/// A pool whose workers have measured tiny calls, so that it sends calls ahead of the running
/// one (a fresh pool sends one at a time until it knows how long calls take).
fn warm_pool(workers: usize) -> ProcessPool {
    let pool = pool(workers);
    let tasks: Vec<_> = (0..200u64).map(|i| pool.submit(square, i)).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.result(), Ok((i * i) as u64));
    }
    pool
}

/// Holds the worker inside a call while more than its socket holds is queued for it, in
/// several frames, then lets the call answer with `answer` bytes.
fn queue_behind_a_held_call(pool: &ProcessPool, answer: usize) {
    let gate = Gate::new("behind");
    let held = pool.submit(gated_then_large, (gate.arg(), answer));
    let (release, _) = gate.arrival();
    let queued: Vec<_> = (0..3u8)
        .map(|seed| pool.submit(flip, pattern(seed, LARGE)))
        .collect();
    let small = pool.submit(square, 12);
    drop(release);
    assert_eq!(held.result(), Ok(pattern(9, answer)));
    for (seed, task) in queued.into_iter().enumerate() {
        let out = task.result().expect("the queued call runs");
        assert!(
            is_flipped(seed as u8, LARGE, &out),
            "call {seed} came back wrong"
        );
    }
    assert_eq!(small.result(), Ok(144));
}

#[test]
fn a_large_frame_queued_behind_a_running_call_arrives_whole() {
    let _w = Watchdog::new("a_large_frame_queued_behind_a_running_call_arrives_whole");
    let pool = warm_pool(1);
    // A small answer: the pool has nothing more to read from the worker, which must ask for
    // the rest of the frame it is reading (without the pull, this hangs).
    queue_behind_a_held_call(&pool, 10);
    // A large answer while large frames wait to go the other way.
    queue_behind_a_held_call(&pool, LARGE);
}

#[test]
fn large_frames_both_ways_on_every_worker_at_once() {
    let _w = Watchdog::new("large_frames_both_ways_on_every_worker_at_once");
    let pool = warm_pool(2);
    let items = (0..24u8).map(|seed| pattern(seed, 6 * MIB));
    let results: Vec<_> = pool.map(items, flip).in_flight(8).collect();
    assert_eq!(results.len(), 24);
    for (seed, result) in results.into_iter().enumerate() {
        let out = result.expect("every call comes back");
        assert!(
            is_flipped(seed as u8, 6 * MIB, &out),
            "call {seed} came back wrong"
        );
    }
    // Tiny calls still go through afterwards, interleaved with large ones.
    let mixed: Vec<_> = (0..50u64)
        .map(|i| {
            if i % 10 == 0 {
                Err(pool.submit(flip, pattern(i as u8, 5 * MIB)))
            } else {
                Ok(pool.submit(square, i))
            }
        })
        .collect();
    for (i, task) in mixed.into_iter().enumerate() {
        match task {
            Ok(task) => assert_eq!(task.result(), Ok((i * i) as u64)),
            Err(task) => assert!(is_flipped(i as u8, 5 * MIB, &task.result().unwrap())),
        }
    }
}

#[test]
fn a_worker_killed_while_a_large_frame_is_half_written_fails_only_its_running_call() {
    let _w = Watchdog::new(
        "a_worker_killed_while_a_large_frame_is_half_written_fails_only_its_running_call",
    );
    let pool = warm_pool(1);
    let gate = Gate::new("half-written");
    let held = pool.submit(gated, gate.arg());
    let (_connection, victim) = gate.arrival();
    // Part of this frame is in the worker's socket, the rest still in the pool.
    let queued = pool.submit(flip, pattern(3, LARGE));
    let after = pool.submit(square, 5);
    kill(victim, rustix::process::Signal::KILL);
    assert!(
        matches!(held.result(), Err(Error::WorkerCrashed { pid, .. }) if pid == victim),
        "the running call fails with the crash"
    );
    // The replacement gets the whole frame again, from its first byte.
    let out = queued.result().expect("never taken: sent again");
    assert!(is_flipped(3, LARGE, &out));
    assert_eq!(after.result(), Ok(25));
    assert!(!pool.worker_pids().contains(&victim));
}

std::thread_local! {
    static SET_BY_INIT: Cell<u64> = const { Cell::new(0) };
}

fn init_thread_local() {
    SET_BY_INIT.with(|v| v.set(42));
}

/// What the initializer left in this thread, and whether this is the worker's main thread.
fn thread_facts(_: ()) -> (u64, bool) {
    // SAFETY: both only return ids of the calling thread and process.
    let main = unsafe { libc::gettid() == libc::getpid() };
    (SET_BY_INIT.with(Cell::get), main)
}

#[test]
fn every_call_runs_on_the_workers_main_thread_where_the_initializer_ran() {
    let _w = Watchdog::new("every_call_runs_on_the_workers_main_thread_where_the_initializer_ran");
    let pool = ProcessPool::builder()
        .workers(2)
        .initializer(init_thread_local)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..200).map(|_| pool.submit(thread_facts, ())).collect();
    for task in tasks {
        assert_eq!(task.result(), Ok((42, true)));
    }
}
