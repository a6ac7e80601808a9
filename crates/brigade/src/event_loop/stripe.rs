//! Which stripe of a striped counter the calling thread adds to.
//!
//! Counters that many threads bump (a site's poll statistics, the loop's live-task count) are
//! spread over [`STRIPES`] cache-line-aligned stripes, one per thread modulo the count, so that
//! threads do not fight over one line; readers sum the stripes.

use std::cell::Cell;

/// How many stripes a striped counter has.
pub(super) const STRIPES: usize = 8;

thread_local! {
    /// This thread's stripe, or `usize::MAX` before its first use. A plain `Cell` with a const
    /// initializer: reading it is a load, with no lazy-initialization check.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe, in `0..STRIPES`.
#[inline]
pub(super) fn index() -> usize {
    INDEX.with(|index| {
        let known = index.get();
        if known != usize::MAX {
            return known;
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let chosen = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES;
        index.set(chosen);
        chosen
    })
}
