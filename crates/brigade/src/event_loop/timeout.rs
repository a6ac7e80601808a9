//! [`timeout`]: give up on a task after a while, cancelling it, like `asyncio.wait_for`.

use std::time::Duration;

use crate::error::Error;
use crate::task::Task;

/// Waits for `task` at most `limit`; on time-out cancels it and returns [`Error::TimedOut`],
/// like `asyncio.wait_for`.
///
/// An async task stops at its next `.await`; a thread-pool task is cancelled only if it has
/// not started (see [`Task::cancel`]). Unlike [`Task::result_timeout`], which gives up
/// *without* cancelling, the task does not outlive the time-out. Must be awaited inside an
/// event loop (a task, or [`EventLoop::block_on`]): it uses the loop's timers.
///
/// ```
/// use std::time::Duration;
/// use brigade::{Error, EventLoop};
/// use brigade::event_loop::timeout;
///
/// let lp = EventLoop::new();
/// let slow = lp.spawn(std::future::pending::<()>());
/// let fast = lp.spawn(async { 7 });
/// lp.block_on(async {
///     assert_eq!(timeout(Duration::from_millis(5), slow).await, Err(Error::TimedOut));
///     assert_eq!(timeout(Duration::from_secs(60), fast).await, Ok(7));
/// }).unwrap();
/// ```
pub async fn timeout<T>(limit: Duration, mut task: Task<T>) -> Result<T, Error> {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => {
            task.cancel();
            Err(Error::TimedOut)
        }
    }
}
