-- One rate-limit decision, atomically: GCRA plus escalating penalties.
--
-- KEYS[1]  the key's state, one string:
--            "<tat>"                             an integer: no penalty to remember
--            "<tat>:<strikes>:<last>:<until>"    a violation streak
--          tat = theoretical arrival time, last = last violation, until = blocked until; all
--          in microseconds on the Redis server's clock.
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  tau = T × (burst − 1), microseconds
-- ARGV[3]  now, microseconds since the Unix epoch on the Redis server's clock: the caller keeps
--          its offset to that clock, so every instance sees one time whatever its own clock
--          says; -1 reads the clock here (TIME)
-- ARGV[4]  decisions wanted (a reservation; 1 otherwise): as many as the budget has, at most
--          this, are granted. Refused (a violation) only when not even one is left.
-- ARGV[5]  "<first block> <longest block> <quiet period> <free strikes> <shortest ttl>":
--          penalties (first block 0: off), in microseconds and strikes; the shortest expiry in
--          milliseconds (1; longer under a test clock, so keys outlive the test by the real
--          clock). Parsed only by the decisions that need it.
--
-- Reply: when everything wanted was granted and no streak is left to report (the common case),
-- one integer, the reset in microseconds; otherwise
-- { granted (0 = refused), remaining, reset us, retry after us, strikes, blocked (0/1) }.
--
-- The common case costs GET and INCRBY: the plain state is an integer moved in place, which
-- keeps its expiry. That expiry is the end of the second after the one the arrival time is in
-- (never before the arrival time, after which a missing key means the same as the stored one),
-- so it moves only when the arrival time enters a new second. Every write of a plain state
-- keeps to this rule, whatever the quota.
--
-- Numbers are passed to redis.call as Lua numbers: they are whole and far below 2^53, and
-- Redis writes a whole number without a fraction or an exponent.

local SECOND = 1000000
local t, tau, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want = math.max(tonumber(ARGV[4]) or 1, 1)
if now < 0 then
  local time = redis.call('TIME')
  now = time[1] * SECOND + time[2]
end

local stored = redis.call('GET', KEYS[1])
local tat = tonumber(stored)
local plain = tat ~= nil and tat == tat
-- Set by an allowed decision on a plain state whose write is not finished: 'set' (the value
-- is not an integer Redis adds to, e.g. "1.5") or 'expire' (a new second: a new expiry).
local unfinished, granted, new_tat
-- Set when the stored arrival time was more than a second further ahead than the quota allows
-- (more than instances' readings of the clock can differ), and brought back.
local clamped = false
if plain then
  local old = tat
  if tat > now + tau + t then
    -- Further ahead than this quota ever leaves it (the quota was lowered, or the server
    -- clock went back): as far ahead as this quota allows.
    clamped = tat > now + tau + t + SECOND
    tat = now + tau + t
  end
  if now >= tat - tau then
    -- Allowed, with no streak to read or keep: the state moves in place.
    local from = math.max(tat, now)
    granted = math.min(want, math.floor((now + tau - from) / t) + 1)
    new_tat = from + t * granted
    if type(redis.pcall('INCRBY', KEYS[1], new_tat - old)) == 'table' then
      unfinished = 'set'
    elseif math.floor(new_tat / SECOND) ~= math.floor(old / SECOND) then
      unfinished = 'expire'
    elseif granted == want then
      return new_tat - now
    end
  end
end

-- Everything else: the settings, and the functions that use them.
local base, longest, decay, free, min_ttl_ms = string.match(ARGV[5], '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
base, longest, decay, free, min_ttl_ms =
  tonumber(base), tonumber(longest), tonumber(decay), tonumber(free), tonumber(min_ttl_ms)

-- The expiry rule of a plain state (see above), in milliseconds from now.
local function plain_ttl(tat_)
  return math.max(math.ceil(((math.floor(tat_ / SECOND) + 2) * SECOND - now) / 1000), min_ttl_ms)
end

-- The reply to an allowed decision.
local function allowed(granted_, new_tat_, strikes_)
  if granted_ == want and strikes_ == 0 then
    return new_tat_ - now
  end
  local remaining = math.floor(math.min(now + tau + t - new_tat_, tau + t) / t)
  return { granted_, remaining, new_tat_ - now, 0, strikes_, 0 }
end

local strikes, last, blocked_until = 0, 0, 0
if new_tat then
  if unfinished == 'set' then
    redis.call('SET', KEYS[1], new_tat, 'PX', plain_ttl(new_tat))
  elseif unfinished == 'expire' then
    redis.call('PEXPIRE', KEYS[1], plain_ttl(new_tat))
  end
  return allowed(granted, new_tat, 0)
elseif not plain then
  tat = nil
  if stored then
    local a, s, l, u = string.match(stored, '^(%d+):(%d+):(%d+):(%d+)$')
    tat = tonumber(a)
    if tat then
      strikes, last, blocked_until = tonumber(s), tonumber(l), tonumber(u)
      if tat > now + tau + t then
        clamped = tat > now + tau + t + SECOND
        tat = now + tau + t
      end
      if blocked_until > now + longest then
        blocked_until = now + longest
      end
    end
  end
  -- No key, or not a state this script wrote: start afresh rather than fail every decision.
  tat = tat or now
end

-- Writes the arrival time with a violation streak, kept until `keep_until`, and never for less
-- than the plain rule gives the arrival time (a margin for a caller's reading of the clock).
local function store_streak(tat_, strikes_, last_, until_, keep_until)
  redis.call('SET', KEYS[1], string.format('%.0f:%d:%.0f:%.0f', tat_, strikes_, last_, until_),
    'PX', math.max(math.ceil((keep_until - now) / 1000), plain_ttl(tat_)))
end

local left = 0
if strikes > 0 and base > 0 then
  if now < blocked_until then
    local wait = blocked_until - now
    return { 0, 0, wait, wait, strikes, 1 }
  end
  left = math.max(0, strikes - math.floor(math.max(0, now - last) / decay))
end

local allow_at = tat - tau
if now >= allow_at then
  local from = math.max(tat, now)
  granted = math.min(want, math.floor((now + tau - from) / t) + 1)
  new_tat = from + t * granted
  if left > 0 then
    -- The streak is remembered (as it was written: decay counts from the last violation)
    -- until it has fully decayed.
    local keep_until = math.max(new_tat, blocked_until, last + decay * strikes)
    store_streak(new_tat, strikes, last, blocked_until, keep_until)
  else
    redis.call('SET', KEYS[1], new_tat, 'PX', plain_ttl(new_tat))
  end
  return allowed(granted, new_tat, left)
end

local retry = allow_at - now
local reset = tat - now
if base == 0 then
  if clamped then
    -- Penalties are off, so a refusal writes nothing, but an arrival time brought back from
    -- far ahead must be kept: otherwise such a value (or one without an expiry) would refuse
    -- the key forever. A small overshoot, another instance's clock reading slightly ahead, is
    -- left as it is, so refusals do not move the budget.
    redis.call('SET', KEYS[1], tat, 'PX', plain_ttl(tat))
  end
  return { 0, 0, reset, retry, 0, 0 }
end
left = left + 1
local blocked = 0
local until_ = 0
if left > free then
  local block = math.min(base * 2 ^ math.min(left - free - 1, 62), longest)
  until_ = now + block
  blocked = 1
  retry = math.max(retry, block)
  reset = math.max(reset, retry)
end
local keep_until = math.max(tat, until_, now + decay * left)
store_streak(tat, left, now, until_, keep_until)
return { 0, 0, reset, retry, left, blocked }
