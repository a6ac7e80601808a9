//! `wait_async` and `as_completed_async`: the blocking waits' semantics, awaited. Every wait
//! is on an event, under a watchdog; the only durations are time-outs that must expire.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use brigade::{
    Completer, Error, EventLoop, Task, ThreadPool, Until, Waitable, as_completed_async, wait_async,
};
use common::{PATIENCE, Watchdog, recv};
use futures::StreamExt;

fn one_worker_loop() -> EventLoop {
    EventLoop::builder()
        .workers(1)
        .blocking_threshold(Duration::MAX)
        .build()
        .unwrap()
}

#[test]
fn wait_async_waits_on_any_lane_without_blocking_the_loop() {
    let _w = Watchdog::new("wait_async_waits_on_any_lane_without_blocking_the_loop");
    let lp = one_worker_loop();
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (go, wait_for_go) = mpsc::channel::<()>();
    let on_threads = pool.submit(move || wait_for_go.recv_timeout(PATIENCE).unwrap());
    let (completer, by_hand) = Completer::<&str>::new();
    let (waiting_tx, waiting) = mpsc::channel();
    let waiter = lp.spawn(async move {
        waiting_tx.send(()).unwrap();
        let tasks: [&(dyn Waitable + Sync); 2] = [&on_threads, &by_hand];
        let waited = wait_async(tasks, Until::AllCompleted, None).await;
        (waited.done.len(), waited.pending.len())
    });
    recv(&waiting);
    // The loop's only worker is free while the waiter waits: another task runs to the end.
    assert_eq!(
        lp.spawn(async { "ran meanwhile" }).result(),
        Ok("ran meanwhile")
    );
    go.send(()).unwrap();
    completer.set_result("done");
    assert_eq!(waiter.result(), Ok((2, 0)));
}

#[test]
fn wait_async_honours_until_and_its_timeout_under_any_executor() {
    let _w = Watchdog::new("wait_async_honours_until_and_its_timeout_under_any_executor");
    let lp = one_worker_loop();
    // Under brigade's loop (tokio's timer) and under a plain executor (brigade's timer thread).
    let run = |on_loop: bool, future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        if on_loop {
            lp.block_on(future).unwrap();
        } else {
            futures::executor::block_on(future);
        }
    };
    for on_loop in [true, false] {
        let (never, stuck) = Completer::<u32>::new();
        let (quick, fast) = Completer::<u32>::new();
        quick.set_result(1);
        run(
            on_loop,
            Box::pin(async move {
                let waited = wait_async([&stuck, &fast], Until::FirstCompleted, None).await;
                assert_eq!((waited.done.len(), waited.pending.len()), (1, 1));
                assert!(std::ptr::eq(waited.done[0], &fast));
                let waited = wait_async(
                    [&stuck, &fast, &stuck],
                    Until::AllCompleted,
                    Some(Duration::from_millis(20)),
                )
                .await;
                assert_eq!(
                    (waited.done.len(), waited.pending.len()),
                    (1, 1),
                    "deduplicated"
                );
                drop(never);
            }),
        );
        let (never, stuck) = Completer::<u32>::new();
        let (failing, failed) = Completer::<u32>::new();
        let (cancelled_c, cancelled) = Completer::<u32>::new();
        assert!(cancelled.cancel());
        run(
            on_loop,
            Box::pin(async move {
                let tasks = [&stuck, &cancelled, &failed];
                let waiter = std::pin::pin!(wait_async(tasks, Until::FirstError, None));
                // A cancellation is not an error: the wait goes on until one fails.
                failing.set_error(Error::TimedOut);
                let waited = waiter.await;
                assert_eq!(waited.done.len(), 2);
                assert_eq!(waited.pending.len(), 1);
                drop((never, cancelled_c));
            }),
        );
    }
}

#[test]
fn as_completed_async_yields_in_finishing_order_and_ends_on_time() {
    let _w = Watchdog::new("as_completed_async_yields_in_finishing_order_and_ends_on_time");
    let lp = one_worker_loop();
    let (completers, tasks): (Vec<_>, Vec<Task<usize>>) =
        (0..3).map(|_| Completer::<usize>::new()).unzip();
    let mut completers: Vec<Option<Completer<usize>>> = completers.into_iter().map(Some).collect();
    let (done_tx, done) = mpsc::channel::<(usize, usize)>();
    let (next_tx, next) = tokio::sync::mpsc::unbounded_channel::<()>();
    let consumer = lp.spawn(async move {
        let mut next = next;
        let mut stream = as_completed_async(tasks.into_iter().enumerate(), None);
        while let Some(finished) = stream.next().await {
            let (index, task) = finished.unwrap();
            done_tx.send((index, task.await.unwrap())).unwrap();
            next.recv().await;
        }
    });
    for index in [2, 0, 1] {
        completers[index].take().unwrap().set_result(index * 10);
        assert_eq!(recv(&done), (index, index * 10));
        next_tx.send(()).unwrap();
    }
    consumer.result().unwrap();

    // Under a plain executor, through the `Stream` trait: what is done comes first, then the
    // time-out's one error, then the end; the unfinished task comes back.
    let (ready, first) = Completer::<u8>::new();
    ready.set_result(1);
    let (never, stuck) = Completer::<u8>::new();
    let mut stream = as_completed_async(
        [("stuck", stuck), ("first", first)],
        Some(Duration::from_millis(20)),
    );
    let items: Vec<_> = futures::executor::block_on((&mut stream).collect());
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().0, "first");
    assert!(matches!(
        items[1],
        Err(Error::Unfinished {
            unfinished: 1,
            total: 2
        })
    ));
    let rest = stream.into_remaining();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, "stuck");
    drop(never);
}

#[test]
fn as_completed_async_does_not_block_the_loop_while_it_waits() {
    let _w = Watchdog::new("as_completed_async_does_not_block_the_loop_while_it_waits");
    let lp = one_worker_loop();
    let (completer, task) = Completer::<u8>::new();
    let (waiting_tx, waiting) = mpsc::channel();
    let consumer = lp.spawn(async move {
        let mut stream = as_completed_async([task], Some(PATIENCE));
        waiting_tx.send(()).unwrap();
        stream.next().await.unwrap().unwrap().await
    });
    recv(&waiting);
    assert_eq!(lp.spawn(async { 2 }).result(), Ok(2));
    completer.set_result(3);
    assert_eq!(consumer.result(), Ok(Ok(3)));
}
