"""Liveness checks, dead peers and INITIAL_CONTACT (RFC 7296 §1.4, §2.4)."""

import pytest

from ipsec.ike.config import DpdAction
from ipsec.ike.constants import ExchangeType, NotifyType
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    IkeSaDeleted,
    IkeSaDeleteReason,
    InitialContactReceived,
)
from ipsec.ike.ike_sa import IkeSaState
from ipsec.ike.message import decode_message, decrypt_message
from ipsec.ike.payloads import NotifyPayload

from .rekey_harness import Pair
from .test_ike_sa import INITIATOR_ID, exchange_all, make_pair


def opened(side, data):
    return decrypt_message(data, decode_message(data), side.sa._context.cipher_in)


def test_liveness_check_sent_after_dpd_delay_of_silence():
    pair = Pair({"dpd_delay": 30.0})

    assert pair.a.sa.get_timer() == 30.0
    assert pair.b.sa.get_timer() is None
    pair.advance(30.0)
    [check] = pair.wire["b"]
    request = opened(pair.b, check)
    pair.settle()

    assert (request.exchange_type, request.payloads) == (
        ExchangeType.INFORMATIONAL,
        (),
    )
    assert pair.a.sa.state is IkeSaState.ESTABLISHED
    assert pair.a.sa.get_timer() == 60.0


def test_any_authenticated_message_postpones_the_liveness_check():
    pair = Pair({"dpd_delay": 30.0})
    [child] = pair.b.sa.child_sas

    pair.now = 20.0
    pair.b.sa.rekey_child_sa(child.inbound_spi, 20.0)
    pair.settle()

    assert pair.a.sa.get_timer() == 50.0


@pytest.mark.parametrize(
    ("action", "restart"), [(DpdAction.CLEAR, False), (DpdAction.RESTART, True)]
)
def test_silent_peer_declared_dead_after_retransmissions(action, restart):
    pair = Pair({"dpd_delay": 30.0, "dpd_action": action})
    [child] = pair.a.sa.child_sas

    for _ in range(20):
        pair.wire["b"].clear()  # the peer has gone
        deadline = pair.a.sa.get_timer()
        if deadline is None:
            break
        pair.advance(deadline)
    pair.a.pump_events()

    assert pair.a.sa.state is IkeSaState.DELETED
    assert pair.a.of_type(ChildSaDeleted) == [
        ChildSaDeleted(
            child.inbound_spi, child.outbound_spi, ChildSaDeleteReason.IKE_SA_GONE
        )
    ]
    assert pair.a.of_type(IkeSaDeleted) == [
        IkeSaDeleted(
            pair.a.sa.spi_i, pair.a.sa.spi_r, IkeSaDeleteReason.PEER_DEAD, restart
        )
    ]
    # 30 s of silence, then the check and five retransmissions (4 s x 1.8^n).
    expected = 30.0 + sum(4.0 * 1.8**n for n in range(6))
    assert pair.now == pytest.approx(expected)
    assert pair.a.sa.get_timer() is None


def test_peer_dead_during_a_rekey_ends_the_ike_sa():
    pair = Pair()
    [child] = pair.a.sa.child_sas
    pair.a.sa.rekey_child_sa(child.inbound_spi, 1.0)
    pair.collect()

    for _ in range(20):
        pair.wire["b"].clear()
        deadline = pair.a.sa.get_timer()
        if deadline is None:
            break
        pair.advance(deadline)
    pair.a.pump_events()

    [deleted] = pair.a.of_type(IkeSaDeleted)
    assert deleted.reason is IkeSaDeleteReason.PEER_DEAD
    assert pair.a.plane.inbound == {}


def test_initial_contact_sent_in_ike_auth_and_reported():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    log = []
    exchange_all(initiator, responder, log=log)

    auth_request = log[2][1]
    message = decrypt_message(
        auth_request, decode_message(auth_request), responder._context.cipher_in
    )
    events = []
    while (event := responder.next_event()) is not None:
        events.append(event)

    assert NotifyPayload(NotifyType.INITIAL_CONTACT) in message.all(NotifyPayload)
    assert [e for e in events if isinstance(e, InitialContactReceived)] == [
        InitialContactReceived(responder.spi_i, responder.spi_r, INITIATOR_ID.as_idi())
    ]


def test_initial_contact_can_be_left_out():
    initiator, responder = make_pair(initiator_changes={"send_initial_contact": False})
    initiator.initiate(0.0)
    exchange_all(initiator, responder)

    events = []
    while (event := responder.next_event()) is not None:
        events.append(event)

    assert responder.state is IkeSaState.ESTABLISHED
    assert not any(isinstance(e, InitialContactReceived) for e in events)
