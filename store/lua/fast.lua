-- fast.lua: the hot refresh path, a heartbeat or stream refresh that changes
-- nothing but deadlines. Defines refresh_fast; it comes before lib.lua, in
-- the FUNCTION library and in every EVALSHA script (heartbeat_one tries it
-- first). As EVALSHA it also makes, alone, the refresh_fast.lua script the
-- store tries before heartbeat.lua (without lib.lua, whose top level EVALSHA
-- runs on every call and costs about as much as the refresh itself).
--
-- K[ko+1..ko+7] and A[ao+1..ao+13] are heartbeat.lua's KEYS and ARGV[4..16]; A
-- is the whole ARGV (A[2] the lastSeen retention: see lib.lua).
-- It applies the call and returns true only when the call can change no
-- state but deadlines and the profile: the session exists and is not ended,
-- its status stays, no metadata, and the room (if any) is already joined
-- and keeps its kind (held stays held; an API join of a held membership,
-- which makes it permanent, is not fast). Otherwise it writes nothing and
-- returns false, and the caller runs the full heartbeat.
--
-- It neither rewrites the session record nor emits: the deadlines move in
-- the indexes (Pdeadlines, Pmember-deadlines), which the reapers read, and
-- in the TTL key. 4 or 5 O(1)/O(log n) commands.
local function refresh_fast(K, ko, A, ao, now)
  if A[ao + 6] == '1' then return false end -- metadata replaces: full path
  -- No EXISTS of the EndSession tombstone (K[ko+6]): a session with a
  -- record has none. end_session.lua sets it and deletes the record in one
  -- script, and only a client call, which deletes the tombstone in the same
  -- script, writes the record again (a stream refresh is refused while it
  -- stands). So a missing record is the only case the tombstone decides,
  -- and that one takes the full path.
  local raw = redis.call('HGET', K[ko + 2], A[ao + 2])
  if not raw then return false end
  -- The record is read as cjson wrote it (no spaces, ids never escaped:
  -- validate.go allows only A-Z a-z 0-9 _ - . : @) instead of decoded:
  -- cjson.decode alone costs about as much as all the commands below.
  -- Each needle can match only what it looks for: the status is the one
  -- string value after a key ("s":"…"); a room of r is an array element
  -- ([ or , before it, ] or , after); a held room is a key of h, which the
  -- top-level keys s, d, r and h could be mistaken for, so those four room
  -- names take the full path.
  local status = A[ao + 5]
  if status ~= '' and not string.find(raw, '"s":"' .. status .. '"', 1, true) then return false end
  local room = A[ao + 9]
  local hold = tonumber(A[ao + 12])
  local held = false
  if room ~= '' then
    if room == 's' or room == 'd' or room == 'r' or room == 'h' then return false end
    local q = '"' .. room .. '"'
    if not (string.find(raw, '[' .. q .. ']', 1, true) or string.find(raw, '[' .. q .. ',', 1, true)
        or string.find(raw, ',' .. q .. ']', 1, true) or string.find(raw, ',' .. q .. ',', 1, true)) then
      return false
    end
    held = (string.find(raw, '{' .. q .. ':', 1, true) or string.find(raw, ',' .. q .. ':', 1, true)) ~= nil
    if held and hold <= 0 then return false end -- becomes permanent: full path
  end
  local uid, sid = A[ao + 1], A[ao + 2]
  local ttl = tonumber(A[ao + 8])
  -- The user record's expiry is not moved here: every PEXPIRE of it (the
  -- full heartbeat's, remove_session's) sets at least now + retention, so
  -- it outlives the record's last full write ("!w", which no room id can
  -- be mistaken for: validate.go allows no "!") by the retention. While
  -- that is more than half a retention past this session's deadline the
  -- refresh is fast; after, the full heartbeat writes both again. A record
  -- without "!w" (written before it existed) moves the expiry as it did.
  local w = tonumber(string.match(raw, '"!w":(%d+)'))
  local retention = tonumber(A[2])
  if w and now + ttl >= w + retention / 2 then return false end
  redis.call('SET', K[ko + 3], '1', 'PX', ttl)
  redis.call('ZADD', K[ko + 4], now + ttl, uid .. ' ' .. sid)
  if held then redis.call('ZADD', K[ko + 7], now + hold, uid .. ' ' .. sid .. ' ' .. room) end
  redis.call('HSET', K[ko + 1], 'name', A[ao + 3], 'avatar', A[ao + 4], 'seen', now)
  if not w then redis.call('PEXPIRE', K[ko + 1], retention + ttl) end
  return true
end
