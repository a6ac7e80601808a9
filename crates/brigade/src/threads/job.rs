//! What the compute lane's queues hold.

use std::sync::Arc;

use super::join::StackRef;
use super::scope::ScopeLatch;
use crate::error::Error;
use crate::task::cell::Run;

/// A queued unit of work: a task (with the scope it belongs to, if any), or the second half
/// of a [`join`](super::ThreadPool::join), which lives on its owner's stack.
///
/// A job that is dropped without being executed (a pool shutting down, a queue torn down)
/// ends its task as cancelled, or hands a join's half back to its owner, so nobody ever waits
/// on work that can no longer run.
pub(crate) struct Job(Kind);

enum Kind {
    Task(Arc<dyn Run>, Option<Arc<ScopeLatch>>),
    Stack(StackRef),
    /// Executed or handed back; nothing left to do on drop.
    Spent,
}

impl Job {
    pub(crate) fn new(task: Arc<dyn Run>) -> Self {
        Self(Kind::Task(task, None))
    }

    pub(crate) fn scoped(task: Arc<dyn Run>, latch: Arc<ScopeLatch>) -> Self {
        Self(Kind::Task(task, Some(latch)))
    }

    #[inline]
    pub(super) fn stack(job: StackRef) -> Self {
        Self(Kind::Stack(job))
    }

    /// Runs the job (a task is skipped if it was cancelled meanwhile). `before_publish` is
    /// called after a task's work and before its outcome becomes visible (see [`Run::run`]).
    pub(crate) fn execute(mut self, before_publish: &dyn Fn()) {
        match std::mem::replace(&mut self.0, Kind::Spent) {
            Kind::Task(task, latch) => {
                let panicked = task.run(before_publish);
                // Our reference goes before the scope learns the job is over: a scoped task's
                // value may borrow from the scope's caller, so nothing of it may outlive the
                // latch release.
                drop(task);
                if let Some(latch) = latch {
                    if let Some(message) = panicked {
                        latch.record_panic(message);
                    }
                    latch.release();
                }
            }
            Kind::Stack(job) => job.execute(),
            Kind::Spent => unreachable!("a job executes once"),
        }
    }

    /// Ends the job unrun: a task with `reason`, a join's half handed back to its owner.
    pub(crate) fn abandon(mut self, reason: Error) {
        self.end_unrun(reason);
    }

    /// Whether this is the stack job `job` (the one a joining worker is looking for).
    #[inline]
    pub(super) fn is_stack(&self, job: &StackRef) -> bool {
        matches!(&self.0, Kind::Stack(mine) if mine.same_as(job))
    }

    /// Disarms a stack job that its owner popped back to run itself.
    #[inline]
    pub(super) fn reclaim(self) {
        debug_assert!(matches!(self.0, Kind::Stack(_)));
        // A stack job owns nothing (the owner's frame does), so there is nothing to drop, and
        // skipping `Drop` keeps the cheapest path of a join cheap.
        std::mem::forget(self);
    }

    fn end_unrun(&mut self, reason: Error) {
        match std::mem::replace(&mut self.0, Kind::Spent) {
            Kind::Task(task, latch) => {
                task.abandon(reason);
                drop(task);
                if let Some(latch) = latch {
                    latch.release();
                }
            }
            Kind::Stack(job) => job.hand_back(),
            Kind::Spent => {}
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.end_unrun(Error::Cancelled);
    }
}
