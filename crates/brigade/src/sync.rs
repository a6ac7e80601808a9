//! The one door through which lane internals reach synchronization primitives.
//!
//! Normal builds get `std` (and crossbeam's parker); builds with `--cfg brigade_loom` get
//! [loom]'s model-checked twins, so `cargo test` under loom explores every interleaving of the
//! code that uses them. Nothing in a lane may name `std::sync` directly for state that threads
//! race on; `Arc` is the exception (loom's cannot hold a trait object, and reference counting is
//! not what the models check).
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(brigade_loom))]
pub(crate) use std::sync::atomic;
#[cfg(not(brigade_loom))]
pub(crate) use std::thread_local;

#[cfg(brigade_loom)]
pub(crate) use loom::sync::atomic;
#[cfg(brigade_loom)]
pub(crate) use loom::thread_local;

#[cfg(not(brigade_loom))]
use std::sync as imp;

#[cfg(brigade_loom)]
use loom::sync as imp;

pub(crate) use imp::MutexGuard;

/// A mutex whose `lock` cannot fail.
///
/// Lane internals never run user code while holding one of these, so a poisoned lock can only
/// mean a bug in brigade itself; the data is still consistent (every critical section is a few
/// plain assignments), so we take it back instead of spreading the poison.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(imp::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(imp::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A condition variable paired with [`Mutex`]; poisoning is handled as there.
#[derive(Debug, Default)]
pub(crate) struct Condvar(imp::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Self(imp::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        match self.0.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }

    #[cfg_attr(not(brigade_loom), allow(dead_code))] // the loom parker's
    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }
}

/// An `UnsafeCell` with loom's closure-based API, so loom can check every access.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(brigade_loom))] std::cell::UnsafeCell<T>,
    #[cfg(brigade_loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(brigade_loom))]
        return Self(std::cell::UnsafeCell::new(value));
        #[cfg(brigade_loom)]
        return Self(loom::cell::UnsafeCell::new(value));
    }

    /// Runs `f` with a raw pointer for shared reads; the caller upholds the aliasing rules.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(brigade_loom))]
        return f(self.0.get());
        #[cfg(brigade_loom)]
        return self.0.with(f);
    }

    /// Runs `f` with a raw pointer for exclusive access; the caller upholds the aliasing rules.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(brigade_loom))]
        return f(self.0.get());
        #[cfg(brigade_loom)]
        return self.0.with_mut(f);
    }
}

#[cfg(not(brigade_loom))]
pub(crate) use crossbeam_utils::sync::{Parker, Unparker};

#[cfg(brigade_loom)]
pub(crate) use loom_parker::{Parker, Unparker};

/// A parker for loom models: the same contract as crossbeam's (a token that `unpark` sets and
/// `park` consumes), built from the primitives loom can see.
#[cfg(brigade_loom)]
mod loom_parker {
    use super::{Condvar, Mutex};
    use std::sync::Arc;
    use std::time::Instant;

    #[derive(Debug, Default)]
    struct Inner {
        token: Mutex<bool>,
        cvar: Condvar,
    }

    #[derive(Debug, Default)]
    pub(crate) struct Parker {
        unparker: Unparker,
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Unparker(Arc<Inner>);

    impl Parker {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn park(&self) {
            let inner = &self.unparker.0;
            let mut token = inner.token.lock();
            while !*token {
                token = inner.cvar.wait(token);
            }
            *token = false;
        }

        /// loom cannot model time, so a deadline is a wait that may also end spuriously.
        pub(crate) fn park_deadline(&self, _deadline: Instant) {
            let inner = &self.unparker.0;
            let mut token = inner.token.lock();
            if !*token {
                token = inner.cvar.wait_timeout(token, std::time::Duration::ZERO);
            }
            *token = false;
        }

        pub(crate) fn unparker(&self) -> &Unparker {
            &self.unparker
        }
    }

    impl Unparker {
        pub(crate) fn unpark(&self) {
            *self.0.token.lock() = true;
            self.0.cvar.notify_one();
        }
    }
}
