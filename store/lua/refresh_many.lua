-- refresh_many.lua: several RefreshStreams items in one call, for a Redis
-- that holds all their keys (a single primary): heartbeat_one per item, in
-- item order, exactly as that many heartbeat.lua calls in "stream" mode.
-- KEYS[7i+1..7i+7] item i's keys (i from 0), as heartbeat.lua's KEYS[1..7].
-- ARGV[1..3] see lib.lua; ARGV[13i+4..13i+16] item i's arguments, as
-- heartbeat.lua's ARGV[4..16].
-- Returns one string per item: "" when refreshed, else its refusal.
local out = {}
for i = 0, #KEYS / 7 - 1 do
  local to, refusal = heartbeat_one(KEYS, i * 7, ARGV, 3 + i * 13)
  out[i + 1] = refusal or ''
end
return out
