//! [`Sleep`]: a future that is ready at a deadline, whatever runs it.
//!
//! Inside a tokio runtime (brigade's event loop, `#[tokio::main]`, any runtime with its timer
//! enabled), it is tokio's own sleep. Anywhere else (`futures::executor::block_on`, a
//! hand-written executor) it registers with one process-wide timer thread, started on first
//! use, so the async waits and timeouts of the floor work under any executor.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

/// Ready once `deadline` has passed.
pub(crate) struct Sleep {
    deadline: Instant,
    clock: Clock,
}

enum Clock {
    /// Not polled yet: which timer serves it is decided by where it is first polled.
    Unstarted,
    Tokio(Pin<Box<tokio::time::Sleep>>),
    /// Registered with the timer thread under this id.
    Thread(u64),
    /// The timer thread could not be started: every poll before the deadline asks to be
    /// polled again (slow, but it ends).
    Spin,
}

impl Sleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            clock: Clock::Unstarted,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.stop();
            return Poll::Ready(());
        }
        if let Clock::Unstarted = this.clock {
            this.clock = if tokio::runtime::Handle::try_current().is_ok() {
                Clock::Tokio(Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::from_std(this.deadline),
                )))
            } else {
                match timer() {
                    Some(timer) => Clock::Thread(timer.add(this.deadline, cx.waker())),
                    None => Clock::Spin,
                }
            };
        }
        match &mut this.clock {
            Clock::Unstarted => unreachable!("started above"),
            Clock::Tokio(sleep) => sleep.as_mut().poll(cx),
            Clock::Thread(id) => {
                if let Some(timer) = timer() {
                    timer.update(*id, cx.waker());
                }
                Poll::Pending
            }
            Clock::Spin => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl Sleep {
    fn stop(&mut self) {
        if let Clock::Thread(id) = std::mem::replace(&mut self.clock, Clock::Unstarted)
            && let Some(timer) = timer()
        {
            timer.remove(id);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process-wide timer thread, for sleeps polled outside any tokio runtime.
struct TimerThread {
    state: Mutex<Timers>,
    changed: Condvar,
}

#[derive(Default)]
struct Timers {
    /// Deadlines, earliest first; an entry whose id is no longer in `wakers` was removed.
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

/// The timer thread, started on first use; `None` if it could not be started.
fn timer() -> Option<&'static TimerThread> {
    static TIMER: OnceLock<Option<&'static TimerThread>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static TimerThread = Box::leak(Box::new(TimerThread {
            state: Mutex::new(Timers::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("brigade-timer".to_owned())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    })
}

impl TimerThread {
    fn add(&self, deadline: Instant, waker: &Waker) -> u64 {
        let mut timers = self.state.lock();
        let id = timers.next_id;
        timers.next_id += 1;
        let earliest = timers
            .queue
            .peek()
            .is_none_or(|Reverse((at, _))| deadline < *at);
        timers.queue.push(Reverse((deadline, id)));
        timers.wakers.insert(id, waker.clone());
        drop(timers);
        if earliest {
            self.changed.notify_one();
        }
        id
    }

    fn update(&self, id: u64, waker: &Waker) {
        if let Some(known) = self.state.lock().wakers.get_mut(&id)
            && !known.will_wake(waker)
        {
            *known = waker.clone();
        }
    }

    fn remove(&self, id: u64) {
        self.state.lock().wakers.remove(&id);
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut timers = self.state.lock();
        loop {
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = timers.queue.peek() {
                if at > now {
                    break;
                }
                timers.queue.pop();
                due.extend(timers.wakers.remove(&id));
            }
            if !due.is_empty() {
                // Woken outside the lock: a waker may run code that sleeps again.
                drop(timers);
                due.drain(..).for_each(Waker::wake);
                timers = self.state.lock();
                continue;
            }
            timers = match timers.queue.peek() {
                None => self.changed.wait(timers),
                Some(&Reverse((at, _))) => self
                    .changed
                    .wait_timeout(timers, at.saturating_duration_since(now)),
            };
        }
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sleep_outside_tokio_ends_at_its_deadline_on_the_timer_thread() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        futures::executor::block_on(Sleep::until(deadline));
        assert!(Instant::now() >= deadline);
        // A sleep dropped before its deadline leaves nothing behind to wake.
        let mut early = Sleep::until(Instant::now() + Duration::from_secs(3600));
        let waker = futures::task::noop_waker();
        assert!(
            Pin::new(&mut early)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let Clock::Thread(id) = early.clock else {
            panic!("outside tokio, the timer thread serves the sleep");
        };
        assert!(timer().unwrap().state.lock().wakers.contains_key(&id));
        drop(early);
        assert!(!timer().unwrap().state.lock().wakers.contains_key(&id));
    }

    #[test]
    fn a_sleep_inside_tokio_uses_tokios_timer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(5);
        let mut sleep = Sleep::until(deadline);
        rt.block_on(async {
            let waker = futures::task::noop_waker();
            assert!(
                Pin::new(&mut sleep)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            assert!(matches!(sleep.clock, Clock::Tokio(_)));
            (&mut sleep).await;
        });
        assert!(Instant::now() >= deadline);
    }
}
