"""Token buckets keyed by check and by client address: one runaway fleet gets 429s,
the others keep pinging. Time is passed in, so the limiter is pure and testable."""

from __future__ import annotations


class RateLimiter:
    """``rate_per_s`` tokens a second, up to ``burst``; ``rate_per_s == 0`` disables it."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._evict_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def retry_after_s(self) -> int:
        return max(1, int(1 / self.rate + 0.999)) if self.rate > 0 else 0

    def _evict_full(self, now: float) -> None:
        # Buckets that have refilled carry no information: forget them to bound memory.
        full = [k for k, (t, u) in self._buckets.items() if t + (now - u) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()
