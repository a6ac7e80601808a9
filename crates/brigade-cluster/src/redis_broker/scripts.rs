//! The Lua scripts: each runs atomically on the server, so a task is never half finished,
//! half reclaimed or half dead-lettered, whatever dies in between.
//!
//! Every key a script touches is passed in `KEYS` and carries the queue's hash tag
//! (`brigade:{queue}:…`), so the scripts also run on a Redis Cluster slot.
//!
//! Stream entries carry three fields: `p` (the task frame), `l` (lease, ms) and `m` (delivery
//! limit); the scripts read `l` and `m` and never look inside `p`.

use std::sync::LazyLock;

use redis::Script;

/// The scripts, hashed once per process (the `redis` crate sends `EVALSHA` and falls back to
/// loading the script after a server restart emptied its script cache).
pub(super) struct Scripts {
    pub(super) start: Script,
    pub(super) finish: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) retry: Script,
    pub(super) maintain: Script,
    pub(super) dead: Script,
    pub(super) cancel: Script,
    pub(super) requeue: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    start: Script::new(START),
    finish: Script::new(FINISH),
    renew: Script::new(RENEW),
    release: Script::new(RELEASE),
    retry: Script::new(RETRY),
    maintain: Script::new(MAINTAIN),
    dead: Script::new(DEAD),
    cancel: Script::new(CANCEL),
    requeue: Script::new(REQUEUE),
});

/// Announces delivered tasks as started, one message per client, unless a task was
/// cancelled meanwhile: then it is acknowledged and removed, and its flag is 0.
///
/// KEYS: tasks, then per task: its cancel mark, its client's reply stream.
/// ARGV: group, then per task: entry id, 16-byte task id, reply stream lifetime (ms).
const START: &str = r#"
local n = (#KEYS - 1) / 2
local go, started, order, ttl = {}, {}, {}, {}
for i = 1, n do
  local cancel, reply = KEYS[2 * i], KEYS[2 * i + 1]
  local entry, id = ARGV[3 * i - 1], ARGV[3 * i]
  if redis.call('EXISTS', cancel) == 1 then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    go[i] = 0
  else
    go[i] = 1
    if started[reply] == nil then
      started[reply] = {}
      table.insert(order, reply)
    end
    table.insert(started[reply], id)
    ttl[reply] = ARGV[3 * i + 1]
  end
end
for _, reply in ipairs(order) do
  redis.call('XADD', reply, '*', 's', table.concat(started[reply]))
  redis.call('PEXPIRE', reply, ttl[reply])
end
return go
"#;

/// Stores outcomes, first writer wins (`SET NX` with the result lifetime); only the winner
/// tells the client. Then acknowledges and removes the entries. Returns how many outcomes
/// were stored.
///
/// KEYS: tasks, last-error hash, then per task: result key, reply stream.
/// ARGV: group, then per task: entry id, lifetime (ms), outcome frame.
const FINISH: &str = r#"
local n = (#KEYS - 2) / 2
local stored = 0
for i = 1, n do
  local result, reply = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local entry, ttl, outcome = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  if redis.call('SET', result, outcome, 'NX', 'PX', ttl) then
    redis.call('XADD', reply, '*', 'r', outcome)
    redis.call('PEXPIRE', reply, ttl)
    stored = stored + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
  redis.call('HDEL', KEYS[2], entry)
end
return stored
"#;

/// Renews leases: resets the idle time of each entry the worker still owns (`XCLAIM` to
/// itself with `JUSTID`, which does not count a delivery). Returns the entries it lost.
///
/// KEYS: tasks. ARGV: group, worker, entry ids.
const RENEW: &str = r#"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#;

/// Gives entries back: hands them to a placeholder owner with an idle time past any lease,
/// so the next maintenance pass of any worker takes them, and sets their delivery count.
///
/// KEYS: tasks, last-error hash. ARGV: group, placeholder owner, then per entry: id,
/// delivery count, reason (empty: none).
const RELEASE: &str = r#"
for i = 3, #ARGV, 3 do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i],
    'IDLE', 1000000000, 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
  if ARGV[i + 2] ~= '' then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
return 1
"#;

/// Removes a failed run and schedules the task again: a sorted set scored by due time (the
/// server's clock), member `lease .. ' ' .. limit .. ' ' .. frame`.
///
/// KEYS: tasks, delayed set, last-error hash. ARGV: group, entry id, delay (ms), member.
const RETRY: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
"#;

/// One maintenance pass:
/// 1. queues the retries that are due;
/// 2. walks the pending entries idle for at least the smallest lease: an entry deleted
///    meanwhile (cancelled) is acknowledged; one idle past its own lease is claimed for the
///    caller (`XCLAIM`, which counts a delivery) if it has deliveries left, or else claimed
///    without counting (`JUSTID`, so no other worker takes it too) and reported expired.
///
/// A lease only runs while the server is up: idle time is counted from the server's start at
/// the earliest (its uptime, passed in). Otherwise a restart that took longer than a lease
/// would make every leased task look abandoned, and the first worker back would take tasks
/// their live owners are still running. Tasks given back (owned by the placeholder) are
/// taken at once.
///
/// KEYS: tasks, delayed set, last-error hash.
/// ARGV: group, worker, smallest lease (ms), most entries to scan, most retries to queue,
///       most entries to claim, server uptime (ms), the placeholder owner of given-back tasks.
/// Returns {promoted, {{id, deliveries, frame, lease, limit}...},
///          {{id, deliveries, owner, frame, lease, limit, last error}...}}.
const MAINTAIN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local promoted = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, m in ipairs(due) do
  local a = string.find(m, ' ', 1, true)
  local b = string.find(m, ' ', a + 1, true)
  redis.call('XADD', KEYS[1], '*', 'p', string.sub(m, b + 1),
    'l', string.sub(m, 1, a - 1), 'm', string.sub(m, a + 1, b - 1))
  redis.call('ZREM', KEYS[2], m)
  promoted = promoted + 1
end
local claimed, expired = {}, {}
local start, scanned = '-', 0
local max_scan, max_claim, uptime = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
while scanned < max_scan and #claimed + #expired < max_claim do
  local batch = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), start, '+', 100)
  if #batch == 0 then break end
  for _, p in ipairs(batch) do
    scanned = scanned + 1
    local id, owner, idle, n = p[1], p[2], tonumber(p[3]), tonumber(p[4])
    start = '(' .. id
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('HDEL', KEYS[3], id)
    elseif #claimed + #expired < max_claim then
      local f = e[1][2]
      local frame, lease, limit = '', 0, 1
      for j = 1, #f, 2 do
        if f[j] == 'p' then frame = f[j + 1]
        elseif f[j] == 'l' then lease = tonumber(f[j + 1])
        elseif f[j] == 'm' then limit = tonumber(f[j + 1]) end
      end
      if owner == ARGV[8] or math.min(idle, uptime) >= lease then
        if n >= limit then
          redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
          local last = redis.call('HGET', KEYS[3], id)
          if not last then last = '' end
          table.insert(expired, {id, n, owner, frame, lease, limit, last})
        else
          redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], lease, id)
          table.insert(claimed, {id, n + 1, frame, lease, limit})
        end
      end
    end
  end
  if #batch < 100 then break end
end
return {promoted, claimed, expired}
"#;

/// Dead-letters a task: records it in the dead-letter stream, stores its failure outcome
/// (first wins) and tells its client, then acknowledges and removes the entry.
///
/// KEYS: tasks, dead stream, result key, reply stream, last-error hash.
/// ARGV: group, entry id, frame, deliveries, reason, worker, lifetime (ms), outcome frame,
///       lease, delivery limit.
const DEAD: &str = r#"
redis.call('XADD', KEYS[2], '*', 'p', ARGV[3], 'l', ARGV[9], 'm', ARGV[10],
  'n', ARGV[4], 'reason', ARGV[5], 'worker', ARGV[6])
if redis.call('SET', KEYS[3], ARGV[8], 'NX', 'PX', ARGV[7]) then
  redis.call('XADD', KEYS[4], '*', 'r', ARGV[8])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
return 1
"#;

/// Cancels a task that has no outcome: marks it (a worker checks the mark before starting
/// it) and removes its entry, so a worker that has not fetched it never sees it.
///
/// KEYS: tasks, result key, cancel mark. ARGV: entry id, mark lifetime (ms).
const CANCEL: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
if ARGV[1] ~= '' then redis.call('XDEL', KEYS[1], ARGV[1]) end
return 1
"#;

/// Puts a dead letter back in the queue with a fresh delivery count and forgets its failure
/// outcome; 0 if it was no longer in the dead-letter stream.
///
/// KEYS: tasks, dead stream, result key. ARGV: dead entry id, frame, lease, limit.
const REQUEUE: &str = r#"
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 'l', ARGV[3], 'm', ARGV[4])
return 1
"#;
