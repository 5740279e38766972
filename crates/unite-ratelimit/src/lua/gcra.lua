-- One rate-limit decision, atomically: GCRA plus escalating penalties.
--
-- KEYS[1]  GCRA state: the theoretical arrival time (TAT), in microseconds
-- KEYS[2]  penalty state: hash { s = strikes, l = last violation, u = blocked until }
--          (both keys share one hash tag, so the script is cluster-safe)
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  burst
-- ARGV[3]  first penalty block, microseconds (0: penalties off)
-- ARGV[4]  longest penalty block, microseconds
-- ARGV[5]  quiet period that forgives one strike, microseconds
-- ARGV[6]  strikes of a streak that get no block
-- ARGV[7]  "now" in microseconds, for tests only; -1 reads the Redis server clock, so every
--          instance sees one time whatever its own clock says
--
-- Returns { allowed (0/1), remaining, reset us, retry after us, strikes, blocked (0/1) }.

local function int(x)
  return string.format('%.0f', x)
end

local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local decay = tonumber(ARGV[5])
local free = tonumber(ARGV[6])
local now = tonumber(ARGV[7])
-- With a test clock, keys must not expire by the real clock before the test is done with them.
local min_ttl_ms = 600000
if now < 0 then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  min_ttl_ms = 1
end
local tau = t * (burst - 1)

local strikes = 0
if base > 0 then
  local p = redis.call('HMGET', KEYS[2], 's', 'l', 'u')
  strikes = tonumber(p[1]) or 0
  local last = tonumber(p[2]) or 0
  local blocked_until = tonumber(p[3]) or 0
  if now < blocked_until then
    local wait = blocked_until - now
    return { 0, 0, wait, wait, strikes, 1 }
  end
  if strikes > 0 then
    strikes = math.max(0, strikes - math.floor(math.max(0, now - last) / decay))
  end
end

local tat = tonumber(redis.call('GET', KEYS[1])) or now
local allow_at = tat - tau
if now >= allow_at then
  local new_tat = math.max(tat, now) + t
  local ttl = math.max(math.ceil((new_tat - now) / 1000), min_ttl_ms)
  redis.call('SET', KEYS[1], int(new_tat), 'PX', int(ttl))
  local remaining = math.floor(math.min(now + tau + t - new_tat, tau + t) / t)
  return { 1, remaining, new_tat - now, 0, strikes, 0 }
end

local retry = allow_at - now
local reset = tat - now
local blocked = 0
if base > 0 then
  strikes = strikes + 1
  local blocked_until = 0
  if strikes > free then
    local block = math.min(base * 2 ^ math.min(strikes - free - 1, 62), cap)
    blocked_until = now + block
    blocked = 1
    retry = math.max(retry, block)
    reset = math.max(reset, retry)
  end
  redis.call('HSET', KEYS[2], 's', int(strikes), 'l', int(now), 'u', int(blocked_until))
  local keep = math.max(blocked_until - now, decay * strikes)
  redis.call('PEXPIRE', KEYS[2], int(math.max(math.ceil(keep / 1000), min_ttl_ms)))
end
return { 0, 0, reset, retry, strikes, blocked }
