from hypothesis import given, strategies as st

from ingest.ratelimit import RateLimiter


def test_it_allows_a_burst_then_limits():
    rl = RateLimiter(rate_per_s=1, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]


def test_it_refills_over_time():
    rl = RateLimiter(rate_per_s=2, burst=1)
    assert rl.allow("a", 0.0)
    assert not rl.allow("a", 0.1)
    assert rl.allow("a", 0.6)


def test_keys_are_independent():
    rl = RateLimiter(rate_per_s=1, burst=1)
    assert rl.allow("a", 0.0)
    assert not rl.allow("a", 0.0)
    assert rl.allow("b", 0.0)


def test_zero_rate_disables():
    rl = RateLimiter(rate_per_s=0, burst=0)
    assert all(rl.allow("a", 0.0) for _ in range(1000))


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=200))
def test_it_never_allows_more_than_burst_plus_rate_times_elapsed(times):
    times = sorted(times)
    rl = RateLimiter(rate_per_s=5, burst=10)
    allowed = sum(rl.allow("k", t) for t in times)
    assert allowed <= 10 + 5 * (times[-1] - times[0]) + 1e-9
