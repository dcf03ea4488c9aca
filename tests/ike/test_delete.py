"""INFORMATIONAL Delete of CHILD_SAs and of the IKE_SA (RFC 7296 §1.4.1, §3.11)."""

import pytest

from ipsec.ike.constants import ExchangeType, ProtocolId
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    IkeSaDeleted,
    IkeSaDeleteReason,
)
from ipsec.ike.ike_sa import IkeSaState
from ipsec.ike.message import IkeMessage, decode_message, decrypt_message
from ipsec.ike.message import protect_message as protect
from ipsec.ike.payloads import DeletePayload

from .rekey_harness import Pair
from .test_ike_sa import seeded


def opened(side, data):
    return decrypt_message(data, decode_message(data), side.sa._context.cipher_in)


def forged_request(side, payloads):
    """A well-protected INFORMATIONAL request from ``side`` to its peer."""
    sa = side.sa
    message = IkeMessage(
        ExchangeType.INFORMATIONAL,
        sa._next_request_id,
        sa.spi_i,
        sa.spi_r,
        is_initiator=sa._context.is_original_initiator,
        payloads=tuple(payloads),
    )
    [data] = protect(message, sa._context.cipher_out, seeded(9))
    sa._next_request_id += 1
    return data


@pytest.mark.parametrize("deleter", ["a", "b"], ids=["by-initiator", "by-responder"])
def test_child_sa_delete_answered_with_the_paired_delete(deleter):
    pair = Pair()
    side = getattr(pair, deleter)
    peer = pair.other(side)
    [child] = side.sa.child_sas

    side.sa.delete_child_sa(child.inbound_spi, 1.0)
    pair.collect()
    request = opened(peer, pair.wire[peer.name][0])
    pair.deliver(peer, check_traffic=False)
    answer = opened(side, pair.wire[side.name][0])
    pair.settle()

    assert request.all(DeletePayload) == [
        DeletePayload(ProtocolId.ESP, (child.inbound_spi,))
    ]
    assert answer.all(DeletePayload) == [
        DeletePayload(ProtocolId.ESP, (child.outbound_spi,))
    ]
    assert side.of_type(ChildSaDeleted) == [
        ChildSaDeleted(
            child.inbound_spi, child.outbound_spi, ChildSaDeleteReason.DELETED_LOCALLY
        )
    ]
    assert peer.of_type(ChildSaDeleted) == [
        ChildSaDeleted(
            child.outbound_spi, child.inbound_spi, ChildSaDeleteReason.DELETED_BY_PEER
        )
    ]
    assert side.sa.child_sas == peer.sa.child_sas == ()
    assert side.plane.inbound == peer.plane.inbound == {}
    assert side.sa.state is peer.sa.state is IkeSaState.ESTABLISHED


def test_simultaneous_child_sa_deletes_answer_without_delete_payloads():
    pair = Pair()
    [child] = pair.a.sa.child_sas
    pair.a.sa.delete_child_sa(child.inbound_spi, 1.0)
    pair.b.sa.delete_child_sa(child.outbound_spi, 1.0)
    pair.collect()

    pair.deliver(pair.b, check_traffic=False)
    pair.deliver(pair.a, check_traffic=False)
    answers = [opened(pair.a, pair.wire["a"][0]), opened(pair.b, pair.wire["b"][0])]
    pair.settle()

    assert [a.all(DeletePayload) for a in answers] == [[], []]
    assert len(pair.a.of_type(ChildSaDeleted)) == len(pair.b.of_type(ChildSaDeleted))
    assert len(pair.a.of_type(ChildSaDeleted)) == 1
    assert pair.a.sa.child_sas == pair.b.sa.child_sas == ()


def test_delete_for_unknown_spi_is_ignored_and_answered_empty():
    pair = Pair()

    data = forged_request(pair.a, [DeletePayload(ProtocolId.ESP, (b"\1\2\3\4",))])
    pair.b.sa.receive_datagram(data, 1.0)
    [answer] = pair.b.sa.datagrams_to_send()

    assert opened(pair.a, answer).payloads == ()
    assert len(pair.b.sa.child_sas) == 1


def test_delete_one_of_two_child_sas_keeps_the_other():
    pair = Pair()
    [first] = pair.a.sa.child_sas
    pair.a.sa.create_child_sa(1.0)
    pair.settle()

    pair.b.sa.delete_child_sa(first.outbound_spi, 2.0)
    pair.settle()

    [left_a], [left_b] = pair.survivors()
    assert left_a.inbound_spi != first.inbound_spi
    assert left_a.inbound_spi == left_b.outbound_spi


@pytest.mark.parametrize("deleter", ["a", "b"], ids=["by-initiator", "by-responder"])
def test_ike_sa_delete_ends_both_ends_with_their_child_sas(deleter):
    pair = Pair()
    side = getattr(pair, deleter)
    peer = pair.other(side)
    [child] = side.sa.child_sas

    side.sa.delete(1.0)
    pair.collect()
    request = opened(peer, pair.wire[peer.name][0])
    pair.settle()

    assert request.all(DeletePayload) == [DeletePayload(ProtocolId.IKE)]
    spis = (side.sa.spi_i, side.sa.spi_r)
    for who, reason in (
        (side, IkeSaDeleteReason.DELETED_LOCALLY),
        (peer, IkeSaDeleteReason.DELETED_BY_PEER),
    ):
        assert who.sa.state is IkeSaState.DELETED
        assert who.of_type(IkeSaDeleted) == [IkeSaDeleted(*spis, reason)]
        assert [e.reason for e in who.of_type(ChildSaDeleted)] == [
            ChildSaDeleteReason.IKE_SA_GONE
        ]
        assert who.sa.child_sas == () and who.plane.inbound == {}
        assert who.sa.get_timer() is None
    assert side.of_type(ChildSaDeleted)[0].inbound_spi == child.inbound_spi


def test_retransmitted_ike_sa_delete_gets_the_cached_answer():
    pair = Pair()
    pair.a.sa.delete(1.0)
    pair.collect()
    request = pair.wire["b"][0]
    pair.deliver(pair.b, check_traffic=False)
    first_answer = pair.drop(pair.a)

    pair.b.sa.receive_datagram(request, 5.0)
    [again] = pair.b.sa.datagrams_to_send()
    pair.a.sa.receive_datagram(again, 5.0)
    pair.a.pump_events()

    assert again == first_answer
    assert pair.a.sa.state is IkeSaState.DELETED
    assert len(pair.b.of_type(IkeSaDeleted)) == 1


def test_requests_after_the_ike_sa_is_deleted_are_dropped():
    pair = Pair()
    pair.a.sa.delete(1.0)
    pair.settle()

    data = forged_request(pair.a, [])
    pair.b.sa.receive_datagram(data, 2.0)

    assert pair.b.sa.datagrams_to_send() == []
    assert pair.b.sa.drops["IKE_SA deleted"] == 1


def test_unanswered_ike_sa_delete_still_ends_the_ike_sa():
    pair = Pair()
    pair.a.sa.delete(1.0)
    pair.collect()

    for _ in range(10):
        pair.wire["b"].clear()
        deadline = pair.a.sa.get_timer()
        if deadline is None:
            break
        pair.advance(deadline)
    pair.a.pump_events()

    assert pair.a.sa.state is IkeSaState.DELETED
    [deleted] = pair.a.of_type(IkeSaDeleted)
    assert deleted.reason is IkeSaDeleteReason.PEER_DEAD


def test_operations_need_an_established_ike_sa():
    pair = Pair()
    pair.a.sa.delete(1.0)
    pair.settle()

    with pytest.raises(RuntimeError):
        pair.a.sa.create_child_sa(2.0)
    with pytest.raises(RuntimeError):
        pair.a.sa.delete(2.0)
