//! Memory for large messages: the buffers of finished large calls, kept warm for the next
//! ones, and huge pages for large buffers.
//!
//! On a VM, faulting in fresh pages costs more than copying into warm ones (here fresh memory
//! fills at 0.5–0.9 GB/s, warm memory several times faster), and a large buffer is fresh
//! memory every time the allocator hands it out (allocations this size are mapped and
//! unmapped each time). So a call frame that grows past [`SPARE_MIN`] while its argument is
//! encoded moves into the buffer of an earlier large frame instead, and that frame's buffer
//! comes back here once its answer has arrived. The buffers are let go when the pool has had
//! no call for a while (see the slot thread's idle wait).

use std::time::{Duration, Instant};

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// Buffers smaller than this are left to the allocator (small allocations are reused warm).
pub(crate) const SPARE_MIN: usize = 1 << 20;

/// How long large buffers (these, and the read and answer buffers of both sides) are kept
/// without use.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Buffers from this size on are backed by huge pages where the system allows it.
pub(crate) const HUGE_MIN: usize = 4 << 20;

/// Asks the kernel to back the whole 2 MiB pages of the `capacity` bytes at `start` with
/// transparent huge pages (where it is set to `madvise`, as it often is, only memory that asks
/// gets them). Fresh memory then costs one fault per 2 MiB instead of one per 4 KiB: measured
/// here, copying 512 MiB into fresh memory ran at 1.0-1.5 GB/s in 4 KiB pages and at 3-7 GB/s
/// in huge pages once the kernel had some free (the first time it may have to compact memory
/// first). It is advice: contents and validity of the memory do not change, and a system
/// without huge pages ignores it.
pub(crate) fn advise_huge(start: *const u8, capacity: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        const HUGE_PAGE: usize = 2 << 20;
        if capacity < HUGE_MIN {
            return;
        }
        let from = (start as usize).next_multiple_of(HUGE_PAGE);
        let to = (start as usize + capacity) / HUGE_PAGE * HUGE_PAGE;
        if to > from {
            // SAFETY: the range lies inside an allocation the caller owns (page-aligned, as
            // madvise wants), and this advice changes neither its contents nor its mapping.
            let _ = unsafe {
                rustix::mm::madvise(
                    from as *mut std::ffi::c_void,
                    to - from,
                    rustix::mm::Advice::LinuxHugepage,
                )
            };
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (start, capacity);
}

/// A copy of `bytes` in a fresh buffer of its own, in huge pages when it is large (see
/// [`advise_huge`]).
pub(crate) fn owned_copy(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    advise_huge(out.as_ptr(), out.capacity());
    out.extend_from_slice(bytes);
    out
}

/// A few large buffers, warm from earlier frames.
#[derive(Default)]
pub(crate) struct Spares {
    buffers: Mutex<Held>,
    /// How many buffers are kept at most.
    keep: usize,
    /// How many are kept now: read by every slot thread before each read, without the lock.
    held: AtomicUsize,
}

#[derive(Default)]
struct Held {
    buffers: Vec<Vec<u8>>,
    /// When a buffer was last taken or given.
    used: Option<Instant>,
}

impl Spares {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            buffers: Mutex::new(Held::default()),
            keep,
            held: AtomicUsize::new(0),
        }
    }

    /// A buffer for a frame that needs `need` bytes: the smallest spare that holds them, else
    /// the largest spare (its pages are warm, only the growth is fresh); `None` when there is
    /// none.
    pub(crate) fn take(&self, need: usize) -> Option<Vec<u8>> {
        let mut held = self.buffers.lock();
        held.used = Some(Instant::now());
        let buffers = &mut held.buffers;
        let fits = buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= need)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let pick = fits.or_else(|| {
            buffers
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        })?;
        let taken = buffers.swap_remove(pick);
        self.held.store(buffers.len(), Ordering::Relaxed);
        Some(taken)
    }

    /// Keeps `buffer` for a later frame if it is large; when full, the smallest goes.
    pub(crate) fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() < SPARE_MIN || self.keep == 0 {
            return;
        }
        buffer.clear();
        let mut held = self.buffers.lock();
        held.used = Some(Instant::now());
        held.buffers.push(buffer);
        self.held
            .store(held.buffers.len().min(self.keep), Ordering::Relaxed);
        if held.buffers.len() > self.keep
            && let Some((smallest, _)) = held
                .buffers
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.capacity())
        {
            // Dropped outside the lock.
            let dropped = held.buffers.swap_remove(smallest);
            drop(held);
            drop(dropped);
        }
    }

    /// Whether any buffer is kept.
    pub(crate) fn holds_any(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    /// Lets every buffer go if none was used for [`IDLE_RELEASE`].
    pub(crate) fn release_idle(&self) {
        let mut held = self.buffers.lock();
        if held.used.is_some_and(|used| used.elapsed() < IDLE_RELEASE) {
            return;
        }
        let buffers = std::mem::take(&mut held.buffers);
        self.held.store(0, Ordering::Relaxed);
        drop(held);
        drop(buffers);
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_owned_copy_is_a_copy_whatever_its_size() {
        for len in [0, 1, HUGE_MIN - 1, HUGE_MIN + 12345] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(owned_copy(&bytes), bytes);
        }
    }

    #[test]
    fn the_smallest_that_fits_else_the_largest() {
        let spares = Spares::new(2);
        spares.give(Vec::with_capacity(100)); // too small to keep
        assert!(!spares.holds_any());
        spares.give(Vec::with_capacity(2 * SPARE_MIN));
        spares.give(Vec::with_capacity(4 * SPARE_MIN));
        spares.give(Vec::with_capacity(3 * SPARE_MIN)); // one too many: the smallest goes
        let first = spares.take(SPARE_MIN).unwrap();
        assert!(first.capacity() >= 3 * SPARE_MIN && first.capacity() < 4 * SPARE_MIN);
        let second = spares.take(8 * SPARE_MIN).unwrap();
        assert!(second.capacity() >= 4 * SPARE_MIN, "none fits: the largest");
        assert!(spares.take(1).is_none());
        spares.give(second);
        spares.release_idle();
        assert!(spares.holds_any(), "just used: kept");
        spares.buffers.lock().used = Instant::now().checked_sub(IDLE_RELEASE);
        spares.release_idle();
        assert!(!spares.holds_any());
    }
}
