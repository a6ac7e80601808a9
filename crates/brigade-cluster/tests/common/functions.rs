//! The functions the test workers run.

use std::io::Write;
use std::time::Duration;

use brigade_cluster::{Function, Functions};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}
pub const SQUARE: Function<u64, u64> = Function::new("square", 1, square);

fn unit(_: ()) {}
pub const UNIT: Function<(), ()> = Function::new("unit", 1, unit);

fn shout(s: String) -> String {
    s.to_uppercase()
}
pub const SHOUT: Function<String, String> = Function::new("shout", 1, shout);

fn flip(mut b: ByteBuf) -> ByteBuf {
    b.iter_mut().for_each(|x| *x = !*x);
    b
}
pub const FLIP: Function<ByteBuf, ByteBuf> = Function::new("flip", 1, flip);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u32,
    pub items: Vec<(String, f64)>,
    pub note: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    Accepted { total: f64 },
    Rejected(String),
    Empty,
}
fn judge(o: Order) -> Verdict {
    if o.items.is_empty() {
        Verdict::Empty
    } else if o.note.as_deref() == Some("fraud") {
        Verdict::Rejected(format!("order {}", o.id))
    } else {
        Verdict::Accepted {
            total: o.items.iter().map(|(_, p)| p).sum(),
        }
    }
}
pub const JUDGE: Function<Order, Verdict> = Function::new("judge", 1, judge);

fn checked(x: i32) -> Result<u32, String> {
    u32::try_from(x).map_err(|e| e.to_string())
}
pub const CHECKED: Function<i32, Result<u32, String>> = Function::new("checked", 1, checked);

fn maybe(x: Option<u8>) -> Option<Vec<u8>> {
    x.map(|n| vec![n; n as usize])
}
pub const MAYBE: Function<Option<u8>, Option<Vec<u8>>> = Function::new("maybe", 1, maybe);

fn boom(message: String) -> u32 {
    panic!("{message}")
}
pub const BOOM: Function<String, u32> = Function::new("boom", 1, boom);

/// Declared on the client side with a version no worker has.
pub const SQUARE_V2: Function<u64, u64> = Function::new("square", 2, square);
/// A name no worker has.
pub const NOWHERE: Function<u64, u64> = Function::new("nowhere", 1, square);

fn pid(_: ()) -> u32 {
    std::process::id()
}
pub const PID: Function<(), u32> = Function::new("pid", 1, pid);

/// Appends a line to `path` (one per run), sleeps `ms`, returns `value`.
fn record((path, ms, value): (String, u64, u64)) -> u64 {
    append(&path);
    std::thread::sleep(Duration::from_millis(ms));
    value
}
pub const RECORD: Function<(String, u64, u64), u64> = Function::new("record", 1, record);

/// Appends a line to `path`, then kills its own process.
fn die((path, how): (String, String)) -> u32 {
    append(&path);
    match how.as_str() {
        "segv" => {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::SEGV,
            );
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        _ => std::process::abort(),
    }
}
pub const DIE: Function<(String, String), u32> = Function::new("die", 1, die);

/// Panics until it has run `fail` times (counted in `path`), then returns the run count.
fn flaky((path, fail): (String, usize)) -> usize {
    append(&path);
    let runs = std::fs::read_to_string(&path).unwrap().lines().count();
    assert!(runs > fail, "flaky run {runs}");
    runs
}
pub const FLAKY: Function<(String, usize), usize> = Function::new("flaky", 1, flaky);

/// Nanoseconds on the machine-wide monotonic clock when the task started.
fn started_ns(_: ()) -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
pub const STARTED_NS: Function<(), u64> = Function::new("started_ns", 1, started_ns);

/// `x²` after `ms` of sleep: a task that takes a while.
fn slow_square((x, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x.wrapping_mul(x)
}
pub const SLOW_SQUARE: Function<(u64, u64), u64> = Function::new("slow_square", 1, slow_square);

/// Appends a line to `log`, says "started" (its pid) on the Unix socket at `path`, then
/// blocks until the test releases it (closes its end), and returns its pid. (The line comes
/// first: once the test hears from a run, that run is counted.)
fn gate((path, log): (String, String)) -> u32 {
    use std::io::Read;
    append(&log);
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    writeln!(s, "{}", std::process::id()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    std::process::id()
}
pub const GATE: Function<(String, String), u32> = Function::new("gate", 1, gate);

fn append(path: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{}", std::process::id()).unwrap();
    f.sync_data().unwrap();
}

pub fn all() -> Functions {
    Functions::new()
        .register(&SQUARE)
        .register(&UNIT)
        .register(&SHOUT)
        .register(&FLIP)
        .register(&JUDGE)
        .register(&CHECKED)
        .register(&MAYBE)
        .register(&BOOM)
        .register(&PID)
        .register(&RECORD)
        .register(&DIE)
        .register(&FLAKY)
        .register(&STARTED_NS)
        .register(&SLOW_SQUARE)
        .register(&GATE)
}
