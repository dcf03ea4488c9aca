"""C28 and other collisions (RFC 7296 §2.8.1, §2.25.1), with forced nonce orders.

In each simultaneous CHILD_SA rekey the four nonces are forced so that each
one is the lowest once. The exchange holding the lowest nonce made the
redundant SA, which its initiator deletes; the other new SA survives.
Traffic is sent both ways after every datagram.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.ike.constants import ExchangeType, NotifyType
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    ChildSaEstablished,
    ChildSaRekeyFailed,
)
from ipsec.ike.message import decode_header

from .rekey_harness import Pair

LOW, MID, HIGH, TOP = (bytes([k]) * 32 for k in (0x10, 0x40, 0x80, 0xC0))

# Which nonce is the lowest: a's request, b's answer to it (together a's
# exchange), b's request, or a's answer to it (b's exchange).
NONCE_ORDERS = {
    "a-request-lowest": ((LOW, HIGH), (MID, TOP)),
    "b-response-lowest": ((MID, HIGH), (TOP, LOW)),
    "b-request-lowest": ((HIGH, MID), (LOW, TOP)),
    "a-response-lowest": ((TOP, LOW), (MID, HIGH)),
}
"""name -> ((a's request nonce, a's response nonce), (b's request, b's response))."""


def loser_of(order):
    """The side whose exchange holds the lowest nonce."""
    return "a" if order in ("a-request-lowest", "b-response-lowest") else "b"


def only_child(side):
    [child] = side.sa.child_sas
    return child


def start_simultaneous_rekey(order):
    pair = Pair()
    (a_request, a_response), (b_request, b_response) = NONCE_ORDERS[order]
    pair.a.random.nonces.extend([a_request, a_response])
    pair.b.random.nonces.extend([b_request, b_response])
    old = only_child(pair.a)

    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.b.sa.rekey_child_sa(old.outbound_spi, 1.0)
    pair.collect()
    return pair, old


def assert_collision_resolved(pair, old, winner):
    """One pair survives: the SA made by the winner's own exchange."""
    a_child, b_child = pair.assert_one_pair()
    by_name = {"a": a_child, "b": b_child}
    loser = "b" if winner == "a" else "a"
    assert by_name[winner].established.is_initiator
    assert not by_name[loser].established.is_initiator
    for side, old_inbound, old_outbound in (
        (pair.a, old.inbound_spi, old.outbound_spi),
        (pair.b, old.outbound_spi, old.inbound_spi),
    ):
        deleted = side.of_type(ChildSaDeleted)
        assert (
            ChildSaDeleted(old_inbound, old_outbound, ChildSaDeleteReason.REKEYED)
            in deleted
        )
        # Every SA this side installed is either the survivor or deleted.
        installed = {e.inbound_spi for e in side.of_type(ChildSaEstablished)}
        assert installed - {e.inbound_spi for e in deleted} == {
            only_child(side).inbound_spi
        }


@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_simultaneous_rekey_lowest_nonce_sa_deleted_by_its_creator(order):
    pair, old = start_simultaneous_rekey(order)

    pair.deliver(pair.b)  # a's request meets b's rekey in progress
    pair.deliver(pair.a)  # and b's request meets a's
    pair.settle(check_traffic=True)

    loser = loser_of(order)
    winner = "b" if loser == "a" else "a"
    assert_collision_resolved(pair, old, winner)
    redundant = getattr(pair, loser).of_type(ChildSaDeleted)
    assert [d.reason for d in redundant].count(ChildSaDeleteReason.REDUNDANT) == 1
    assert getattr(pair, winner).of_type(ChildSaRekeyFailed) == []


@pytest.mark.parametrize("delete_first", [False, True], ids=["in-order", "overtaken"])
@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_delete_right_behind_the_create_child_sa_response(order, delete_first):
    pair, old = start_simultaneous_rekey(order)
    loser = getattr(pair, loser_of(order))
    winner = pair.other(loser)
    pair.deliver(pair.b)
    pair.deliver(pair.a)

    # The winner completes first and sends its Delete for the old SA, which
    # reaches the loser right behind (or ahead of) the loser's response.
    pair.deliver(winner)
    assert len(pair.wire[loser.name]) == 2
    if delete_first:
        pair.wire[loser.name].rotate(1)
    pair.deliver(loser)
    pair.deliver(loser)
    pair.settle(check_traffic=True)

    assert_collision_resolved(pair, old, winner.name)


@pytest.mark.parametrize(
    "delete_first", [False, True], ids=["then-delete", "delete-first"]
)
@pytest.mark.parametrize("lost", [True, False], ids=["lost-request", "delayed-request"])
@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_late_rekey_request_answered_with_temporary_failure(
    order, lost, delete_first
):
    pair, old = start_simultaneous_rekey(order)
    late = pair.drop(pair.a)  # b's request is lost or held back

    pair.deliver(pair.b)  # a's request: b records the collision
    pair.deliver(pair.a)  # a's rekey completes; a sends the Delete
    if lost:
        pair.b.sa.handle_timer(pair.b.sa.get_timer())
        pair.collect()
    else:
        pair.wire["a"].append(late)
    pair.deliver(pair.a)  # b's request reaches a, which is closing the SA
    if delete_first:
        pair.deliver(pair.b)  # the Delete, then TEMPORARY_FAILURE
    else:
        pair.wire["b"].rotate(1)
    pair.settle(check_traffic=True)

    [failure] = pair.b.of_type(ChildSaRekeyFailed)
    assert failure.notify_type == NotifyType.TEMPORARY_FAILURE
    assert_collision_resolved(pair, old, "a")


@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_lost_response_replayed_to_the_retransmitted_request(order):
    pair, old = start_simultaneous_rekey(order)
    pair.deliver(pair.b)
    pair.deliver(pair.a)

    lost = pair.drop(pair.b)  # a's answer to b's rekey
    pair.deliver(pair.a)  # b's answer to a's rekey: a resolves the collision
    pair.b.sa.handle_timer(pair.b.sa.get_timer())
    pair.collect()
    [retransmitted] = pair.wire["a"]
    already_sent = len(pair.wire["b"])
    pair.deliver(pair.a)
    replayed = list(pair.wire["b"])[already_sent:]
    pair.settle(check_traffic=True)

    # §2.1: the same answer again, so no third SA is created.
    assert replayed == [lost]
    assert decode_header(retransmitted).exchange_type == ExchangeType.CREATE_CHILD_SA
    loser = loser_of(order)
    assert_collision_resolved(pair, old, "b" if loser == "a" else "a")


@pytest.mark.parametrize("first", ["delete", "rekey"])
def test_rekey_collides_with_delete_of_the_same_child_sa(first):
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.b.sa.delete_child_sa(old.outbound_spi, 1.0)
    pair.collect()

    # §2.25.1: the Delete wins; a rekey of an SA being closed gets
    # TEMPORARY_FAILURE.
    for side in (pair.a, pair.b) if first == "delete" else (pair.b, pair.a):
        pair.deliver(side, check_traffic=False)
    pair.settle()

    assert pair.a.sa.child_sas == pair.b.sa.child_sas == ()
    assert pair.a.plane.inbound == pair.b.plane.inbound == {}
    assert pair.a.of_type(ChildSaRekeyFailed)[0].notify_type == (
        NotifyType.TEMPORARY_FAILURE
    )
    assert [e.reason for e in pair.a.of_type(ChildSaDeleted)] == [
        ChildSaDeleteReason.DELETED_BY_PEER
    ]
    assert [e.reason for e in pair.b.of_type(ChildSaDeleted)] == [
        ChildSaDeleteReason.DELETED_LOCALLY
    ]


@pytest.mark.parametrize("order", NONCE_ORDERS)
def test_c28_every_message_retransmitted_once_still_converges(order):
    pair, old = start_simultaneous_rekey(order)
    seen = set()

    # The first transmission of every datagram is lost.
    for _ in range(40):
        if not pair.wire["a"] and not pair.wire["b"]:
            timers = [t for s in (pair.a, pair.b) if (t := s.sa.get_timer())]
            if not timers:
                break
            pair.advance(min(timers))
            pair.collect()
            continue
        for side in (pair.b, pair.a):
            if pair.wire[side.name]:
                data = pair.wire[side.name][0]
                if data in seen:
                    pair.deliver(side)
                else:
                    seen.add(pair.drop(side))
    a_child, b_child = pair.assert_one_pair()
    assert a_child.inbound_spi != old.inbound_spi


ACTIONS = st.lists(
    st.sampled_from(
        ["to-a", "to-b", "late-to-a", "late-to-b", "drop-a", "drop-b", "timer"]
    ),
    max_size=30,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(order=st.sampled_from(sorted(NONCE_ORDERS)), actions=ACTIONS)
def test_random_interleavings_and_drops_during_rekey_converge(order, actions):
    pair, old = start_simultaneous_rekey(order)
    drops = timers_fired = 0

    for action in actions:
        to = pair.a if action.endswith("a") else pair.b
        queue = pair.wire[to.name]
        if action == "timer":
            # Fewer than retransmit_tries, or the peers rightly declare
            # each other dead.
            timers_fired += 1
            if timers_fired > 3:
                continue
            timers = [t for s in (pair.a, pair.b) if (t := s.sa.get_timer())]
            if timers:
                pair.advance(min(timers))
                pair.check_traffic()
        elif not queue:
            continue
        elif action.startswith("drop") and drops < 3:
            drops += 1
            pair.drop(to)
        elif action.startswith("late"):
            queue.rotate(-1)  # the oldest now arrives last
            pair.deliver(to)
        else:
            pair.deliver(to)

    # Heal: no more loss; timers run until both engines are quiet.
    for _ in range(30):
        pair.settle(check_traffic=True)
        timers = [t for s in (pair.a, pair.b) if (t := s.sa.get_timer())]
        if not timers:
            break
        pair.advance(min(timers))
    a_child, _ = pair.assert_one_pair()
    assert a_child.inbound_spi not in (old.inbound_spi, old.outbound_spi)
