//! The process pool's 1.0 surface (issue 12): stopping every worker now, an initializer with
//! arguments, what a panicking worker tells (its function's name, its backtrace), and the
//! `tracing` events of supervision.

mod common;
mod processes_common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use brigade::processes::BACKTRACE_HEADING;
use brigade::{BuildError, Error, ProcessPool};
use common::Watchdog;
use processes_common::*;

// ---- terminate_workers / kill_workers ----

#[test]
fn terminate_workers_stops_them_now_and_fails_running_and_queued_tasks() {
    let _w = Watchdog::new("terminate_workers_stops_them_now_and_fails_running_and_queued_tasks");
    for kill_them in [false, true] {
        let pool = pool(2);
        let pids = pool.worker_pids();
        let gate = Gate::new("terminate");
        let running: Vec<_> = (0..2).map(|_| pool.submit(gated, gate.arg())).collect();
        // Both workers are inside their task.
        let _held: Vec<_> = (0..2).map(|_| gate.arrival()).collect();
        let queued: Vec<_> = (0..5u64).map(|i| pool.submit(square, i)).collect();
        if kill_them {
            pool.kill_workers();
        } else {
            pool.terminate_workers();
        }
        for task in running {
            assert_eq!(task.result(), Err(Error::Cancelled));
        }
        for task in queued {
            assert_eq!(task.result(), Err(Error::Cancelled));
        }
        assert!(pool.is_shut_down());
        assert!(pool.worker_pids().is_empty());
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "worker {pid} was reaped"
            );
        }
        assert_eq!(pool.submit(square, 1).result(), Err(Error::ShutDown));
        // Calling it again, or shutting down after it, is harmless.
        pool.kill_workers();
        assert!(pool.shutdown(brigade::Shutdown::graceful()));
    }
}

// ---- initializer_with ----

static CONFIG: OnceLock<(String, u32)> = OnceLock::new();

fn init_config(config: (String, u32)) {
    CONFIG.set(config).unwrap();
}

fn configured(_: ()) -> Option<(String, u32)> {
    CONFIG.get().cloned()
}

#[derive(Debug, serde::Deserialize)]
struct Unsendable;

impl serde::Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this setting stays home"))
    }
}

fn init_unsendable(_: Unsendable) {}

#[test]
fn an_initializer_gets_its_argument_in_every_worker() {
    let _w = Watchdog::new("an_initializer_gets_its_argument_in_every_worker");
    let pool = ProcessPool::builder()
        .workers(2)
        .max_tasks_per_worker(2)
        .initializer_with(init_config, ("db://here".to_owned(), 7))
        .build()
        .unwrap();
    // Replacements (recycled every 2 tasks) get it too.
    for task in (0..10).map(|_| pool.submit(configured, ())) {
        assert_eq!(task.result(), Ok(Some(("db://here".to_owned(), 7))));
    }
    assert!(CONFIG.get().is_none(), "it ran in the workers, not here");
    let err = ProcessPool::builder()
        .workers(1)
        .initializer_with(init_unsendable, Unsendable)
        .build()
        .unwrap_err();
    match err {
        BuildError::Initializer { message } => {
            assert!(message.contains("this setting stays home"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- what a panicking worker tells ----

fn explodes(_: ()) -> u32 {
    panic!("the worker's own panic")
}

#[test]
fn child_panics_in_a_worker() {
    let Some(mode) = child_mode() else {
        return;
    };
    let pool = pool(1);
    let Err(Error::Panicked { message }) = pool.submit(explodes, ()).result() else {
        panic!("expected a panic");
    };
    let (text, backtrace) = message
        .split_once(BACKTRACE_HEADING)
        .unwrap_or((&message, ""));
    assert_eq!(text, "the worker's own panic");
    match mode.as_str() {
        "backtrace" => {
            assert!(
                backtrace.contains("processes_shape::explodes"),
                "the worker's backtrace: {backtrace}"
            );
        }
        "plain" => assert_eq!(backtrace, "", "no backtrace unless asked"),
        other => panic!("unknown mode {other}"),
    }
    println!("CHILD OK");
}

#[test]
fn a_panicking_task_names_its_function_and_brings_back_the_workers_backtrace() {
    let _w =
        Watchdog::new("a_panicking_task_names_its_function_and_brings_back_the_workers_backtrace");
    for (mode, backtrace) in [("backtrace", "1"), ("plain", "0")] {
        let output = run_child(
            "child_panics_in_a_worker",
            mode,
            &[
                ("RUST_BACKTRACE", backtrace),
                ("RUST_LIB_BACKTRACE", backtrace),
            ],
        );
        assert_child_ok(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("task `processes_shape::explodes` panicked at"),
            "the panic line names the function: {stderr}"
        );
        assert!(!stderr.contains("thread '<unnamed>'"), "{stderr}");
    }
}

// ---- tracing events ----

/// Collects the message of every event, from every thread.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<String>>>);

impl Collector {
    fn saw(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|m| m.contains(needle))
    }
}

struct MessageOf<'a>(&'a mut String);

impl tracing::field::Visit for MessageOf<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Collector {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut MessageOf(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn spins(_: ()) {
    loop {
        std::hint::spin_loop();
    }
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

#[test]
fn child_traced() {
    if child_mode().is_none() {
        return;
    }
    let collector = Collector::default();
    tracing::subscriber::set_global_default(collector.clone()).unwrap();
    let pool = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    assert!(matches!(
        pool.submit(aborts, ()).result(),
        Err(Error::WorkerCrashed { .. })
    ));
    assert_eq!(
        pool.submit_timeout(spins, (), Duration::from_millis(50))
            .result(),
        Err(Error::TimedOut)
    );
    for i in 0..4 {
        assert_eq!(pool.submit(square, i).result(), Ok(i * i));
    }
    drop(pool);
    for event in [
        "a worker process died while running a task",
        "killing a worker process whose task ran past its timeout",
        "recycling a worker process after its task quota",
        "started a worker process",
    ] {
        assert!(collector.saw(event), "no event {event:?}");
    }
    println!("CHILD OK");
}

#[test]
fn supervision_emits_tracing_events() {
    let _w = Watchdog::new("supervision_emits_tracing_events");
    let output = run_child("child_traced", "traced", &[]);
    assert_child_ok(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
}
