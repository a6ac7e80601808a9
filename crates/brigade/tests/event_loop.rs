//! The event loop: spawn, await, cancel, the helpers and the bridges. Every wait is on an
//! event (a channel, a oneshot, a drop), under a watchdog; nothing relies on sleeping long
//! enough.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use brigade::event_loop::{BlockOnError, gather, gather_results, timeout, timeout_at};
use brigade::{Error, EventLoop, ThreadPool};
use common::{DropSignal, PATIENCE, Watchdog, recv};
use tokio::sync::oneshot;

/// A loop whose detector never fires, for tests that block a worker on purpose.
fn quiet_loop(workers: usize) -> EventLoop {
    EventLoop::builder()
        .workers(workers)
        .blocking_threshold(Duration::MAX)
        .build()
        .unwrap()
}

#[test]
fn spawned_futures_run_and_are_awaited_from_sync_and_async_code() {
    let _w = Watchdog::new("spawned_futures_run_and_are_awaited_from_sync_and_async_code");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    assert_eq!(lp.spawn(async { 6 * 7 }).result(), Ok(42));
    let lp2 = lp.clone();
    let outer = lp.spawn(async move {
        let inner: Vec<_> = (0..10u64).map(|n| lp2.spawn(async move { n })).collect();
        let mut sum = 0;
        for task in inner {
            sum += task.await.unwrap();
        }
        sum
    });
    assert_eq!(outer.result(), Ok(45));
}

#[test]
fn a_panicking_future_fails_its_task_and_the_loop_lives_on() {
    let _w = Watchdog::new("a_panicking_future_fails_its_task_and_the_loop_lives_on");
    let lp = EventLoop::builder().workers(1).build().unwrap();
    let task = lp.spawn(async { panic!("boom") });
    assert_eq!(
        task.result(),
        Err::<(), _>(Error::Panicked {
            message: "boom".into()
        })
    );
    assert_eq!(lp.spawn(async { 1 }).result(), Ok(1));
}

#[test]
fn cancelling_a_pending_task_means_it_never_runs() {
    let _w = Watchdog::new("cancelling_a_pending_task_means_it_never_runs");
    let lp = quiet_loop(1);
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let blocker = lp.spawn(async move {
        started_tx.send(()).unwrap();
        released.recv_timeout(PATIENCE).unwrap(); // holds the only worker
    });
    recv(&started);
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    let queued = lp.spawn(async move { ran2.store(true, SeqCst) });
    assert!(!queued.is_running());
    assert!(queued.cancel());
    assert!(queued.is_cancelled() && queued.is_done());
    release.send(()).unwrap();
    blocker.result().unwrap();
    // The loop has run its queue: a task spawned after the cancelled one has finished.
    lp.spawn(async {}).result().unwrap();
    assert_eq!(queued.result(), Err(Error::Cancelled));
    assert!(!ran.load(SeqCst));
}

#[test]
fn cancelling_a_running_task_stops_it_at_its_next_await() {
    let _w = Watchdog::new("cancelling_a_running_task_stops_it_at_its_next_await");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (dropped_tx, dropped) = mpsc::channel();
    let (wake_tx, wake) = oneshot::channel::<()>();
    let after_await = Arc::new(AtomicBool::new(false));
    let after = after_await.clone();
    let task = lp.spawn(async move {
        let _signal = DropSignal(Some(dropped_tx), "future dropped");
        started_tx.send(()).unwrap();
        let _ = wake.await;
        after.store(true, SeqCst);
    });
    recv(&started);
    assert!(task.is_running());
    assert!(task.cancel(), "a running async task can be interrupted");
    assert_eq!(recv(&dropped), "future dropped");
    // The future is gone: the code after its await never ran, and no one listens any more.
    assert!(wake_tx.send(()).is_err());
    assert!(!after_await.load(SeqCst));
    brigade::wait([&task], brigade::Until::AllCompleted, None);
    assert!(task.is_cancelled());
    assert_eq!(task.result(), Err(Error::Cancelled));
}

#[test]
fn timeout_cancels_any_future_and_returns_only_after_its_cleanup() {
    let _w = Watchdog::new("timeout_cancels_any_future_and_returns_only_after_its_cleanup");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let stuck = async move {
        let _signal = DropSignal(Some(dropped_tx), "stuck dropped");
        std::future::pending::<u32>().await
    };
    let outcomes = lp
        .block_on(async {
            let timed_out = timeout(Duration::from_millis(1), stuck).await;
            // Already dropped when `timeout` returned: no waiting for it here.
            let cleaned_up = dropped.try_recv();
            (
                timed_out,
                cleaned_up,
                timeout(PATIENCE, async { 5u32 }).await,
            )
        })
        .unwrap();
    assert_eq!(outcomes, (Err(Error::TimedOut), Ok("stuck dropped"), Ok(5)));

    // Under a plain executor (no tokio), with a deadline shared by two steps.
    let deadline = std::time::Instant::now() + Duration::from_millis(20);
    let steps = futures::executor::block_on(async {
        let first = timeout_at(deadline, async { 1 }).await;
        let second = timeout_at(deadline, std::future::pending::<u8>()).await;
        (first, second)
    });
    assert_eq!(steps, (Ok(1), Err(Error::TimedOut)));
    assert!(std::time::Instant::now() >= deadline);
}

#[test]
fn cancelling_the_task_that_awaits_a_timeout_cancels_the_work_inside() {
    let _w = Watchdog::new("cancelling_the_task_that_awaits_a_timeout_cancels_the_work_inside");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let awaiter = lp.spawn(async move {
        timeout(PATIENCE, async move {
            let _signal = DropSignal(Some(dropped_tx), "work dropped");
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await
        })
        .await
    });
    recv(&started);
    assert!(awaiter.cancel());
    assert_eq!(recv(&dropped), "work dropped");
    assert_eq!(awaiter.result(), Err(Error::Cancelled));
}

#[test]
fn a_task_under_timeout_runs_on_unless_a_gather_holds_it() {
    let _w = Watchdog::new("a_task_under_timeout_runs_on_unless_a_gather_holds_it");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (release, released) = oneshot::channel::<()>();
    let detached = lp.spawn(async move {
        released.await.unwrap();
        "ran on"
    });
    let (dropped_tx, dropped) = mpsc::channel();
    let gathered = lp.spawn(async move {
        let _signal = DropSignal(Some(dropped_tx), "gathered task dropped");
        std::future::pending::<&str>().await
    });
    let (tx, rx) = mpsc::channel();
    detached.add_done_callback(move |outcome| tx.send(outcome.clone()).unwrap());
    let outcomes = lp
        .block_on(async {
            (
                timeout(Duration::from_millis(1), detached).await,
                timeout(Duration::from_millis(1), gather([gathered])).await,
            )
        })
        .unwrap();
    assert_eq!(outcomes, (Err(Error::TimedOut), Err(Error::TimedOut)));
    assert_eq!(recv(&dropped), "gathered task dropped");
    // The handle was dropped, which detaches a task: it still runs to its end.
    release.send(()).unwrap();
    assert_eq!(recv(&rx), Ok("ran on"));
}

#[test]
fn gather_keeps_input_order_whatever_the_finishing_order() {
    let _w = Watchdog::new("gather_keeps_input_order_whatever_the_finishing_order");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    // Task i waits to be released, then releases task i-1: they finish last to first.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..5).map(|_| oneshot::channel::<()>()).unzip();
    let mut txs: Vec<Option<_>> = txs.into_iter().map(Some).collect();
    let tasks: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let release_previous = if i > 0 { txs[i - 1].take() } else { None };
            lp.spawn(async move {
                rx.await.unwrap();
                if let Some(previous) = release_previous {
                    previous.send(()).unwrap();
                }
                i * 10
            })
        })
        .collect();
    txs[4].take().unwrap().send(()).unwrap();
    assert_eq!(
        lp.block_on(gather(tasks)).unwrap(),
        Ok(vec![0, 10, 20, 30, 40])
    );
}

/// Counts the polls of the future it wraps, and says when the first one is over.
struct Polls<F> {
    inner: F,
    polls: Arc<AtomicUsize>,
    first: Option<mpsc::Sender<()>>,
}

impl<F: std::future::Future + Unpin> std::future::Future for Polls<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        let polled = std::pin::Pin::new(&mut self.inner).poll(cx);
        if let Some(first) = self.first.take() {
            first.send(()).unwrap();
        }
        polled
    }
}

#[test]
fn a_gather_is_woken_when_its_last_task_finishes_not_at_each() {
    let _w = Watchdog::new("a_gather_is_woken_when_its_last_task_finishes_not_at_each");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    const TASKS: usize = 10;
    let (done_tx, done) = mpsc::channel();
    let (gos, tasks): (Vec<_>, Vec<_>) = (0..TASKS)
        .map(|i| {
            let (go, wait) = oneshot::channel::<()>();
            let task = lp.spawn(async move {
                wait.await.unwrap();
                i
            });
            let done_tx = done_tx.clone();
            task.add_done_callback(move |_| done_tx.send(()).unwrap());
            (go, task)
        })
        .unzip();
    let polls = Arc::new(AtomicUsize::new(0));
    let (first_tx, first) = mpsc::channel();
    let gathered = lp.spawn(Polls {
        inner: gather(tasks),
        polls: Arc::clone(&polls),
        first: Some(first_tx),
    });
    recv(&first);
    // The tasks finish one at a time, each after the one before has finished.
    for go in gos {
        go.send(()).unwrap();
        recv(&done);
    }
    assert_eq!(
        gathered.result().unwrap(),
        Ok((0..TASKS).collect::<Vec<_>>())
    );
    // The first poll, and the one its last task's completion woke: not one per task.
    assert_eq!(polls.load(SeqCst), 2);
}

#[test]
fn a_gather_returns_a_failure_while_other_tasks_still_run() {
    let _w = Watchdog::new("a_gather_returns_a_failure_while_other_tasks_still_run");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (go, wait) = oneshot::channel::<()>();
    let slow = lp.spawn(async move {
        wait.await.unwrap();
        1
    });
    let (fail, failing) = oneshot::channel::<()>();
    let failed = lp.spawn(async move {
        failing.await.unwrap();
        panic!("early")
    });
    let (first_tx, first) = mpsc::channel();
    let gathered = lp.spawn(Polls {
        inner: gather([slow, failed]),
        polls: Arc::new(AtomicUsize::new(0)),
        first: Some(first_tx),
    });
    // Watched and waiting before the failure, so the failure's completion must wake it.
    recv(&first);
    fail.send(()).unwrap();
    assert_eq!(
        gathered.result(),
        Ok(Err(Error::Panicked {
            message: "early".into()
        }))
    );
    // The other task was still waiting all along.
    go.send(()).unwrap();
}

#[test]
fn gather_reports_the_first_error_and_gather_results_every_outcome() {
    let _w = Watchdog::new("gather_reports_the_first_error_and_gather_results_every_outcome");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let make = |lp: &EventLoop| {
        vec![
            lp.spawn(async { 1 }),
            lp.spawn(async { panic!("second") }),
            lp.spawn(async { 3 }),
        ]
    };
    let first = lp.block_on(gather(make(&lp))).unwrap();
    assert_eq!(
        first,
        Err(Error::Panicked {
            message: "second".into()
        })
    );
    let all = lp.block_on(gather_results(make(&lp))).unwrap();
    assert_eq!(all[0], Ok(1));
    assert!(matches!(all[1], Err(Error::Panicked { .. })));
    assert_eq!(all[2], Ok(3));
    // Tasks from other lanes mix in.
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let mixed = vec![pool.submit(|| 7), lp.spawn(async { 8 })];
    assert_eq!(lp.block_on(gather(mixed)).unwrap(), Ok(vec![7, 8]));
}

#[test]
fn a_group_hands_back_each_childs_task_and_joins_them_all() {
    let _w = Watchdog::new("a_group_hands_back_each_childs_task_and_joins_them_all");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let group = lp.group();
    let children: Vec<_> = (0..20usize)
        .map(|i| {
            group.spawn(async move {
                tokio::task::yield_now().await;
                Ok::<_, ()>(i)
            })
        })
        .collect();
    assert_eq!(group.len(), 20);
    assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    let values: Vec<usize> = children
        .into_iter()
        .map(|c| c.result().unwrap().unwrap())
        .collect();
    assert_eq!(values, (0..20).collect::<Vec<_>>());
}

#[test]
fn the_first_failure_in_a_group_cancels_the_rest() {
    let _w = Watchdog::new("the_first_failure_in_a_group_cancels_the_rest");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (dropped_tx, dropped) = mpsc::channel();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let group = lp.group();
    let siblings: Vec<_> = (0..3)
        .map(|_| {
            let dropped_tx = dropped_tx.clone();
            let started_tx = started_tx.clone();
            group.spawn(async move {
                let _signal = DropSignal(Some(dropped_tx), "sibling dropped");
                started_tx.send(()).unwrap();
                std::future::pending::<Result<u32, &str>>().await
            })
        })
        .collect();
    let (fail_tx, fail) = oneshot::channel::<()>();
    let failing = group.spawn(async move {
        fail.await.unwrap();
        Err::<u32, _>("index 3 fails")
    });
    let failure = lp
        .block_on(async move {
            for _ in 0..3 {
                started.recv().await.unwrap(); // every sibling is running
            }
            fail_tx.send(()).unwrap();
            group.join().await
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(failure.index, Some(3));
    assert_eq!(failure.message.as_deref(), Some("\"index 3 fails\""));
    assert_eq!(failure.cancelled, 3);
    for _ in 0..3 {
        assert_eq!(recv(&dropped), "sibling dropped");
    }
    assert_eq!(failing.result(), Ok(Err("index 3 fails")));
    for sibling in siblings {
        assert_eq!(sibling.result(), Err(Error::Cancelled));
    }
}

/// A group with `n` children that say they started, then wait forever, and say when dropped.
fn stuck_group(
    lp: &EventLoop,
    n: usize,
) -> (brigade::event_loop::TaskGroup, mpsc::Receiver<&'static str>) {
    let (started_tx, started) = mpsc::channel();
    let (dropped_tx, dropped) = mpsc::channel();
    let group = lp.group();
    for _ in 0..n {
        let (started_tx, dropped_tx) = (started_tx.clone(), dropped_tx.clone());
        drop(group.spawn(async move {
            let _signal = DropSignal(Some(dropped_tx), "child dropped");
            started_tx.send(()).unwrap();
            std::future::pending::<Result<(), ()>>().await
        }));
    }
    for _ in 0..n {
        recv(&started);
    }
    (group, dropped)
}

#[test]
fn dropping_a_group_or_its_join_cancels_its_children() {
    let _w = Watchdog::new("dropping_a_group_or_its_join_cancels_its_children");
    let lp = EventLoop::builder().workers(1).build().unwrap();
    let (group, dropped) = stuck_group(&lp, 2);
    drop(group);
    for _ in 0..2 {
        assert_eq!(recv(&dropped), "child dropped");
    }
    let (group, dropped) = stuck_group(&lp, 2);
    let mut join = group.join();
    assert!(futures::FutureExt::now_or_never(&mut join).is_none());
    drop(join);
    for _ in 0..2 {
        assert_eq!(recv(&dropped), "child dropped");
    }
}

#[test]
fn cancelling_the_task_that_joins_a_group_or_a_timeout_around_join_cancels_its_children() {
    let _w = Watchdog::new(
        "cancelling_the_task_that_joins_a_group_or_a_timeout_around_join_cancels_its_children",
    );
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (group, dropped) = stuck_group(&lp, 3);
    let (joining_tx, joining) = mpsc::channel();
    let joiner = lp.spawn(async move {
        joining_tx.send(()).unwrap();
        group.join().await
    });
    recv(&joining);
    assert!(joiner.cancel());
    for _ in 0..3 {
        assert_eq!(recv(&dropped), "child dropped");
    }
    assert_eq!(joiner.result(), Err(Error::Cancelled));

    let (group, dropped) = stuck_group(&lp, 2);
    let joined = lp
        .block_on(timeout(Duration::from_millis(1), group.join()))
        .unwrap();
    assert_eq!(joined, Err(Error::TimedOut));
    for _ in 0..2 {
        assert_eq!(recv(&dropped), "child dropped");
    }
}

#[test]
fn children_spawned_while_the_group_is_joined_are_waited_for() {
    let _w = Watchdog::new("children_spawned_while_the_group_is_joined_are_waited_for");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let group = lp.group();
    let spawner = group.spawner();
    let (joining_tx, joining) = mpsc::channel();
    let (late_tx, late) = mpsc::channel();
    let gate = group.spawn(async move {
        // Holds the group open until the join is under way, then hands over to a late child.
        joining.recv_timeout(PATIENCE).unwrap();
        let late_child = spawner.spawn(async {
            tokio::task::yield_now().await;
            Ok::<_, ()>("late")
        });
        late_tx.send(late_child).unwrap();
        Ok::<_, ()>("gate")
    });
    let join = lp.spawn(group.join());
    joining_tx.send(()).unwrap();
    let late_child = recv(&late);
    assert_eq!(join.result(), Ok(Ok(())));
    assert!(late_child.is_done(), "join waited for the late child");
    assert_eq!(late_child.result(), Ok(Ok("late")));
    assert_eq!(gate.result(), Ok(Ok("gate")));
}

#[test]
fn a_cancelled_group_stops_its_children_and_takes_no_more() {
    let _w = Watchdog::new("a_cancelled_group_stops_its_children_and_takes_no_more");
    let lp = EventLoop::builder().workers(1).build().unwrap();
    let (group, dropped) = stuck_group(&lp, 2);
    let spawner = group.spawner();
    group.cancel();
    for _ in 0..2 {
        assert_eq!(recv(&dropped), "child dropped");
    }
    let refused = spawner.spawn(async { Ok::<_, ()>(()) });
    assert_eq!(refused.result(), Err(Error::Cancelled));
    let failure = lp.block_on(group.join()).unwrap().unwrap_err();
    assert_eq!((failure.index, failure.cancelled), (None, 2));
    assert!(failure.to_string().contains("cancelled"));
    // After a join, a spawner is refused with ShutDown.
    let group = lp.group();
    let spawner = group.spawner();
    assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    assert_eq!(
        spawner.spawn(async { Ok::<_, ()>(()) }).result(),
        Err(Error::ShutDown)
    );
}

#[test]
fn a_child_cancelled_through_its_own_handle_does_not_fail_the_group() {
    let _w = Watchdog::new("a_child_cancelled_through_its_own_handle_does_not_fail_the_group");
    let lp = EventLoop::builder().workers(1).build().unwrap();
    let group = lp.group();
    let (started_tx, started) = mpsc::channel();
    let child = group.spawn(async move {
        started_tx.send(()).unwrap();
        std::future::pending::<Result<(), ()>>().await
    });
    let sibling = group.spawn(async { Ok::<_, ()>(1) });
    recv(&started);
    assert!(child.cancel());
    assert_eq!(lp.block_on(group.join()).unwrap(), Ok(()));
    assert_eq!(child.result(), Err(Error::Cancelled));
    assert_eq!(sibling.result(), Ok(Ok(1)));
}

#[test]
fn map_limited_keeps_order_caps_concurrency_and_pulls_inputs_lazily() {
    let _w = Watchdog::new("map_limited_keeps_order_caps_concurrency_and_pulls_inputs_lazily");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let pulled2 = pulled.clone();
    let inputs = (0..10u32).inspect(move |_| {
        pulled2.fetch_add(1, SeqCst);
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, started) = mpsc::channel();
    let gate2 = gate.clone();
    let map = lp.map_limited(3, inputs, move |x| {
        let (gate, started_tx) = (gate2.clone(), started_tx.clone());
        async move {
            started_tx.send(x).unwrap();
            gate.acquire().await.unwrap().forget();
            if x == 4 {
                panic!("four");
            }
            x * 2
        }
    });
    let results = lp.spawn(map);
    let mut first: Vec<u32> = (0..3).map(|_| recv(&started)).collect();
    first.sort();
    assert_eq!(first, [0, 1, 2]);
    // Three calls are waiting at the gate; the fourth input has not even been taken.
    assert_eq!(pulled.load(SeqCst), 3);
    assert!(started.try_recv().is_err());
    gate.add_permits(10);
    let results = results.result().unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(results[3], Ok(6));
    assert!(matches!(results[4], Err(Error::Panicked { .. })));
    assert_eq!(results[9], Ok(18));
}

#[test]
fn map_limited_with_one_slot_runs_inputs_one_by_one_in_order() {
    let _w = Watchdog::new("map_limited_with_one_slot_runs_inputs_one_by_one_in_order");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    let out = lp
        .block_on(lp.map_limited(1, 0..8, move |i| {
            let log = log2.clone();
            async move {
                log.lock().unwrap().push(("start", i));
                tokio::task::yield_now().await;
                log.lock().unwrap().push(("end", i));
                i
            }
        }))
        .unwrap();
    assert_eq!(out, (0..8).map(Ok).collect::<Vec<_>>());
    let expected: Vec<_> = (0..8).flat_map(|i| [("start", i), ("end", i)]).collect();
    assert_eq!(*log.lock().unwrap(), expected);
}

#[test]
fn async_code_awaits_blocking_work_without_blocking_the_loop() {
    let _w = Watchdog::new("async_code_awaits_blocking_work_without_blocking_the_loop");
    let lp = quiet_loop(1);
    let (release, released) = mpsc::channel::<()>();
    let (blocked_tx, blocked) = mpsc::channel();
    let lp2 = lp.clone();
    let waiter = lp.spawn(async move {
        let work = lp2.to_thread(move || {
            blocked_tx.send(()).unwrap();
            released.recv_timeout(PATIENCE).unwrap();
            "unblocked"
        });
        work.await
    });
    recv(&blocked);
    // The thread is blocked, and the loop's only worker is free to run other tasks.
    assert_eq!(lp.spawn(async { 1 }).result(), Ok(1));
    release.send(()).unwrap();
    assert_eq!(waiter.result(), Ok(Ok("unblocked")));

    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let on_pool = lp.spawn(async move { pool.submit(|| 2 + 2).await });
    assert_eq!(on_pool.result(), Ok(Ok(4)));
    let panicked = lp.to_thread(|| -> u8 { panic!("in a thread") });
    assert!(matches!(panicked.result(), Err(Error::Panicked { .. })));
}

#[test]
fn block_on_inside_the_loop_is_an_error_not_a_panic() {
    let _w = Watchdog::new("block_on_inside_the_loop_is_an_error_not_a_panic");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (lp2, lp3, lp4) = (lp.clone(), lp.clone(), lp.clone());
    let in_task = lp.spawn(async move { lp2.block_on(async { 1 }) });
    assert_eq!(in_task.result(), Ok(Err(BlockOnError::InsideLoop)));
    // Inside a raw tokio task too, and inside the future of an outer block_on.
    let in_tokio = lp
        .block_on(async move { tokio::spawn(async move { lp3.block_on(async { 2 }) }).await })
        .unwrap();
    assert_eq!(in_tokio.unwrap(), Err(BlockOnError::InsideLoop));
    // A blocking thread of the loop may block on it: that is what it is for.
    let lp5 = lp4.clone();
    let from_thread = lp4.to_thread(move || lp5.block_on(async { 3 }));
    assert_eq!(from_thread.result(), Ok(Ok(3)));
    assert!(
        BlockOnError::InsideLoop.to_string().contains(".await"),
        "the message says what to do instead"
    );
}

#[test]
fn the_last_handle_may_be_dropped_inside_a_task() {
    let _w = Watchdog::new("the_last_handle_may_be_dropped_inside_a_task");
    let lp = EventLoop::builder().workers(1).build().unwrap();
    let (go, wait_for_go) = oneshot::channel::<()>();
    let inner = lp.clone();
    let task = lp.spawn(async move {
        wait_for_go.await.unwrap();
        drop(inner); // the last handle: the loop shuts down from inside itself
        1
    });
    drop(lp);
    go.send(()).unwrap();
    // Either the task finished before the shutdown reached it, or the shutdown ended it; the
    // point is that nothing panicked or hung.
    assert!(matches!(task.result(), Ok(1) | Err(Error::ShutDown)));
}

#[test]
fn awaiting_many_finished_tasks_still_lets_other_tasks_run() {
    let _w = Watchdog::new("awaiting_many_finished_tasks_still_lets_other_tasks_run");
    let lp = quiet_loop(1);
    let finished: Vec<_> = (0..5_000u32).map(|i| lp.spawn(async move { i })).collect();
    brigade::wait(&finished, brigade::Until::AllCompleted, None);
    let (started_tx, started) = mpsc::channel();
    let (go, wait_for_go) = mpsc::channel::<()>();
    // Holds the only worker until both tasks below are queued.
    let gate = lp.spawn(async move {
        started_tx.send(()).unwrap();
        wait_for_go.recv_timeout(PATIENCE).unwrap();
    });
    recv(&started);
    let other_ran = Arc::new(AtomicBool::new(false));
    let seen = other_ran.clone();
    let awaiter = lp.spawn(async move {
        let mut sum = 0u64;
        for task in finished {
            sum += u64::from(task.await.unwrap());
        }
        (sum, seen.load(SeqCst))
    });
    let flag = other_ran.clone();
    let other = lp.spawn(async move { flag.store(true, SeqCst) });
    go.send(()).unwrap();
    gate.result().unwrap();
    // Like a JoinHandle, a task's await spends tokio's budget, so the awaiting loop yielded
    // and the task queued behind it ran before the loop was through.
    assert_eq!(awaiter.result(), Ok((12_497_500, true)));
    other.result().unwrap();
}

#[test]
fn block_on_under_any_runtimes_block_on_is_an_error_not_a_panic() {
    let _w = Watchdog::new("block_on_under_any_runtimes_block_on_is_an_error_not_a_panic");
    let lp = quiet_loop(1);
    // Under `#[tokio::main]` (both flavours): the main thread is inside tokio's block_on,
    // not inside a task, and blocking there would panic inside tokio.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        multi.block_on(async { lp.block_on(async { 1 }) }),
        Err(BlockOnError::InsideLoop)
    );
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        current.block_on(async { lp.block_on(async { 2 }) }),
        Err(BlockOnError::InsideLoop)
    );
    // Inside brigade's own block_on, whose future is not a task either.
    assert_eq!(
        lp.block_on(async { lp.block_on(async { 3 }) }),
        Ok(Err(BlockOnError::InsideLoop))
    );
    // The thread is fine afterwards: the refusals left no runtime entered.
    assert_eq!(lp.block_on(async { 4 }), Ok(4));
}

/// `n` tasks that say they started, then wait forever, and say when their future is dropped.
fn stuck_tasks(
    lp: &EventLoop,
    n: usize,
) -> (
    Vec<brigade::Task<u32>>,
    mpsc::Receiver<()>,
    mpsc::Receiver<&'static str>,
) {
    let (started_tx, started) = mpsc::channel();
    let (dropped_tx, dropped) = mpsc::channel();
    let tasks = (0..n)
        .map(|_| {
            let (started_tx, dropped_tx) = (started_tx.clone(), dropped_tx.clone());
            lp.spawn(async move {
                let _signal = DropSignal(Some(dropped_tx), "child dropped");
                started_tx.send(()).unwrap();
                std::future::pending::<u32>().await
            })
        })
        .collect();
    (tasks, started, dropped)
}

#[test]
fn cancelling_the_task_that_awaits_a_gather_cancels_its_unfinished_tasks() {
    let _w = Watchdog::new("cancelling_the_task_that_awaits_a_gather_cancels_its_unfinished_tasks");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    for results in [false, true] {
        let (mut tasks, started, dropped) = stuck_tasks(&lp, 2);
        tasks.push(lp.spawn(async { 7 })); // finishes: nothing to cancel there
        for _ in 0..2 {
            recv(&started);
        }
        let (awaiting_tx, awaiting) = mpsc::channel();
        let awaiter = lp.spawn(async move {
            awaiting_tx.send(()).unwrap();
            if results {
                drop(gather_results(tasks).await);
            } else {
                drop(gather(tasks).await);
            }
        });
        recv(&awaiting);
        assert!(awaiter.cancel());
        for _ in 0..2 {
            assert_eq!(recv(&dropped), "child dropped");
        }
        assert_eq!(awaiter.result(), Err(Error::Cancelled));
    }
}

#[test]
fn dropping_a_gather_before_it_is_done_cancels_its_tasks_but_not_after_its_first_error() {
    use futures::FutureExt;
    let _w = Watchdog::new(
        "dropping_a_gather_before_it_is_done_cancels_its_tasks_but_not_after_its_first_error",
    );
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (tasks, started, dropped) = stuck_tasks(&lp, 3);
    for _ in 0..3 {
        recv(&started);
    }
    let mut pending = gather(tasks);
    assert!((&mut pending).now_or_never().is_none());
    drop(pending);
    for _ in 0..3 {
        assert_eq!(recv(&dropped), "child dropped");
    }

    // A gather that has returned its first error leaves the others running, as asyncio does.
    let (release, released) = oneshot::channel::<()>();
    let (finished_tx, finished) = mpsc::channel();
    let survivor = lp.spawn(async move {
        released.await.unwrap();
        finished_tx.send("survivor finished").unwrap();
        1
    });
    let failing = lp.spawn(async { panic!("first") });
    let outcome = lp.block_on(gather([survivor, failing])).unwrap();
    assert!(matches!(outcome, Err(Error::Panicked { .. })));
    release.send(()).unwrap();
    assert_eq!(recv(&finished), "survivor finished");
}

#[test]
fn a_shielded_task_runs_on_when_what_waits_for_it_is_cancelled() {
    let _w = Watchdog::new("a_shielded_task_runs_on_when_what_waits_for_it_is_cancelled");
    let lp = EventLoop::builder().workers(2).build().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (release, released) = oneshot::channel::<()>();
    let (finished_tx, finished) = mpsc::channel();
    let shielded = lp.shield(async move {
        started_tx.send(()).unwrap();
        released.await.unwrap();
        finished_tx.send("shielded work finished").unwrap();
        42
    });
    assert!(shielded.is_running(), "running from the start");
    assert!(!shielded.cancel(), "its handle cannot cancel it");
    recv(&started);
    // The task awaiting a gather of it is cancelled: the gather cancels what it holds, which
    // the shield refuses.
    let (awaiting_tx, awaiting) = mpsc::channel();
    let awaiter = lp.spawn(async move {
        awaiting_tx.send(()).unwrap();
        gather([shielded]).await
    });
    recv(&awaiting);
    assert!(awaiter.cancel());
    assert_eq!(awaiter.result(), Err(Error::Cancelled));
    release.send(()).unwrap();
    assert_eq!(recv(&finished), "shielded work finished");
    // Panics still become the task's error.
    let panicking = lp.shield(async { panic!("shielded panic") });
    assert!(matches!(
        panicking.result(),
        Err::<(), _>(Error::Panicked { .. })
    ));
}
