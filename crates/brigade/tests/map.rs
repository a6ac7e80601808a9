//! `ThreadPool::map`: order, laziness, bounds, per-item errors, cancellation, unordered.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use brigade::{Error, Shutdown, ThreadPool};
use common::{Watchdog, recv};

/// An infinite input that counts how many items were pulled from it.
fn counted() -> (Arc<AtomicUsize>, impl Iterator<Item = u64> + Send + 'static) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let input = (0..).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (pulled, input)
}

#[test]
fn results_come_in_input_order_one_per_item() {
    let _w = Watchdog::new("results_come_in_input_order_one_per_item");
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    let out: Vec<u64> = pool
        .map(0..1_000u64, |x| {
            // Uneven work, so completion order differs from input order.
            if x % 7 == 0 {
                std::thread::yield_now();
            }
            x * 3
        })
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, (0..1_000).map(|x| x * 3).collect::<Vec<_>>());
}

#[test]
fn map_is_lazy_and_bounded_so_an_infinite_input_works() {
    let _w = Watchdog::new("map_is_lazy_and_bounded_so_an_infinite_input_works");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let (pulled, infinite) = counted();
    let mut results = pool.map(infinite, |x| x + 1).in_flight(4);
    let first: Vec<u64> = results.by_ref().take(10).map(Result::unwrap).collect();
    assert_eq!(first, (1..=10).collect::<Vec<_>>());
    // At most `in_flight` items ahead of what was consumed.
    let ahead = pulled.load(Ordering::SeqCst);
    assert!(
        (10..=14).contains(&ahead),
        "pulled {ahead} items for 10 results"
    );

    let (pulled, infinite) = counted();
    let chunked: Vec<u64> = pool
        .map(infinite, |x| x)
        .chunk_size(8)
        .in_flight(2)
        .take(3)
        .map(Result::unwrap)
        .collect();
    assert_eq!(chunked, [0, 1, 2]);
    assert!(
        pulled.load(Ordering::SeqCst) <= 16,
        "two chunks of eight at most"
    );
}

#[test]
fn an_error_fills_its_own_slot_and_iteration_goes_on() {
    let _w = Watchdog::new("an_error_fills_its_own_slot_and_iteration_goes_on");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    for chunk in [1, 3, 10] {
        let out: Vec<Result<u32, Error>> = pool
            .map(0..10u32, |x| {
                assert!(x != 4, "four is unlucky");
                x
            })
            .chunk_size(chunk)
            .collect();
        assert_eq!(out.len(), 10);
        for (i, r) in out.iter().enumerate() {
            if i == 4 {
                assert!(
                    matches!(r, Err(Error::Panicked { message }) if message == "four is unlucky"),
                    "{r:?}"
                );
            } else {
                assert_eq!(r, &Ok(i as u32));
            }
        }
    }
}

#[test]
fn dropping_the_iterator_cancels_what_has_not_started() {
    let _w = Watchdog::new("dropping_the_iterator_cancels_what_has_not_started");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let counter = ran.clone();
    let mut results = pool
        .map(0..100u32, move |x| {
            // The second item to run (if any starts before the drop) holds the only worker.
            if counter.fetch_add(1, Ordering::SeqCst) == 1 {
                recv(&released.lock().unwrap());
            }
            x
        })
        .in_flight(4);
    assert_eq!(results.next(), Some(Ok(0))); // four chunks submitted, the first done
    drop(results);
    let _ = release.send(());
    pool.shutdown(Shutdown::graceful());
    let ran = ran.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&ran),
        "{ran} items ran; without cancelling, all 4 submitted would have"
    );
}

#[test]
fn unordered_yields_every_index_once() {
    let _w = Watchdog::new("unordered_yields_every_index_once");
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    for chunk in [1, 4] {
        let mut seen: Vec<(usize, u64)> = pool
            .map(0..500u64, |x| x * x)
            .chunk_size(chunk)
            .unordered()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..500u64).map(|x| (x as usize, x * x)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn unordered_yields_in_completion_order() {
    let _w = Watchdog::new("unordered_yields_in_completion_order");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    // Item 0 waits for a go signal; item 1 does not: item 1 must come out first.
    let mut it = pool
        .map(0..2u32, move |x| {
            if x == 0 {
                recv(&go_rx.lock().unwrap());
            }
            x
        })
        .unordered();
    assert_eq!(it.next(), Some((1, Ok(1))));
    go_tx.send(()).unwrap();
    assert_eq!(it.next(), Some((0, Ok(0))));
    assert_eq!(it.next(), None);
}

#[test]
fn switching_to_unordered_midway_keeps_every_item() {
    let _w = Watchdog::new("switching_to_unordered_midway_keeps_every_item");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let mut ordered = pool.map(0..50u32, |x| x).chunk_size(3);
    let first: Vec<_> = ordered.by_ref().take(4).map(Result::unwrap).collect();
    assert_eq!(first, [0, 1, 2, 3]);
    let mut rest: Vec<(usize, u32)> = ordered.unordered().map(|(i, r)| (i, r.unwrap())).collect();
    rest.sort();
    assert_eq!(rest, (4..50).map(|x| (x as usize, x)).collect::<Vec<_>>());
}

#[test]
fn a_pool_shut_down_midway_fails_the_rest_and_stops() {
    let _w = Watchdog::new("a_pool_shut_down_midway_fails_the_rest_and_stops");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (pulled, infinite) = counted();
    let mut results = pool.map(infinite, |x| x).in_flight(2);
    assert_eq!(results.next(), Some(Ok(0)));
    pool.shutdown(Shutdown::graceful());
    let rest: Vec<_> = results.collect();
    assert_eq!(rest.last(), Some(&Err(Error::ShutDown)));
    assert!(rest[..rest.len() - 1].iter().all(Result::is_ok));
    assert!(pulled.load(Ordering::SeqCst) <= 4);
}
