//! The process lane, end to end: worker processes are this test binary itself, started in
//! worker mode.

mod common;

use brigade::{Error, ProcessPool};
use common::Watchdog;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn smoke() {
    let _w = Watchdog::new("smoke");
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let tasks: Vec<_> = (0..100u64)
        .map(|i| pool.submit(square, i).unwrap())
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.result(), Ok((i * i) as u64));
    }
    let _ = Error::Cancelled;
}
