-- refresh_fast.lua: fast.lua's refresh_fast alone (see fast.lua), for one or
-- several Heartbeat or Join calls: the node's coalescer sends the fast tries
-- of the calls that share a round trip as one call of this script
-- (redis_coalesce.go), so the script's fixed cost is paid once for them.
-- KEYS[7i+1..7i+7] item i's keys (i from 0), as heartbeat.lua's KEYS[1..7];
-- ARGV[1..3] see lib.lua; ARGV[13i+4..13i+16] item i's arguments, as
-- heartbeat.lua's ARGV[4..16]. (One item is exactly heartbeat.lua's layout.)
-- Returns one number per item: 1 when its refresh was applied, 0 when its
-- caller must run heartbeat.lua instead (nothing was written for it).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 0, #KEYS / 7 - 1 do
  out[i + 1] = refresh_fast(KEYS, i * 7, ARGV, 3 + i * 13, now) and 1 or 0
end
return out
