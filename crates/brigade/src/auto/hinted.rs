//! The hinted view ([`Auto::cpu`], [`Auto::blocking`]) and `map`'s chunks on either view.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;

use super::{Auto, Lane};
use crate::error::{Error, SubmitError};
use crate::map::Map;
use crate::sync::atomic::Ordering;
use crate::task::Task;

/// A hinted view of an [`Auto`] pool: [`Auto::cpu`] or [`Auto::blocking`]. The call goes to
/// the hinted lane whatever its site measured (the site is still measured, for the report).
#[derive(Clone)]
pub struct Hinted {
    pub(super) auto: Auto,
    pub(super) lane: Lane,
}

impl fmt::Debug for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hinted").field("lane", &self.lane).finish()
    }
}

impl Hinted {
    /// [`Auto::submit`] on the hinted lane.
    #[track_caller]
    pub fn submit<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.auto
            .submit_hinted(Some(self.lane), work)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// [`Auto::try_submit`] on the hinted lane.
    #[track_caller]
    pub fn try_submit<F, T>(&self, work: F) -> Result<Task<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.auto.submit_hinted(Some(self.lane), work)
    }

    /// [`Auto::spawn`], every poll on the hinted lane.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let task = auto.cpu().spawn(async { (1..=10u64).sum::<u64>() });
    /// assert_eq!(task.result(), Ok(55));
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.auto
            .spawn_hinted(Some(self.lane), future)
            .unwrap_or_else(|refused| Task::failed(refused.reason().clone()))
    }

    /// [`Auto::map`] on the hinted lane.
    #[track_caller]
    pub fn map<I, F, R>(&self, inputs: I, f: F) -> Map<I::IntoIter, F, R, Hinted>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        Map::new(self.clone(), inputs.into_iter(), f, Location::caller())
    }
}

/// One chunk of a `map`, each item's panic caught in its own slot.
fn chunk<A, F, R>(f: Arc<F>, items: Vec<A>) -> impl FnOnce() -> crate::map::ChunkResults<R>
where
    F: Fn(A) -> R,
{
    move || {
        items
            .into_iter()
            .map(|item| {
                catch_unwind(AssertUnwindSafe(|| f(item)))
                    .map_err(|payload| Error::from_panic(&*payload))
            })
            .collect()
    }
}

impl Auto {
    fn submit_chunk_at<A, F, R>(
        &self,
        hint: Option<Lane>,
        f: &Arc<F>,
        items: Vec<A>,
        location: &'static Location<'static>,
    ) -> Result<Task<crate::map::ChunkResults<R>>, Error>
    where
        A: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(Error::ShutDown);
        }
        let work = chunk(Arc::clone(f), items);
        if !inner.measuring {
            return Ok(match hint {
                Some(Lane::Blocking) => self.to_blocking(None, location, true, work),
                _ => inner.lanes.compute.submit(work),
            });
        }
        Ok(self.route_call(hint, location, work))
    }
}

impl<A, F, R> crate::map::Lane<A, F, R> for Auto
where
    A: Send + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    fn workers(&self) -> usize {
        self.inner.workers
    }

    fn submit_chunk(
        &self,
        f: &Arc<F>,
        items: Vec<A>,
        site: &'static Location<'static>,
    ) -> Result<Task<crate::map::ChunkResults<R>>, Error> {
        self.submit_chunk_at(None, f, items, site)
    }
}

impl<A, F, R> crate::map::Lane<A, F, R> for Hinted
where
    A: Send + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    fn workers(&self) -> usize {
        self.auto.inner.workers
    }

    fn submit_chunk(
        &self,
        f: &Arc<F>,
        items: Vec<A>,
        site: &'static Location<'static>,
    ) -> Result<Task<crate::map::ChunkResults<R>>, Error> {
        self.auto.submit_chunk_at(Some(self.lane), f, items, site)
    }
}
