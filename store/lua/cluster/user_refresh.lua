-- user_refresh.lua: the hot refresh path of a session, a heartbeat or
-- stream refresh that changes nothing but deadlines and the profile. Runs
-- without lib.lua (whose top level would cost about as much as the call).
-- KEYS[1] P{T}u/ID/user   KEYS[2] P{T}u/ID/sess   KEYS[3] P{T}u/ID/ttl/SID
-- KEYS[4] P{T}u/ID/end/SID   KEYS[5] P{T}deadlines
-- ARGV[1] user id; ARGV[2] session id; ARGV[3] name; ARGV[4] avatar;
-- ARGV[5] status ("" keeps the session's); ARGV[6] ttl ms; ARGV[7] room
-- ("" for none); ARGV[8] hold ms of the room's membership (0: an API join);
-- ARGV[9] lastSeen retention ms.
-- Applies the call and returns "gen|rooms", the session instance's gen and
-- its API-joined rooms (space separated: their memberships' deadlines
-- follow the session's, so the caller refreshes them), only when the session exists, is
-- not ended, keeps its status and already has the room with a kind the call
-- keeps (held stays held; an API join of a held room makes it permanent,
-- which the full path does). Otherwise it writes nothing and returns nil.
if redis.call('EXISTS', KEYS[4]) == 1 then return nil end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return nil end
local b1 = string.find(raw, '|', 1, true)
local b2 = string.find(raw, '|', b1 + 1, true)
local status = ARGV[5]
if status ~= '' and status ~= string.sub(raw, 1, b1 - 1) then return nil end
local entries = ' ' .. string.sub(raw, b2 + 1) .. ' '
local room = ARGV[7]
if room ~= '' and not string.find(entries, ' +' .. room .. ' ', 1, true) then
  if tonumber(ARGV[8]) <= 0 or not string.find(entries, ' ~' .. room .. ' ', 1, true) then return nil end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[6])
redis.call('SET', KEYS[3], '1', 'PX', ttl)
redis.call('ZADD', KEYS[5], now + ttl, ARGV[1] .. ' ' .. ARGV[2])
redis.call('HSET', KEYS[1], 'name', ARGV[3], 'avatar', ARGV[4], 'seen', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[9]) + ttl)
local perm = {}
for r in string.gmatch(entries, '%+(%S+)') do perm[#perm + 1] = r end
return string.sub(raw, b1 + 1, b2 - 1) .. '|' .. table.concat(perm, ' ')
