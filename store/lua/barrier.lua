-- barrier.lua: put a marker into the event log and channel. A node that
-- opens a subscription activates it when its dispatcher reaches the marker:
-- since the log and the channel are in publish order, every event published
-- before Subscribe was called comes before it and is not delivered to the
-- new subscription, and every event after it is.
-- KEYS[1] Plog
-- ARGV[1..3] see lib.lua; ARGV[4] the subscription's random token.
emit({ k = 'barrier', b = ARGV[4] })
return 1
