"""The broker's order budget (10/s, 400/min, 5,000/day) as sliding windows in Redis, shared by
every execution replica: no second, minute or day — counted from any instant, as the broker
counts — ever holds more orders than its limit. A caller that finds no room is told how long to
wait, and waits outside any transaction; no order is dropped."""

from __future__ import annotations

import redis

# KEYS[1]: key prefix. ARGV: the three limits. Returns ms to wait (0: counted). Time is Redis's
# own clock, so replicas on machines whose clocks differ still share one budget.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local spans = {1000, 60000, 86400000}
local wait = 0
for i = 1, 3 do
  local key = KEYS[1] .. ':' .. i
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - spans[i])
  if redis.call('ZCARD', key) >= limits[i] then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + spans[i] - now + 1
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
local seq = redis.call('INCR', KEYS[1] .. ':seq')
for i = 1, 3 do
  local key = KEYS[1] .. ':' .. i
  redis.call('ZADD', key, now, now .. ':' .. seq)
  redis.call('PEXPIRE', key, spans[i])
end
return 0
"""


class OrderBudget:
    def __init__(
        self,
        client: redis.Redis,
        per_second: int,
        per_minute: int,
        per_day: int,
        *,
        enabled: bool = True,
        key: str = "exec.budget",
    ) -> None:
        self.client = client
        self.limits = (per_second, per_minute, per_day)
        self.enabled = enabled
        self.key = key
        self._take = client.register_script(_TAKE)

    def try_acquire(self) -> float:
        """Count one order if it fits in every window now (0.0); otherwise count nothing and
        say how many seconds until it would."""
        if not self.enabled:
            return 0.0
        return max(0, int(self._take(keys=[self.key], args=list(self.limits)))) / 1000
