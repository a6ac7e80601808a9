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
//! A write into the page cache costs a fraction of a microsecond and wakes no one, unlike an
//! "I started" message, which would wake the pool's slot thread once more per call.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// One worker's ledger (both processes hold the same file).
pub(crate) struct Ledger(File);

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
        Ok(Self(File::from(fd)))
    }

    /// The ledger a worker received from its pool.
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Self(File::from(fd))
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Records that the worker takes call `id` (ids start at 1). Worker side, before any code
    /// of the call runs.
    pub(crate) fn record(&self, id: u64) -> io::Result<()> {
        match rustix::io::pwrite(&self.0, &id.to_le_bytes(), 0)? {
            8 => Ok(()),
            _ => Err(io::ErrorKind::WriteZero.into()),
        }
    }

    /// The id of the call the worker took last, 0 if none. Pool side, once the worker is gone.
    pub(crate) fn last_taken(&self) -> u64 {
        let mut id = [0u8; 8];
        match rustix::io::pread(&self.0, &mut id, 0) {
            Ok(8) => u64::from_le_bytes(id),
            _ => 0,
        }
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_records_the_other_reads() {
        let pool_side = Ledger::create().unwrap();
        assert_eq!(pool_side.last_taken(), 0);
        let worker_side = Ledger::from_fd(pool_side.fd().try_clone_to_owned().unwrap());
        worker_side.record(41).unwrap();
        worker_side.record(42).unwrap();
        assert_eq!(pool_side.last_taken(), 42);
    }
}
