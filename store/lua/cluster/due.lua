-- due.lua: what is due in one partition: sessions, memberships and typing
-- marks whose deadline has passed. Read-only and without lib.lua: the
-- caller reaps each entry with its own call (user_end.lua "reap",
-- room_leave.lua "reap", typing.lua "reap"), which declares that entry's
-- keys and checks again that it is due, so concurrent sweepers on every
-- node make each transition exactly once.
-- KEYS[1] P{T}deadlines   KEYS[2] P{T}mdl   KEYS[3] P{T}tdl
-- ARGV[1] most entries per index.
-- Returns {sessions ("uid sid"), memberships ("room uid sid", deadline ms,
-- ...), typing marks ("room uid")}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
return {
  redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, n),
  redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, n),
  redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, n),
}
