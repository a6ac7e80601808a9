//! [`EventLoop::map_limited`]: an async function over many inputs, a few at a time.

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use super::EventLoop;
use super::gather::gather_results;
use crate::error::Error;

impl EventLoop {
    /// Runs `f` over `inputs` with at most `limit` calls in flight at once, and returns every
    /// outcome in input order; one failure fails only its own slot.
    ///
    /// Inputs are taken from the iterator only as slots free up (a semaphore inside), so an
    /// endless or expensive iterator is fine, and they start in input order (first in, first
    /// out). Each call runs as its own task, spawned from the caller's location for blocking
    /// detection. A `limit` of 0 counts as 1. Dropping the returned future stops taking
    /// inputs; calls already started run on, detached.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// use std::sync::Arc;
    ///
    /// let lp = brigade::EventLoop::new();
    /// let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    /// let (n, m) = (now.clone(), most.clone());
    /// let doubled = lp.block_on(lp.map_limited(3, 1..=10u64, move |x| {
    ///     let (now, most) = (n.clone(), m.clone());
    ///     async move {
    ///         most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
    ///         tokio::task::yield_now().await;
    ///         now.fetch_sub(1, SeqCst);
    ///         x * 2
    ///     }
    /// })).unwrap();
    /// assert_eq!(doubled.len(), 10);
    /// assert_eq!(doubled[9], Ok(20));
    /// assert!(most.load(SeqCst) <= 3);
    /// ```
    #[track_caller]
    pub fn map_limited<I, F, Fut>(
        &self,
        limit: usize,
        inputs: I,
        f: F,
    ) -> impl Future<Output = Vec<Result<Fut::Output, Error>>> + Send + 'static
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        F: FnMut(I::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let site = Location::caller();
        let lp = self.clone();
        let inputs = inputs.into_iter();
        let slots = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
        let mut f = f;
        async move {
            let mut inputs = inputs;
            let mut tasks = Vec::new();
            loop {
                // tokio's semaphore is fair (first in, first out), and the permit comes before
                // the input, so nothing is pulled from the iterator before it can start.
                let permit = Arc::clone(&slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let Some(input) = inputs.next() else { break };
                let call = f(input);
                tasks.push(
                    lp.spawn_at(
                        site,
                        async move {
                            let value = call.await;
                            drop(permit);
                            value
                        },
                        false,
                        false,
                    )
                    .0,
                );
            }
            gather_results(tasks).await
        }
    }
}
