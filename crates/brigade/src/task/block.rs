//! Blocking a thread until a task (or several) is done, from any thread, and the hook through
//! which a lane's workers *help while waiting* instead of blocking.
//!
//! A plain thread parks: a short spin first (a task that is about to finish is far cheaper
//! to look at again than to be woken for), then a token-based park. A worker of a pool that
//! registered a [`Helper`] for its thread instead runs its pool's queued work until the wait
//! is over, so a task that waits on another task of the same pool cannot deadlock the pool,
//! whatever its size (this is rayon's answer, and brigade's thread lane registers one).
//!
//! The floor owns the hook and the lanes plug into it, so that `task`, `wait` and `map` block
//! without knowing any lane.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use crate::sync::{Parker, Unparker};

/// Spin rounds (each twice as long as the last) before a plain thread parks.
const SPIN_PAUSES: u32 = 7;

/// What a lane's worker does while its task waits: run other work until `done()` holds.
pub(crate) trait Helper {
    /// Runs queued work until `done()` holds or `deadline` passes, and returns `done()`.
    /// `register` must be called once, with a waker that gets this thread going again, before
    /// the helper first sleeps.
    fn help_until(
        &self,
        done: &mut dyn FnMut() -> bool,
        register: &mut dyn FnMut(&Waker),
        deadline: Option<Instant>,
    ) -> bool;

    /// A waker that gets this worker going again (the one `help_until` registers).
    fn waker(&self) -> &Waker;
}

std::thread_local! {
    /// The helper registered for this thread, if any. A plain `Cell` with no destructor: the
    /// cheapest thread-local there is, read on every blocking wait.
    static HELPER: Cell<Option<NonNull<dyn Helper>>> = const { Cell::new(None) };
}

crate::sync::thread_local! {
    /// A parker (and its waker) for threads that have no helper, made on first use.
    static THREAD_PARKER: (Parker, Waker) = {
        let parker = Parker::new();
        let waker = unpark_waker(parker.unparker().clone());
        (parker, waker)
    };
}

/// Resets the thread's helper when `helping` ends, however it ends.
struct Registered(Option<NonNull<dyn Helper>>);

impl Drop for Registered {
    fn drop(&mut self) {
        HELPER.set(self.0);
    }
}

/// Runs `f` with `helper` registered for this thread: every blocking wait inside `f` calls
/// the helper instead of parking.
pub(crate) fn helping<R>(helper: &dyn Helper, f: impl FnOnce() -> R) -> R {
    let pointer = NonNull::from(helper);
    // SAFETY: only the lifetime is erased. The pointer is read only through `with_helper`, on
    // this thread, while `f` runs; `Registered` puts the previous value back before `helper`'s
    // borrow ends, on return and on unwind alike.
    let pointer =
        unsafe { std::mem::transmute::<NonNull<dyn Helper + '_>, NonNull<dyn Helper>>(pointer) };
    let _restore = Registered(HELPER.replace(Some(pointer)));
    f()
}

/// Runs `f` with this thread's helper, if it has one.
#[inline]
fn with_helper<R>(f: impl FnOnce(&dyn Helper) -> R) -> Option<R> {
    let helper = HELPER.get()?;
    // SAFETY: set by `helping`, whose caller's borrow outlives this call (see there).
    Some(f(unsafe { helper.as_ref() }))
}

struct Unpark(Unparker);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks `unparker`'s thread.
pub(crate) fn unpark_waker(unparker: Unparker) -> Waker {
    Waker::from(Arc::new(Unpark(unparker)))
}

/// A waker for the calling thread, whatever it is: the one [`block_until`] waits on.
pub(crate) fn current_waker() -> Waker {
    with_helper(|helper| helper.waker().clone())
        .unwrap_or_else(|| THREAD_PARKER.with(|(_, waker)| waker.clone()))
}

/// Blocks the calling thread until `done()` holds or `deadline` passes; returns `done()`.
///
/// `register` is called at most once, with a waker that wakes this thread; the caller
/// arranges for it to be woken whenever `done()` may have become true. A thread with a
/// [`Helper`] does not block: it helps meanwhile.
pub(crate) fn block_until(
    done: impl FnMut() -> bool,
    register: impl FnOnce(&Waker),
    deadline: Option<Instant>,
) -> bool {
    block_until_polling(done, register, deadline, Duration::ZERO)
}

/// [`block_until`], where a plain thread first polls `done()` for up to `poll_for`, yielding
/// its core between looks, instead of the short pause spin.
///
/// For a task settled by a thread that is itself polling for it (a process task: the slot
/// thread polls its worker's socket, see `processes/spin.rs`), the caller is then never
/// asleep when the task is settled, and nobody pays for a wake-up. On a VM a wake-up that
/// crosses cores is an interrupt through the host (measured: 15–20 µs from the wake to the
/// woken thread running, where the whole round trip takes 10 µs). Yielding rather than
/// pausing: with as many polling threads as cores, the thread that settles the task (or the
/// worker process it waits for) may share this thread's core, and a pause loop would keep it
/// off until the park.
pub(crate) fn block_until_polling(
    mut done: impl FnMut() -> bool,
    register: impl FnOnce(&Waker),
    deadline: Option<Instant>,
    poll_for: Duration,
) -> bool {
    if done() {
        return true;
    }
    let mut register = Some(register);
    let mut register_once = |waker: &Waker| {
        if let Some(register) = register.take() {
            register(waker);
        }
    };
    if let Some(outcome) =
        with_helper(|helper| helper.help_until(&mut done, &mut register_once, deadline))
    {
        return outcome;
    }
    if poll_for.is_zero() {
        for round in 0..SPIN_PAUSES {
            (0..1u32 << round).for_each(|_| std::hint::spin_loop());
            if done() {
                return true;
            }
        }
    } else {
        let began = Instant::now();
        let until = deadline.map_or(began + poll_for, |d| d.min(began + poll_for));
        loop {
            std::thread::yield_now();
            if done() {
                return true;
            }
            if Instant::now() >= until {
                break;
            }
        }
    }
    THREAD_PARKER.with(|(parker, waker)| {
        register_once(waker);
        loop {
            if done() {
                return true;
            }
            match deadline {
                None => parker.park(),
                Some(deadline) if Instant::now() >= deadline => return done(),
                Some(deadline) => parker.park_deadline(deadline),
            }
        }
    })
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn polling_ends_at_the_deadline_and_then_parks_until_done() {
        // A deadline before the poll's end cuts the poll short, and the wait fails.
        let past = Instant::now();
        let done = block_until_polling(|| false, |_| {}, Some(past), Duration::from_secs(3600));
        assert!(!done);
        // Done from another thread after the poll gave up: the waker it registered wakes it.
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                let waker = rx.recv().expect("the waiter registers");
                flag.store(true, std::sync::atomic::Ordering::Release);
                waker.wake();
            })
        };
        let done = block_until_polling(
            || flag.load(std::sync::atomic::Ordering::Acquire),
            |waker| tx.send(waker.clone()).expect("the setter waits"),
            None,
            Duration::from_micros(1),
        );
        assert!(done);
        setter.join().unwrap();
    }
}
