"""The broker's order budget (10/s, 400/min, 5,000/day) as one counter set in Redis, shared by
every execution replica. A caller waits for room; no order is ever dropped."""

from __future__ import annotations

import time

import redis

_TAKE = """
local now_ms = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local spans = {1000, 60000, 86400000}
local wait = 0
for i = 1, 3 do
  local window = math.floor(now_ms / spans[i])
  local key = KEYS[1] .. ':' .. i .. ':' .. window
  local used = tonumber(redis.call('GET', key) or '0')
  if used >= limits[i] then
    local w = (window + 1) * spans[i] - now_ms
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 1, 3 do
  local window = math.floor(now_ms / spans[i])
  local key = KEYS[1] .. ':' .. i .. ':' .. window
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, spans[i] * 2)
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

    def acquire(self) -> None:
        """Block until one order fits in every window, then count it."""
        if not self.enabled:
            return
        while True:
            wait_ms = int(self._take(keys=[self.key], args=[int(time.time() * 1000), *self.limits]))
            if wait_ms <= 0:
                return
            time.sleep(min(wait_ms, 1000) / 1000)
