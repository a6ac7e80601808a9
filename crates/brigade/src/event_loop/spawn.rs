//! How a future becomes a loop task: the spawn path shared by `spawn`, `try_spawn`, `shield`,
//! a group's children, `map_limited`'s calls and the auto lane.

use std::future::Future;
use std::panic::Location;
use std::ptr::NonNull;

use super::EventLoop;
use super::driver::{Control, ControlRef, Driver};
use crate::error::{Error, SubmitError};
use crate::task::Task;
use crate::task::origin::{LaneName, Origin};
use crate::task::promise::Promise;

/// A task just spawned, and a second handle on its control (when a group asks for one).
type Spawned<T> = (Task<T>, Option<ControlRef<T>>);

impl EventLoop {
    /// Spawns from `site` (a router's caller: the auto lane keeps its user's call site).
    pub(crate) fn spawn_from<F>(
        &self,
        site: &'static Location<'static>,
        future: F,
    ) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_at(site, future, false, false).0
    }

    /// Spawns from `site`; a refused future becomes a task already failed, and the control
    /// (for a group, asked for with `share_control`) a control of nothing.
    pub(super) fn spawn_at<F>(
        &self,
        site: &'static Location<'static>,
        future: F,
        shielded: bool,
        share_control: bool,
    ) -> (Task<F::Output>, Option<ControlRef<F::Output>>)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.try_spawn_at(site, future, shielded, share_control) {
            Ok(spawned) => spawned,
            Err(refused) => (Task::failed(refused.reason().clone()), None),
        }
    }

    pub(super) fn try_spawn_at<F>(
        &self,
        site: &'static Location<'static>,
        future: F,
        shielded: bool,
        share_control: bool,
    ) -> Result<Spawned<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(live) = self.inner.state.admit() else {
            return Err(SubmitError::new(future, Error::ShutDown));
        };
        let origin = Origin {
            lane: LaneName::EventLoop,
            site: Some(site),
        };
        let site = self.inner.sites.get(site);
        let flagged = site.is_flagged();
        let (mut promise, task) = Promise::<F::Output, (), Control>::new_at(
            (),
            Control::new(shielded, self.inner.state, site, flagged),
            origin,
        );
        if shielded {
            // Running from the start, so that no cancel ever claims it.
            let _ = promise.start();
        }
        // A second counted reference only for a group, which keeps it: a plain spawn reaches
        // the control through `task`'s reference instead, sparing two read-modify-writes of
        // the state word that the worker is busy with.
        let shared = share_control.then(|| promise.share_extra());
        let control = NonNull::from(promise.extra());
        let driver = Driver::new(future, promise, live);
        let join = if flagged {
            match self.inner.lane.spawn(driver) {
                Ok(join) => join,
                Err(driver) => self.inner.handle.spawn(driver.for_worker()),
            }
        } else {
            self.inner.handle.spawn(driver)
        };
        // SAFETY: `control` points into the task's cell, which `task` (a counted reference,
        // ours until we return) keeps alive; this is the one call for the task, on the
        // spawning thread, before `task` or `shared` leaves it.
        unsafe { control.as_ref().keep(join) };
        Ok((task, shared))
    }
}
