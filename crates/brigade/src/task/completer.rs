//! [`Completer`]: a [`Task`] that code outside brigade's pools completes.

use std::fmt;

use super::Task;
use super::cell::Hooks;
use super::origin::{LaneName, Origin};
use super::promise::Promise;
use crate::error::Error;

/// The producing side of a [`Task`] that your own code completes: a callback-based API, a
/// message from another process or machine, anything that is not a closure on a pool.
///
/// [`Completer::new`] returns the pair. Hand the [`Task`] to whoever waits (it works with
/// [`result`](Task::result), [`wait`](crate::wait()), [`as_completed`](crate::as_completed),
/// `.await` and done callbacks, like a task of any pool), and complete it with
/// [`set_result`](Self::set_result) or [`set_error`](Self::set_error), once. This is
/// Python's `Future()` with `set_result`, split in two so that only the producer can set it.
///
/// * The task is *pending* until [`set_running`](Self::set_running) (optional); while
///   pending, the handle's [`cancel`](Task::cancel) succeeds: the task ends
///   [`Error::Cancelled`], the completer's later outcome is dropped, and
///   [`is_cancelled`](Self::is_cancelled) tells the producer to stop.
/// * A completer dropped without an outcome fails the task with [`Error::Abandoned`], so no
///   waiter hangs on a producer that went away (a panic unwinding through it included).
///
/// ```
/// use brigade::{Completer, Error};
///
/// let (completer, task) = Completer::<u32>::new();
/// std::thread::spawn(move || completer.set_result(42)); // e.g. a reply from elsewhere
/// assert_eq!(task.result(), Ok(42));
///
/// let (completer, task) = Completer::<u32>::new();
/// drop(completer);
/// assert_eq!(task.result(), Err(Error::Abandoned));
///
/// let (completer, task) = Completer::<u32>::new();
/// assert!(task.cancel());
/// assert!(completer.is_cancelled());
/// completer.set_result(1); // dropped: the task keeps its cancellation
/// assert_eq!(task.result(), Err(Error::Cancelled));
/// ```
pub struct Completer<T> {
    promise: Promise<T, (), ByCompleter>,
}

/// What a completer's task reports when the completer goes away unset.
struct ByCompleter;

impl Hooks for ByCompleter {
    fn abandoned(&self) -> Error {
        Error::Abandoned
    }
}

impl<T: Send + 'static> Completer<T> {
    /// A pending task and the completer that completes it.
    ///
    /// ```
    /// let (completer, task) = brigade::Completer::new();
    /// assert!(!task.is_done());
    /// completer.set_result("ready");
    /// assert_eq!(task.result(), Ok("ready"));
    /// ```
    #[track_caller]
    pub fn new() -> (Self, Task<T>) {
        let origin = Origin::here(LaneName::Completer);
        let (promise, task) = Promise::new_at((), ByCompleter, origin);
        (Self { promise }, task)
    }

    /// Marks the task running, so that [`Task::cancel`] no longer succeeds (Python's
    /// `set_running_or_notify_cancel`). Returns `false` when the handle cancelled it first:
    /// then do not start the work.
    ///
    /// ```
    /// let (mut completer, task) = brigade::Completer::<()>::new();
    /// assert!(completer.set_running());
    /// assert!(task.is_running());
    /// assert!(!task.cancel()); // running: cannot be cancelled any more
    /// completer.set_result(());
    /// ```
    pub fn set_running(&mut self) -> bool {
        self.promise.start().is_some() || self.promise.is_started()
    }

    /// Whether the handle cancelled the task (before it was running): the producer can stop.
    pub fn is_cancelled(&self) -> bool {
        self.promise.is_cancelled()
    }

    /// Completes the task with `value`. A cancelled task keeps its cancellation.
    pub fn set_result(self, value: T) {
        self.promise.complete(Ok(value));
    }

    /// Fails the task with `error`. A cancelled task keeps its cancellation.
    ///
    /// ```
    /// use brigade::{Completer, Error};
    ///
    /// let (completer, task) = Completer::<u8>::new();
    /// completer.set_error(Error::TimedOut);
    /// assert_eq!(task.result(), Err(Error::TimedOut));
    /// ```
    pub fn set_error(self, error: Error) {
        self.promise.complete(Err(error));
    }

    /// Completes the task with `outcome`: [`set_result`](Self::set_result) or
    /// [`set_error`](Self::set_error) in one call.
    pub fn complete(self, outcome: Result<T, Error>) {
        self.promise.complete(outcome);
    }
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer")
            .field("cancelled", &self.promise.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_running_completer_task_is_not_cancelled_and_completes() {
        let (mut completer, task) = Completer::<u32>::new();
        assert!(completer.set_running());
        assert!(completer.set_running(), "asking twice is harmless");
        assert!(!task.cancel());
        assert!(!completer.is_cancelled());
        completer.set_result(3);
        assert_eq!(task.result(), Ok(3));
    }

    #[test]
    fn set_running_after_cancel_says_no() {
        let (mut completer, task) = Completer::<u32>::new();
        assert!(task.cancel());
        assert!(!completer.set_running());
        drop(completer);
        assert_eq!(task.result(), Err(Error::Cancelled));
    }

    #[test]
    fn a_completer_dropped_while_running_abandons_the_task() {
        let (mut completer, task) = Completer::<u32>::new();
        completer.set_running();
        drop(completer);
        assert_eq!(task.result(), Err(Error::Abandoned));
    }
}
