//! Unit tests of the cell's waiter list.

use super::*;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::Wake;

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_distinct_waker_is_woken_once_and_a_repeated_one_is_kept_once() {
    let header = Header::<u32>::new(Origin::UNKNOWN);
    let counts: Vec<_> = (0..3)
        .map(|_| Arc::new(Count(AtomicUsize::new(0))))
        .collect();
    let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
    // The first waker sits in place, the others in the overflow list; re-registering
    // either kind must not add it twice.
    for waker in wakers.iter().chain(&wakers) {
        assert!(header.watch(waker));
    }
    assert_eq!(header.try_start(), Claim::Won);
    header.complete(Ok(7));
    for count in &counts {
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
    // Settled: a late registration is refused and wakes nothing.
    assert!(!header.watch(&wakers[0]));
    assert_eq!(counts[0].0.load(Ordering::SeqCst), 1);
}
