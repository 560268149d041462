-- barrier.lua (cluster): put a subscription's marker into one partition's
-- log and channel (see ClusterStore.Subscribe).
-- KEYS[1] P{T}log
-- ARGV[1..3] see lib.lua; ARGV[4] the subscription's random token.
emit({ k = 'barrier', b = ARGV[4] })
return 1
