//! Tasks through a real Redis and real worker processes: every result kind, panics, unknown
//! functions, retries, deadlines, cancellation, map, result expiry.

mod common;

use std::time::Duration;

use brigade::{Error, Until, as_completed, wait};
use brigade_cluster::{Client, LaneKind, Options, Worker};
use common::functions::*;
use common::{Watchdog, WorkerProc, lines, redis, scratch};
use serde_bytes::ByteBuf;

/// Not a test: the entry point of worker processes (see `common::WorkerProc`).
#[test]
fn worker_process() {
    common::serve_if_worker();
}

#[test]
fn every_result_kind_round_trips_through_a_worker_process() {
    let _w = Watchdog::new("every_result_kind_round_trips_through_a_worker_process");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("kinds");
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "2"]);
    let client = Client::connect(&url).unwrap();

    assert_eq!(client.submit(&SQUARE, 12).result(), Ok(144));
    assert_eq!(client.submit(&UNIT, ()).result(), Ok(()));
    assert_eq!(
        client.submit(&SHOUT, "héllo".to_owned()).result(),
        Ok("HÉLLO".to_owned())
    );
    let big = ByteBuf::from(vec![0x0f; 1 << 20]);
    let flipped = client.submit(&FLIP, big).result().unwrap();
    assert_eq!(flipped.len(), 1 << 20);
    assert!(flipped.iter().all(|&b| b == 0xf0));
    let order = Order {
        id: 7,
        items: vec![("tea".into(), 2.5), ("cake".into(), 4.0)],
        note: None,
    };
    assert_eq!(
        client.submit(&JUDGE, order.clone()).result(),
        Ok(Verdict::Accepted { total: 6.5 })
    );
    let fraud = Order {
        note: Some("fraud".into()),
        ..order
    };
    assert_eq!(
        client.submit(&JUDGE, fraud).result(),
        Ok(Verdict::Rejected("order 7".into()))
    );
    assert_eq!(client.submit(&CHECKED, 5).result(), Ok(Ok(5)));
    assert!(matches!(client.submit(&CHECKED, -1).result(), Ok(Err(_))));
    assert_eq!(
        client.submit(&MAYBE, Some(3)).result(),
        Ok(Some(vec![3, 3, 3]))
    );
    assert_eq!(client.submit(&MAYBE, None).result(), Ok(None));
    assert_eq!(client.pending(), 0);
}

#[test]
fn panics_and_unknown_functions_fail_their_task_and_the_worker_goes_on() {
    let _w = Watchdog::new("panics_and_unknown_functions_fail_their_task_and_the_worker_goes_on");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("failures");
    let mut worker = WorkerProc::spawn(&url, &["--concurrency", "1"]);
    let client = Client::connect(&url).unwrap();

    assert_eq!(
        client.submit(&BOOM, "disk on fire".into()).result(),
        Err(Error::Panicked {
            message: "disk on fire".into()
        })
    );
    match client.submit(&SQUARE_V2, 3).result() {
        Err(Error::UnknownFunction {
            name,
            version,
            message,
        }) => {
            assert_eq!((name.as_str(), version), ("square", 2));
            assert_eq!(
                message,
                "unknown function `square` version 2 (the worker has version 1)"
            )
        }
        other => panic!("{other:?}"),
    }
    match client.submit(&NOWHERE, 3).result() {
        Err(Error::UnknownFunction { message, .. }) => {
            assert!(
                message.contains("`nowhere`") && message.contains("no function"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The same worker is alive and serving.
    assert_eq!(client.submit(&SQUARE, 9).result(), Ok(81));
    assert!(!worker.exited());
}

#[test]
fn the_process_lane_runs_the_same_functions() {
    let _w = Watchdog::new("the_process_lane_runs_the_same_functions");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("proclane");
    let worker = WorkerProc::spawn(&url, &["--concurrency", "2", "--lane", "processes"]);
    let client = Client::connect(&url).unwrap();
    let tasks: Vec<_> = (0..50u64).map(|i| client.submit(&SQUARE, i)).collect();
    let squares: Vec<u64> = tasks.into_iter().map(|t| t.result().unwrap()).collect();
    assert_eq!(squares, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(
        client.submit(&BOOM, "in a process".into()).result(),
        Err(Error::Panicked {
            message: "in a process".into()
        })
    );
    // Tasks ran in the lane's processes, not in the worker itself.
    let pid = client.submit(&PID, ()).result().unwrap();
    assert_ne!(pid, worker.pid());
}

#[test]
fn an_in_process_worker_serves_until_stopped() {
    let _w = Watchdog::new("an_in_process_worker_serves_until_stopped");
    let Some(redis) = redis() else { return };
    let worker = Worker::builder(&redis.url())
        .queue("inproc")
        .functions(all())
        .concurrency(2)
        .lane(LaneKind::Auto)
        .build()
        .unwrap();
    let stop = worker.stop_handle();
    let running = std::thread::spawn(move || worker.run());
    let client = Client::builder(&redis.url())
        .queue("inproc")
        .connect()
        .unwrap();
    assert_eq!(client.queue(), "inproc");
    let tasks: Vec<_> = (0..100u64).map(|i| client.submit(&SQUARE, i)).collect();
    let waited = wait(&tasks, Until::AllCompleted, Some(common::PATIENCE));
    assert_eq!(waited.done.len(), 100);
    let sum: u64 = as_completed(tasks, None)
        .map(|t| t.unwrap().result().unwrap())
        .sum();
    assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
    stop.stop();
    running.join().unwrap().unwrap();
}

#[test]
fn retries_rerun_a_panicking_task_after_its_backoff() {
    let _w = Watchdog::new("retries_rerun_a_panicking_task_after_its_backoff");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("retries");
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "1"]);
    let client = Client::connect(&url).unwrap();
    let dir = scratch();
    let path = dir.path().join("flaky").to_string_lossy().into_owned();
    let retrying = Options::default()
        .retries(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(200));
    // Fails twice, succeeds on the third run.
    assert_eq!(
        client
            .submit_with(&FLAKY, (path.clone(), 2), retrying)
            .result(),
        Ok(3)
    );
    assert_eq!(lines(dir.path().join("flaky").as_path()), 3);
    // Out of retries: the last panic is the outcome.
    let path2 = dir.path().join("flaky2").to_string_lossy().into_owned();
    let once = retrying.retries(1);
    assert_eq!(
        client.submit_with(&FLAKY, (path2, 5), once).result(),
        Err(Error::Panicked {
            message: "flaky run 2".into()
        })
    );
    assert_eq!(lines(dir.path().join("flaky2").as_path()), 2);
}

#[test]
fn map_is_ordered_lazy_and_bounded() {
    let _w = Watchdog::new("map_is_ordered_lazy_and_bounded");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("map");
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "2"]);
    let client = Client::connect(&url).unwrap();
    let mut map = client.map(&SQUARE, 0u64..).in_flight(8);
    let firsts: Vec<u64> = map.by_ref().take(100).map(Result::unwrap).collect();
    assert_eq!(firsts, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
    // The endless input was read only as far as the bound: 8 in flight, not yet yielded.
    assert!(client.pending() <= 8, "{} pending", client.pending());
    drop(map);
}

#[test]
fn a_task_past_its_deadline_never_runs() {
    let _w = Watchdog::new("a_task_past_its_deadline_never_runs");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("deadline");
    let client = Client::connect(&url).unwrap();
    let dir = scratch();
    let path = dir.path().join("runs");
    let late = client.submit_with(
        &RECORD,
        (path.to_string_lossy().into_owned(), 0, 1),
        Options::default().deadline(Duration::from_millis(1)),
    );
    let on_time = client.submit_with(
        &RECORD,
        (path.to_string_lossy().into_owned(), 0, 2),
        Options::default().deadline(Duration::from_secs(600)),
    );
    // No worker yet: the first deadline (1 ms) passes while the task waits in the queue
    // (50 ms leaves room for the clocks' agreement, which is within a round trip).
    std::thread::sleep(Duration::from_millis(50));
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "1"]);
    assert_eq!(late.result(), Err(Error::TimedOut));
    assert_eq!(on_time.result(), Ok(2));
    assert_eq!(lines(&path), 1, "only the task on time ran");
}

#[test]
fn cancel_stops_a_task_no_worker_started() {
    let _w = Watchdog::new("cancel_stops_a_task_no_worker_started");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("cancel");
    let client = Client::connect(&url).unwrap();
    let dir = scratch();
    let path = dir.path().join("runs");
    let p = path.to_string_lossy().into_owned();
    let doomed = client.submit(&RECORD, (p.clone(), 0, 1));
    assert!(doomed.cancel(), "pending: cancellable");
    assert_eq!(doomed.result(), Err(Error::Cancelled));
    // A worker comes: the cancelled task never runs, the next one does.
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "1"]);
    let slow = client.submit(&RECORD, (p.clone(), 300, 2));
    let after = client.submit(&RECORD, (p, 0, 3));
    assert_eq!(after.result(), Ok(3));
    // By now `slow` ran (the worker has one slot and runs in order): running tasks cannot be
    // cancelled.
    assert!(slow.is_done() || slow.is_running());
    assert!(!slow.cancel());
    assert_eq!(slow.result(), Ok(2));
    assert_eq!(lines(&path), 2);
}

#[test]
fn outcomes_expire() {
    let _w = Watchdog::new("outcomes_expire");
    let Some(redis) = redis() else { return };
    let url = redis.url_with_queue("ttl");
    let _worker = WorkerProc::spawn(&url, &["--concurrency", "1"]);
    let client = Client::connect(&url).unwrap();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        client
            .submit_with(&SQUARE, 3, Options::default().result_ttl(ttl))
            .result(),
        Ok(9)
    );
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("brigade:{ttl}:*")
        .query(&mut con)
        .unwrap();
    // Every key but the queue's own streams expires: the outcome and the reply stream.
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        if key.ends_with(":tasks") {
            assert_eq!(pttl, -1, "{key}");
        } else {
            assert!(pttl > 0 && pttl <= 60_000, "{key}: {pttl}");
        }
    }
    assert!(keys.iter().any(|k| k.contains(":r:")), "{keys:?}");
}
