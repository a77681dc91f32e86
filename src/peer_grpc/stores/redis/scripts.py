"""The Lua scripts of the Redis stores: every step that must be atomic, run inside Redis.

redis-py sends each with EVALSHA and loads it on NOSCRIPT. On a Redis Cluster
every script is given keys of one slot only (the sharded layout of
:mod:`peer_grpc.stores.redis.keys`); on one Redis the admission also reaches the
shared indexes under ``{global}``.

Sessions are fenced across a change of primary: each session carries the replication
id (``master_replid``) of the primary that last vouched for it, which changes whenever
a replica takes over or the primary restarts, the moments when acknowledged writes
may be lost. An admission on a primary with another id is refused (FENCED) until the
peer resumes the session, telling the server what it saw acknowledged (RESUME).

Two rules hold throughout:

- Redis hands Lua numbers to commands formatted with 14 significant digits, so
  times travel as the strings Python wrote (exact) and are only compared as
  numbers, never written back from a Lua number.
- Lua numbers are doubles, exact only to 2^53, while sequences go to 2^64-1;
  sequences are therefore split into two 32-bit halves, ``hi`` and ``lo``.
"""

from __future__ import annotations

__all__ = [
    "ADMIT",
    "CLAIM_PEER",
    "CREATE_SESSION",
    "END_SESSION",
    "INDEX_CREATED",
    "INDEX_ENDED",
    "INDEX_ESTABLISHED",
    "INDEX_NEW",
    "NEXT_SEND",
    "RELEASE_PEER",
    "RESUME",
    "SETTLE_CALL",
    "TAKE_TOKEN",
    "TOUCH",
    "TRANSITION",
    "WITHDRAW_NEW",
]

_COMMON = """
local TWO32 = 4294967296
local INITIAL, HANDSHAKE_SENT, ESTABLISHED, TERMINATED, EXPIRED = 1, 2, 3, 4, 5

local function is_final(state) return state == TERMINATED or state == EXPIRED end

-- Why a session in `state`, idle deadline `expires`, takes no call at `now`; nil if it does.
local function ended_reply(state, expires, now)
  if state == EXPIRED or (not is_final(state) and tonumber(now) >= tonumber(expires)) then
    return {'EXPIRED'}
  end
  if is_final(state) then return {'TERMINATED'} end
  return nil
end

-- Milliseconds until a key may vanish: the idle deadline, then the retention.
local function ttl_ms(until_, now, retention)
  local ms = math.floor((tonumber(until_) - tonumber(now) + tonumber(retention)) * 1000)
  if ms < 1 then return 1 end
  return ms
end

-- The session's own keys are the first three: session, calls, order.
local function expire_all(ms)
  for i = 1, math.min(3, #KEYS) do redis.call('PEXPIRE', KEYS[i], ms) end
end

local function int(x) return string.format('%.0f', x) end

-- The replication id of this primary: new whenever a replica took over or the primary
-- restarted, that is whenever writes it acknowledged may have been lost.
local function epoch()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
end

-- The idle deadline, or the session's lifetime end if that comes first (both as
-- the strings Python wrote; a lifetime end of 0, or none, means no lifetime).
local function capped(deadline, lifeend)
  if lifeend and tonumber(lifeend) > 0 and tonumber(lifeend) < tonumber(deadline) then
    return lifeend
  end
  return deadline
end

-- Give accepted call seq its outcome, once, if it is still the admission that ran it.
local function settle(calls, seq, admission, outcome)
  if redis.call('HGET', calls, seq .. ':a') ~= admission then return 0 end
  if redis.call('HEXISTS', calls, seq .. ':o') == 1 then return 0 end
  redis.call('HSET', calls, seq .. ':o', outcome)
  return 1
end
"""

#: KEYS: session, calls, order. ARGV: now, idle deadline, retention, then field/value pairs.
#: Returns 1, or 0 if the id is taken.
CREATE_SESSION = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', epoch(), unpack(ARGV, 4))
expire_all(ttl_ms(ARGV[2], ARGV[1], ARGV[3]))
return 1
"""
)

#: KEYS: session, calls, order. ARGV: target state, now, retention, then every state
#: the target may follow. Returns {'OK', old state, session} | {'NOT_FOUND'} |
#: {'INVALID', state}.
TRANSITION = (
    _COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'NOT_FOUND'} end
state = tonumber(state)
local allowed = false
for i = 4, #ARGV do
  if tonumber(ARGV[i]) == state then allowed = true end
end
if not allowed then return {'INVALID', state} end
local target = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if is_final(target) then
  redis.call('HSET', KEYS[1], 'ended', ARGV[2])
  expire_all(ttl_ms(ARGV[2], ARGV[2], ARGV[3]))
end
return {'OK', state, redis.call('HGETALL', KEYS[1])}
"""
)

#: End a live session. KEYS: session, calls, order. ARGV: now, retention, mode:
#: 'replace' ends it TERMINATED (EXPIRED if its deadline passed), 'due' only if its
#: deadline passed. Returns {'ENDED_NOW', final state, session before} |
#: {'LIVE', idle deadline} | {'ENDED', state} | {'GONE'}.
END_SESSION = (
    _COMMON
    + """
local fields = redis.call('HMGET', KEYS[1], 'state', 'expires')
if not fields[1] then return {'GONE'} end
local state = tonumber(fields[1])
if is_final(state) then return {'ENDED', state} end
local due = tonumber(ARGV[1]) >= tonumber(fields[2])
if ARGV[3] == 'due' and not due then return {'LIVE', fields[2]} end
local final = TERMINATED
if due then final = EXPIRED end
local before = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', final, 'ended', ARGV[1])
expire_all(ttl_ms(ARGV[1], ARGV[1], ARGV[2]))
return {'ENDED_NOW', final, before}
"""
)

#: KEYS: session, calls, order. ARGV: now, idle deadline, retention.
#: Returns {'OK', session} | {'NOT_FOUND'} | {'EXPIRED'} | {'TERMINATED'}.
TOUCH = (
    _COMMON
    + """
local fields = redis.call('HMGET', KEYS[1], 'state', 'expires', 'lifeend')
if not fields[1] then return {'NOT_FOUND'} end
local ended = ended_reply(tonumber(fields[1]), fields[2], ARGV[1])
if ended then return ended end
local deadline = capped(ARGV[2], fields[3])
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'expires', deadline)
expire_all(ttl_ms(deadline, ARGV[1], ARGV[3]))
return {'OK', redis.call('HGETALL', KEYS[1])}
"""
)

#: A peer resumes its session: TOUCH, the session stamped with this primary's epoch
#: (lifting a fence), and its highest accepted sequence moved up to what the peer saw
#: acknowledged, all of the window counted as accepted then. KEYS: session, calls,
#: order. ARGV: now, idle deadline, retention, acknowledged hi, acknowledged lo.
#: Returns as TOUCH.
RESUME = (
    _COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'expires', 'lifeend', 'hi', 'lo', 'window')
if not f[1] then return {'NOT_FOUND'} end
local ended = ended_reply(tonumber(f[1]), f[2], ARGV[1])
if ended then return ended end
local deadline = capped(ARGV[2], f[3])
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'expires', deadline, 'epoch', epoch())
local ahi, alo, hhi, hlo = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(f[4]), tonumber(f[5])
if ahi > hhi or (ahi == hhi and alo > hlo) then
  redis.call('HSET', KEYS[1], 'hi', ARGV[4], 'lo', ARGV[5])
  if tonumber(f[6]) > 0 then
    local ring = redis.call('HGET', KEYS[1], 'ring')
    redis.call('HSET', KEYS[1], 'ring', string.rep('\\255', #ring))
  end
end
expire_all(ttl_ms(deadline, ARGV[1], ARGV[3]))
return {'OK', redis.call('HGETALL', KEYS[1])}
"""
)

#: Admit a received call: the sequence check-and-advance and the retry record, at once.
#: KEYS: session, calls, order, then the shared handshaking and established indexes
#: and the stats hash. ARGV: now, idle deadline, retention, received hi, received lo,
#: received (decimal), call key, admission id, retry record size, the caller's
#: identity, then (sequence, admission id, outcome) of each earlier call of the
#: session whose outcome is still to be written (see SETTLE_CALL).
#: A session is returned as the values of its fields state, expires, hi, lo, window,
#: ident, lifeend, peer, ver, caps, created, last, ended and seqnum, in that order, as
#: they stand after the call: only what a call needs (no token hash, no window ring).
#: Returns one of
#:   {'FORBIDDEN'} (another identity's session; checked first)
#:   {'FENCED'} (the session was last vouched for by another primary: see RESUME)
#:   {'OK', 1 if the session became ESTABLISHED and the indexes are still to be
#:     told (a session from before the 'member' field) else 0, session}
#:   {'RESEND', outcome or '' while the original runs, session}
#:   {'NOT_FOUND'} | {'EXPIRED'} | {'TERMINATED'} | {'INVALID_STATE', state}
#:   {'SEQUENCE', 'GAP' | 'REPLAY', 1 if outside the window else 0, highest hi,
#:     highest lo, window width} (counted in the stats)
#:   {'EXHAUSTED'} (counted in the stats)
ADMIT = (
    _COMMON
    + """
local session, calls, order = KEYS[1], KEYS[2], KEYS[3]
local now, deadline, retention = ARGV[1], ARGV[2], ARGV[3]
local rhi, rlo = tonumber(ARGV[4]), tonumber(ARGV[5])
local seq, call_key, admission = ARGV[6], ARGV[7], ARGV[8]
local cache_size = tonumber(ARGV[9])

-- The outcomes of this session's earlier calls ride on its next admission: settle them
-- first, whatever this admission's fate.
for i = 11, #ARGV, 3 do settle(calls, ARGV[i], ARGV[i + 1], ARGV[i + 2]) end

-- The fields the reply carries, in its order.
local f = redis.call('HMGET', session, 'state', 'expires', 'hi', 'lo', 'window', 'ident',
  'lifeend', 'peer', 'ver', 'caps', 'created', 'last', 'ended', 'seqnum', 'epoch')
if not f[1] then return {'NOT_FOUND'} end
if (f[6] or '') ~= ARGV[10] then return {'FORBIDDEN'} end
local current = epoch()
if not f[15] then
  redis.call('HSET', session, 'epoch', current)  -- written before fences: vouch for it now
elseif f[15] ~= current then
  return {'FENCED'}
end
f[15] = nil
deadline = capped(deadline, f[7])

local function counted_refusal(reply)
  redis.call('HINCRBY', KEYS[6], 'sequence_errors_total', 1)
  return reply
end

-- A call with this sequence and key was accepted before: a resend, not a new call.
local known = redis.call('HMGET', calls, seq, seq .. ':a', seq .. ':o')
if known[1] == call_key then
  if known[2] == admission then
    -- This very admission, sent again by the client library after a lost reply. A
    -- session from before the 'member' field is still to be indexed by the caller.
    local tell_indexes = 0
    if tonumber(f[1]) == ESTABLISHED and redis.call('HEXISTS', session, 'member') == 0 then
      tell_indexes = 1
    end
    return {'OK', tell_indexes, f}
  end
  if known[3] == 'NOT_RUN' then
    -- Admitted once but never served (the admission's reply was lost): run it now.
    redis.call('HSET', calls, seq .. ':a', admission)
    redis.call('HDEL', calls, seq .. ':o')
    f[14] = redis.call('HINCRBY', session, 'seqnum', 1)
    return {'OK', 0, f}
  end
  return {'RESEND', known[3] or '', f}
end

local state = tonumber(f[1])
local ended = ended_reply(state, f[2], now)
if ended then return ended end
if state ~= HANDSHAKE_SENT and state ~= ESTABLISHED then return {'INVALID_STATE', state} end

local hhi, hlo, width = tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
local exhausted = hhi == TWO32 - 1 and hlo == TWO32 - 1
-- received - highest: exact whenever it is small, which is all that is asked of it.
local ahead = (rhi - hhi) * TWO32 + (rlo - hlo)
local ring = nil

if width == 0 then
  if exhausted then return counted_refusal({'EXHAUSTED'}) end
  if ahead ~= 1 then
    local kind = 'REPLAY'
    if ahead > 1 then kind = 'GAP' end
    return counted_refusal({'SEQUENCE', kind, 0, int(hhi), int(hlo), 0})
  end
else
  -- The anti-replay window (peer_grpc.core.window): a ring of bytes, bit s % bits for s.
  ring = redis.call('HGET', session, 'ring')
  local size = #ring
  local bits = size * 8
  local verdict = 'ACCEPT'
  local bit_index = ((rhi % bits) * (TWO32 % bits) + (rlo % bits)) % bits
  if ahead > 0 then
    if ahead > width then verdict = 'AHEAD' end
  elseif -ahead >= width or (rhi == 0 and rlo == 0) then
    verdict = 'BEHIND'
  else
    local byte = string.byte(ring, math.floor(bit_index / 8) + 1)
    if bit.band(byte, bit.lshift(1, bit_index % 8)) ~= 0 then verdict = 'DUPLICATE' end
  end
  if verdict ~= 'ACCEPT' then
    if exhausted then return counted_refusal({'EXHAUSTED'}) end
    if verdict == 'AHEAD' then
      return counted_refusal({'SEQUENCE', 'GAP', 0, int(hhi), int(hlo), width})
    end
    local outside = 0
    if verdict == 'BEHIND' then outside = 1 end
    return counted_refusal({'SEQUENCE', 'REPLAY', outside, int(hhi), int(hlo), width})
  end
  local bytes = {string.byte(ring, 1, size)}
  if ahead > 0 then
    -- Zero the bytes the window moves into, as peer_grpc.core.window does.
    local blocks = (rhi - hhi) * 536870912 + (math.floor(rlo / 8) - math.floor(hlo / 8))
    if blocks >= size then
      for i = 1, size do bytes[i] = 0 end
    else
      local first = ((hhi % size) * (536870912 % size) + math.floor(hlo / 8) + 1) % size
      for k = 0, blocks - 1 do bytes[((first + k) % size) + 1] = 0 end
    end
  end
  local at = math.floor(bit_index / 8) + 1
  bytes[at] = bit.bor(bytes[at], bit.lshift(1, bit_index % 8))
  ring = string.char(unpack(bytes))
end

local new_hi, new_lo = hhi, hlo
if ahead > 0 then new_hi, new_lo = rhi, rlo end
local new_state = state
if state == HANDSHAKE_SENT then new_state = ESTABLISHED end
f[1], f[2], f[3], f[4], f[12] = new_state, deadline, int(new_hi), int(new_lo), now
redis.call('HSET', session, 'state', new_state, 'hi', f[3], 'lo', f[4], 'last', now,
  'expires', deadline)
if ring then redis.call('HSET', session, 'ring', ring) end
f[14] = redis.call('HINCRBY', session, 'seqnum', 1)
if cache_size > 0 then
  redis.call('HSET', calls, seq, call_key, seq .. ':a', admission)
  redis.call('HDEL', calls, seq .. ':o')
  redis.call('RPUSH', order, seq)
  while redis.call('LLEN', order) > cache_size do
    local old = redis.call('LPOP', order)
    redis.call('HDEL', calls, old, old .. ':a', old .. ':o')
  end
end
expire_all(ttl_ms(deadline, now, retention))
local tell_indexes = 0
if state == HANDSHAKE_SENT then
  -- The first call: the session moves to the established index in the same step
  -- (what INDEX_ESTABLISHED does), given its index member.
  local member = redis.call('HGET', session, 'member')
  if member then
    if redis.call('ZREM', KEYS[4], member) == 1 then
      redis.call('ZADD', KEYS[5], deadline, member)
    end
  else
    tell_indexes = 1
  end
end
return {'OK', tell_indexes, f}
"""
)

#: Give an admitted call its outcome, once. KEYS: calls. ARGV: sequence, admission id,
#: outcome. Returns 1 if stored, 0 if the call was forgotten, re-admitted or settled.
SETTLE_CALL = _COMMON + "return settle(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"

#: KEYS: session. Returns the server's next sequence number, or false if no session.
NEXT_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], 'seqnum', 1)
"""

#: A new session in the shared indexes, if there is room for it. KEYS: peers,
#: handshaking, established, stats. ARGV: peer id, session id, member, idle
#: deadline, the most live sessions allowed (0: no limit). Returns {'OK', the
#: peer's previous session id or ''}, or {'FULL'} when the limit is reached and
#: the peer has no session to replace (nothing is indexed then).
INDEX_CREATED = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local limit = tonumber(ARGV[5])
if limit > 0 and not previous
    and redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) >= limit then
  return {'FULL'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('HINCRBY', KEYS[4], 'created_total', 1)
return {'OK', previous or ''}
"""

#: On a Redis Cluster, where the peer's entry lives in another shard than the new
#: session, INDEX_CREATED is split in two (see :mod:`peer_grpc.stores.redis.keys`).
#: A new session in its shard's indexes. KEYS: handshaking, stats. ARGV: member,
#: idle deadline.
INDEX_NEW = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'created_total', 1)
return 1
"""

#: A new session that found no room after all: out of its shard's indexes and gone,
#: uncounted. KEYS: session, calls, order, handshaking, stats. ARGV: member.
WITHDRAW_NEW = """
if redis.call('ZREM', KEYS[4], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'created_total', -1)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""

#: The session becomes its peer's. KEYS: peers (the peer's shard). ARGV: peer id,
#: session id. Returns the peer's previous session id, or ''.
CLAIM_PEER = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return previous or ''
"""

#: The ended session is no longer its peer's, unless another took its place since.
#: KEYS: peers. ARGV: peer id, session id.
RELEASE_PEER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

#: KEYS: handshaking, established. ARGV: member, idle deadline.
INDEX_ESTABLISHED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return 1
"""

#: A session ended, counted once however often this runs. KEYS: handshaking,
#: established, the final state's ZSET, stats, and peers unless the peer's entry
#: lives in another shard (then RELEASE_PEER does that part). ARGV: member, peer id,
#: session id, when to forget it, the final state's name. Returns 1 if counted now.
INDEX_ENDED = """
local was_live = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if KEYS[5] and redis.call('HGET', KEYS[5], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[5], ARGV[2])
end
if was_live == 0 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[5] .. '_total', 1)
return 1
"""

#: Take a token from a bucket that refills at a rate. KEYS: bucket. ARGV: now (seconds),
#: rate (tokens a second), burst. Returns "0" if a token was taken, else the seconds
#: until one will be there (a string: Lua numbers come back as integers).
TAKE_TOKEN = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(held[1]), tonumber(held[2])
if not tokens then tokens, updated = burst, now end
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'updated', ARGV[1])
-- A full bucket needs no key: it goes once it would have refilled.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""
