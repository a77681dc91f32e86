"""The Lua scripts of the Redis task store and its queue: each is one atomic step.

Every script gets the counts hash as ``KEYS[1]`` and the start of every task key
(``<prefix>:{tasks}:``) as ``ARGV[1]``, and builds the other keys from it; all of
them carry the ``{tasks}`` hash tag, so they live in one slot.

A task's snapshot is a stream entry whose fields are the snapshot as JSON
(``task``, written by Python) and the fields scripts read or set without parsing
JSON: ``state``, ``attempt``, ``max_attempts``, ``session``, ``owner``,
``ordinal``, ``entry`` (its queue entry), ``runner``, and, where a script changed
the task, ``updated_at``, ``error_code`` and ``error_message``. Those fields win
over the JSON when the snapshot is read (see
:func:`peer_grpc.stores.redis.task_queue.decode_snapshot`).
Lua writes no JSON of its own: cjson would round the times.

Queue scripts are resent by redis-py after a timeout although the first send may
have run. DELEGATE and MOVE recognise their own effect; RENEW and RECLAIM are safe
to run twice; what a lost answer claimed (DELEGATE, CLAIM) its runner never
learned of, and RENEW gives such claims back to the queue, unrun.
"""

from __future__ import annotations

__all__ = ["CLAIM", "DELEGATE", "HAND_BACK", "MOVE", "RECLAIM", "RENEW", "SWEEP", "pack"]

#: What joins the small arguments of a script into one (see ``split`` in the Lua).
_SEPARATOR = "\x1f"


def pack(*arguments: object) -> str:
    """The small arguments of a script as one: each argument costs redis-py time to
    encode. None of them may hold the unit separator (ids, numbers and names do not)."""
    return _SEPARATOR.join(str(argument) for argument in arguments)


#: What every task script shares. States: 1 SUBMITTED, 2 WORKING, 7 INPUT_REQUIRED (a
#: runner holds it as it holds a WORKING one), 3 to 6 final.
_LIB = """
local P = ARGV[1]
local COUNTS = KEYS[1]
local QUEUE = P .. 'queue'
local GROUP = 'runners'

-- The small arguments of a script, sent as one (each argument costs the client time to
-- encode): joined by the unit separator, which JSON never holds unescaped.
local function split(packed)
  local parts, start = {}, 1
  while true do
    local at = string.find(packed, '\\31', start, true)
    if not at then
      parts[#parts + 1] = string.sub(packed, start)
      return parts
    end
    parts[#parts + 1] = string.sub(packed, start, at - 1)
    start = at + 1
  end
end

local function fields_of(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end

local function flat_of(f)
  local flat = {}
  for name, value in pairs(f) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  return flat
end

-- Whether a runner holds a task in this state (a string, as stored): WORKING, or
-- INPUT_REQUIRED, its handler waiting for an answer.
local function held_state(state)
  return state == '2' or state == '7'
end

-- Whether a state (a number) is final.
local function final(state)
  return state >= 3 and state <= 6
end

-- Snapshots kept per task, about (Redis trims whole nodes of a stream): progress
-- reports add one each, and a watcher further behind skips to the oldest kept.
local KEEP_SNAPSHOTS = 64

-- The latest snapshot of a task: its version and fields, or nil if there is no task.
local function latest(id)
  local last = redis.call('XREVRANGE', P .. 'task:' .. id, '+', '-', 'COUNT', 1)[1]
  if not last then return nil end
  return tonumber(string.match(last[1], '^(%d+)-')), fields_of(last[2])
end

-- A task that ended keeps the snapshots of its state changes (and its last) only: its
-- progress reports, each carrying the partial result of its time, go.
local function prune_reports(key)
  if redis.call('XLEN', key) <= 8 then return end
  local entries = redis.call('XRANGE', key, '-', '+')
  local previous = nil
  for i, entry in ipairs(entries) do
    local state = fields_of(entry[2]).state
    if i < #entries and state == previous then redis.call('XDEL', key, entry[1]) end
    previous = state
  end
end

-- Append a snapshot. A finished task is kept `keep_ms`; an unfinished one (keep_ms nil)
-- until it ends, since its counts and indexes may only change in step with it.
local function append(id, version, f, keep_ms)
  local key = P .. 'task:' .. id
  redis.call('XADD', key, 'MAXLEN', '~', KEEP_SNAPSHOTS, version .. '-0', unpack(flat_of(f)))
  -- No TTL is ever set on an unfinished task, so there is none to take off.
  if keep_ms then
    prune_reports(key)
    redis.call('PEXPIRE', key, keep_ms)
  end
end

local function forget_entry(entry)
  if entry and entry ~= '' then
    redis.call('XACK', QUEUE, GROUP, entry)
    redis.call('XDEL', QUEUE, entry)
  end
end

-- Tell idle runners that a task waits: they block on this small stream, not on the
-- queue, so that a task claimed in the step that queued it wakes nobody.
local function wake()
  redis.call('XADD', P .. 'wake', 'MAXLEN', '~', 64, '*', 'w', '')
end

local function last_wake()
  local last = redis.call('XREVRANGE', P .. 'wake', '+', '-', 'COUNT', 1)[1]
  if last then return last[1] end
  return '0-0'
end

local function ensure_group()
  redis.pcall('XGROUP', 'CREATE', QUEUE, GROUP, '0', 'MKSTREAM')
end

-- A group command's answer, or `empty` when there is no group yet (none was ever made,
-- or Redis lost it): nothing is pending then, and creating it each time would count an
-- error (BUSYGROUP) in Redis's statistics on every call.
local function in_group(empty, ...)
  local answer = redis.pcall(...)
  if type(answer) == 'table' and answer.err then return empty end
  return answer
end

-- XREADGROUP; the group is made on first use (and again after Redis lost it), which
-- costs nothing while it exists, unlike creating it every time.
local function read_group(runner, count)
  local read = redis.pcall('XREADGROUP', 'GROUP', GROUP, runner, 'COUNT', count,
                           'STREAMS', QUEUE, '>')
  if type(read) == 'table' and read.err then
    ensure_group()
    read = redis.call('XREADGROUP', 'GROUP', GROUP, runner, 'COUNT', count,
                      'STREAMS', QUEUE, '>')
  end
  if not read then return {} end
  return read[1][2]
end

-- Keep the counts and indexes in step with a task's move from state `old` to `new`.
local function account(id, f, old, new, now, retention)
  -- A task waiting for input holds its running slot.
  if old == 7 then old = 2 end
  if new == 7 then new = 2 end
  if old == new then return end
  if old == 1 then redis.call('HINCRBY', COUNTS, 'queued', -1)
  elseif old == 2 then
    redis.call('HINCRBY', COUNTS, 'running', -1)
    -- A running slot freed: runners that had no room may claim a waiting task now.
    if tonumber(redis.call('HGET', COUNTS, 'queued') or '0') > 0 then wake() end
  end
  if new == 1 then redis.call('HINCRBY', COUNTS, 'queued', 1)
  elseif new == 2 then redis.call('HINCRBY', COUNTS, 'running', 1) end
  if final(new) and not final(old) then
    redis.call('SREM', P .. 'open:' .. f.session, id)
    forget_entry(f.entry)
    redis.call('ZADD', P .. 'ended', tonumber(now) + tonumber(retention), id)
  end
end

-- Take up to `wanted` queued tasks for `runner`, within the running limit the front
-- ends set. Each becomes WORKING with its next attempt; its queue entry stays in the
-- runner's pending list, where its idle time is the runner's lease.
local function claim(runner, wanted, now)
  local held = redis.call('HMGET', COUNTS, 'max_running', 'running')
  local room = wanted
  if held[1] then room = math.min(wanted, tonumber(held[1]) - (tonumber(held[2]) or 0)) end
  local claims, gone = {}, 0
  while room > 0 do
    local asked = room
    local entries = read_group(runner, asked)
    for _, entry in ipairs(entries) do
      local queued = fields_of(entry[2])
      local version, f = latest(queued.task)
      if version and f.state == '1' and f.entry == entry[1] then
        f.state = '2'
        f.attempt = tostring(tonumber(f.attempt) + 1)
        f.runner = runner
        f.updated_at = now
        append(queued.task, version + 1, f, nil)
        claims[#claims + 1] = {(version + 1) .. '-0', flat_of(f), queued.payload}
        room = room - 1
      else
        -- Ended while it waited (its end forgot the entry already), or deleted from
        -- under its counts by hand.
        forget_entry(entry[1])
        if not version then gone = gone + 1 end
      end
    end
    if #entries < asked then break end  -- nothing more waits
  end
  if #claims + gone > 0 then redis.call('HINCRBY', COUNTS, 'queued', -(#claims + gone)) end
  if #claims > 0 then redis.call('HINCRBY', COUNTS, 'running', #claims) end
  return claims
end

-- A WORKING task's runner is gone: queue it again if it has attempts left, else end
-- it `end_state` with `code`. Returns 'REQUEUED', 'ENDED' or nil (it was not running).
local function lose(id, entry, now, retention, end_state, code, message)
  local version, f = latest(id)
  if not version or not held_state(f.state) or f.entry ~= entry then
    forget_entry(entry)
    return nil
  end
  if tonumber(f.attempt) < tonumber(f.max_attempts) then
    local payload = fields_of(redis.call('XRANGE', QUEUE, entry, entry)[1][2]).payload
    forget_entry(entry)
    f.entry = redis.call('XADD', QUEUE, '*', 'task', id, 'payload', payload)
    f.state = '1'
    f.runner = ''
    f.updated_at = now
    append(id, version + 1, f, nil)
    redis.call('HINCRBY', COUNTS, 'running', -1)
    redis.call('HINCRBY', COUNTS, 'queued', 1)
    return 'REQUEUED'
  end
  f.state = end_state
  f.updated_at = now
  f.error_code = code
  f.error_message = message
  append(id, version + 1, f, math.max(math.floor(tonumber(retention) * 1000), 1))
  account(id, f, 2, tonumber(end_state), now, retention)
  return 'ENDED'
end

-- A claimed entry whose runner never learned of it (the reply to its claim was lost, or
-- the claim was cut short): the task never ran, so it goes back to the queue with its
-- attempt given back. Returns whether it did.
local function unclaim(entry, now)
  local queued = redis.call('XRANGE', QUEUE, entry, entry)[1]
  if not queued then
    redis.call('XACK', QUEUE, GROUP, entry)
    return false
  end
  local item = fields_of(queued[2])
  local version, f = latest(item.task)
  forget_entry(entry)
  -- Never run by this claim's runner, so never past WORKING.
  if not version or f.state ~= '2' or f.entry ~= entry then return false end
  f.entry = redis.call('XADD', QUEUE, '*', 'task', item.task, 'payload', item.payload)
  f.state = '1'
  f.attempt = tostring(tonumber(f.attempt) - 1)
  f.runner = ''
  f.updated_at = now
  append(item.task, version + 1, f, nil)
  redis.call('HINCRBY', COUNTS, 'running', -1)
  redis.call('HINCRBY', COUNTS, 'queued', 1)
  wake()
  return true
end
"""

#: Store a task and, if SUBMITTED, enqueue it, within the limits; optionally claim
#: queued tasks for the delegating replica's own runner in the same step.
#: ARGV: prefix, task JSON, payload JSON, then packed (see :func:`pack`): task id, state,
#: max_attempts, session, owner, retention s, now, max running
#: (0: no limits), max per session, max queued, runner ('' claims nothing), tasks to
#: claim at most. Returns {'OK', ordinal, claims} | {'SESSION_LIMIT'} | {'SERVER_LIMIT'}
#: | {'COLLISION'}.
DELEGATE = (
    _LIB
    + """
local id, state_text, max_attempts, session, owner, retention, now, max_running,
      max_per_session, max_queued, runner, wanted = unpack(split(ARGV[4]))
local state = tonumber(state_text)
local first = redis.call('XRANGE', P .. 'task:' .. id, '-', '+', 'COUNT', 1)[1]
if first then
  -- This very call sent again after its reply was lost finds its own task: done. What
  -- it claimed then, its runner never learned of: the runner's next renewal gives it back.
  local stored = fields_of(first[2])
  if stored.task == ARGV[2] then return {'OK', tonumber(stored.ordinal), {}} end
  return {'COLLISION'}
end
local held = redis.call('HMGET', COUNTS, 'queued', 'running', 'max_running')
local queued = tonumber(held[1]) or 0
max_running = tonumber(max_running)
if max_running > 0 then
  if redis.call('SCARD', P .. 'open:' .. session) >= tonumber(max_per_session) then
    return {'SESSION_LIMIT'}
  end
  if queued + (tonumber(held[2]) or 0) >= max_running + tonumber(max_queued) then
    return {'SERVER_LIMIT'}
  end
  if tonumber(held[3]) ~= max_running then
    redis.call('HSET', COUNTS, 'max_running', max_running)
  end
end
local ordinal = redis.call('INCR', P .. 'ordinal')
local f = {task = ARGV[2], state = state_text, attempt = '0', max_attempts = max_attempts,
           session = session, owner = owner, ordinal = tostring(ordinal)}
local keep = nil
if state == 1 then
  f.entry = redis.call('XADD', QUEUE, '*', 'task', id, 'payload', ARGV[3])
  redis.call('SADD', P .. 'open:' .. session, id)
  redis.call('HINCRBY', COUNTS, 'queued', 1)
elseif final(state) then
  keep = math.max(math.floor(tonumber(retention) * 1000), 1)
  redis.call('ZADD', P .. 'ended', tonumber(now) + tonumber(retention), id)
end
append(id, 1, f, keep)
redis.call('ZADD', P .. 'owned:' .. owner, ordinal, id)
local claims = {}
if runner ~= '' then claims = claim(runner, tonumber(wanted), now) end
if state == 1 and queued + 1 - #claims > 0 then wake() end
return {'OK', ordinal, claims}
"""
)

#: Claim queued tasks for a runner. ARGV: prefix, runner, tasks at most, now.
#: Returns {the last wake id, claims}, a claim being {snapshot entry id, snapshot fields,
#: payload JSON}: a runner that claimed nothing waits for a wake after that id.
CLAIM = (
    _LIB
    + """
-- Sent again after its reply was lost, it claims afresh: what the first send claimed,
-- the runner never learned of, and its next renewal gives back.
return {last_wake(), claim(ARGV[2], tonumber(ARGV[3]), ARGV[4])}
"""
)

#: Append a snapshot that Python computed from the version it follows, if the task is
#: still at it; with a fence (the queue entry of a claim), only if that claim still
#: holds the task. Entries are new at every claim, so a fence never repeats.
#: ARGV: prefix, task JSON, then packed: task id, the version it follows, new state, new
#: attempt, fence ('' for none), now, retention s.
#: Returns 'OK' | 'GONE' | 'CONFLICT' | 'LOST'.
MOVE = (
    _LIB
    + """
local id, follows, state, attempt, fence, now, retention = unpack(split(ARGV[3]))
local version, f = latest(id)
if not version then return 'GONE' end
if version ~= tonumber(follows) then
  -- This very move sent again after its reply was lost finds itself on top: done.
  if version == tonumber(follows) + 1 and f.task == ARGV[2] then return 'OK' end
  return 'CONFLICT'
end
if fence ~= '' and (not held_state(f.state) or f.entry ~= fence) then return 'LOST' end
local moved = {task = ARGV[2], state = state, attempt = attempt,
               max_attempts = f.max_attempts, session = f.session, owner = f.owner,
               ordinal = f.ordinal, entry = f.entry, runner = f.runner}
local keep = nil
if final(tonumber(state)) then keep = math.max(math.floor(tonumber(retention) * 1000), 1) end
append(id, version + 1, moved, keep)
account(id, moved, tonumber(f.state), tonumber(state), now, retention)
return 'OK'
"""
)

#: Renew a runner's leases, all in one step, and give back what it holds unknowingly.
#: ARGV: prefix, runner, orphan idle ms, now, then pairs of task id and lease (its
#: queue entry).
#: Returns {ids of the tasks the runner no longer holds (ended, canceled, or taken from
#: it after its lease lapsed), how many entries it held unknowingly}: entries claimed
#: for it that it has not renewed for the orphan idle time (half a lease), which it
#: never learned of, go back to the queue.
RENEW = (
    _LIB
    + """
local runner, orphan_idle, now, lost = ARGV[2], ARGV[3], ARGV[4], {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local version, f = latest(id)
  if version and held_state(f.state) and f.entry == ARGV[i + 1] and f.runner == runner then
    in_group({}, 'XCLAIM', QUEUE, GROUP, runner, 0, f.entry, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
local orphans = 0
for _, pending in ipairs(in_group({}, 'XPENDING', QUEUE, GROUP, 'IDLE', orphan_idle, '-', '+',
                                  100, runner)) do
  if unclaim(pending[1], now) then orphans = orphans + 1 end
end
return {lost, orphans}
"""
)

#: Take over the tasks whose lease lapsed (idle in the pending list longer than the
#: lease): queue each again or end it FAILED WORKER_LOST. ARGV: prefix, reclaimer,
#: lease ms, entries at most, now, retention s, the cursor to scan the pending list
#: from, whether to forget consumers idle an hour with nothing pending ('1' or '0').
#: Returns {requeued, ended, the cursor to go on from ('0-0': scanned to the end)}.
RECLAIM = (
    _LIB
    + """
local taken = in_group({'0-0', {}}, 'XAUTOCLAIM', QUEUE, GROUP, ARGV[2], ARGV[3], ARGV[7],
                       'COUNT', ARGV[4], 'JUSTID')
local requeued, ended = 0, 0
for _, entry in ipairs(taken[2]) do
  local queued = redis.call('XRANGE', QUEUE, entry, entry)[1]
  if queued then
    local outcome = lose(fields_of(queued[2]).task, entry, ARGV[5], ARGV[6], '4',
      'WORKER_LOST', 'the process running the task stopped renewing its lease')
    if outcome == 'REQUEUED' then requeued = requeued + 1
    elseif outcome == 'ENDED' then ended = ended + 1 end
  else
    forget_entry(entry)
  end
end
if requeued > 0 then wake() end
if ARGV[8] == '1' then
  for _, consumer in ipairs(in_group({}, 'XINFO', 'CONSUMERS', QUEUE, GROUP)) do
    local c = fields_of(consumer)
    if tonumber(c.pending) == 0 and tonumber(c.idle) > 3600000 then
      redis.call('XGROUP', 'DELCONSUMER', QUEUE, GROUP, c.name)
    end
  end
end
return {requeued, ended, taken[1]}
"""
)

#: A stopping runner hands back the tasks it still holds: queued again if they have
#: attempts left, else CANCELED SHUTDOWN; entries claimed for it that it never learned
#: of go back to the queue as if never claimed. Then it leaves the consumer group.
#: ARGV: prefix, runner, now, retention s, then the ids of the tasks it holds.
#: Returns how many tasks it handed back.
HAND_BACK = (
    _LIB
    + """
local handed = 0
for i = 5, #ARGV do
  local version, f = latest(ARGV[i])
  if version and held_state(f.state) and f.runner == ARGV[2] then
    local outcome = lose(ARGV[i], f.entry, ARGV[3], ARGV[4], '5', 'SHUTDOWN',
                         'the worker stopped before the task finished')
    if outcome then handed = handed + 1 end
    if outcome == 'REQUEUED' then wake() end
  end
end
for _, pending in ipairs(in_group({}, 'XPENDING', QUEUE, GROUP, '-', '+', 1000, ARGV[2])) do
  if unclaim(pending[1], ARGV[3]) then handed = handed + 1 end
end
-- Leaving the group drops the consumer's pending entries: only once it has none, or
-- a task still WORKING would lose the entry that lets anyone reclaim it.
if #in_group({1}, 'XPENDING', QUEUE, GROUP, '-', '+', 1, ARGV[2]) == 0 then
  in_group({}, 'XGROUP', 'DELCONSUMER', QUEUE, GROUP, ARGV[2])
end
return handed
"""
)

#: Forget finished tasks past their retention. ARGV: prefix, now, at most.
#: Returns how many were due.
SWEEP = (
    _LIB
    + """
local due = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  local version, f = latest(id)
  if version then
    redis.call('ZREM', P .. 'owned:' .. f.owner, id)
    redis.call('DEL', P .. 'task:' .. id)
  end
  redis.call('ZREM', P .. 'ended', id)
end
return #due
"""
)
