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

/// Item 1 blocks until the test lets it go; every item counts its runs.
fn stuck_second(
    ran: Arc<AtomicUsize>,
) -> (
    mpsc::Sender<()>,
    impl Fn(u64) -> u64 + Send + Sync + 'static,
) {
    let (go, wait_for_go) = mpsc::channel::<()>();
    let wait_for_go = std::sync::Mutex::new(wait_for_go);
    let f = move |x: u64| {
        ran.fetch_add(1, Ordering::SeqCst);
        if x == 1 {
            let _ = wait_for_go.lock().unwrap().recv();
        }
        x
    };
    (go, f)
}

#[test]
fn a_deadline_for_the_whole_map_times_out_the_late_items_and_cancels_the_rest() {
    let _w =
        Watchdog::new("a_deadline_for_the_whole_map_times_out_the_late_items_and_cancels_the_rest");
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (go, f) = stuck_second(ran.clone());
    let (pulled, input) = counted();
    let results: Vec<_> = pool
        .map(input, f)
        .in_flight(3)
        .timeout(std::time::Duration::from_millis(300)) // item 0 finishes long before
        .collect();
    assert_eq!(results[0], Ok(0));
    assert!(results.len() >= 2, "{results:?}");
    assert!(
        results[1..].iter().all(|r| r == &Err(Error::TimedOut)),
        "{results:?}"
    );
    assert_eq!(
        results.len(),
        pulled.load(Ordering::SeqCst),
        "one result per item read, then the end"
    );
    go.send(()).unwrap();
    // Only items 0 and 1 ever ran: the queued ones behind the stuck one were cancelled.
    pool.shutdown(Shutdown::graceful());
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

#[test]
fn an_unordered_map_with_a_deadline_yields_what_finished_and_times_out_the_rest() {
    let _w = Watchdog::new(
        "an_unordered_map_with_a_deadline_yields_what_finished_and_times_out_the_rest",
    );
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (go, f) = stuck_second(ran.clone());
    let mut results: Vec<_> = pool
        .map(0..5u64, f)
        .in_flight(5)
        .timeout(std::time::Duration::from_millis(300)) // item 0 finishes long before
        .unordered()
        .collect();
    results.sort_by_key(|(i, _)| *i);
    assert_eq!(results.len(), 5);
    assert_eq!(results[0], (0, Ok(0)));
    for (i, r) in &results[1..] {
        assert_eq!(r, &Err(Error::TimedOut), "item {i}");
    }
    go.send(()).unwrap();
    pool.shutdown(Shutdown::graceful());
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

#[test]
fn a_huge_map_timeout_means_no_limit() {
    let _w = Watchdog::new("a_huge_map_timeout_means_no_limit");
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let out: Vec<_> = pool
        .map(0..100u64, |x| x + 1)
        .timeout(std::time::Duration::MAX)
        .collect();
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(Result::is_ok));
}
