//! The `progress` feature: bars only where someone can see them.
#![cfg(feature = "progress")]

mod common;

use std::process::{Command, Stdio};

use brigade::{ThreadPool, as_completed};
use common::Watchdog;

const CHILD: &str = "BRIGADE_TEST_PROGRESS_CHILD";

/// In the child (stderr a pipe, not a terminal): iterate with bars on.
#[test]
fn child_iterates_with_bars() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let sum: u64 = pool
        .map(0..10_000u64, |x| x)
        .progress()
        .map(Result::unwrap)
        .sum();
    assert_eq!(sum, 49_995_000);
    let unordered = pool.map(0..100u64, |x| x).progress().unordered().count();
    assert_eq!(unordered, 100);
    let tasks: Vec<_> = (0..100).map(|n| pool.submit(move || n)).collect();
    assert_eq!(as_completed(tasks, None).progress().count(), 100);
}

#[test]
fn no_bar_is_drawn_when_stderr_is_not_a_terminal() {
    let _w = Watchdog::new("no_bar_is_drawn_when_stderr_is_not_a_terminal");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_iterates_with_bars",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the iteration"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing drawn on a pipe"
    );
}
