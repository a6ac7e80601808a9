//! The shared queue for work submitted from outside the pool's workers.
//!
//! # Why not crossbeam's `Injector`
//!
//! crossbeam's injector is a linked list of blocks of 63 slots: the submitter allocates a block
//! every 63 pushes and the worker that empties a block frees it. With a thread outside the pool
//! submitting and the workers keeping up, that is a 1.5 KiB allocation on the submitter's
//! thread and a free on a worker's thread every 63 tasks. Both go through glibc's arena lock
//! (the block is too big for the per-thread cache), on the same arena the submitter allocates
//! its task cells from, so the workers' frees and the submitter's mallocs contended for that
//! lock, and whoever lost slept in the kernel: `perf` on `tiny-tasks` showed the submitter in
//! `futex` wake-ups from `malloc` and the workers asleep in `free` for about a sixth of their
//! samples. The allocation also made glibc consolidate its fast bins every 63 tasks (a request
//! past 1 KiB does), so the cells' own mallocs left the fast path.
//!
//! This queue is a ring buffer behind a mutex, which keeps its storage: once it has grown to a
//! burst's size it allocates nothing more (it gives memory back only when it drains after a
//! very large backlog). A push is one lock and one unlock, as a crossbeam push was one
//! compare-and-swap and one `fetch_or`; a worker takes a batch per lock. The length is mirrored
//! in an atomic so that idle workers poll it without taking the lock.

use std::collections::VecDeque;

use super::job::Job;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The most jobs a worker takes from the shared queue at once (rayon and crossbeam use 32).
const MAX_BATCH: usize = 32;

/// Capacity (in jobs) a drained queue keeps; beyond it the storage is given back.
const KEEP_CAPACITY: usize = 1 << 12;

pub(crate) struct Injector {
    /// The queue's length, written under the lock, read without it.
    len: AtomicUsize,
    queue: Mutex<VecDeque<Job>>,
}

impl Injector {
    pub(crate) fn new() -> Self {
        Self {
            len: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Queues `job` last.
    pub(crate) fn push(&self, job: Job) {
        let mut queue = self.queue.lock();
        queue.push_back(job);
        // Pairs with the loads in `is_empty`; the lost-wake-up protocol (see `registry`) adds
        // its SeqCst fence after this.
        self.len.store(queue.len(), Ordering::Release);
    }

    /// SeqCst, as crossbeam's: a searcher that stops searching (a SeqCst RMW on the idle
    /// counts) and then looks here must see a job pushed before the pusher read those counts
    /// (see `registry`). On x86 a SeqCst load is a plain load.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Takes the oldest job, and moves up to half of the rest (at most [`MAX_BATCH`] in all)
    /// onto `dest`, oldest on top so that `dest` pops them in submission order.
    pub(crate) fn steal_batch_and_pop(&self, dest: &crossbeam_deque::Worker<Job>) -> Option<Job> {
        if self.is_empty() {
            return None;
        }
        let mut queue = self.queue.lock();
        let first = queue.pop_front()?;
        let extra = queue.len().div_ceil(2).min(MAX_BATCH - 1);
        // `dest` is a LIFO deque: push the batch newest first.
        queue.drain(..extra).rev().for_each(|job| dest.push(job));
        self.len.store(queue.len(), Ordering::Release);
        let shrink = queue.is_empty() && queue.capacity() > KEEP_CAPACITY;
        // Given back outside the lock, which the submitters need.
        let old =
            shrink.then(|| std::mem::replace(&mut *queue, VecDeque::with_capacity(MAX_BATCH)));
        drop(queue);
        drop(old);
        Some(first)
    }

    /// Takes the oldest job.
    pub(crate) fn pop(&self) -> Option<Job> {
        if self.is_empty() {
            return None;
        }
        let mut queue = self.queue.lock();
        let job = queue.pop_front();
        self.len.store(queue.len(), Ordering::Release);
        job
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use crate::task::cell::Cell;
    use crate::task::origin::Origin;
    use crate::task::refs::CellRef;
    use std::sync::{Arc, Mutex as StdMutex};

    fn job(log: &Arc<StdMutex<Vec<usize>>>, i: usize) -> Job {
        let log = Arc::clone(log);
        Job::task(CellRef::new(Cell::new(
            move || log.lock().unwrap().push(i),
            Origin::UNKNOWN,
        )))
    }

    #[test]
    fn a_worker_runs_a_stolen_batch_in_submission_order() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let injector = Injector::new();
        (0..10).for_each(|i| injector.push(job(&log, i)));
        let local = crossbeam_deque::Worker::new_lifo();
        let first = injector.steal_batch_and_pop(&local).unwrap();
        // The oldest, plus half of the other nine, rounded up.
        assert_eq!((local.len(), injector.len()), (5, 4));
        first.execute(&|| ());
        while let Some(job) = local.pop().or_else(|| injector.pop()) {
            job.execute(&|| ());
        }
        assert_eq!(*log.lock().unwrap(), (0..10).collect::<Vec<_>>());
        assert!(injector.is_empty());
        assert!(injector.steal_batch_and_pop(&local).is_none());
    }

    #[test]
    fn a_batch_is_at_most_max_batch_and_a_drained_backlog_gives_its_storage_back() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let injector = Injector::new();
        let backlog = 2 * KEEP_CAPACITY;
        (0..backlog).for_each(|i| injector.push(job(&log, i)));
        let local = crossbeam_deque::Worker::new_lifo();
        while let Some(first) = injector.steal_batch_and_pop(&local) {
            assert!(local.len() < MAX_BATCH);
            first.execute(&|| ());
            while let Some(job) = local.pop() {
                job.execute(&|| ());
            }
        }
        assert_eq!(log.lock().unwrap().len(), backlog);
        assert!(injector.queue.lock().capacity() <= KEEP_CAPACITY);
    }
}
