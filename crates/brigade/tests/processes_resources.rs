//! The process pool when the system runs out of resources: descriptors while replacing a
//! worker (issue 11, item 7), memory for its supervising threads (item 6). Each case runs in a
//! child process (this binary, re-run), since it lowers a limit of its whole process.

mod common;
mod processes_common;

use std::time::Duration;

use brigade::{BuildError, Error, ProcessPool};
use common::Watchdog;
use processes_common::*;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Lowers this process's soft limit on descriptors to 3: from now on no descriptor can be
/// created (0, 1 and 2 are taken), so no worker can be started. Returns the old limit.
fn run_out_of_descriptors() -> Rlimit {
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(3),
            maximum: old.maximum,
        },
    )
    .unwrap();
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "descriptors are out"
    );
    old
}

fn kill_and_wait_gone(pool: &ProcessPool, victim: u32) {
    kill(victim, rustix::process::Signal::KILL);
    // Event: the pool noticed the death (its slot dropped the pid) and is replacing it.
    while pool.worker_pids().contains(&victim) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Not a test of its own: the body of the child processes below.
#[test]
fn child_out_of_resources() {
    let Some(mode) = child_mode() else {
        return;
    };
    match mode.as_str() {
        "one-of-two-down" => {
            let pool = ProcessPool::builder()
                .workers(2)
                .start_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let pids = pool.worker_pids();
            let old = run_out_of_descriptors();
            kill_and_wait_gone(&pool, pids[0]);
            // The other worker serves everything meanwhile, however long it lasts.
            for i in 0..300u64 {
                assert_eq!(pool.submit(square, i).result(), Ok(i * i), "task {i}");
            }
            assert_eq!(pool.worker_pids(), [pids[1]], "no replacement could start");
            setrlimit(Resource::Nofile, old).unwrap();
            // The resource is back: the replacement starts.
            while pool.worker_pids().len() < 2 {
                assert_eq!(pool.submit(square, 3).result(), Ok(9));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "all-down" => {
            let pool = ProcessPool::builder()
                .workers(1)
                .start_timeout(Duration::from_millis(300))
                .build()
                .unwrap();
            let old = run_out_of_descriptors();
            kill_and_wait_gone(&pool, pool.worker_pids()[0]);
            // No worker for a whole start timeout: the task fails, clearly.
            match pool.submit(square, 2).result() {
                Err(Error::WorkerStart { message }) => {
                    assert!(message.contains("Too many open files"), "{message}");
                }
                other => panic!("expected WorkerStart, got {other:?}"),
            }
            setrlimit(Resource::Nofile, old).unwrap();
            // And the pool recovers by itself.
            loop {
                match pool.submit(square, 5).result() {
                    Ok(v) => break assert_eq!(v, 25),
                    Err(Error::WorkerStart { .. }) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => panic!("the pool did not recover: {e}"),
                }
            }
            assert_eq!(pool.worker_pids().len(), 1);
        }
        "no-threads" => {
            // Room for this process as it is, not for another thread's stack.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            let limit = (vm_kib + 512) << 10;
            setrlimit(
                Resource::As,
                Rlimit {
                    current: Some(limit),
                    maximum: None,
                },
            )
            .unwrap();
            match ProcessPool::builder().workers(2).build() {
                Err(BuildError::WorkerStart { message }) => {
                    assert!(message.contains("supervising thread"), "{message}");
                }
                other => panic!("expected WorkerStart, got {other:?}"),
            }
        }
        other => panic!("unknown mode {other}"),
    }
    println!("CHILD OK");
}

fn child_ok(mode: &str) {
    let output = run_child("child_out_of_resources", mode, &[]);
    assert_child_ok(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
}

#[test]
fn out_of_descriptors_while_replacing_a_worker_the_others_serve_and_it_recovers() {
    let _w = Watchdog::new(
        "out_of_descriptors_while_replacing_a_worker_the_others_serve_and_it_recovers",
    );
    child_ok("one-of-two-down");
}

#[test]
fn with_no_worker_for_a_whole_start_timeout_tasks_fail_clearly_and_the_pool_recovers() {
    let _w = Watchdog::new(
        "with_no_worker_for_a_whole_start_timeout_tasks_fail_clearly_and_the_pool_recovers",
    );
    child_ok("all-down");
}

#[test]
fn a_build_whose_supervising_threads_cannot_start_is_an_error() {
    let _w = Watchdog::new("a_build_whose_supervising_threads_cannot_start_is_an_error");
    child_ok("no-threads");
}
