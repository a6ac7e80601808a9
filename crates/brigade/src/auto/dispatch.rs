//! Where a measured call goes: a site's arrival, the lane its hint or its route picks, and
//! the jobs each lane runs (measured, forwarded to the compute lane when a queued call's site
//! was placed there meanwhile).

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::time::Instant;

use super::blocking::{Go, Job};
use super::probe;
use super::routed::PanicCount;
use super::site::{Measure, Route, Site};
use super::{Auto, Lane, Work};
use crate::error::Error;
use crate::task::Task;
use crate::task::origin::{LaneName, Origin};
use crate::task::promise::Promise;
use crate::threads::ThreadPool;

impl Auto {
    /// Counts a call (or a future) of the site at `location`, with its hint if any.
    pub(super) fn arrive(
        &self,
        location: &'static Location<'static>,
        kind: Work,
        hint: Option<Lane>,
    ) -> &'static Site {
        let site = self.inner.sites.get(location, kind);
        site.count_call();
        if let Some(hint) = hint {
            site.note_hint(hint);
        }
        site
    }

    /// A measured closure (a call, or a `map` chunk) to the lane its hint or its site says.
    /// `#[track_caller]`: a compute-lane task is named after the line that submitted it.
    #[track_caller]
    pub(super) fn route_call<F, T>(
        &self,
        hint: Option<Lane>,
        location: &'static Location<'static>,
        work: F,
    ) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let site = self.arrive(location, Work::Calls, hint);
        match hint.or(site.route().lane()) {
            Some(Lane::Compute | Lane::Loop) => self.to_compute(site, work),
            Some(Lane::Blocking) => self.to_blocking(Some(site), location, true, work),
            // Not placed yet: the blocking lane, whose growth is gated on CPU use.
            None => self.to_blocking_unplaced(site, location, site.waits(), work),
        }
    }

    /// The compute lane, measured. Keeps the caller's location as the task's origin.
    #[track_caller]
    pub(super) fn to_compute<F, T>(&self, site: &'static Site, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.inner
            .lanes
            .compute
            .submit(move || measured(site, Lane::Compute, work))
    }

    /// The blocking lane; `site` is `None` when nothing is measured.
    pub(super) fn to_blocking<F, T>(
        &self,
        site: Option<&'static Site>,
        location: &'static Location<'static>,
        waits: bool,
        work: F,
    ) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (promise, task) = blocking_promise(location, work);
        let job = Job::new(site, waits, move |go| match go {
            Go::Run | Go::Forward => run_promise(promise, site, Lane::Blocking),
            Go::Fail(error) => promise.complete(Err(error)),
        });
        // A refused job fails its task (the dropped promise ends it `ShutDown`).
        drop(self.inner.lanes.blocking.push(job));
        task
    }

    /// A call of a site not placed yet: the blocking lane, forwarded to the compute lane when
    /// its turn comes if the site was placed there meanwhile.
    pub(super) fn to_blocking_unplaced<F, T>(
        &self,
        site: &'static Site,
        location: &'static Location<'static>,
        waits: bool,
        work: F,
    ) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (promise, task) = blocking_promise(location, work);
        let compute = self.inner.lanes.compute.clone();
        let job = Job::new(Some(site), waits, move |go| match go {
            Go::Forward => forward(&compute, promise, site),
            Go::Run if site.route() == Route::To(Lane::Compute) => {
                forward(&compute, promise, site);
            }
            Go::Run => run_promise(promise, Some(site), Lane::Blocking),
            Go::Fail(error) => promise.complete(Err(error)),
        })
        .forwardable();
        drop(self.inner.lanes.blocking.push(job));
        task
    }
}

/// Runs `work` for a task of `site` on `ran`, measuring it as the site says.
#[inline]
pub(super) fn measured<T>(site: &'static Site, ran: Lane, work: impl FnOnce() -> T) -> T {
    match site.measure() {
        // The hot path of a tiny call: one coarse clock read, no panic guard (panics are
        // counted on the probed calls, which include every call of a site not placed yet).
        Measure::Tick => {
            let out = work();
            if probe::tick_passed() {
                site.ticked();
            }
            out
        }
        Measure::Time => {
            let count = PanicCount(site);
            let started = Instant::now();
            let out = work();
            site.timed(probe::nanos(started.elapsed()));
            drop(count);
            out
        }
        Measure::Probe { precise } => {
            let count = PanicCount(site);
            let started = probe::start(precise);
            let out = work();
            site.probed(&probe::finish(&started), ran);
            drop(count);
            out
        }
    }
}

/// A call whose site was placed on the compute lane while it queued on the blocking lane: it
/// goes there now. A refusal (shut down) drops the promise, which ends the task `ShutDown`.
pub(super) fn forward<T, F>(compute: &ThreadPool, promise: Promise<T, F>, site: &'static Site)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    drop(compute.try_submit(move || run_promise(promise, Some(site), Lane::Compute)));
}

/// A promise for a call bound for the blocking lane, its task named after the caller's line.
pub(super) fn blocking_promise<F, T>(
    location: &'static Location<'static>,
    work: F,
) -> (Promise<T, F>, Task<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let origin = Origin {
        lane: LaneName::Blocking,
        site: Some(location),
    };
    Promise::<T, F>::new_at(work, (), origin)
}

/// Claims and runs a promised call, measured when it has a site, and completes its task.
pub(super) fn run_promise<T, F>(mut promise: Promise<T, F>, site: Option<&'static Site>, ran: Lane)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if let Some(work) = promise.start() {
        let outcome = catch_unwind(AssertUnwindSafe(|| match site {
            Some(site) => measured(site, ran, work),
            None => work(),
        }))
        .map_err(|payload| Error::from_panic(&*payload));
        promise.complete(outcome);
    }
}
