"""Sending IKE messages as SKF fragments once both sides agreed (RFC 7383)."""

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from ipsec.ike.constants import NotifyType, PayloadType
from ipsec.ike.ike_sa import IkeSaState
from ipsec.ike.message import decode_header, decode_message
from ipsec.ike.tasks.base import IkeSaContext
from ipsec.ike.tasks.ike_fragmentation import message_size_limit

from .test_certificates import Authority, cert_pair, credentials, dns, run_handshake
from .test_daemon import ChildSaInstalled, Node, echo_round_trip, pair, run, until
from .test_ike_sa import (
    INITIATOR_ID,
    RESPONDER_ID,
    exchange_all,
    make_config,
    make_pair,
)

SMALL = {"fragment_size": 200}
"""An IP datagram size that forces even a PSK IKE_AUTH into fragments."""


def payload_types(datagram):
    return [p.payload_type for p in decode_message(datagram).payloads]


def handshake(initiator_changes, responder_changes):
    log = []
    initiator, responder = make_pair(initiator_changes, responder_changes)
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)
    return initiator, responder, log


def test_ike_auth_leaves_in_fragments_each_within_the_limit():
    initiator, responder, log = handshake(SMALL, SMALL)

    auth = [(d, data) for d, data in log if decode_header(data).exchange_type == 35]
    requests = [data for d, data in auth if d == "i->r"]
    responses = [data for d, data in auth if d == "r->i"]
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert len(requests) > 1 and len(responses) > 1
    # 200 octets of IPv4 datagram: 20 IP, 8 UDP, 4 non-ESP marker off it.
    assert all(len(data) <= 168 for _, data in auth)
    assert all(payload_types(data) == [PayloadType.SKF] for _, data in auth)


def test_fragmentation_is_announced_by_both_in_ike_sa_init():
    _, _, log = handshake(SMALL, SMALL)

    request, response = (decode_message(data) for _, data in log[:2])

    wanted = NotifyType.IKEV2_FRAGMENTATION_SUPPORTED
    assert request.notify(wanted) is not None and response.notify(wanted) is not None


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_messages_stay_whole_when_one_side_does_not_fragment(side):
    off = {**SMALL, "fragmentation": False}
    changes = (off, SMALL) if side == "initiator" else (SMALL, off)

    initiator, responder, log = handshake(*changes)

    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert all(PayloadType.SKF not in payload_types(data) for _, data in log)
    response = decode_message(log[1][1])
    assert response.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is None


def test_retransmitted_fragmented_request_is_answered_once():
    initiator, responder = make_pair(SMALL, SMALL)
    initiator.initiate(0.0)
    [init_request] = initiator.datagrams_to_send()
    responder.receive_datagram(init_request, 0.0)
    for data in responder.datagrams_to_send():
        initiator.receive_datagram(data, 0.0)
    fragments = initiator.datagrams_to_send()
    for data in fragments:
        responder.receive_datagram(data, 0.0)
    first_answer = responder.datagrams_to_send()

    for data in fragments:  # the whole request again, as a retransmission
        responder.receive_datagram(data, 1.0)
    replayed = responder.datagrams_to_send()

    assert len(fragments) > 1 and len(first_answer) > 1
    assert replayed == first_answer


@pytest.mark.parametrize(
    ("address", "size", "limit"),
    [
        (IPv4Address("192.0.2.1"), None, 576 - 32),
        (IPv6Address("2001:db8::1"), None, 1280 - 52),
        (IPv4Address("192.0.2.1"), 1400, 1400 - 32),
    ],
)
def test_size_limit_follows_the_address_family_and_the_setting(address, size, limit):
    config = replace(make_config(INITIATOR_ID, RESPONDER_ID), fragment_size=size)
    context = IkeSaContext(
        config,
        True,
        bytes,
        spi_i=b"\x01" * 8,
        spi_r=bytes(8),
        remote_endpoint=(address, 500),
        fragmentation=True,
    )

    assert message_size_limit(context) == limit
    context.fragmentation = False
    assert message_size_limit(context) is None


def test_daemons_establish_with_fragmented_ike_auth():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes=SMALL, b_changes=SMALL)
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            assert await echo_round_trip(a, b, b"after fragmented IKE_AUTH")
        finally:
            a.close()
            b.close()

    run(scenario())


def test_certificate_ike_auth_is_fragmented_at_the_default_ipv4_size():
    root = Authority.root(kind="rsa")
    intermediate = root.intermediate(kind="rsa")
    chain = [intermediate.certificate]
    anchors = [root.certificate]
    sbc = credentials(intermediate, dns("sbc.example.com"), anchors, "rsa", chain)
    trunk = credentials(intermediate, dns("trunk.example.com"), anchors, "rsa", chain)
    log = []

    initiator, responder = cert_pair(sbc, trunk)
    run_handshake(initiator, responder, log=log)

    auth = [data for _, data in log if decode_header(data).exchange_type == 35]
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert len(auth) > 4  # each direction needs several fragments
    assert all(payload_types(data) == [PayloadType.SKF] for data in auth)
    assert max(len(data) for data in auth) <= 576 - 32


def test_fragment_size_too_small_is_refused_at_configuration():
    with pytest.raises(ValueError, match="fragment_size"):
        make_config(INITIATOR_ID, RESPONDER_ID, fragment_size=100)
