//! How a group learns that its children ended, and what it does about it: the shared state,
//! and the wrapper around every child's future that reports to it.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::GroupError;
use crate::error::Error;
use crate::event_loop::driver::Interrupt;
use crate::sync::Mutex;
use crate::wait::Watcher;

/// What the group knows.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Hears when each child's task is settled (its outcome in its handle), so that a `join`
    /// returns only once every child's handle is done: a child's own report comes from inside
    /// its future, a moment before its task publishes its outcome.
    pub(super) settled: Watcher,
}

#[derive(Default)]
pub(super) struct State {
    /// Children spawned so far (the next child's index).
    pub(super) spawned: usize,
    /// Children whose tasks are settled.
    pub(super) settled: usize,
    /// Children that have not reported their end yet, with the control to interrupt each
    /// (`None` for the moment between registering a child and spawning it).
    pub(super) running: Vec<(usize, Option<Box<dyn Interrupt>>)>,
    /// The first failure, or a cancel: from then on the group is stopping its children.
    pub(super) failure: Option<GroupError>,
    /// Joined, or dropped unjoined: no more children.
    pub(super) closed: bool,
    pub(super) joiner: Option<Waker>,
}

/// How a child ended.
enum End {
    Value,
    Returned(String),
    Panicked(Error),
    /// Dropped before it finished: cancelled (by the group, its handle, or the loop).
    Dropped,
}

impl Shared {
    /// Stops every running child (outside the lock: interrupting wakes tasks).
    fn interrupt(running: Vec<Box<dyn Interrupt>>) {
        for child in running {
            child.interrupt();
        }
    }

    fn report(&self, index: usize, end: End) {
        let (to_interrupt, joiner) = {
            let mut state = self.state.lock();
            if let Some(at) = state.running.iter().position(|(i, _)| *i == index) {
                state.running.swap_remove(at);
            }
            let mut to_interrupt = Vec::new();
            match (&mut state.failure, end) {
                (Some(failure), End::Dropped) => failure.cancelled += 1,
                (Some(_), _) | (None, End::Value | End::Dropped) => {}
                (None, End::Returned(message)) => {
                    state.failure = Some(GroupError {
                        index: Some(index),
                        error: None,
                        message: Some(message),
                        cancelled: 0,
                    });
                    to_interrupt = Self::take_controls(&mut state);
                }
                (None, End::Panicked(error)) => {
                    state.failure = Some(GroupError {
                        index: Some(index),
                        error: Some(error),
                        message: None,
                        cancelled: 0,
                    });
                    to_interrupt = Self::take_controls(&mut state);
                }
            }
            let joiner = if state.running.is_empty() {
                state.joiner.take()
            } else {
                None
            };
            (to_interrupt, joiner)
        };
        Self::interrupt(to_interrupt);
        if let Some(joiner) = joiner {
            joiner.wake();
        }
    }

    /// The controls of the running children, to interrupt them; the children stay counted as
    /// running until they report.
    fn take_controls(state: &mut State) -> Vec<Box<dyn Interrupt>> {
        state
            .running
            .iter_mut()
            .filter_map(|(_, control)| control.take())
            .collect()
    }

    /// Stops the group: no more children, and those running are interrupted. `failure` is
    /// what the group reports if it had not failed already.
    pub(super) fn stop(&self, failure: Option<GroupError>, close: bool) {
        let to_interrupt = {
            let mut state = self.state.lock();
            state.closed |= close;
            if state.failure.is_none() {
                state.failure = failure;
            }
            if state.failure.is_none() && !close {
                return;
            }
            Self::take_controls(&mut state)
        };
        Self::interrupt(to_interrupt);
    }
}

pin_project_lite::pin_project! {
    /// A child's future, reporting to its group how it ended.
    pub(super) struct Child<F> {
        #[pin]
        pub(super) future: F,
        pub(super) reporter: Reporter,
    }
}

/// Reports a child's end exactly once; dropped unreported means the child was dropped
/// unfinished.
pub(super) struct Reporter {
    pub(super) shared: Arc<Shared>,
    pub(super) index: usize,
    pub(super) reported: bool,
}

impl Reporter {
    fn report(&mut self, end: End) {
        self.reported = true;
        self.shared.report(self.index, end);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.reported {
            self.shared.report(self.index, End::Dropped);
        }
    }
}

impl<F, T, E> Future for Child<F>
where
    F: Future<Output = Result<T, E>>,
    E: fmt::Debug,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = this.future;
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => {
                this.reporter.report(match &outcome {
                    Ok(_) => End::Value,
                    Err(e) => End::Returned(format!("{e:?}")),
                });
                Poll::Ready(outcome)
            }
            Err(payload) => {
                // The group hears of it first; then the panic goes on to the task's driver,
                // which makes it the child's own outcome.
                this.reporter
                    .report(End::Panicked(Error::from_panic(&*payload)));
                resume_unwind(payload)
            }
        }
    }
}
