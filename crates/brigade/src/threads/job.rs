//! What the compute lane's queues hold.

use std::sync::Arc;

use super::scope::ScopeLatch;
use crate::error::Error;
use crate::task::cell::Run;

/// A queued task, plus the scope it belongs to, if any.
///
/// A job that is dropped without being executed (a pool shutting down, a queue torn down)
/// ends its task as cancelled, so no handle ever waits on work that can no longer run.
pub(crate) struct Job {
    task: Option<Arc<dyn Run>>,
    latch: Option<Arc<ScopeLatch>>,
}

impl Job {
    pub(crate) fn new(task: Arc<dyn Run>) -> Self {
        Self {
            task: Some(task),
            latch: None,
        }
    }

    pub(crate) fn scoped(task: Arc<dyn Run>, latch: Arc<ScopeLatch>) -> Self {
        Self {
            task: Some(task),
            latch: Some(latch),
        }
    }

    /// Runs the task (unless it was cancelled meanwhile); see [`Run::run`] for
    /// `before_publish`.
    pub(crate) fn execute(mut self, before_publish: &dyn Fn()) {
        let task = self.task.take().expect("a job executes once");
        let panicked = task.run(before_publish);
        // Our reference goes before the scope learns the job is over: a scoped task's value
        // may borrow from the scope's caller, so nothing of it may outlive the latch release.
        drop(task);
        if let (Some(message), Some(latch)) = (panicked, &self.latch) {
            latch.record_panic(message);
        }
    }

    /// Ends the task unrun with `reason`.
    pub(crate) fn abandon(mut self, reason: Error) {
        if let Some(task) = self.task.take() {
            task.abandon(reason);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abandon(Error::Cancelled);
        }
        if let Some(latch) = self.latch.take() {
            latch.release();
        }
    }
}
