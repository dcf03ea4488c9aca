"""IKE_SA rekey collisions (RFC 7296 §2.8.1, §2.25.2) in all four nonce orders.

Both peers rekey the IKE_SA at once: each ends up answering one rekey and
completing its own, so two new IKE_SAs exist. The one made by the exchange
holding the lowest nonce is deleted by its initiator, the winner deletes the
old IKE_SA, and the CHILD_SAs end on the surviving IKE_SA on both sides.
ECP-256 draws 40 octets per key, so only nonces take the forced values.
"""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.ike.constants import DhGroup, NotifyType
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaRekeyFailed,
    IkeSaCreatedByRekey,
    IkeSaDeleted,
    IkeSaDeleteReason,
    IkeSaRekeyed,
    IkeSaRekeyFailed,
)
from ipsec.ike.ike_sa import IkeSaState

from .rekey_harness import Pair
from .test_collisions import NONCE_ORDERS, loser_of
from .test_ike_sa import ike_proposal

ECP = {"ike_proposals": (ike_proposal(groups=(DhGroup.ECP_256,)),)}


def start_simultaneous_ike_rekey(order):
    pair = Pair(ECP, ECP)
    (a_request, a_response), (b_request, b_response) = NONCE_ORDERS[order]
    pair.a.random.nonces.extend([a_request, a_response])
    pair.b.random.nonces.extend([b_request, b_response])
    old = pair.a.sa, pair.b.sa

    pair.a.sa.rekey_ike_sa(1.0)
    pair.b.sa.rekey_ike_sa(1.0)
    pair.collect()
    return pair, old


def assert_one_ike_sa(pair, winner):
    """One live IKE_SA per side, the same, made by the winner's exchange."""
    for side in (pair.a, pair.b):
        live = [e for e in side.engines if e.state is IkeSaState.ESTABLISHED]
        assert live == [side.sa]
        assert all(
            e.state is IkeSaState.DELETED for e in side.engines if e is not side.sa
        )
        assert side.of_type(ChildSaDeleted) == []
    assert (pair.a.sa.spi_i, pair.a.sa.spi_r) == (pair.b.sa.spi_i, pair.b.sa.spi_r)
    assert getattr(pair, winner).sa._context.is_original_initiator
    pair.assert_one_pair()


@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_ike_sa_rekey_collision_keeps_the_winners_ike_sa(order):
    pair, (old_a, old_b) = start_simultaneous_ike_rekey(order)

    pair.deliver(pair.b)
    pair.deliver(pair.a)
    pair.settle(check_traffic=True)

    loser = loser_of(order)
    winner = "b" if loser == "a" else "a"
    assert_one_ike_sa(pair, winner)
    for side in (pair.a, pair.b):
        assert len(side.of_type(IkeSaCreatedByRekey)) == 2
        assert len(side.of_type(IkeSaRekeyed)) == 1
        assert sorted(e.reason.name for e in side.of_type(IkeSaDeleted)) == [
            "REDUNDANT",
            "REKEYED",
        ]
    assert old_a.state is old_b.state is IkeSaState.DELETED


@pytest.mark.parametrize(
    "delete_first", [True, False], ids=["delete-first", "then-delete"]
)
@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_late_ike_sa_rekey_request_answered_with_temporary_failure(
    order, delete_first
):
    pair, _ = start_simultaneous_ike_rekey(order)
    late = pair.drop(pair.a)  # b's request is held back

    pair.deliver(pair.b)  # a's request: b records the collision
    pair.deliver(pair.a)  # a's rekey completes; a deletes the old IKE_SA
    pair.wire["a"].append(late)
    pair.deliver(pair.a)  # TEMPORARY_FAILURE: a is closing that IKE_SA
    if not delete_first:
        pair.wire["b"].rotate(1)
    pair.settle(check_traffic=True)

    [failure] = pair.b.of_type(IkeSaRekeyFailed)
    assert failure.notify_type == NotifyType.TEMPORARY_FAILURE
    assert_one_ike_sa(pair, "a")
    assert [e.reason for e in pair.b.of_type(IkeSaDeleted)] == [
        IkeSaDeleteReason.REKEYED
    ]


@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_ike_sa_delete_overtaking_the_losers_rekey_response(order):
    pair, (old_a, old_b) = start_simultaneous_ike_rekey(order)
    loser = getattr(pair, loser_of(order))
    winner = pair.other(loser)
    pair.deliver(pair.b)
    pair.deliver(pair.a)

    pair.deliver(winner)  # the winner completes and deletes the old IKE_SA
    assert len(pair.wire[loser.name]) == 2
    pair.wire[loser.name].rotate(1)  # its Delete overtakes the loser's response
    pair.deliver(loser)
    held = [type(e) for e in loser.events if isinstance(e, IkeSaDeleted)]
    pair.settle(check_traffic=True)

    # The old IKE_SA's end waits for the response, so the loser still
    # deletes the redundant IKE_SA its own exchange made on the winner.
    assert held == []
    assert_one_ike_sa(pair, winner.name)
    assert sorted(e.reason.name for e in winner.of_type(IkeSaDeleted)) == [
        "REDUNDANT",
        "REKEYED",
    ]
    assert old_a.state is old_b.state is IkeSaState.DELETED


def test_child_sa_rekey_during_ike_sa_rekey_gets_temporary_failure():
    pair = Pair()
    [child] = pair.b.sa.child_sas
    pair.a.sa.rekey_ike_sa(1.0)
    pair.b.sa.rekey_child_sa(child.inbound_spi, 1.0)
    pair.collect()

    pair.deliver(pair.b)  # IKE rekey meets b's CHILD_SA rekey: refused
    pair.deliver(pair.a)  # CHILD_SA rekey meets a's IKE rekey: refused
    pair.settle(check_traffic=True)

    assert pair.a.of_type(IkeSaRekeyFailed)[0].notify_type == (
        NotifyType.TEMPORARY_FAILURE
    )
    assert pair.b.of_type(ChildSaRekeyFailed)[0].notify_type == (
        NotifyType.TEMPORARY_FAILURE
    )
    pair.assert_one_pair()


def test_ike_sa_rekey_against_ike_sa_delete_ends_both():
    pair = Pair()
    pair.a.sa.rekey_ike_sa(1.0)
    pair.b.sa.delete(1.0)
    pair.collect()

    pair.deliver(pair.b, check_traffic=False)
    pair.deliver(pair.a, check_traffic=False)
    pair.settle()

    assert pair.a.sa.state is pair.b.sa.state is IkeSaState.DELETED
    assert pair.a.of_type(IkeSaCreatedByRekey) == []
    assert pair.a.plane.inbound == pair.b.plane.inbound == {}


ACTIONS = st.lists(
    st.sampled_from(["to-a", "to-b", "late-to-a", "late-to-b", "drop-a", "drop-b"]),
    max_size=24,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.sampled_from(sorted(NONCE_ORDERS)), actions=ACTIONS)
def test_random_interleavings_and_drops_during_ike_sa_rekey_converge(order, actions):
    pair, _ = start_simultaneous_ike_rekey(order)
    for side in (pair.a, pair.b):
        reconfigure_all(side, dpd_delay=60.0)
    drops = 0

    for action in actions:
        to = pair.a if action.endswith("a") else pair.b
        queue = pair.wire[to.name]
        if not queue:
            continue
        if action.startswith("drop") and drops < 3:
            drops += 1
            pair.drop(to)
        else:
            if action.startswith("late"):
                queue.rotate(-1)
            pair.deliver(to)

    # Heal: no more loss; liveness checks end anything left unanswered.
    for _ in range(60):
        pair.settle(check_traffic=True)
        timers = pair.a.timers() + pair.b.timers()
        live = [
            e
            for s in (pair.a, pair.b)
            for e in s.engines
            if e.state is IkeSaState.ESTABLISHED
        ]
        if len(live) == 2 and not any(e._outstanding for e in live):
            break
        pair.advance(min(timers))
    for side in (pair.a, pair.b):
        assert [e for e in side.engines if e.state is IkeSaState.ESTABLISHED] == [
            side.sa
        ]
    assert (pair.a.sa.spi_i, pair.a.sa.spi_r) == (pair.b.sa.spi_i, pair.b.sa.spi_r)
    pair.assert_one_pair()


def reconfigure_all(side, **changes):
    for engine in side.engines:
        engine._context.config = replace(engine._context.config, **changes)
