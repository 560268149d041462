-- refresh_fast.lua: fast.lua's refresh_fast alone, for one Heartbeat or Join
-- (see fast.lua). KEYS and ARGV as heartbeat.lua's.
-- Returns 1 when the refresh was applied, 0 when the caller must run
-- heartbeat.lua instead (nothing was written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if refresh_fast(KEYS, 0, ARGV, 3, now) then return 1 end
return 0
