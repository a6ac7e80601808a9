//! A future whose polls go where its call site belongs: on the loop, or shipped one poll at a
//! time to the compute or the blocking lane.
//!
//! The task itself always lives on the event loop: its waker, its cancellation, its `Task`.
//! Only the polls move. A poll shipped to another lane runs there with the loop's runtime
//! entered (so tokio's sockets and timers work inside it), and with a waker that records the
//! wake and passes it on to the loop task; the future comes back with the poll's result. So a
//! future whose polls are long computations runs them on the compute lane, one whose polls
//! block runs them on the blocking lane, and either still awaits I/O on the loop's reactor in
//! between. A future that comes back pending is polled again only once woken.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use super::Lanes;
use super::blocking::{Go, Job};
use super::classify::{LONG_POLL_NS, Lane};
use super::probe;
use super::site::{Measure, Route, Site};
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, Ordering};

/// Short polls a task counts locally before adding them to its site.
const FLUSH_EVERY: u32 = 64;

type Payload = Box<dyn std::any::Any + Send>;

/// What a shipped poll sends back.
enum Back<F: Future> {
    Pending(Pin<Box<F>>),
    Ready(F::Output),
    Panicked(Payload),
}

/// Shared between the loop task and its shipped polls.
struct Relay<F: Future> {
    /// The future, while a shipped poll is on its way to its lane.
    held: Mutex<Option<Pin<Box<F>>>>,
    back: Mutex<Option<Back<F>>>,
    /// The inner future was woken since its last shipped poll began.
    woken: AtomicBool,
    /// The loop task's waker.
    outer: Mutex<Option<Waker>>,
}

impl<F: Future> Relay<F> {
    fn wake_outer(&self) {
        if let Some(waker) = self.outer.lock().as_ref() {
            waker.wake_by_ref();
        }
    }
}

impl<F> Wake for Relay<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.wake_outer();
    }
}

/// Counts this site's panics when a poll or call unwinds through it.
pub(crate) struct PanicCount(pub(crate) &'static Site);

impl Drop for PanicCount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.count_panic();
        }
    }
}

/// The future the loop runs in place of the user's.
pub(crate) struct Routed<F: Future> {
    inner: Option<Pin<Box<F>>>,
    site: &'static Site,
    hint: Option<Lane>,
    lanes: Arc<Lanes>,
    relay: Option<Arc<Relay<F>>>,
    /// A shipped poll is out.
    shipped: bool,
    handle: Option<tokio::runtime::Handle>,
    short_polls: u32,
    short_ns: u64,
}

impl<F: Future> Routed<F> {
    pub(crate) fn new(
        future: F,
        site: &'static Site,
        hint: Option<Lane>,
        lanes: Arc<Lanes>,
    ) -> Self {
        Self {
            inner: Some(Box::pin(future)),
            site,
            hint,
            lanes,
            relay: None,
            shipped: false,
            handle: None,
            short_polls: 0,
            short_ns: 0,
        }
    }

    fn flush(&mut self) {
        if self.short_polls > 0 {
            self.site.short_polls(self.short_polls, self.short_ns);
            self.short_polls = 0;
            self.short_ns = 0;
        }
    }
}

impl<F: Future> Drop for Routed<F> {
    fn drop(&mut self) {
        self.flush();
    }
}

// The user's future is boxed: `Routed` itself never needs pinning.
impl<F: Future> Unpin for Routed<F> {}

impl<F> Future for Routed<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.shipped {
            let relay = this.relay.as_ref().expect("a shipped poll has a relay");
            set_waker(&relay.outer, cx.waker());
            let back = relay.back.lock().take();
            match back {
                None => return Poll::Pending,
                Some(Back::Ready(out)) => {
                    this.shipped = false;
                    return Poll::Ready(out);
                }
                Some(Back::Panicked(payload)) => {
                    this.shipped = false;
                    // On the loop's task, where the loop turns it into `Error::Panicked`.
                    resume_unwind(payload);
                }
                Some(Back::Pending(future)) => {
                    this.shipped = false;
                    this.inner = Some(future);
                    if !relay.woken.swap(false, Ordering::AcqRel) {
                        return Poll::Pending;
                    }
                }
            }
        }
        let lane = this.hint.unwrap_or(match this.site.route() {
            Route::To(lane) => lane,
            Route::New => Lane::Loop,
        });
        match lane {
            Lane::Loop => this.poll_here(cx),
            off => this.ship(off, cx),
        }
    }
}

impl<F> Routed<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Polls on the loop's worker, timing the poll.
    fn poll_here(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let site = self.site;
        let future = self.inner.as_mut().expect("polled after completion");
        let count = PanicCount(site);
        let out = match site.measure() {
            Measure::Probe { precise } => {
                let started = probe::start(precise);
                let out = future.as_mut().poll(cx);
                site.probed(&probe::finish(&started), Lane::Loop);
                out
            }
            Measure::Time | Measure::Tick => {
                let started = Instant::now();
                let out = future.as_mut().poll(cx);
                let ns = probe::nanos(started.elapsed());
                if ns >= LONG_POLL_NS {
                    site.long_poll(ns);
                } else {
                    self.short_polls += 1;
                    self.short_ns += ns;
                    if self.short_polls >= FLUSH_EVERY {
                        self.flush();
                    }
                }
                out
            }
        };
        drop(count);
        if out.is_ready() {
            self.inner = None;
        }
        out
    }

    /// Sends the next poll to `lane`; polls here instead when the lane refuses (shut down).
    fn ship(&mut self, lane: Lane, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.handle.is_none() {
            self.handle = tokio::runtime::Handle::try_current().ok();
        }
        let relay = self
            .relay
            .get_or_insert_with(|| {
                Arc::new(Relay {
                    held: Mutex::new(None),
                    back: Mutex::new(None),
                    woken: AtomicBool::new(false),
                    outer: Mutex::new(None),
                })
            })
            .clone();
        set_waker(&relay.outer, cx.waker());
        // The future waits in the relay until the lane runs the poll, so that a refused or
        // dropped poll can give it back.
        *relay.held.lock() = self.inner.take();
        let shipped = Shipped {
            relay: relay.clone(),
            site: self.site,
            lane,
            handle: self.handle.clone(),
        };
        let refused = match lane {
            Lane::Blocking => {
                let job = Job::new(Some(self.site), true, move |go| {
                    if let Go::Run = go {
                        shipped.run();
                    }
                });
                self.lanes.blocking.push(job).is_err()
            }
            _ => self
                .lanes
                .compute
                .try_submit(move || shipped.run())
                .is_err(),
        };
        if refused {
            // The lane is shut down; the dropped `Shipped` put the future back in the relay.
            let back = relay.back.lock().take();
            if let Some(Back::Pending(future)) = back {
                self.inner = Some(future);
            }
            relay.woken.store(false, Ordering::Release);
            return self.poll_here(cx);
        }
        self.shipped = true;
        Poll::Pending
    }
}

/// One poll on its way to another lane. Dropped without running (a refused submission, a
/// shutdown that cancels queued work), it hands the future back and wakes the loop task,
/// which then polls it on the loop.
struct Shipped<F: Future> {
    relay: Arc<Relay<F>>,
    site: &'static Site,
    lane: Lane,
    handle: Option<tokio::runtime::Handle>,
}

impl<F> Shipped<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn run(self) {
        let relay = &self.relay;
        let Some(mut future) = relay.held.lock().take() else {
            return;
        };
        relay.woken.store(false, Ordering::Release);
        let waker = Waker::from(relay.clone());
        let mut cx = Context::from_waker(&waker);
        let entered = self.handle.as_ref().map(tokio::runtime::Handle::enter);
        let started = probe::start(true);
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        self.site.probed(&probe::finish(&started), self.lane);
        drop(entered);
        let back = match polled {
            Ok(Poll::Ready(out)) => Back::Ready(out),
            Ok(Poll::Pending) => Back::Pending(future),
            Err(payload) => {
                self.site.count_panic();
                Back::Panicked(payload)
            }
        };
        *relay.back.lock() = Some(back);
        relay.wake_outer();
    }
}

impl<F: Future> Drop for Shipped<F> {
    fn drop(&mut self) {
        // Still held: the poll never ran.
        if let Some(future) = self.relay.held.lock().take() {
            *self.relay.back.lock() = Some(Back::Pending(future));
            self.relay.woken.store(true, Ordering::Release);
            self.relay.wake_outer();
        }
    }
}

fn set_waker(slot: &Mutex<Option<Waker>>, waker: &Waker) {
    let mut slot = slot.lock();
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}
