//! Functions by stable name and version: the typed handle both sides share, and the
//! worker's registry of them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brigade::{ProcessPool, Task, ThreadPool};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{WireError, decode_value, encode_value};

/// A function that workers run by name: `name` and `version` travel on the wire, never code.
///
/// Declare it once, in code that both the client and the workers compile (a shared module or
/// crate); the client submits it with an argument of type `A` and gets a
/// [`Task<R>`](brigade::Task), and a worker that [registered](Functions::register) it runs
/// it. Change the version when the argument, the result or the meaning changes: a worker
/// without that version fails the task with a typed error instead of misreading it.
///
/// Arguments and results travel in postcard (serde), which needs types that describe
/// themselves to serde as they are: plain structs, enums, tuples, collections, strings,
/// numbers. `#[serde(untagged)]`, `#[serde(flatten)]` and `serde_json::Value` do not work.
///
/// ```
/// use brigade_cluster::Function;
///
/// fn sum((from, to): (u64, u64)) -> u64 {
///     (from..to).sum()
/// }
///
/// pub const SUM: Function<(u64, u64), u64> = Function::new("sum", 1, sum);
/// assert_eq!((SUM.name(), SUM.version()), ("sum", 1));
/// assert_eq!(SUM.call((0, 4)), 6); // a plain call, here
/// ```
pub struct Function<A, R> {
    name: &'static str,
    version: u32,
    f: fn(A) -> R,
}

impl<A, R> Function<A, R> {
    /// A function named `name`, version `version`, running `f`.
    pub const fn new(name: &'static str, version: u32, f: fn(A) -> R) -> Self {
        Self { name, version, f }
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its version.
    pub const fn version(&self) -> u32 {
        self.version
    }

    /// Runs it here, in this thread.
    pub fn call(&self, arg: A) -> R {
        (self.f)(arg)
    }
}

impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Function<A, R> {}

impl<A, R> fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({} v{})", self.name, self.version)
    }
}

/// How one run of a task ended, as the worker sees it.
#[derive(Debug)]
pub(crate) enum RunOutcome {
    /// The encoded result.
    Value(Vec<u8>),
    /// A failure that is the task's outcome (or, for a panic, a reason to retry).
    Failed(WireError),
    /// The run was lost with the process that ran it (process lane): the delivery failed,
    /// and the task goes back to the queue. `reason` is kept for the dead-letter record.
    Lost {
        reason: String,
        pid: u32,
        signal: Option<i32>,
    },
}

/// Where a worker runs its tasks: brigade's local lanes.
pub(crate) enum Lane {
    Threads(ThreadPool),
    Processes(ProcessPool),
}

/// A running call: cancellable while it waits in the lane's queue.
pub(crate) trait Handle: Send {
    /// Cancels it if it has not started; true when it never will.
    fn cancel(&self) -> bool;
}

impl<T: Send> Handle for Task<T> {
    fn cancel(&self) -> bool {
        Task::cancel(self)
    }
}

/// Called with the outcome and how long the run took (none: it never reached the lane),
/// once, in the thread that ends the run.
pub(crate) type Done = Box<dyn FnOnce(RunOutcome, Option<Duration>) + Send>;

/// A registered function with its types erased.
trait Call: Send + Sync {
    fn call(
        &self,
        lane: &Lane,
        args: Vec<u8>,
        limit: Option<Duration>,
        done: Done,
    ) -> Box<dyn Handle>;
}

struct Typed<A, R> {
    f: fn(A) -> R,
    _types: PhantomData<fn(A) -> R>,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any> (a panic payload that is not a string)".to_owned()
    }
}

impl<A, R> Call for Typed<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn call(
        &self,
        lane: &Lane,
        args: Vec<u8>,
        limit: Option<Duration>,
        done: Done,
    ) -> Box<dyn Handle> {
        let f = self.f;
        match lane {
            Lane::Threads(pool) => {
                // The closure reports its own outcome (a panic included), so the result bytes
                // move to the finisher without a copy.
                let task = pool.submit(move || {
                    let began = Instant::now();
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        let arg: A = decode_value(&args, "argument")?;
                        encode_value(&f(arg))
                    }));
                    let took = began.elapsed();
                    done(
                        match run {
                            Ok(Ok(bytes)) => RunOutcome::Value(bytes),
                            Ok(Err(e)) => RunOutcome::Failed(e),
                            Err(payload) => RunOutcome::Failed(WireError::Panicked {
                                message: panic_message(payload.as_ref()),
                            }),
                        },
                        Some(took),
                    );
                });
                Box::new(task)
            }
            Lane::Processes(pool) => {
                let arg: A = match decode_value(&args, "argument") {
                    Ok(arg) => arg,
                    Err(e) => {
                        done(RunOutcome::Failed(e), None);
                        return Box::new(Finished);
                    }
                };
                let task = match limit {
                    Some(limit) => pool.submit_timeout(f, arg, limit),
                    None => pool.submit(f, arg),
                };
                // The time to the outcome includes the trip to the process and back.
                let began = Instant::now();
                task.add_done_callback(move |outcome| {
                    done(
                        match outcome {
                            Ok(value) => match encode_value(value) {
                                Ok(bytes) => RunOutcome::Value(bytes),
                                Err(e) => RunOutcome::Failed(e),
                            },
                            Err(e) => lane_failure(e),
                        },
                        Some(began.elapsed()),
                    )
                });
                Box::new(task)
            }
        }
    }
}

/// The handle of a call that ended before reaching a lane.
struct Finished;

impl Handle for Finished {
    fn cancel(&self) -> bool {
        false
    }
}

/// What a process-lane failure means for the delivery.
fn lane_failure(e: &brigade::Error) -> RunOutcome {
    use brigade::Error;
    match e {
        Error::Panicked { message } => RunOutcome::Failed(WireError::Panicked {
            message: message.clone(),
        }),
        Error::Codec { message } => RunOutcome::Failed(WireError::Codec {
            message: message.clone(),
        }),
        Error::TimedOut => RunOutcome::Failed(WireError::DeadlinePassed),
        Error::WorkerCrashed { pid, signal, .. } => RunOutcome::Lost {
            reason: e.to_string(),
            pid: *pid,
            signal: *signal,
        },
        // The lane itself is broken or shutting down: the run never happened, someone else
        // should have the task.
        other => RunOutcome::Lost {
            reason: other.to_string(),
            pid: std::process::id(),
            signal: None,
        },
    }
}

/// The functions a worker runs, by name and version.
///
/// ```
/// use brigade_cluster::{Function, Functions};
///
/// fn double(x: u64) -> u64 { 2 * x }
/// fn double_v2(x: i64) -> i64 { 2 * x }
///
/// let functions = Functions::new()
///     .register(&Function::new("double", 1, double))
///     .register(&Function::new("double", 2, double_v2));
/// assert_eq!(functions.len(), 2);
/// assert!(functions.contains("double", 2) && !functions.contains("double", 3));
/// ```
#[derive(Default, Clone)]
pub struct Functions {
    by_name: HashMap<&'static str, BTreeMap<u32, Arc<dyn Call>>>,
}

impl Functions {
    /// No functions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `function` (replacing one of the same name and version).
    pub fn register<A, R>(mut self, function: &Function<A, R>) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.by_name.entry(function.name).or_default().insert(
            function.version,
            Arc::new(Typed {
                f: function.f,
                _types: PhantomData,
            }),
        );
        self
    }

    /// How many name-and-version pairs are registered.
    pub fn len(&self) -> usize {
        self.by_name.values().map(BTreeMap::len).sum()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` version `version` is registered.
    pub fn contains(&self, name: &str, version: u32) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|versions| versions.contains_key(&version))
    }

    /// Whether `name` v`version` can run here, or the typed error saying why not.
    pub(crate) fn check(&self, name: &str, version: u32) -> Result<(), WireError> {
        let versions = self.by_name.get(name);
        match versions.and_then(|v| v.get(&version)) {
            Some(_) => Ok(()),
            None => Err(WireError::UnknownFunction {
                name: name.to_owned(),
                version,
                known: versions
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default(),
            }),
        }
    }

    /// Starts `name` v`version` on `lane`, or says why not.
    pub(crate) fn start(
        &self,
        name: &str,
        version: u32,
        lane: &Lane,
        args: Vec<u8>,
        limit: Option<Duration>,
        done: Done,
    ) -> Result<Box<dyn Handle>, (WireError, Done)> {
        let Some(call) = self.by_name.get(name).and_then(|v| v.get(&version)) else {
            let e = self.check(name, version).expect_err("not registered");
            return Err((e, done));
        };
        Ok(call.call(lane, args, limit, done))
    }
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self
            .by_name
            .iter()
            .flat_map(|(n, v)| v.keys().map(move |v| format!("{n} v{v}")))
            .collect();
        names.sort();
        f.debug_tuple("Functions").field(&names).finish()
    }
}
