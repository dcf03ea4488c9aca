"""COOKIE challenges (RFC 7296 §2.6): the stateless responder check and the
initiator's retry, with two real engines in memory."""

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipsec.ike.constants import DhGroup, NotifyType
from ipsec.ike.cookies import CookieJar
from ipsec.ike.daemon import ChildSaInstalled
from ipsec.ike.errors import IkeError
from ipsec.ike.ike_sa import IkeSa, IkeSaState
from ipsec.ike.message import decode_message, encode_message
from ipsec.ike.payloads import NotifyPayload

from .test_daemon import (
    A_ID,
    B_ID,
    Node,
    connection,
    echo_round_trip,
    exchange,
    pair,
    pair_b_only,
    probe_socket,
    run,
    until,
)
from .test_ike_sa import exchange_all, ike_proposal, make_pair, seeded

ADDRESS = IPv4Address("192.0.2.10")


def first_payload(datagram):
    return decode_message(datagram).payloads[0]


def test_cookie_round_trip_completes_the_handshake():
    jar = CookieJar(seeded(99), now=0.0)
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    [request] = initiator.datagrams_to_send()

    challenge = jar.screen(request, ADDRESS, 0.0)
    initiator.receive_datagram(challenge, 0.1)
    [retry] = initiator.datagrams_to_send()
    admitted = jar.screen(retry, ADDRESS, 0.1)
    responder.receive_datagram(retry, 0.1)
    exchange_all(initiator, responder, now=0.1)

    cookie = first_payload(challenge)
    assert cookie.notify_type == NotifyType.COOKIE
    assert decode_message(challenge).spi_r == bytes(8)
    assert first_payload(retry) == cookie
    # Same nonce and KEi: only the cookie was added in front.
    assert decode_message(retry).payloads[1:] == decode_message(request).payloads
    assert admitted is None
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED


def test_cookie_is_bound_to_address_spi_and_nonce():
    jar = CookieJar(seeded(5), now=0.0)
    nonce, spi = b"n" * 32, bytes.fromhex("0102030405060708")
    cookie = jar.make(nonce, ADDRESS, spi, 0.0)

    assert jar.verify(cookie, nonce, ADDRESS, spi, 1.0)
    assert not jar.verify(cookie, nonce, IPv4Address("192.0.2.11"), spi, 1.0)
    assert not jar.verify(cookie, nonce, ADDRESS, bytes(7) + b"\x01", 1.0)
    assert not jar.verify(cookie, b"m" * 32, ADDRESS, spi, 1.0)
    assert not jar.verify(cookie[:-1], nonce, ADDRESS, spi, 1.0)


def test_cookie_survives_one_rotation_but_not_two():
    jar = CookieJar(seeded(6), now=0.0, secret_lifetime=10.0)
    address = IPv6Address("2001:db8::1")
    nonce, spi = b"x" * 16, b"\x11" * 8
    cookie = jar.make(nonce, address, spi, 0.0)

    assert jar.verify(cookie, nonce, address, spi, 10.5)
    assert jar.make(nonce, address, spi, 10.5) != cookie
    assert not jar.verify(cookie, nonce, address, spi, 21.0)


def test_cookie_elsewhere_than_first_is_challenged_again():
    jar = CookieJar(seeded(7), now=0.0)
    initiator, _ = make_pair()
    initiator.initiate(0.0)
    [request] = initiator.datagrams_to_send()
    cookie = first_payload(jar.screen(request, ADDRESS, 0.0))
    message = decode_message(request)
    misplaced = message.__class__(
        message.exchange_type,
        message.message_id,
        message.spi_i,
        payloads=(*message.payloads, cookie),
    )

    assert jar.screen(encode_message(misplaced), ADDRESS, 0.0) is not None


@pytest.mark.parametrize("next_payload", [0, 33], ids=["no-payloads", "truncated-sa"])
def test_screen_of_malformed_request_raises_the_protocol_error(next_payload):
    jar = CookieJar(seeded(8), now=0.0)
    header = b"\x01" * 8 + bytes(8) + bytes([next_payload, 0x20, 34, 0x08])
    datagram = header + bytes(4) + (28).to_bytes(4, "big")

    with pytest.raises(IkeError):
        jar.screen(datagram, ADDRESS, 0.0)


def test_initiator_stops_after_repeated_cookie_challenges():
    jar = CookieJar(seeded(9), now=0.0)
    initiator, _ = make_pair()
    initiator.initiate(0.0)
    [request] = initiator.datagrams_to_send()

    sent = []
    for round_number in range(6):
        # A forger answering every retry with a fresh challenge.
        challenge = jar.screen(request, ADDRESS, float(round_number))
        initiator.receive_datagram(challenge, float(round_number))
        sent += initiator.datagrams_to_send()

    assert len(sent) == 3
    assert initiator.state is IkeSaState.IKE_SA_INIT_SENT
    assert initiator.drops[
        "unacceptable IKE_SA_INIT response: too many COOKIE challenges"
    ]


def test_cookie_stays_first_after_invalid_ke_retry():
    # The responder wants P-256 while the initiator opens with X25519.
    initiator, responder = make_pair(
        initiator_changes={
            "ike_proposals": (
                ike_proposal(groups=(DhGroup.CURVE25519, DhGroup.ECP_256)),
            )
        },
        responder_changes={"ike_proposals": (ike_proposal(groups=(DhGroup.ECP_256,)),)},
    )
    jar = CookieJar(seeded(10), now=0.0)
    initiator.initiate(0.0)
    [request] = initiator.datagrams_to_send()
    initiator.receive_datagram(jar.screen(request, ADDRESS, 0.0), 0.0)
    [with_cookie] = initiator.datagrams_to_send()
    responder.receive_datagram(with_cookie, 0.0)
    [invalid_ke] = responder.datagrams_to_send()
    initiator.receive_datagram(invalid_ke, 0.0)
    [second_try] = initiator.datagrams_to_send()

    assert isinstance(first_payload(second_try), NotifyPayload)
    assert first_payload(second_try) == first_payload(with_cookie)
    assert jar.screen(second_try, ADDRESS, 0.0) is not None  # new nonce: new cookie


# ---------------------------------------------------------------------------
# The daemon: real sockets on loopback


def test_daemons_establish_through_a_cookie_challenge():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2", cookie_threshold=0)
        try:
            pair(a, b)
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            assert b.daemon.drops["COOKIE required"] == 1
            assert await echo_round_trip(a, b, b"through the cookie")
        finally:
            a.close()
            b.close()

    run(scenario())


def probe_with_cookie(sock, port, spi):
    """IKE_SA_INIT from a throwaway engine, repeated with the cookie asked for."""

    async def steps():
        engine = IkeSa(
            probe_config(), is_initiator=True, local_spi=spi, random_bytes=seeded(3)
        )
        engine.initiate(0.0)
        [request] = engine.datagrams_to_send()
        challenge = await exchange(sock, port, request)
        engine.receive_datagram(challenge, 0.0)
        [retry] = engine.datagrams_to_send()
        return challenge, retry

    return steps()


def probe_config():
    return connection(
        "probe", "127.0.0.1", "127.0.0.2", A_ID, B_ID,
        local_net="10.1.0.0/24", remote_net="10.2.0.0/24",
    ).ike_sa_config()  # fmt: skip


def test_daemon_challenge_keeps_no_state_and_the_half_open_cap_stays():
    async def scenario():
        b = Node("127.0.0.2", cookie_threshold=0, max_half_open=1)
        sock = probe_socket()
        try:
            pair_b_only(b)
            port = b.daemon.ike_port
            challenge, retry = await probe_with_cookie(sock, port, b"\x01" * 8)
            stateless = (len(b.daemon.ike_sas()), b.daemon.manager.half_open)
            answer = decode_message(await exchange(sock, port, retry))
            _, second_retry = await probe_with_cookie(sock, port, b"\x02" * 8)
            sock.sendto(second_retry, ("127.0.0.2", port))
            await until(lambda: b.daemon.drops["half-open limit"])

            assert first_payload(challenge).notify_type == NotifyType.COOKIE
            assert stateless == (0, 0)
            assert answer.spi_r != bytes(8) and len(answer.payloads) > 1
            assert b.daemon.manager.half_open == 1
            assert b.daemon.drops["COOKIE required"] == 2
        finally:
            sock.close()
            b.close()

    run(scenario())


def _real_request():
    initiator, _ = make_pair()
    initiator.initiate(0.0)
    [request] = initiator.datagrams_to_send()
    return request


REQUEST = _real_request()


def _mutated(flips):
    data = bytearray(REQUEST)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4
        ).map(_mutated),
    )
)
def test_screen_of_arbitrary_bytes_answers_or_raises_the_protocol_error(data):
    jar = CookieJar(seeded(11), now=0.0)

    try:
        verdict = jar.screen(data, ADDRESS, 0.0)
    except IkeError:
        return
    assert verdict is None or first_payload(verdict).notify_type == NotifyType.COOKIE
