//! The ledger: which call a worker took, readable after the worker died.
//!
//! When a worker dies, the pool must tell the call it was running (which failed with it) from
//! the calls that were only waiting in its socket or had just been written to it (which never
//! ran, and go to another worker). The head of the slot's in-flight list is not proof: a worker
//! killed while idle, between two calls, has the next call at the head without having started
//! it. So each worker records the id of every call it takes in a tiny shared file (a `memfd`)
//! *before* any of the call's code runs, the decoding of its argument included; the pool reads
//! it once the worker is gone. A call whose id is there ran (or began to); any other did not.
//!
//! Both processes map the file, and the worker records with one atomic store: no system call,
//! and no one woken. (An "I started" message would wake the pool's slot thread once more per
//! call; a `pwrite` per call, measured, made pipelined round trips of tiny calls 15-25 %
//! slower.) The store happens before any of the call's code runs, and the pool reads it only
//! after it has reaped the worker, so the death orders the two.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use crate::sync::atomic::{AtomicU64, Ordering};

/// Bytes mapped: one page (the id uses the first 8).
const MAPPED: usize = 4096;

/// One worker's ledger (both processes map the same file).
pub(crate) struct Ledger {
    file: File,
    /// The first word of the shared mapping (page-aligned, so aligned for an `AtomicU64`).
    taken: NonNull<AtomicU64>,
}

// SAFETY: the mapping is shared memory accessed only through an atomic; the pointer is valid
// for as long as the ledger lives (unmapped in `Drop`), whichever thread holds it.
unsafe impl Send for Ledger {}
// SAFETY: as above: `&Ledger` only ever reads or stores the atomic.
unsafe impl Sync for Ledger {}

impl Ledger {
    /// A fresh ledger for a new worker: no call taken yet.
    pub(crate) fn create() -> io::Result<Self> {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let fd = rustix::fs::memfd_create("brigade-ledger", rustix::fs::MemfdFlags::CLOEXEC)?;
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let fd = {
            // An unlinked temporary file does the same where there is no memfd.
            let path = std::env::temp_dir().join(format!(
                "brigade-ledger-{}-{:x}",
                std::process::id(),
                super::spawn::random_token()[0]
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let _ = std::fs::remove_file(&path);
            OwnedFd::from(file)
        };
        rustix::fs::ftruncate(&fd, MAPPED as u64)?;
        Self::from_fd(fd)
    }

    /// The ledger a worker received from its pool (or the pool's own, fresh one), mapped.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let file = File::from(fd);
        if file.metadata()?.len() < MAPPED as u64 {
            return Err(io::Error::other("a ledger smaller than a page"));
        }
        // SAFETY: a new shared mapping of the first page of a file at least that long; nothing
        // else in this process refers to the address range the kernel picks.
        let address = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                MAPPED,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )?
        };
        let taken = NonNull::new(address.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { file, taken })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn taken(&self) -> &AtomicU64 {
        // SAFETY: `taken` points into the page mapped in `from_fd`, page-aligned, valid until
        // `Drop` unmaps it; the other process touches it only atomically too.
        unsafe { self.taken.as_ref() }
    }

    /// Records that the worker takes call `id` (ids start at 1). Worker side, before any code
    /// of the call runs.
    pub(crate) fn record(&self, id: u64) {
        self.taken().store(id, Ordering::Release);
    }

    /// The id of the call the worker took last, 0 if none. Pool side, once the worker is gone.
    pub(crate) fn last_taken(&self) -> u64 {
        self.taken().load(Ordering::Acquire)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `from_fd`, no longer referred to (`taken` borrows end
        // with `&self`).
        let _ = unsafe { rustix::mm::munmap(self.taken.as_ptr().cast(), MAPPED) };
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_records_the_other_reads() {
        let pool_side = Ledger::create().unwrap();
        assert_eq!(pool_side.last_taken(), 0);
        let worker_side = Ledger::from_fd(pool_side.fd().try_clone_to_owned().unwrap()).unwrap();
        worker_side.record(41);
        worker_side.record(42);
        assert_eq!(pool_side.last_taken(), 42);
    }
}
