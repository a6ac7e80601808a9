//! `Client::map`: ordered, lazy, bounded in flight.

use std::collections::VecDeque;

use brigade::{Error, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Client;
use crate::function::Function;
use crate::options::Options;

/// The iterator [`Client::map`] returns: one `Result` per input, in input order.
///
/// It reads the input only as it is iterated, keeping at most
/// [`in_flight`](Self::in_flight) tasks submitted and not yet yielded (256 unless set), so an
/// endless input works. Dropping it cancels the tasks no worker has started.
///
/// ```no_run
/// use brigade_cluster::{Client, Function};
///
/// fn square(x: u64) -> u64 { x * x }
/// const SQUARE: Function<u64, u64> = Function::new("square", 1, square);
///
/// let client = Client::connect("redis://127.0.0.1:6379/?queue=jobs")?;
/// let firsts: Vec<u64> = client
///     .map(&SQUARE, 0..)          // endless: only what is consumed is submitted
///     .in_flight(8)
///     .take(5)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(firsts, [0, 1, 4, 9, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "map is lazy: iterate it to run the work"]
pub struct ClusterMap<I, A, R> {
    client: Client,
    f: Function<A, R>,
    inputs: I,
    options: Option<Options>,
    in_flight: usize,
    queue: VecDeque<Task<R>>,
}

impl<I, A, R> ClusterMap<I, A, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    pub(super) fn new(client: Client, f: Function<A, R>, inputs: I) -> Self {
        Self {
            client,
            f,
            inputs,
            options: None,
            in_flight: 256,
            queue: VecDeque::new(),
        }
    }

    /// At most `tasks` submitted and not yet yielded (at least 1).
    pub fn in_flight(mut self, tasks: usize) -> Self {
        self.in_flight = tasks.max(1);
        self
    }

    /// Options for every task of the map (instead of the client's).
    pub fn options(mut self, options: Options) -> Self {
        self.options = Some(options);
        self
    }

    fn fill(&mut self) {
        while self.queue.len() < self.in_flight {
            let Some(arg) = self.inputs.next() else { break };
            let task = match self.options {
                Some(o) => self.client.submit_with(&self.f, arg, o),
                None => self.client.submit(&self.f, arg),
            };
            self.queue.push_back(task);
        }
    }
}

impl<I, A, R> Iterator for ClusterMap<I, A, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        let task = self.queue.pop_front()?;
        Some(task.result())
    }
}

impl<I, A, R> Drop for ClusterMap<I, A, R> {
    fn drop(&mut self) {
        for task in &self.queue {
            task.cancel();
        }
    }
}
