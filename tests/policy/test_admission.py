"""Admission control with a fake clock: exact 503 counts and Retry-After."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.admission import AdmissionControl, CallRejected, TokenBucket
from sbc.config import Config, Limits


def control(**limits):
    return AdmissionControl({"t": Limits(**limits)})


def exact_admissions(times, rate, burst):
    """Independent oracle: the token bucket in exact rational arithmetic."""
    rate, tokens, last, admitted = Fraction(rate), Fraction(burst), None, []
    for t in times:
        if last is not None:
            tokens = min(Fraction(burst), tokens + (t - last) * rate)
        last = t
        if tokens >= 1:
            tokens -= 1
            admitted.append(t)
    return admitted


def offer(admission, times):
    admitted, rejected = [], []
    for t in times:
        try:
            admission.admit("t", float(t))
        except CallRejected as exc:
            rejected.append(exc)
        else:
            admitted.append(t)
    return admitted, rejected


@pytest.mark.parametrize(
    ("rate", "burst", "per_second", "seconds"),
    [
        (10, 10, 100, 1),
        (10, 1, 100, 3),
        (5, 20, 50, 4),
        (Fraction(1, 2), 1, 10, 10),
        (30, 30, 30, 5),  # offered exactly at the rate: nothing refused
        (100, 5, 1000, 1),
    ],
)
def test_cps_exact_rejections_fake_clock(rate, burst, per_second, seconds):
    times = [Fraction(k, per_second) for k in range(per_second * seconds)]
    admission = control(max_cps=float(rate), burst=burst)

    admitted, rejected = offer(admission, times)

    expected = exact_admissions(times, rate, burst)
    assert admitted == expected
    assert len(rejected) == len(times) - len(expected)
    assert all(exc.status_code == 503 and exc.cause == "max_cps" for exc in rejected)


def test_cps_closed_form_burst_plus_rate():
    # 100 calls/s offered for one second at 10 calls/s, bucket of 10: the
    # bucket's 10 plus one per 0.1 s refilled over 0.99 s.
    times = [k / 100 for k in range(100)]

    admitted, rejected = offer(control(max_cps=10, burst=10), times)

    assert len(admitted) == 10 + math.floor(10 * 0.99)
    assert len(rejected) == 100 - len(admitted)


def test_cps_burst_defaults_to_rate_rounded_up():
    admitted, _ = offer(control(max_cps=2.5), [0.0] * 10)

    assert len(admitted) == 3


@pytest.mark.parametrize(
    ("rate", "reject_at", "retry_after"),
    [
        (2, 0.1, 1),  # token due in 0.45 s: at least 1 s
        (0.1, 1.0, 9),  # one call per 10 s, 9 s to go
        (0.25, 0.5, 4),  # 3.5 s to go, rounded up
        (0.5, 1.0, 1),  # exactly 1 s to go
    ],
)
def test_cps_retry_after_is_time_to_next_token(rate, reject_at, retry_after):
    admission = control(max_cps=rate, burst=1)
    admission.admit("t", 0.0)

    with pytest.raises(CallRejected) as caught:
        admission.admit("t", reject_at)

    assert caught.value.retry_after == retry_after


def test_cps_rejection_takes_no_token():
    admission = control(max_cps=1, burst=1)
    admission.admit("t", 0.0)
    with pytest.raises(CallRejected):
        admission.admit("t", 0.5)

    admission.admit("t", 1.0)  # would fail had the refusal taken a token

    assert admission.stats("t").admitted == 2


def test_concurrency_limit_and_release():
    admission = control(max_calls=3, retry_after=17)
    tickets = [admission.admit("t", 0.0) for _ in range(3)]

    with pytest.raises(CallRejected) as caught:
        admission.admit("t", 0.0)
    admission.release(tickets[1])
    admission.release(tickets[1])  # twice: counted once
    again = admission.admit("t", 0.0)

    assert (caught.value.status_code, caught.value.retry_after) == (503, 17)
    assert caught.value.cause == "max_calls"
    assert again.trunk == "t"
    assert admission.stats("t").active_calls == 3
    with pytest.raises(CallRejected):
        admission.admit("t", 0.0)


def test_concurrency_rejection_takes_no_token():
    admission = control(max_calls=1, max_cps=1, burst=1)
    ticket = admission.admit("t", 0.0)
    with pytest.raises(CallRejected) as caught:
        admission.admit("t", 5.0)
    admission.release(ticket)

    admission.admit("t", 5.0)  # the bucket refilled and kept its token

    assert caught.value.cause == "max_calls"
    stats = admission.stats("t")
    assert (stats.rejected_max_calls, stats.rejected_max_cps) == (1, 0)


def test_exact_counts_calls_and_rate_together():
    # 20 calls/s offered for 2 s, each lasting 0.5 s; 10 concurrent, 8/s.
    admission = control(max_calls=10, max_cps=8, burst=8)
    ends, admitted, rejected = [], 0, 0
    for k in range(40):
        now = k / 20
        while ends and ends[0][0] <= now:
            admission.release(ends.pop(0)[1])
        try:
            ticket = admission.admit("t", now)
        except CallRejected:
            rejected += 1
        else:
            admitted += 1
            ends.append((now + 0.5, ticket))

    oracle = exact_admissions([Fraction(k, 20) for k in range(40)], 8, 8)
    # The rate binds before the concurrency: 8/s for 0.5 s is 4 < 10.
    assert admitted == len(oracle)
    assert rejected == 40 - admitted


def test_unlimited_trunk_counts_calls():
    admission = AdmissionControl({})

    tickets = [admission.admit("other", 0.0) for _ in range(1000)]

    assert admission.stats("other").active_calls == 1000
    for ticket in tickets:
        admission.release(ticket)
    assert admission.stats("other").active_calls == 0


def test_clock_stepping_back_refills_nothing():
    admission = control(max_cps=1, burst=1)
    admission.admit("t", 100.0)

    with pytest.raises(CallRejected):
        admission.admit("t", 50.0)
    with pytest.raises(CallRejected):
        admission.admit("t", 100.5)
    admission.admit("t", 101.0)


def test_reconfigure_keeps_active_calls():
    admission = control(max_calls=2)
    admission.admit("t", 0.0)
    admission.admit("t", 0.0)

    admission.reconfigure({"t": Limits(max_calls=3)})

    admission.admit("t", 0.0)
    with pytest.raises(CallRejected):
        admission.admit("t", 0.0)


def test_from_config_uses_trunk_limits():
    config = Config.model_validate(
        {
            "listeners": [{"name": "l", "transport": "udp", "address": "127.0.0.1"}],
            "trunks": [
                {
                    "name": "t",
                    "kind": "carrier",
                    "listeners": ["l"],
                    "targets": [{"host": "192.0.2.1"}],
                    "limits": {"max_calls": 1},
                }
            ],
        }
    )
    admission = AdmissionControl.from_config(config)
    admission.admit("t", 0.0)

    with pytest.raises(CallRejected):
        admission.admit("t", 0.0)


def test_token_bucket_rejects_bad_parameters():
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.5)


@given(
    gaps=st.lists(st.integers(0, 1000), min_size=1, max_size=200),
    rate=st.integers(1, 50),
    burst=st.integers(1, 20),
)
def test_cps_never_exceeds_burst_plus_rate(gaps, rate, burst):
    # Millisecond arrival times; any window [a, b] admits at most
    # burst + rate * (b - a) calls.
    times, now = [], 0
    for gap in gaps:
        now += gap
        times.append(now / 1000)
    admitted, _ = offer(control(max_cps=rate, burst=burst), times)

    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6
    assert admitted == [
        float(t)
        for t in exact_admissions(
            [Fraction(now_ms, 1000) for now_ms in _cumulative(gaps)], rate, burst
        )
    ]


def _cumulative(gaps):
    total, out = 0, []
    for gap in gaps:
        total += gap
        out.append(total)
    return out
