//! What the compute lane's queues hold.

use std::sync::Arc;

use super::join::StackRef;
use super::scope::LatchRef;
use crate::error::Error;
use crate::task::cell::Run;

/// A queued unit of work: a task (with the scope it belongs to, if any), or the second half
/// of a [`join`](super::ThreadPool::join), which lives on its owner's stack.
///
/// Every job leaves its queue through [`execute`](Self::execute) or
/// [`abandon`](Self::abandon); the places that empty queues without running them (a drain on
/// shutdown, a registry or worker going away) abandon each job, which ends its task or hands
/// a join's half back to its owner, so nobody ever waits on work that can no longer run.
/// (No `Drop` safety net: it cost a fifth of a tiny task's scheduling.)
pub(crate) struct Job(Kind);

enum Kind {
    Task(Arc<dyn Run>, Option<LatchRef>),
    Stack(StackRef),
}

impl Job {
    pub(crate) fn new(task: Arc<dyn Run>) -> Self {
        Self(Kind::Task(task, None))
    }

    pub(crate) fn scoped(task: Arc<dyn Run>, latch: LatchRef) -> Self {
        Self(Kind::Task(task, Some(latch)))
    }

    #[inline]
    pub(super) fn stack(job: StackRef) -> Self {
        Self(Kind::Stack(job))
    }

    /// Runs the job (a task is skipped if it was cancelled meanwhile). `before_publish` is
    /// called after a task's work and before its outcome becomes visible (see [`Run::run`]).
    pub(crate) fn execute(self, before_publish: &dyn Fn()) {
        match self.0 {
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
        }
    }

    /// Ends the job unrun: a task with `reason`, a join's half handed back to its owner.
    pub(crate) fn abandon(self, reason: Error) {
        match self.0 {
            Kind::Task(task, latch) => {
                task.abandon(reason);
                drop(task);
                if let Some(latch) = latch {
                    latch.release();
                }
            }
            Kind::Stack(job) => job.hand_back(),
        }
    }

    /// Whether this is the stack job `job` (the one a joining worker is looking for).
    #[inline]
    pub(super) fn is_stack(&self, job: &StackRef) -> bool {
        matches!(&self.0, Kind::Stack(mine) if mine.same_as(job))
    }

    /// Takes back a stack job that its owner popped to run itself: it owns nothing (the
    /// owner's frame does), so there is nothing to do.
    #[inline]
    pub(super) fn reclaim(self) {
        debug_assert!(matches!(self.0, Kind::Stack(_)));
    }
}
