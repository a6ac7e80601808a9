//! Reading Redis's answers: stream entries, script results, `XINFO`.

use redis::Value;

use super::GROUP;
use crate::broker::{
    BrokerError, DeadEntry, Delivery, EntryId, Expired, Maintenance, QueueStatus, Reply,
    WorkerStatus,
};
use crate::codec::TaskId;

/// Transient failures (a dropped connection, a server still loading its data after a
/// restart) are [`BrokerError::Connection`]: the caller reconnects and tries again.
pub(super) fn map_err(e: redis::RedisError) -> BrokerError {
    const TRANSIENT: [&str; 6] = [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "READONLY",
    ];
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.code().is_some_and(|c| TRANSIENT.contains(&c))
    {
        BrokerError::Connection(e.to_string())
    } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
        BrokerError::Config(e.to_string())
    } else {
        BrokerError::Protocol(e.to_string())
    }
}

pub(super) fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

pub(super) fn protocol(what: &str, v: &Value) -> BrokerError {
    BrokerError::Protocol(format!("unexpected answer to {what}: {v:?}"))
}

pub(super) fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn string(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// A flat `[field, value, …]` list, or a RESP3 map, as pairs.
pub(super) fn pairs(v: Value) -> Option<Vec<(String, Value)>> {
    match v {
        Value::Map(m) => m.into_iter().map(|(k, v)| Some((string(k)?, v))).collect(),
        other => {
            let items = array(other)?;
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((string(k)?, v));
            }
            Some(out)
        }
    }
}

/// A stream entry's `p`, `l` and `m` fields.
pub(super) fn task_fields(fields: Value) -> Option<(Vec<u8>, u64, u32)> {
    let (mut frame, mut lease, mut limit) = (None, None, None);
    for (k, v) in pairs(fields)? {
        match k.as_str() {
            "p" => frame = bytes(v),
            "l" => lease = int(&v).and_then(|l| u64::try_from(l).ok()),
            "m" => limit = int(&v).and_then(|m| u32::try_from(m).ok()),
            _ => {}
        }
    }
    Some((frame?, lease?, limit?))
}

/// The entries of an `XREAD`/`XREADGROUP` answer (`[[stream, [[id, fields], …]], …]`, or nil
/// when the wait ran out), as `(id, fields)`.
fn read_entries(reply: &Value, what: &str) -> Result<Vec<(String, Value)>, BrokerError> {
    let bad = || protocol(what, reply);
    let mut out = Vec::new();
    for stream in array(reply.clone()).ok_or_else(bad)? {
        let entries = match stream {
            Value::Array(mut kv) if kv.len() == 2 => kv.pop().and_then(array),
            // RESP3 answers with a map of stream to entries.
            other => pairs(other)
                .and_then(|mut p| p.pop())
                .and_then(|(_, v)| array(v)),
        }
        .ok_or_else(bad)?;
        out.extend(range_entries_of(entries, reply, what)?);
    }
    Ok(out)
}

/// The entries of an `XRANGE` answer (`[[id, fields], …]`).
fn range_entries(reply: &Value, what: &str) -> Result<Vec<(String, Value)>, BrokerError> {
    let entries = array(reply.clone()).ok_or_else(|| protocol(what, reply))?;
    range_entries_of(entries, reply, what)
}

fn range_entries_of(
    entries: Vec<Value>,
    reply: &Value,
    what: &str,
) -> Result<Vec<(String, Value)>, BrokerError> {
    let bad = || protocol(what, reply);
    entries
        .into_iter()
        .map(|entry| {
            let [id, fields]: [Value; 2] = array(entry)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?;
            Ok((string(id).ok_or_else(bad)?, fields))
        })
        .collect()
}

/// New tasks from `XREADGROUP` (first deliveries).
pub(super) fn deliveries(reply: &Value) -> Result<Vec<Delivery>, BrokerError> {
    Ok(read_entries(reply, "XREADGROUP")?
        .into_iter()
        // An entry deleted after it was delivered (cancelled) reads with nil fields.
        .filter_map(|(id, fields)| {
            let (frame, lease_ms, max_deliveries) = task_fields(fields)?;
            Some(Delivery {
                entry: EntryId(id),
                deliveries: 1,
                frame,
                lease_ms,
                max_deliveries,
            })
        })
        .collect())
}

/// A client's messages from `XREAD`; moves `cursor` past them.
pub(super) fn replies(reply: &Value, cursor: &mut String) -> Result<Vec<Reply>, BrokerError> {
    let mut out = Vec::new();
    for (id, fields) in read_entries(reply, "XREAD")? {
        *cursor = id;
        for (k, v) in pairs(fields).unwrap_or_default() {
            match (k.as_str(), bytes(v)) {
                ("r", Some(frame)) => out.push(Reply::Outcome(frame)),
                ("s", Some(ids)) => out.push(Reply::Started(
                    ids.chunks_exact(16)
                        .filter_map(TaskId::from_bytes)
                        .collect(),
                )),
                _ => {}
            }
        }
    }
    Ok(out)
}

fn number<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    int(v).and_then(|n| T::try_from(n).ok())
}

/// The maintenance script's answer (see `scripts::MAINTAIN`).
pub(super) fn maintenance(reply: &Value) -> Result<Maintenance, BrokerError> {
    let bad = || protocol("maintain", reply);
    let [promoted, claimed, expired]: [Value; 3] = array(reply.clone())
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let mut out = Maintenance {
        promoted: number(&promoted).ok_or_else(bad)?,
        ..Maintenance::default()
    };
    let delivery = |id: Value, n: &Value, frame: Value, lease: &Value, limit: &Value| {
        Some(Delivery {
            entry: EntryId(string(id)?),
            deliveries: number(n)?,
            frame: bytes(frame)?,
            lease_ms: number(lease)?,
            max_deliveries: number(limit)?,
        })
    };
    for c in array(claimed).ok_or_else(bad)? {
        let [id, n, frame, lease, limit]: [Value; 5] =
            array(c).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        out.reclaimed
            .push(delivery(id, &n, frame, &lease, &limit).ok_or_else(bad)?);
    }
    for e in array(expired).ok_or_else(bad)? {
        let [id, n, owner, frame, lease, limit, last]: [Value; 7] =
            array(e).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let last = string(last).unwrap_or_default();
        out.expired.push(Expired {
            delivery: delivery(id, &n, frame, &lease, &limit).ok_or_else(bad)?,
            last_worker: string(owner).unwrap_or_default(),
            last_error: (!last.is_empty()).then_some(last),
        });
    }
    Ok(out)
}

/// `XINFO GROUPS` and `XINFO CONSUMERS` of the queue, with its dead and delayed counts.
pub(super) fn status(
    queue: &str,
    groups: &Value,
    consumers: &Value,
    dead: u64,
    delayed: u64,
) -> Result<QueueStatus, BrokerError> {
    let mut status = QueueStatus {
        queue: queue.to_owned(),
        dead,
        delayed,
        ..QueueStatus::default()
    };
    let count = |v: &Value| int(v).unwrap_or(0).max(0) as u64;
    for g in array(groups.clone()).ok_or_else(|| protocol("XINFO GROUPS", groups))? {
        let fields = pairs(g).ok_or_else(|| protocol("XINFO GROUPS", groups))?;
        if !fields
            .iter()
            .any(|(k, v)| k == "name" && string(v.clone()).as_deref() == Some(GROUP))
        {
            continue;
        }
        for (k, v) in fields {
            match k.as_str() {
                "pending" => status.pending = count(&v),
                "lag" => status.waiting = count(&v),
                _ => {}
            }
        }
    }
    for c in array(consumers.clone()).ok_or_else(|| protocol("XINFO CONSUMERS", consumers))? {
        let mut w = WorkerStatus {
            name: String::new(),
            pending: 0,
            idle_ms: 0,
        };
        for (k, v) in pairs(c).ok_or_else(|| protocol("XINFO CONSUMERS", consumers))? {
            match k.as_str() {
                "name" => w.name = string(v).unwrap_or_default(),
                "pending" => w.pending = count(&v),
                "idle" => w.idle_ms = count(&v),
                _ => {}
            }
        }
        status.workers.push(w);
    }
    Ok(status)
}

/// Dead letters from `XRANGE` on the dead-letter stream.
pub(super) fn dead_entries(reply: &Value) -> Result<Vec<DeadEntry>, BrokerError> {
    let bad = || protocol("XRANGE", reply);
    let mut out = Vec::new();
    for (id, fields) in range_entries(reply, "XRANGE")? {
        // The entry id's first part is the server's clock when it was added.
        let at_ms = id
            .split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
            .unwrap_or(0);
        let mut d = DeadEntry {
            entry: EntryId(id),
            frame: Vec::new(),
            deliveries: 0,
            reason: String::new(),
            worker: String::new(),
            at_ms,
            lease_ms: 0,
            max_deliveries: 1,
        };
        for (k, v) in pairs(fields).ok_or_else(bad)? {
            match k.as_str() {
                "p" => d.frame = bytes(v).unwrap_or_default(),
                "n" => d.deliveries = number(&v).unwrap_or(0),
                "reason" => d.reason = string(v).unwrap_or_default(),
                "worker" => d.worker = string(v).unwrap_or_default(),
                "l" => d.lease_ms = number(&v).unwrap_or(0),
                "m" => d.max_deliveries = number::<u32>(&v).unwrap_or(1).max(1),
                _ => {}
            }
        }
        out.push(d);
    }
    Ok(out)
}
