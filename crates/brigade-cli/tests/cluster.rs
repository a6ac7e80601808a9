//! `brigade cluster` against a real Redis: status, dead letters, requeue, and its errors.

use std::process::Command;
use std::time::{Duration, Instant};

use brigade_cluster::{
    Broker, Client, Function, Functions, LocalRedis, LocalRedisError, Options, RedisBroker, Worker,
};

fn brigade(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(args)
        .output()
        .expect("the brigade binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn double(x: u64) -> u64 {
    2 * x
}
const DOUBLE: Function<u64, u64> = Function::new("double", 1, double);

/// A server for the test; where `redis-server` is missing the test fails unless
/// `BRIGADE_SKIP_REDIS=1` asks to skip it (a pass without running must be asked for).
fn redis() -> Option<LocalRedis> {
    match LocalRedis::start() {
        Ok(r) => Some(r),
        Err(LocalRedisError::NotInstalled)
            if std::env::var("BRIGADE_SKIP_REDIS").is_ok_and(|v| v == "1") =>
        {
            eprintln!("skipped (BRIGADE_SKIP_REDIS is set): redis-server is not installed");
            None
        }
        Err(LocalRedisError::NotInstalled) => panic!(
            "redis-server is not installed: apt-get install redis-server, \
             or set BRIGADE_SKIP_REDIS=1 to skip the tests that need it"
        ),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn status_dead_and_requeue_on_a_real_queue() {
    let Some(redis) = redis() else { return };
    let url = redis.url();
    let q = redis.url_with_queue("jobs");
    // One delivery allowed, and it goes to a "worker" that fetches the task and vanishes.
    let client = Client::builder(&url)
        .queue("jobs")
        .options(
            Options::default()
                .max_deliveries(1)
                .lease(Duration::from_millis(100)),
        )
        .connect()
        .unwrap();
    let task = client.submit(&DOUBLE, 21);
    let broker = RedisBroker::new(&url, "jobs").unwrap();
    let mut ghost = broker.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ghost
        .fetch("ghost:1:0", 1, Duration::from_millis(200))
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the task never reached the queue"
        );
    }
    let (code, out, _) = brigade(&["cluster", "status", "--broker", &q]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("queue jobs: 0 waiting, 1 leased, 0 waiting to retry, 0 dead"),
        "{out}"
    );
    assert!(out.contains("ghost:1:0"), "{out}");

    // A real worker's maintenance finds the expired lease on the last allowed delivery.
    let worker = Worker::builder(&url)
        .queue("jobs")
        .functions(Functions::new().register(&DOUBLE))
        .concurrency(1)
        .build()
        .unwrap();
    let stop = worker.stop_handle();
    let running = std::thread::spawn(move || worker.run());
    // The one delivery was the ghost's: the task is dead-lettered, and says whose it was.
    let outcome = task.result();
    assert!(
        matches!(
            &outcome,
            Err(brigade::Error::DeadLettered { deliveries: 1, last }) if last.contains("ghost:1:0")
        ),
        "{outcome:?}"
    );

    let (code, out, _) = brigade(&["cluster", "dead", "--broker", &url, "--queue", "jobs"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("double v1") && out.contains("1 deliveries"),
        "{out}"
    );
    assert!(out.contains("last worker ghost:1:0"), "{out}");
    let (code, out, _) = brigade(&["cluster", "dead", "--json", "--broker", &q]);
    assert_eq!(code, Some(0));
    let dead: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(dead["function"], "double");
    let entry = dead["entry"].as_str().unwrap().to_owned();

    let (code, out, _) = brigade(&["cluster", "requeue", "--broker", &q, &entry]);
    assert_eq!((code, out.trim()), (Some(0), "requeued 1 dead letter"));
    let (_, out, _) = brigade(&["cluster", "dead", "--broker", &q]);
    assert_eq!(out.trim(), "no dead letters");
    // The worker runs the requeued task: the queue empties.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = brigade(&["cluster", "status", "--json", "--broker", &q]);
        let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        if s["waiting"] == 0 && s["pending"] == 0 && s["dead"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the requeued task never ran: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.stop();
    running.join().unwrap().unwrap();
}

#[test]
fn mistakes_are_one_line_errors() {
    let (code, _, err) = brigade(&["cluster", "status"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--broker"), "{err}");
    let (code, _, err) = brigade(&["cluster", "status", "--broker", "redis://127.0.0.1:1/"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("which queue"), "{err}");
    // Nothing listens on port 1: a connection error, one line, exit code 1.
    let (code, _, err) = brigade(&[
        "cluster",
        "dead",
        "--broker",
        "redis://127.0.0.1:1/?queue=q",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: connecting to"), "{err}");
}
