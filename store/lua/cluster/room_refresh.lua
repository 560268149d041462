-- room_refresh.lua: the hot refresh of sessions' memberships of rooms; any
-- number of items of one partition in one call. Runs without lib.lua.
-- Item i (from 0) has KEYS[2i+1..2i+2]: P{T}r/ROOM/ms, P{T}mdl; and
-- ARGV[4i+1..4i+4]: "uid sid"; room; hold ms (0: the membership is an API
-- join); the session's ttl ms.
-- Returns one number per item: 1 when the membership exists with the kind
-- the call keeps and its deadline moved (now+hold if held, now+ttl if
-- permanent), 0 otherwise (nothing written: the caller runs room_join.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local k, a = i * 2, i * 4
  out[i + 1] = 0
  local v = redis.call('HGET', KEYS[k + 1], ARGV[a + 1])
  if v then
    local d = tonumber(ARGV[a + 4])
    if string.sub(v, 1, 1) == '~' then d = tonumber(ARGV[a + 3]) end
    -- d <= 0: an API join of a held membership, which room_join makes permanent.
    if d > 0 then
      redis.call('ZADD', KEYS[k + 2], now + d, ARGV[a + 2] .. ' ' .. ARGV[a + 1])
      out[i + 1] = 1
    end
  end
end
return out
