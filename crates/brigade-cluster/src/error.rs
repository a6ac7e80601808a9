//! What can go wrong before a task exists: connecting, building a worker.

use crate::broker::BrokerError;

/// A client or worker could not be set up.
///
/// ```
/// let err = brigade_cluster::Client::connect("redis://127.0.0.1:1/?queue=q").unwrap_err();
/// assert!(matches!(err, brigade_cluster::ClusterError::Broker(e) if e.is_transient()));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The broker is misconfigured or did not answer.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The worker's local lane could not start.
    #[error("could not start the worker's lane: {0}")]
    Lane(#[from] brigade::BuildError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The operating system refused a thread.
    #[error("could not start a thread: {0}")]
    Thread(String),
    /// A worker has no functions to run.
    #[error("the worker has no functions registered")]
    NoFunctions,
}
