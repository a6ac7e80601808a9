//! Which stripe of a striped counter the calling thread adds to.
//!
//! Counters that many threads bump (a site's poll statistics, the loop's live-task count) are
//! spread over [`STRIPES`] cache-line-aligned stripes, so that threads do not fight over one
//! line; readers sum the stripes.
//!
//! The first [`OWNED`] stripes are leased, one thread each: a thread's first use claims a free
//! one, and its exit hands it back. A thread that holds a lease is the only writer of its stripe
//! in every striped counter, so it may add with a load and a store ([`add`], [`raise`]) instead
//! of a read-modify-write: on the 2-core VM the benchmarks run on, two `fetch_add`s cost 24 ns
//! and two load-store pairs 1–4 ns, and a loop task's statistics are two adds on every task.
//! Threads that find no lease free (more than [`OWNED`] live at once) share the remaining
//! stripes and add with read-modify-writes there; a counter that needs a read-modify-write for
//! its ordering (the live count's Dekker handshake) uses one whatever the lease says.
//!
//! A lease passes from an exiting thread to the next claimer through `FREE`: the exit's release
//! and the claim's acquire order every store the old owner made before the new owner's first
//! load, so no count is lost. A thread whose lease is gone (it is exiting, and something
//! counted from a later thread-local destructor) falls back to a shared stripe.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize};

use crate::sync::atomic::{AtomicU64, Ordering};

/// How many stripes a striped counter has.
pub(super) const STRIPES: usize = 32;

/// How many of them are leased to one thread each; the rest are shared.
pub(super) const OWNED: usize = 24;

const _: () = assert!(OWNED <= 32 && OWNED < STRIPES);

/// Marks a leased stripe in `SLOT`.
const LEASED: usize = 1 << (usize::BITS - 1);

/// Leased stripes not taken: bit `i` set when stripe `i` is free.
static FREE: AtomicU32 = AtomicU32::new(if OWNED == 32 {
    u32::MAX
} else {
    (1 << OWNED) - 1
});

thread_local! {
    /// This thread's stripe (with [`LEASED`] when it holds the lease on it), or `usize::MAX`
    /// before its first use. A plain `Cell` with a const initializer and no destructor: reading
    /// it is a load, and it stays readable while the thread's other locals are destroyed.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };

    /// Hands the lease back when the thread exits.
    static LEASE: Lease = const { Lease(Cell::new(None)) };
}

struct Lease(Cell<Option<u32>>);

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stripe) = self.0.take() {
            // Counting from here on goes to a shared stripe, and the lease goes back.
            SLOT.with(|slot| slot.set(shared()));
            FREE.fetch_or(1 << stripe, Ordering::Release);
        }
    }
}

/// The calling thread's stripe: where it adds, and whether it alone writes there.
#[derive(Clone, Copy)]
pub(super) struct Stripe {
    index: usize,
    owned: bool,
}

impl Stripe {
    /// The stripe's index, in `0..STRIPES`.
    #[inline]
    pub(super) fn index(self) -> usize {
        self.index
    }
}

/// The calling thread's stripe.
#[inline]
pub(super) fn mine() -> Stripe {
    let known = SLOT.with(Cell::get);
    let known = if known == usize::MAX { claim() } else { known };
    Stripe {
        index: known & !LEASED,
        owned: known & LEASED != 0,
    }
}

/// The calling thread's stripe index, for counters that add with read-modify-writes anyway.
#[inline]
pub(super) fn index() -> usize {
    mine().index
}

/// Adds `n` to `counter`, the calling thread's stripe of a striped counter.
#[inline]
pub(super) fn add(stripe: Stripe, counter: &AtomicU64, n: u64) {
    if stripe.owned {
        // The only writer: see the module docs.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Raises `counter`, the calling thread's stripe of a striped maximum, to at least `value`.
#[inline]
pub(super) fn raise(stripe: Stripe, counter: &AtomicU64, value: u64) {
    if value <= counter.load(Ordering::Relaxed) {
        return;
    }
    if stripe.owned {
        counter.store(value, Ordering::Relaxed);
    } else {
        counter.fetch_max(value, Ordering::Relaxed);
    }
}

#[cold]
fn claim() -> usize {
    let chosen = lease().map_or_else(shared, |stripe| stripe as usize | LEASED);
    SLOT.with(|slot| slot.set(chosen));
    chosen
}

/// Takes a free lease, if there is one and the thread can still hand it back at exit.
fn lease() -> Option<u32> {
    LEASE
        .try_with(|lease| {
            let mut free = FREE.load(Ordering::Relaxed);
            while free != 0 {
                let stripe = free.trailing_zeros();
                match FREE.compare_exchange_weak(
                    free,
                    free & !(1 << stripe),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        lease.0.set(Some(stripe));
                        return Some(stripe);
                    }
                    Err(now) => free = now,
                }
            }
            None
        })
        .ok()
        .flatten()
}

/// One of the shared stripes, round robin.
fn shared() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    OWNED + NEXT.fetch_add(1, Ordering::Relaxed) % (STRIPES - OWNED)
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Barrier;

    #[test]
    fn threads_alive_together_never_share_a_leased_stripe() {
        // More threads than leases, all alive at once: the leased stripes are distinct, the
        // others are shared ones. Then, all gone, the leases are free again.
        let threads = OWNED + 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let stripe = mine();
                    barrier.wait();
                    (stripe.index, stripe.owned)
                })
            })
            .collect();
        let stripes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut leased: Vec<_> = stripes.iter().filter(|s| s.1).map(|s| s.0).collect();
        leased.sort_unstable();
        let count = leased.len();
        leased.dedup();
        assert_eq!(leased.len(), count, "two live threads held one stripe");
        assert!(leased.iter().all(|&i| i < OWNED));
        assert!(
            stripes
                .iter()
                .filter(|s| !s.1)
                .all(|s| (OWNED..STRIPES).contains(&s.0))
        );
    }

    #[test]
    fn an_exiting_thread_hands_its_lease_back() {
        // One thread at a time: if exits kept their leases, at most `OWNED` of these would
        // get one (fewer, with other tests' threads holding some meanwhile).
        let leased = (0..4 * OWNED)
            .filter(|_| std::thread::spawn(|| mine().owned).join().unwrap())
            .count();
        assert!(
            leased > 2 * OWNED,
            "only {leased} of {} threads got a lease",
            4 * OWNED
        );
    }

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let counters: Arc<Vec<AtomicU64>> =
            Arc::new((0..STRIPES).map(|_| AtomicU64::new(0)).collect());
        let threads = OWNED + 8;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let stripe = mine();
                        add(stripe, &counters[stripe.index()], 1);
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, threads as u64 * 10_000);
    }
}
