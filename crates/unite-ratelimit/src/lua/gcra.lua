-- One rate-limit decision, atomically: GCRA plus escalating penalties.
--
-- KEYS[1]  the key's state, one string:
--            "<tat>"                             no penalty to remember
--            "<tat>:<strikes>:<last>:<until>"    a violation streak
--          tat = theoretical arrival time, last = last violation, until = blocked until; all
--          in microseconds. One key, so a decision is TIME + GET + at most one SET.
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  burst
-- ARGV[3]  first penalty block, microseconds (0: penalties off)
-- ARGV[4]  longest penalty block, microseconds
-- ARGV[5]  quiet period that forgives one strike, microseconds
-- ARGV[6]  strikes of a streak that get no block
-- ARGV[7]  "now" in microseconds, for tests only; -1 reads the Redis server clock, so every
--          instance sees one time whatever its own clock says
-- ARGV[8]  decisions wanted (a reservation; default 1); as many as the budget has, at most
--          this, are granted. Refused (a violation) only when not even one is left.
--
-- Returns { granted (0 = refused), remaining, reset us, retry after us, strikes, blocked (0/1) }.
--
-- Numbers are passed to redis.call as Lua numbers: they are whole and far below 2^53, and
-- Redis writes a whole number without a fraction or an exponent.

local t = tonumber(ARGV[1])
local tau = t * (tonumber(ARGV[2]) - 1)
local base = tonumber(ARGV[3])
local now = tonumber(ARGV[7])
-- With a test clock, keys must not expire by the real clock before the test is done with them.
local min_ttl_ms = 600000
if now < 0 then
  local time = redis.call('TIME')
  now = time[1] * 1000000 + time[2]
  min_ttl_ms = 1
end

-- Stores the arrival time with a violation streak, kept until `keep_until`.
local function store_streak(tat_, strikes_, last_, until_, keep_until)
  redis.call('SET', KEYS[1], string.format('%.0f:%d:%.0f:%.0f', tat_, strikes_, last_, until_),
    'PX', math.max(math.ceil((keep_until - now) / 1000), min_ttl_ms))
end

local tat, strikes, last, blocked_until = now, 0, 0, 0
local state = redis.call('GET', KEYS[1])
if state then
  tat = tonumber(state)
  if not tat then
    local a, s, l, u = string.match(state, '^(%d+):(%d+):(%d+):(%d+)$')
    tat = tonumber(a)
    if tat then
      strikes, last, blocked_until = tonumber(s), tonumber(l), tonumber(u)
    end
  end
  if not tat then
    -- Not a state this script wrote: start afresh rather than fail every decision.
    tat, strikes, last, blocked_until = now, 0, 0, 0
  elseif tat > now + tau + t then
    -- Further ahead than this quota ever leaves it (the quota was lowered, or the server
    -- clock went back): as far ahead as this quota allows, the streak kept.
    tat = now + tau + t
  end
  if blocked_until > now + tonumber(ARGV[4]) then
    blocked_until = now + tonumber(ARGV[4])
  end
end

local decay = 1
local left = 0
if strikes > 0 and base > 0 then
  if now < blocked_until then
    local wait = blocked_until - now
    return { 0, 0, wait, wait, strikes, 1 }
  end
  decay = tonumber(ARGV[5])
  left = math.max(0, strikes - math.floor(math.max(0, now - last) / decay))
end

local allow_at = tat - tau
if now >= allow_at then
  local from = math.max(tat, now)
  local granted = math.min(math.max(tonumber(ARGV[8]) or 1, 1), math.floor((now + tau - from) / t) + 1)
  local new_tat = from + t * granted
  local remaining = math.floor(math.min(now + tau + t - new_tat, tau + t) / t)
  if left > 0 then
    -- The streak is remembered (as it was written: decay counts from the last violation)
    -- until it has fully decayed.
    local keep_until = math.max(new_tat, blocked_until, last + decay * strikes)
    store_streak(new_tat, strikes, last, blocked_until, keep_until)
  else
    redis.call('SET', KEYS[1], new_tat, 'PX', math.max(math.ceil((new_tat - now) / 1000), min_ttl_ms))
  end
  return { granted, remaining, new_tat - now, 0, left, 0 }
end

local retry = allow_at - now
local reset = tat - now
if base == 0 then
  return { 0, 0, reset, retry, 0, 0 }
end
decay = tonumber(ARGV[5])
left = left + 1
local blocked = 0
local until_ = 0
if left > tonumber(ARGV[6]) then
  local block = math.min(base * 2 ^ math.min(left - tonumber(ARGV[6]) - 1, 62), tonumber(ARGV[4]))
  until_ = now + block
  blocked = 1
  retry = math.max(retry, block)
  reset = math.max(reset, retry)
end
local keep_until = math.max(tat, until_, now + decay * left)
store_streak(tat, left, now, until_, keep_until)
return { 0, 0, reset, retry, left, blocked }
