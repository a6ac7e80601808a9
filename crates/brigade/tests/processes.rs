//! The process lane, end to end. The worker processes are this test binary itself, started in
//! worker mode; tests about the pool's own process dying re-run this binary as the pool's
//! process (`current_exe()`, filtered to `child_process_modes`) and kill it.
//!
//! Tasks in another process cannot use channels, so they coordinate through a [`Gate`]: a
//! Unix socket the task connects to (saying "started", with its pid) and then blocks on until
//! the test releases it. Everything waits on events, under the watchdog.

mod common;
mod processes_common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brigade::{
    BuildError, Error, ProcessPool, Shutdown, ThreadPool, Until, Waitable, as_completed, wait,
};
use common::Watchdog;
use processes_common::*;

fn panics(message: String) -> u32 {
    panic!("{message}")
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

fn segfaults(_: ()) -> u32 {
    // Dies by SIGSEGV, as a real invalid access would, without undefined behaviour.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::SEGV)
        .unwrap();
    unreachable!("SIGSEGV is fatal")
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

fn spins(_: ()) {
    loop {
        std::hint::spin_loop();
    }
}

#[test]
fn results_come_back_and_panics_fail_only_their_task() {
    let _w = Watchdog::new("results_come_back_and_panics_fail_only_their_task");
    let pool = pool(2);
    let tasks: Vec<_> = (0..200u64).map(|i| pool.submit(square, i)).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.result(), Ok((i * i) as u64));
    }
    let before = pool.worker_pids();
    let failed = pool.submit(panics, "no luck".to_owned());
    assert_eq!(panic_text(failed.result()), "no luck");
    assert_eq!(pool.submit(square, 9).result(), Ok(81));
    assert_eq!(pool.worker_pids(), before, "a panic costs no worker");
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_only_and_is_replaced() {
    let _w = Watchdog::new("a_worker_killed_mid_task_fails_that_task_only_and_is_replaced");
    let pool = pool(2);
    let gate = Gate::new("sigkill");
    let doomed = pool.submit(gated, gate.arg());
    let (_held, victim) = gate.arrival();
    let others: Vec<_> = (0..50u64).map(|i| pool.submit(square, i)).collect();
    kill(victim, rustix::process::Signal::KILL);
    assert_eq!(
        doomed.result(),
        Err(Error::WorkerCrashed {
            pid: victim,
            signal: Some(9),
            code: None
        })
    );
    for (i, task) in others.into_iter().enumerate() {
        assert_eq!(task.result(), Ok((i * i) as u64));
    }
    // The replacement serves too.
    let pids: HashSet<u32> = (0..20)
        .map(|_| pool.submit(pid, ()))
        .map(|t| t.result().unwrap())
        .collect();
    assert!(!pids.contains(&victim));
    assert!(!pool.worker_pids().contains(&victim));
}

#[test]
fn segfault_abort_and_exit_inside_a_task_are_reported_by_signal_or_code() {
    let _w = Watchdog::new("segfault_abort_and_exit_inside_a_task_are_reported_by_signal_or_code");
    let pool = pool(1);
    let outcome = |task: brigade::Task<u32>| match task.result() {
        Err(Error::WorkerCrashed { signal, code, pid }) => {
            assert_ne!(pid, std::process::id());
            (signal, code)
        }
        other => panic!("expected a crash, got {other:?}"),
    };
    assert_eq!(outcome(pool.submit(segfaults, ())), (Some(11), None));
    assert_eq!(outcome(pool.submit(aborts, ())), (Some(6), None));
    assert_eq!(outcome(pool.submit(exits, 3)), (None, Some(3)));
    let message = pool.submit(aborts, ()).result().unwrap_err().to_string();
    assert!(
        message.contains("was killed by signal 6 (SIGABRT)"),
        "{message}"
    );
    assert_eq!(pool.submit(square, 5).result(), Ok(25));
}

#[test]
fn a_timeout_kills_the_worker_and_fails_only_that_task() {
    let _w = Watchdog::new("a_timeout_kills_the_worker_and_fails_only_that_task");
    let pool = pool(1);
    let before = pool.worker_pids();
    let stuck = pool.submit_timeout(spins, (), Duration::from_millis(100));
    let behind = pool.submit(square, 12);
    assert_eq!(stuck.result(), Err(Error::TimedOut));
    assert_eq!(behind.result(), Ok(144));
    assert_ne!(pool.worker_pids(), before, "the stuck worker was replaced");
    // A task within its timeout is untouched.
    let quick = pool.submit_timeout(square, 3, Duration::from_secs(60));
    assert_eq!(quick.result(), Ok(9));
}

#[test]
fn the_builder_timeout_applies_to_every_task() {
    let _w = Watchdog::new("the_builder_timeout_applies_to_every_task");
    let pool = ProcessPool::builder()
        .workers(1)
        .task_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(pool.submit(spins, ()).result(), Err(Error::TimedOut));
    assert_eq!(pool.submit(square, 2).result(), Ok(4));
}

#[test]
fn workers_are_recycled_after_max_tasks() {
    let _w = Watchdog::new("workers_are_recycled_after_max_tasks");
    let pool = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..7)
        .map(|_| pool.submit(pid, ()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.result().unwrap())
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
}

/// Allocates and touches `mib` MiB, keeps it, and returns the pid.
fn leaks(mib: usize) -> u32 {
    let block = vec![1u8; mib << 20];
    std::hint::black_box(&block);
    std::mem::forget(block);
    std::process::id()
}

#[test]
fn a_worker_over_its_memory_ceiling_is_replaced_between_tasks() {
    let _w = Watchdog::new("a_worker_over_its_memory_ceiling_is_replaced_between_tasks");
    let pool = ProcessPool::builder()
        .workers(1)
        .memory_limit(96 << 20)
        .build()
        .unwrap();
    let first = pool.submit(leaks, 0).result().unwrap();
    let second = pool.submit(leaks, 0).result().unwrap();
    assert_eq!(first, second, "under the ceiling, the worker stays");
    let leaker = pool.submit(leaks, 128);
    let after = pool.submit(leaks, 0);
    assert_eq!(
        leaker.result(),
        Ok(first),
        "the task that crossed the ceiling still succeeds"
    );
    assert_ne!(
        after.result().unwrap(),
        first,
        "the next task runs in a fresh worker"
    );
}

static INITIALIZED: AtomicBool = AtomicBool::new(false);

fn init_ok() {
    INITIALIZED.store(true, Ordering::SeqCst);
}

fn initialized(_: ()) -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}

fn init_fails() {
    panic!("no database here")
}

#[test]
fn the_initializer_runs_in_each_worker_before_its_tasks() {
    let _w = Watchdog::new("the_initializer_runs_in_each_worker_before_its_tasks");
    let pool = ProcessPool::builder()
        .workers(2)
        .initializer(init_ok)
        .build()
        .unwrap();
    for task in (0..10).map(|_| pool.submit(initialized, ())) {
        assert_eq!(task.result(), Ok(true));
    }
    assert!(
        !INITIALIZED.load(Ordering::SeqCst),
        "it ran in the workers, not here"
    );
}

#[test]
fn a_failing_initializer_fails_the_build_with_its_message() {
    let _w = Watchdog::new("a_failing_initializer_fails_the_build_with_its_message");
    let err = ProcessPool::builder()
        .workers(2)
        .initializer(init_fails)
        .build()
        .unwrap_err();
    match err {
        // (With `RUST_BACKTRACE` set, the worker's backtrace follows the message.)
        BuildError::Initializer { message } => assert_eq!(
            message.split(brigade::processes::BACKTRACE_HEADING).next(),
            Some("no database here")
        ),
        other => panic!("expected Initializer, got {other:?}"),
    }
}

fn flag_path(parent: u32) -> PathBuf {
    std::env::temp_dir().join(format!("brigade-init-flag-{parent}"))
}

/// Fails once the pool's process has raised its flag file.
fn init_fails_when_flagged() {
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if flag_path(parent).exists() {
        panic!("flag raised");
    }
}

#[test]
fn a_replacement_whose_initializer_fails_breaks_the_pool_with_a_clear_error() {
    let _w =
        Watchdog::new("a_replacement_whose_initializer_fails_breaks_the_pool_with_a_clear_error");
    let flag = flag_path(std::process::id());
    let _ = std::fs::remove_file(&flag);
    let pool = ProcessPool::builder()
        .workers(1)
        .initializer(init_fails_when_flagged)
        .build()
        .unwrap();
    assert_eq!(pool.submit(square, 4).result(), Ok(16));
    std::fs::write(&flag, b"").unwrap();
    let crash = pool.submit(aborts, ());
    assert!(matches!(crash.result(), Err(Error::WorkerCrashed { .. })));
    // The replacement's initializer fails: whatever comes next is refused with the reason.
    let refused = loop {
        match pool.try_submit(square, 1) {
            Err(refused) => break refused,
            Ok(task) => match task.result() {
                Err(Error::Broken { .. }) => continue,
                other => panic!("a broken pool ran a task: {other:?}"),
            },
        }
    };
    let _ = std::fs::remove_file(&flag);
    match refused.reason() {
        Error::Broken { reason } => assert!(reason.contains("flag raised"), "{reason}"),
        other => panic!("expected Broken, got {other:?}"),
    }
    assert_eq!(refused.into_inner(), 1);
}

#[test]
fn ten_thousand_tasks_with_random_crashes_fail_exactly_the_crashed_ones() {
    let _w = Watchdog::new("ten_thousand_tasks_with_random_crashes_fail_exactly_the_crashed_ones");
    fn maybe_crash(i: u64) -> u64 {
        if crashes(i) {
            std::process::abort();
        }
        i * 2
    }
    fn crashes(i: u64) -> bool {
        // A fixed, scattered handful (splitmix-style hash), the same in every process.
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).is_multiple_of(1500)
    }
    let pool = pool(2);
    let tasks: Vec<_> = (0..10_000u64)
        .map(|i| pool.submit(maybe_crash, i))
        .collect();
    let mut crashed = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let i = i as u64;
        match task.result() {
            Ok(v) => {
                assert!(!crashes(i), "task {i} should have crashed");
                assert_eq!(v, i * 2);
            }
            Err(Error::WorkerCrashed {
                signal: Some(6), ..
            }) => {
                assert!(
                    crashes(i),
                    "task {i} failed with its worker, but was innocent"
                );
                crashed += 1;
            }
            Err(e) => panic!("task {i}: {e}"),
        }
    }
    let expected = (0..10_000).filter(|&i| crashes(i)).count();
    assert!(
        expected >= 2,
        "the test needs a few crashes, has {expected}"
    );
    assert_eq!(crashed, expected);
}

#[test]
fn a_pending_task_can_be_cancelled() {
    let _w = Watchdog::new("a_pending_task_can_be_cancelled");
    let pool = pool(1);
    let gate = Gate::new("cancel");
    let running = pool.submit(gated, gate.arg());
    let (held, _) = gate.arrival();
    let queued = pool.submit(square, 3);
    assert!(queued.cancel());
    assert!(
        !running.cancel(),
        "a running process task is never interrupted by cancel"
    );
    drop(held);
    assert_eq!(queued.result(), Err(Error::Cancelled));
    assert!(running.result().is_ok());
    assert_eq!(pool.submit(square, 3).result(), Ok(9));
}

#[test]
fn map_is_ordered_lazy_chunked_and_fails_per_item() {
    let _w = Watchdog::new("map_is_ordered_lazy_chunked_and_fails_per_item");
    fn some_panic(x: u64) -> u64 {
        assert!(x % 250 != 1, "unlucky {x}");
        x / 2
    }
    let pool = pool(2);
    let halves: Vec<Result<u64, Error>> =
        pool.map(0..1_000u64, some_panic).chunk_size(64).collect();
    assert_eq!(halves.len(), 1_000);
    for (i, r) in halves.iter().enumerate() {
        if i % 250 != 1 {
            assert_eq!(r, &Ok(i as u64 / 2));
        } else {
            assert_eq!(panic_text(r.clone()), format!("unlucky {i}"));
        }
    }
    // An endless input: only what is consumed (plus the bounded read-ahead) is read.
    let read = AtomicUsize::new(0);
    let first: Vec<u64> = pool
        .map(
            (0..).inspect(|_| {
                read.fetch_add(1, Ordering::Relaxed);
            }),
            square,
        )
        .in_flight(3)
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, [0, 1, 4, 9, 16]);
    assert!(read.load(Ordering::Relaxed) <= 8);
    let mut unordered: Vec<(usize, u64)> = pool
        .map([3u64, 1, 2], square)
        .unordered()
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    unordered.sort();
    assert_eq!(unordered, [(0, 9), (1, 1), (2, 4)]);
}

#[test]
fn process_and_thread_tasks_mix_in_wait_and_as_completed() {
    let _w = Watchdog::new("process_and_thread_tasks_mix_in_wait_and_as_completed");
    let processes = pool(1);
    let threads = ThreadPool::new();
    let a = processes.submit(square, 7);
    let b = threads.submit(|| "thread");
    let waited = wait([&a as &dyn Waitable, &b], Until::AllCompleted, None);
    assert_eq!(waited.done.len(), 2);
    let done: Vec<_> = as_completed(vec![processes.submit(square, 2)], None)
        .map(|t| t.unwrap().result())
        .collect();
    assert_eq!(done, [Ok(4)]);
    assert_eq!(a.result(), Ok(49));
}

#[test]
fn an_argument_that_cannot_be_encoded_is_handed_back() {
    let _w = Watchdog::new("an_argument_that_cannot_be_encoded_is_handed_back");
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Unencodable(u8);
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("not today"))
        }
    }
    fn take(x: Unencodable) -> u8 {
        x.0
    }
    let pool = pool(1);
    let refused = pool.try_submit(take, Unencodable(4)).unwrap_err();
    assert!(
        matches!(refused.reason(), Error::Codec { .. }),
        "{:?}",
        refused.reason()
    );
    assert_eq!(refused.into_inner(), Unencodable(4));
    let results: Vec<_> = pool.map([Unencodable(1)], take).collect();
    assert!(matches!(results[0], Err(Error::Codec { .. })));
}

#[test]
fn shutdown_waits_for_accepted_tasks_and_reaps_every_worker() {
    let _w = Watchdog::new("shutdown_waits_for_accepted_tasks_and_reaps_every_worker");
    let pool = pool(2);
    let pids = pool.worker_pids();
    let tasks: Vec<_> = (0..100u64).map(|i| pool.submit(square, i)).collect();
    pool.shutdown(Shutdown::graceful());
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.result(), Ok((i * i) as u64));
    }
    assert!(pool.worker_pids().is_empty());
    for pid in pids {
        // Reaped, not a zombie: the pid is gone from /proc.
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
    assert_eq!(
        pool.try_submit(square, 1).unwrap_err().reason(),
        &Error::ShutDown
    );
}

#[test]
fn shutdown_can_cancel_what_is_queued() {
    let _w = Watchdog::new("shutdown_can_cancel_what_is_queued");
    let pool = pool(1);
    let gate = Gate::new("shutdown");
    let running = pool.submit(gated, gate.arg());
    let (held, _) = gate.arrival();
    let queued: Vec<_> = (0..10u64).map(|i| pool.submit(square, i)).collect();
    pool.shutdown(Shutdown::cancel_pending().no_wait());
    for task in queued {
        assert_eq!(task.result(), Err(Error::Cancelled));
    }
    drop(held);
    assert!(running.result().is_ok());
}

// ---- The pool's own process dies: re-run this binary as that process. ----

fn print_lines(i: u64) -> u64 {
    let long = "x".repeat(5_000);
    println!("line {i} {long} end {i}");
    eprintln!("err {i}");
    i
}

/// Not a test of its own: the body of the child processes below.
#[test]
fn child_process_modes() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let pool = pool(2);
    if mode == "print" {
        let sum: u64 = pool.map(0..200u64, print_lines).map(Result::unwrap).sum();
        assert_eq!(sum, 199 * 200 / 2);
        return;
    }
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    std::io::stdout().flush().unwrap();
    match mode.as_str() {
        "hold" => {
            // Wait to be killed.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        "panic" => panic!("the pool's process panics"),
        "exit" => std::process::exit(0),
        other => panic!("unknown mode {other}"),
    }
}

fn child(mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_modes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads the worker pids the child announced.
fn announced_pids(child: &mut std::process::Child) -> Vec<u32> {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child ended first"
        );
        // The harness may have printed "test child_process_modes ... " on the same line.
        if let Some((_, pids)) = line.trim().split_once("PIDS ") {
            return pids.split(' ').map(|p| p.parse().unwrap()).collect();
        }
    }
}

/// Waits for each pid to exit (pidfd: works for processes that are not our children).
fn assert_all_exit_within(pids: &[u32], limit: Duration) -> Duration {
    let start = Instant::now();
    for &pid in pids {
        let Ok(fd) = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        ) else {
            continue; // already gone
        };
        let left = limit.saturating_sub(start.elapsed());
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(left).unwrap();
        let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
        assert_eq!(
            ready,
            1,
            "worker {pid} still alive {:?} after its parent died",
            start.elapsed()
        );
    }
    start.elapsed()
}

#[test]
fn workers_exit_when_the_pools_process_is_killed() {
    let _w = Watchdog::new("workers_exit_when_the_pools_process_is_killed");
    let mut parent = child("hold");
    let pids = announced_pids(&mut parent);
    assert_eq!(pids.len(), 2);
    parent.kill().unwrap(); // SIGKILL: no destructor, no shutdown runs
    parent.wait().unwrap();
    let took = assert_all_exit_within(&pids, Duration::from_secs(1));
    eprintln!("workers gone {took:?} after SIGKILL of their parent");
}

#[test]
fn workers_exit_when_the_pools_process_panics_or_exits() {
    let _w = Watchdog::new("workers_exit_when_the_pools_process_panics_or_exits");
    for mode in ["panic", "exit"] {
        let mut parent = child(mode);
        let pids = announced_pids(&mut parent);
        parent.wait().unwrap();
        assert_all_exit_within(&pids, Duration::from_secs(1));
    }
}

#[test]
fn worker_output_reaches_ours_in_whole_lines() {
    let _w = Watchdog::new("worker_output_reaches_ours_in_whole_lines");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_modes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, "print")
        // From another working directory: workers do not depend on it.
        .current_dir("/")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let long = "x".repeat(5_000);
    let mut seen = HashSet::new();
    // The harness prints "test child_process_modes ... " without a newline before the test
    // runs, so the first worker line may follow it on the same line.
    for line in stdout
        .lines()
        .filter_map(|l| l.find("line ").map(|at| &l[at..]))
    {
        let i: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(line, format!("line {i} {long} end {i}"), "a torn line");
        assert!(seen.insert(i), "line {i} twice");
    }
    assert_eq!(seen.len(), 200, "lines lost");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let errs = stderr.lines().filter(|l| l.starts_with("err ")).count();
    assert_eq!(errs, 200);
}
