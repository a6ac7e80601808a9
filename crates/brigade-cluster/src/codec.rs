//! What travels through the broker: task frames (function name and version, task id, options,
//! serde-encoded argument) and outcome frames, each one version byte then postcard.
//!
//! The version byte comes first so that a worker or client of another release reads a frame
//! it cannot understand as a typed [`WireError::Codec`] for that one task, never as garbage
//! and never as a crash.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The frame format this build writes and reads.
pub const WIRE_VERSION: u8 = 1;

/// Who submitted a task: chosen at random when a client connects. The client's replies
/// (start notices, outcomes) go to a stream named after it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A task's identity across the cluster: its client and a sequence number within it.
///
/// ```
/// use brigade_cluster::{ClientId, TaskId};
///
/// let id = TaskId { client: ClientId(0xab), seq: 7 };
/// assert_eq!(id.to_string(), "00000000000000ab-7");
/// assert_eq!(TaskId::from_bytes(&id.to_bytes()), Some(id));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The client that submitted it (and receives its outcome).
    pub client: ClientId,
    /// Its number among that client's tasks.
    pub seq: u64,
}

impl TaskId {
    /// Sixteen bytes, big-endian: how start notices pack many ids into one message.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.client.0.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes); `None` unless given 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let (client, seq) = bytes.split_at(8);
        Some(Self {
            client: ClientId(u64::from_be_bytes(client.try_into().ok()?)),
            seq: u64::from_be_bytes(seq.try_into().ok()?),
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:x}", self.client, self.seq)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The per-task options as they travel (see [`Options`](crate::Options)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireOptions {
    pub(crate) retries: u32,
    pub(crate) backoff_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) lease_ms: u64,
    pub(crate) max_deliveries: u32,
    pub(crate) result_ttl_ms: u64,
    /// Latest start, in the broker's clock (ms since the Unix epoch).
    pub(crate) deadline_ms: Option<u64>,
}

/// One task on the wire (after the version byte and the id): what to call, with what, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskFrame {
    pub(crate) function: String,
    pub(crate) version: u32,
    /// 0 for the first run; a retry after a failure runs with the next number.
    pub(crate) attempt: u32,
    pub(crate) options: WireOptions,
    /// The argument, postcard-encoded by the client.
    pub(crate) args: Vec<u8>,
}

/// A task's outcome on the wire (after the version byte and the id): the postcard-encoded
/// result, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeFrame {
    pub(crate) outcome: Result<Vec<u8>, WireError>,
}

/// The same frame, borrowed: what a worker encodes (it encodes exactly as [`OutcomeFrame`]).
#[derive(Debug, Serialize)]
pub(crate) struct OutcomeRef<'a> {
    pub(crate) outcome: Result<&'a [u8], &'a WireError>,
}

/// Why a remote task has no value, as it travels back to the client.
///
/// The client turns it into a [`brigade::Error`] (see [`into_error`](Self::into_error)), so
/// that a cluster task fails like a task of any local pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The function panicked.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The worker runs no function of this name and version.
    #[error("unknown function `{name}` version {version}{}", known_versions(.known))]
    UnknownFunction {
        /// The name asked for.
        name: String,
        /// The version asked for.
        version: u32,
        /// The versions of `name` that the worker has (empty: none).
        known: Vec<u32>,
    },
    /// The argument, the result or a frame could not be encoded or decoded.
    #[error("could not encode or decode the task's data: {message}")]
    Codec {
        /// What the codec reported.
        message: String,
    },
    /// The deadline passed before a worker could start the task (or, on the process lane,
    /// while it ran).
    #[error("the task's deadline passed")]
    DeadlinePassed,
    /// The task was delivered `deliveries` times and never finished: it is in the dead-letter
    /// stream now.
    #[error("dead-lettered after {deliveries} deliveries: {last_error}")]
    DeadLettered {
        /// How many times it was delivered.
        deliveries: u32,
        /// What happened to the last delivery.
        last_error: String,
        /// The process id of the worker that had the last delivery, when known.
        pid: Option<u32>,
        /// The signal that killed the last worker process, when known.
        signal: Option<i32>,
    },
}

fn known_versions(known: &[u32]) -> String {
    if known.is_empty() {
        " (the worker has no function of that name)".to_owned()
    } else {
        let list: Vec<String> = known.iter().map(u32::to_string).collect();
        format!(" (the worker has version {})", list.join(", "))
    }
}

impl WireError {
    /// The [`brigade::Error`] a cluster task fails with.
    ///
    /// The cluster's own reasons have their own variants: an unknown function is
    /// [`UnknownFunction`](brigade::Error::UnknownFunction), a dead letter
    /// [`DeadLettered`](brigade::Error::DeadLettered); a passed deadline is
    /// [`TimedOut`](brigade::Error::TimedOut), a panic [`Panicked`](brigade::Error::Panicked).
    ///
    /// ```
    /// use brigade_cluster::WireError;
    ///
    /// let e = WireError::UnknownFunction { name: "sum".into(), version: 2, known: vec![1] };
    /// assert_eq!(
    ///     e.into_error().to_string(),
    ///     "no worker has function `sum` version 2: \
    ///      unknown function `sum` version 2 (the worker has version 1)"
    /// );
    /// ```
    pub fn into_error(self) -> brigade::Error {
        match self {
            WireError::Panicked { message } => brigade::Error::Panicked { message },
            WireError::Codec { message } => brigade::Error::Codec { message },
            WireError::UnknownFunction {
                ref name, version, ..
            } => brigade::Error::UnknownFunction {
                name: name.clone(),
                version,
                message: self.to_string(),
            },
            WireError::DeadlinePassed => brigade::Error::TimedOut,
            WireError::DeadLettered {
                deliveries,
                last_error,
                ..
            } => brigade::Error::DeadLettered {
                deliveries,
                last: last_error,
            },
        }
    }
}

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The frame was written by a release with another wire format.
    #[error("frame version {found}, this build reads version {WIRE_VERSION}")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Body(String),
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> Self {
        WireError::Codec {
            message: e.to_string(),
        }
    }
}

/// A frame: the version byte, the task id (16 bytes, so that even a frame of another version
/// can be answered), then the body in postcard.
pub(crate) fn encode_frame<T: Serialize>(id: TaskId, body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&id.to_bytes());
    // Frames are plain structs of integers, strings and byte vectors: postcard cannot fail on
    // them except by running out of memory.
    postcard::to_extend(body, out).expect("a frame always encodes")
}

/// Reads a frame written by [`encode_frame`]: its id and body. When the body cannot be read,
/// the error comes with the id if that much was there.
pub(crate) fn decode_frame<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(TaskId, T), (Option<TaskId>, FrameError)> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err((None, FrameError::Empty));
    };
    let id = rest.get(..16).and_then(TaskId::from_bytes);
    if version != WIRE_VERSION {
        return Err((id, FrameError::Version { found: version }));
    }
    let Some(id) = id else {
        return Err((None, FrameError::Body("shorter than a task id".into())));
    };
    postcard::from_bytes(&rest[16..])
        .map(|body| (id, body))
        .map_err(|e| (Some(id), FrameError::Body(e.to_string())))
}

/// The user's argument or result, postcard-encoded.
pub(crate) fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(value).map_err(|e| WireError::Codec {
        message: e.to_string(),
    })
}

/// Decodes a value written by [`encode_value`]; `what` names it in the error.
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(|e| WireError::Codec {
        message: format!("{what}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TaskId = TaskId {
        client: ClientId(u64::MAX),
        seq: 1 << 40,
    };

    fn frame() -> TaskFrame {
        TaskFrame {
            function: "sum".into(),
            version: 3,
            attempt: 1,
            options: WireOptions {
                retries: 2,
                backoff_ms: 100,
                backoff_max_ms: 10_000,
                lease_ms: 30_000,
                max_deliveries: 5,
                result_ttl_ms: 86_400_000,
                deadline_ms: Some(1_700_000_000_000),
            },
            args: encode_value(&(1u64, 2u64)).unwrap(),
        }
    }

    #[test]
    fn a_task_frame_round_trips_and_is_compact() {
        let bytes = encode_frame(ID, &frame());
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode_frame::<TaskFrame>(&bytes).unwrap(), (ID, frame()));
        // Varints keep the everyday frame small: the id and options dominate.
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
    }

    #[test]
    fn every_outcome_round_trips() {
        let outcomes = [
            Ok(vec![1, 2, 3]),
            Err(WireError::Panicked {
                message: "boom".into(),
            }),
            Err(WireError::UnknownFunction {
                name: "f".into(),
                version: 9,
                known: vec![1, 2],
            }),
            Err(WireError::Codec {
                message: "bad".into(),
            }),
            Err(WireError::DeadlinePassed),
            Err(WireError::DeadLettered {
                deliveries: 3,
                last_error: "lease expired".into(),
                pid: Some(42),
                signal: Some(9),
            }),
        ];
        for outcome in outcomes {
            let frame = OutcomeFrame { outcome };
            let back = decode_frame::<OutcomeFrame>(&encode_frame(ID, &frame)).unwrap();
            assert_eq!(back, (ID, frame));
        }
    }

    #[test]
    fn a_borrowed_outcome_encodes_like_an_owned_one() {
        let bytes = vec![1u8, 2, 3];
        let error = WireError::DeadlinePassed;
        for (owned, borrowed) in [
            (Ok(bytes.clone()), Ok(bytes.as_slice())),
            (Err(error.clone()), Err(&error)),
        ] {
            assert_eq!(
                encode_frame(ID, &OutcomeFrame { outcome: owned }),
                encode_frame(ID, &OutcomeRef { outcome: borrowed })
            );
        }
    }

    #[test]
    fn another_version_or_garbage_is_a_typed_error_that_keeps_the_id() {
        let mut bytes = encode_frame(ID, &frame());
        bytes[0] = WIRE_VERSION + 1;
        assert_eq!(
            decode_frame::<TaskFrame>(&bytes),
            Err((
                Some(ID),
                FrameError::Version {
                    found: WIRE_VERSION + 1
                }
            ))
        );
        assert_eq!(
            decode_frame::<TaskFrame>(&[]),
            Err((None, FrameError::Empty))
        );
        assert!(matches!(
            decode_frame::<TaskFrame>(&[WIRE_VERSION, 0xff]),
            Err((None, FrameError::Body(_)))
        ));
        let mut truncated = encode_frame(ID, &frame());
        truncated.truncate(20);
        assert!(matches!(
            decode_frame::<TaskFrame>(&truncated),
            Err((Some(ID), FrameError::Body(_)))
        ));
        let wire: WireError = FrameError::Empty.into();
        assert!(matches!(wire.into_error(), brigade::Error::Codec { .. }));
    }

    #[test]
    fn task_ids_pack_into_sixteen_bytes() {
        assert_eq!(TaskId::from_bytes(&ID.to_bytes()), Some(ID));
        assert_eq!(TaskId::from_bytes(&[0; 15]), None);
    }

    #[test]
    fn remote_failures_map_onto_brigade_errors() {
        assert_eq!(
            WireError::DeadlinePassed.into_error(),
            brigade::Error::TimedOut
        );
        assert_eq!(
            WireError::DeadLettered {
                deliveries: 3,
                last_error: String::new(),
                pid: Some(7),
                signal: Some(9)
            }
            .into_error(),
            brigade::Error::DeadLettered {
                deliveries: 3,
                last: String::new(),
            }
        );
    }
}
