"""RateLimiter on a clock the test moves: bursts, refill, debt, whose bucket, forgetting buckets,
and the rate syntax of --rate-limit (server/service/rate_limits.py)."""

from __future__ import annotations

import pytest

from server.service import ResourceExhausted
from server.service import rate_limits as rate_limits_module
from server.service.api_keys import Scope
from server.service.rate_limits import RATE_LIMITED, Rate, RateLimiter, parse_rates


class Clock:
    """A monotonic clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> RateLimiter:
    """10 ingest items/s (a bucket of 20), 1 read item/s (a bucket of 2), admin unlimited."""
    return RateLimiter({Scope.INGEST: Rate(10.0), Scope.READ: Rate(1.0)}, clock)


def taken(limiter: RateLimiter, caller: str, scope: Scope | None, cost: int = 1) -> bool:
    """Whether the limiter let `cost` items through."""
    return limiter.wait_seconds(caller, scope, cost) == 0.0


def test_a_new_caller_gets_two_seconds_of_the_rate_at_once(limiter: RateLimiter) -> None:
    granted = [taken(limiter, "k", Scope.INGEST) for _ in range(25)]

    assert granted == [True] * 20 + [False] * 5


def test_a_refusal_says_how_long_until_one_whole_item_is_back(
    limiter: RateLimiter, clock: Clock
) -> None:
    for _ in range(20):
        limiter.take("k", Scope.INGEST, 1)
    delay = limiter.wait_seconds("k", Scope.INGEST, 1)
    again = limiter.wait_seconds("k", Scope.INGEST, 1)  # a refusal takes nothing
    clock.advance(delay)

    assert delay == pytest.approx(0.1)
    assert again == delay
    assert taken(limiter, "k", Scope.INGEST)


def test_the_bucket_refills_at_the_rate_up_to_its_size(limiter: RateLimiter, clock: Clock) -> None:
    for _ in range(20):
        limiter.take("k", Scope.INGEST, 1)
    clock.advance(0.5)
    after_half_a_second = sum(taken(limiter, "k", Scope.INGEST) for _ in range(10))
    clock.advance(3600)
    after_an_hour = sum(taken(limiter, "k", Scope.INGEST) for _ in range(30))

    assert after_half_a_second == 5
    assert after_an_hour == 20  # never more than the bucket holds


def test_a_large_cost_gets_through_into_debt_and_the_debt_is_waited_out(
    limiter: RateLimiter, clock: Clock
) -> None:
    """Allowed while the bucket is above zero, then the whole cost is taken."""
    for _ in range(19):
        limiter.take("k", Scope.INGEST, 1)  # one item left
    limiter.take("k", Scope.INGEST, 500)  # 1 - 500 = -499
    delay = limiter.wait_seconds("k", Scope.INGEST, 1)
    clock.advance(delay)

    assert delay == pytest.approx((1 + 499) / 10)
    assert taken(limiter, "k", Scope.INGEST)


def test_take_raises_resource_exhausted_with_the_delay_and_the_caller(
    limiter: RateLimiter,
) -> None:
    limiter.take("fbk_AAAAAAAA", Scope.READ, 2)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.take("fbk_AAAAAAAA", Scope.READ, 1)

    error = refused.value
    assert error.reason == RATE_LIMITED
    assert error.retry_after_seconds == pytest.approx(1.0)
    assert error.quota is not None
    assert error.quota.subject == "fbk_AAAAAAAA"
    assert error.quota.description == "at most 1 read items per second"
    assert "retry in 1.00 s" in str(error)


def test_each_caller_and_each_scope_has_its_own_bucket(limiter: RateLimiter) -> None:
    limiter.take("a", Scope.INGEST, 100)
    limiter.take("a", Scope.READ, 100)

    assert not taken(limiter, "a", Scope.INGEST)
    assert not taken(limiter, "a", Scope.READ)
    assert taken(limiter, "b", Scope.INGEST)
    assert taken(limiter, "b", Scope.READ)


def test_scopes_without_a_rate_nothing_and_no_scope_are_never_limited(
    limiter: RateLimiter,
) -> None:
    unlimited = RateLimiter({})

    assert all(taken(limiter, "a", Scope.ADMIN, 10_000) for _ in range(100))
    assert all(taken(limiter, "a", None, 10_000) for _ in range(100))
    assert all(taken(limiter, "a", Scope.INGEST, 0) for _ in range(100))
    assert all(taken(limiter, "a", Scope.INGEST, -5) for _ in range(100))
    assert all(taken(unlimited, "a", Scope.INGEST, 10_000) for _ in range(100))
    assert limiter.limited
    assert not unlimited.limited


def test_a_slow_rate_still_allows_one_item(clock: Clock) -> None:
    """60/h is a bucket of max(1, 2 s of the rate) = 1 item, then one a minute."""
    limiter = RateLimiter(parse_rates("admin=60/h"), clock)

    assert taken(limiter, "k", Scope.ADMIN)
    assert limiter.wait_seconds("k", Scope.ADMIN, 1) == pytest.approx(60.0)


def test_past_max_buckets_full_buckets_are_forgotten_but_debts_are_not(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limits_module, "MAX_BUCKETS", 10)
    limiter = RateLimiter({Scope.INGEST: Rate(1.0)}, clock)
    limiter.take("debtor", Scope.INGEST, 1000)
    for n in range(9):
        limiter.take(f"caller-{n}", Scope.INGEST, 1)
    clock.advance(5)  # the nine have refilled; the debtor is still 993 items in debt
    limiter.take("newcomer", Scope.INGEST, 1)  # the eleventh caller: the full ones go

    buckets = limiter._buckets
    assert set(buckets) == {("debtor", Scope.INGEST), ("newcomer", Scope.INGEST)}
    assert limiter.wait_seconds("debtor", Scope.INGEST, 1) == pytest.approx(1 + (1000 - 2) - 5)
    assert taken(limiter, "caller-0", Scope.INGEST)  # a forgotten bucket is a full one


def test_below_max_buckets_nothing_is_forgotten(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limits_module, "MAX_BUCKETS", 10)
    limiter = RateLimiter({Scope.INGEST: Rate(1.0)}, clock)
    for n in range(10):
        limiter.take(f"caller-{n}", Scope.INGEST, 1)
        clock.advance(5)

    assert len(limiter._buckets) == 10


# ---- parse_rates ----


def test_rates_are_read_per_second_minute_or_hour() -> None:
    rates = parse_rates(" ingest=1000/s, read=50/sec,admin=60/min ,")

    assert rates == {Scope.INGEST: Rate(1000.0), Scope.READ: Rate(50.0), Scope.ADMIN: Rate(1.0)}
    assert parse_rates("INGEST=7200/h") == {Scope.INGEST: Rate(2.0)}
    assert parse_rates("read=3") == {Scope.READ: Rate(3.0)}  # per second by default
    assert parse_rates("read=2.5/m") == {Scope.READ: Rate(2.5 / 60)}
    assert parse_rates("") == {}
    assert parse_rates(" , ") == {}


@pytest.mark.parametrize(
    "text",
    [
        "ingest",
        "ingest=",
        "ingest=0/s",
        "ingest=-5/s",
        "ingest=fast",
        "ingest=5/day",
        "write=5/s",
        "=5/s",
        "ingest=5/s,read=0",
    ],
)
def test_a_bad_rate_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="bad rate limit"):
        parse_rates(text)


def test_a_rate_that_is_not_a_number_is_refused() -> None:
    try:
        rates = parse_rates("ingest=nan/s")
    except ValueError:
        return
    limiter = RateLimiter(rates)
    granted = sum(taken(limiter, "k", Scope.INGEST) for _ in range(1000))
    assert granted < 1000, f"ingest={rates[Scope.INGEST].per_second}/s granted all 1000 items"
