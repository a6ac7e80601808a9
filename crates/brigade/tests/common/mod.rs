//! Shared helpers: a watchdog so that a bug fails a test instead of hanging it, and blockers
//! to hold workers at a known point.
#![allow(dead_code, unreachable_pub)] // each test file uses its own subset

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Generous, because CI machines are slow and shared; a correct test takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Aborts the whole test process (naming the test) if it is still alive after `PATIENCE`.
/// Dropping it at the end of the test disarms it.
pub struct Watchdog {
    disarm: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(test: &'static str) -> Self {
        let (disarm, armed) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(PATIENCE) {
                eprintln!("watchdog: test `{test}` hung for {PATIENCE:?}; aborting");
                std::process::abort();
            }
        });
        Self {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Something that holds a worker until released, and says when it has started.
pub struct Blocker {
    pub started: Receiver<()>,
    release: Sender<()>,
}

/// A closure that reports it started, then blocks until the blocker is released; plus the
/// blocker to watch and release it.
pub fn blocker() -> (Blocker, impl FnOnce() + Send + 'static) {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let work = move || {
        started_tx.send(()).unwrap();
        released
            .recv_timeout(PATIENCE)
            .expect("blocker never released");
    };
    (Blocker { started, release }, work)
}

impl Blocker {
    /// Blocks until the blocking task is running.
    pub fn wait_started(&self) {
        self.started
            .recv_timeout(PATIENCE)
            .expect("blocker never started");
    }

    pub fn release(&self) {
        self.release.send(()).unwrap();
    }
}

/// Sends `value` on drop: observes when the pool lets go of something.
pub struct DropSignal(pub Option<Sender<&'static str>>, pub &'static str);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(self.1);
        }
    }
}

pub fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE).expect("nothing arrived in time")
}
