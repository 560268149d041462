-- user_refresh.lua: the hot refresh path of sessions, heartbeats or stream
-- refreshes that change nothing but deadlines and the profile; any number
-- of items of one partition in one call. Runs without lib.lua (whose top
-- level would cost about as much as an item).
-- Item i (from 0) has KEYS[5i+1..5i+5]: P{T}u/ID/user, P{T}u/ID/sess,
-- P{T}u/ID/ttl/SID, P{T}u/ID/end/SID, P{T}deadlines; and ARGV[8i+2..8i+9]:
-- user id; session id; name; avatar; status ("" keeps the session's); ttl
-- ms; room ("" for none); hold ms of the room's membership (0: an API
-- join). ARGV[1] is the lastSeen retention ms.
-- Returns one string per item. An item is applied, and its string is
-- "gen|rooms" (the session instance's gen and its API-joined rooms, space
-- separated: their memberships' deadlines follow the session's, so the
-- caller refreshes them), only when the session exists, is not ended,
-- keeps its status and already has the room with a kind the call keeps
-- (held stays held; an API join of a held room makes it permanent, which
-- the full path does). Otherwise nothing of it is written and its string
-- is "" (the caller runs user_heartbeat.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local out = {}
for i = 0, #KEYS / 5 - 1 do
  local k, a = i * 5, i * 8 + 1
  out[i + 1] = ''
  local raw = redis.call('EXISTS', KEYS[k + 4]) == 0 and redis.call('HGET', KEYS[k + 2], ARGV[a + 2])
  if raw then
    local b1 = string.find(raw, '|', 1, true)
    local b2 = string.find(raw, '|', b1 + 1, true)
    local status, room = ARGV[a + 5], ARGV[a + 7]
    local entries = ' ' .. string.sub(raw, b2 + 1) .. ' '
    local ok = status == '' or status == string.sub(raw, 1, b1 - 1)
    if ok and room ~= '' and not string.find(entries, ' +' .. room .. ' ', 1, true) then
      ok = tonumber(ARGV[a + 8]) > 0 and string.find(entries, ' ~' .. room .. ' ', 1, true) ~= nil
    end
    if ok then
      local ttl = tonumber(ARGV[a + 6])
      redis.call('SET', KEYS[k + 3], '1', 'PX', ttl)
      redis.call('ZADD', KEYS[k + 5], now + ttl, ARGV[a + 1] .. ' ' .. ARGV[a + 2])
      redis.call('HSET', KEYS[k + 1], 'name', ARGV[a + 3], 'avatar', ARGV[a + 4], 'seen', now)
      redis.call('PEXPIRE', KEYS[k + 1], retention + ttl)
      local perm = {}
      for r in string.gmatch(entries, '%+(%S+)') do perm[#perm + 1] = r end
      out[i + 1] = string.sub(raw, b1 + 1, b2 - 1) .. '|' .. table.concat(perm, ' ')
    end
  end
end
return out
