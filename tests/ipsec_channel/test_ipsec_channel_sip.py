"""SIP on a protected listener: carried by the IPsec data plane's channel."""

from __future__ import annotations

import asyncio

import pytest
from channel_helpers import (
    PATHS,
    TUNNEL_INNER,
    connect_planes,
    new_request,
    protected_endpoints,
    run,
    sdp,
)

from ipsec.esp import Mode
from sbc.io.addresses import format_host_port
from sbc.io.endpoint import SipEndpoint
from sbc.io.ipsec_channel import ChannelUnavailable
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.sip.events import (
    AckReceived,
    RequestReceived,
    TransportErrorOccurred,
)


def options_to(address: tuple[str, int], call_id: str = "options-1") -> tuple:
    uri = f"sip:{format_host_port(*address)}"
    return new_request("OPTIONS", uri, call_id=call_id), address


@pytest.mark.parametrize(("mode", "inner"), PATHS)
def test_options_over_protected_listener_answered_inside_ipsec(mode, inner):
    async def scenario():
        async with protected_endpoints(mode, inner=inner) as ends:
            planes = ends.planes
            request, destination = options_to(ends.uas_address)

            await ends.sbc.send_request(request, destination, "UDP")
            arrived = await ends.uas_user.next(RequestReceived)
            answered = await ends.sbc_user.final_response()

            assert answered.status == 200
            via = arrived.request.top_via
            assert (via.transport, via.host, via.port) == ("UDP", *ends.sbc_address)
            assert arrived.source == ends.sbc_address
            assert ends.sbc.snapshot()["ipsec"] == {
                "received": 1,
                "sent": 1,
                "keepalives": 0,
            }
            assert ends.sbc.snapshot()["udp"]["sent"] == 0
            assert planes.sbc.counters(planes.to_peer.spi).packets == 1
            assert planes.sbc.counters(planes.to_sbc.spi).packets == 1

    run(scenario())


def test_invite_200_ack_bye_inside_ipsec():
    async def scenario():
        answer = sdp(TUNNEL_INNER[1], 40000)
        async with protected_endpoints(Mode.TUNNEL, answer=answer) as ends:
            host, port = ends.uas_address
            sbc_host, sbc_port = ends.sbc_address
            invite = new_request(
                "INVITE", f"sip:+15550100@{host}:{port}", call_id="call-1",
                contact=f"<sip:sbc@{sbc_host}:{sbc_port}>",
                body=sdp(sbc_host, 30000),
            )  # fmt: skip

            await ends.sbc.send_request(invite, ends.uas_address, "UDP")
            offered = await ends.uas_user.next(RequestReceived)
            ok = await ends.sbc_user.final_response()
            assert offered.request.body == invite.body
            assert ok.status == 200 and ok.body == answer

            ack = new_request(
                "ACK", f"sip:uas@{host}:{port}", call_id="call-1", to_tag="uas1"
            )
            ack.headers.prepend(
                "Via", f"SIP/2.0/UDP {sbc_host}:{sbc_port};branch=z9hG4bKack1"
            )
            ends.sbc.transactions.send_stateless(ack, ends.uas_address, "UDP")
            ends.sbc.wake()
            acked = await ends.uas_user.next(AckReceived)
            assert acked.request.call_id == "call-1"

            bye = new_request(
                "BYE", f"sip:uas@{host}:{port}", call_id="call-1", cseq=2, to_tag="uas1"
            )
            await ends.sbc.send_request(bye, ends.uas_address, "UDP")
            assert (await ends.uas_user.next(RequestReceived)).request.method == "BYE"
            assert (await ends.sbc_user.final_response()).status == 200

            counters = ends.sbc.snapshot()
            assert counters["ipsec"]["sent"] >= 3  # INVITE, ACK, BYE
            assert counters["udp"]["sent"] == 0

    run(scenario())


@pytest.mark.parametrize("method", ["OPTIONS", "INVITE"])
def test_sas_removed_request_fails_fast_with_drop_counted(method):
    async def scenario():
        async with protected_endpoints(Mode.TUNNEL) as ends:
            planes = ends.planes
            host, port = ends.uas_address
            planes.remove_sas()
            request = new_request(method, f"sip:+15550100@{host}:{port}", call_id="x")
            loop = asyncio.get_running_loop()
            started = loop.time()

            key = await ends.sbc.send_request(request, ends.uas_address, "UDP")
            failed = await ends.sbc_user.next(TransportErrorOccurred, timeout=1.0)

            # Timer B/F would take 32 s; the drop fails the transaction now.
            assert failed.key == key
            assert loop.time() - started < 1.0
            assert ends.sbc.snapshot()["ipsec"]["drop.no_sa"] == 1
            assert ends.sbc.snapshot()["sip"]["transport_errors"] == 1
            assert planes.sbc.stats()["paths"]["channel"]["drops"] == {"no_sa": 1}
            assert ends.uas_user.events.empty()

    run(scenario())


def test_dropped_responses_leave_udp_retransmissions_running():
    # Only the UAS's SA is gone: its 200s are dropped, and the SBC
    # retransmits as over any UDP (Timer E, RFC 3261 §17.1.2.2).
    async def scenario():
        async with protected_endpoints(Mode.TUNNEL) as ends:
            planes = ends.planes
            planes.peer.del_sa(planes.to_sbc.spi, inbound=False)
            request, destination = options_to(ends.uas_address)

            await ends.sbc.send_request(request, destination, "UDP")
            first = await ends.uas_user.next(RequestReceived)
            again = await ends.uas_user.next(RequestReceived, timeout=3.0)

            assert again.request.top_via.branch == first.request.top_via.branch
            assert ends.uas.snapshot()["ipsec"]["drop.no_sa"] >= 1

    run(scenario())


def test_peer_heard_on_protected_listener_answered_inside_ipsec():
    # Nothing pins the UAS to the channel: hearing it there is enough.
    async def scenario():
        async with protected_endpoints(Mode.TUNNEL, pin_peer=False) as ends:
            request, destination = options_to(ends.sbc_address)

            await ends.uas.send_request(request, destination, "UDP")
            answered = await ends.uas_user.final_response()
            request, destination = options_to(ends.uas_address, "options-2")
            await ends.sbc.send_request(request, destination, "UDP")
            back = await ends.sbc_user.final_response()

            assert answered.status == back.status == 200
            assert ends.sbc.snapshot()["ipsec"]["sent"] == 2

    run(scenario())


def test_large_request_stays_udp_inside_ipsec():
    # Over 1,300 bytes a UDP request would move to TCP (RFC 3261 §18.1.1);
    # only UDP is carried inside IPsec, and IP fragments the ESP datagram.
    async def scenario():
        async with protected_endpoints(Mode.TUNNEL) as ends:
            planes = ends.planes
            host, port = ends.uas_address
            body = (
                sdp(planes.sbc_address, 30000) + b"a=x-filler:" + b"f" * 3000 + b"\r\n"
            )
            invite = new_request(
                "INVITE", f"sip:+1@{host}:{port}", call_id="big", body=body
            )

            await ends.sbc.send_request(invite, ends.uas_address, "UDP")
            arrived = await ends.uas_user.next(RequestReceived)

            assert arrived.transport == "UDP"
            assert arrived.request.body == body

    run(scenario())


def test_protected_listener_without_data_plane_refused_at_start():
    async def scenario():
        spec = ListenSpec("UDP", "198.51.100.1", 5060, ipsec=True)
        endpoint = SipEndpoint(TransportSettings(listen=(spec,)))

        with pytest.raises(ChannelUnavailable, match="no IPsec data plane"):
            await endpoint.start()

    run(scenario())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ListenSpec("TCP", "198.51.100.1", 5060, ipsec=True), "only UDP"),
        (ListenSpec("UDP", "198.51.100.1", 0, ipsec=True), "needs a port"),
    ],
)
def test_protected_listener_not_udp_or_without_port_refused(spec, message):
    async def scenario():
        planes = connect_planes(Mode.TUNNEL)
        endpoint = SipEndpoint(TransportSettings(listen=(spec,)), data_plane=planes.sbc)

        with pytest.raises(ChannelUnavailable, match=message):
            await endpoint.start()
        planes.close()

    run(scenario())


def test_pinned_peer_without_its_protected_listener_refused_at_start():
    async def scenario():
        planes = connect_planes(Mode.TUNNEL)
        spec = ListenSpec("UDP", "198.51.100.1", 5060, ipsec=True)
        endpoint = SipEndpoint(
            TransportSettings(listen=(spec,)),
            data_plane=planes.sbc,
            ipsec_peers={"198.51.100.2": ("198.51.100.1", 5070)},
        )

        with pytest.raises(ChannelUnavailable, match="no IPsec listener"):
            await endpoint.start()
        planes.close()

    run(scenario())


def test_closed_protected_listener_leaves_its_peer_no_clear_path():
    # Transport mode with a clear listener on the same address: the kernel
    # socket could reach the UAS's address, and must not be used.
    async def scenario():
        async with protected_endpoints(Mode.TRANSPORT, clear=True) as ends:
            protected = ends.sbc.listening[0]
            await ends.sbc.close_listener(protected)
            request, destination = options_to(ends.uas_address)

            await ends.sbc.send_request(request, destination, "UDP")
            await ends.sbc_user.next(TransportErrorOccurred, timeout=1.0)
            assert ends.sbc.snapshot()["ipsec"]["drop.listener_closed"] == 1
            assert ends.sbc.snapshot()["udp"]["sent"] == 0

            await ends.sbc.open_listener(protected)
            request, destination = options_to(ends.uas_address, "options-2")
            await ends.sbc.send_request(request, destination, "UDP")
            assert (await ends.sbc_user.final_response()).status == 200
            assert ends.sbc.snapshot()["udp"]["sent"] == 0

    run(scenario())


def test_ipsec_peers_replaced_while_serving():
    async def scenario():
        async with protected_endpoints(Mode.TRANSPORT, clear=True) as ends:
            planes = ends.planes
            pins = {planes.peer_address: ends.sbc_address}

            with pytest.raises(ChannelUnavailable, match="no IPsec listener"):
                ends.sbc.set_ipsec_peers({"192.0.2.9": ("192.0.2.1", 5060)})
            request, destination = options_to(ends.uas_address)
            await ends.sbc.send_request(request, destination, "UDP")
            assert (await ends.sbc_user.final_response()).status == 200

            # The trunk goes clear: its host is no longer sent inside IPsec.
            ends.sbc.set_ipsec_peers({})
            request, destination = options_to(ends.uas_address, "options-2")
            await ends.sbc.send_request(request, destination, "UDP")
            assert ends.sbc.snapshot()["udp"]["sent"] == 1

            ends.sbc.set_ipsec_peers(pins)
            request, destination = options_to(ends.uas_address, "options-3")
            await ends.sbc.send_request(request, destination, "UDP")
            answered = await ends.sbc_user.final_response()
            assert answered.call_id == "options-3" and answered.status == 200

    run(scenario())


def test_stream_to_protected_host_refused_never_connected():
    # A target configured with tcp on a protected trunk must not open a
    # clear connection (transport mode: a leak would reach lo).
    async def scenario():
        async with protected_endpoints(Mode.TRANSPORT) as ends:
            request, destination = options_to(ends.uas_address)

            with pytest.raises(OSError, match="only UDP inside IPsec"):
                await ends.sbc.send_request(request, destination, "TCP")

            request, destination = options_to(ends.uas_address, "options-2")
            host, port = ends.sbc_address
            request.headers.prepend(
                "Via", f"SIP/2.0/TCP {host}:{port};branch=z9hG4bKt1"
            )
            loop = asyncio.get_running_loop()
            ends.sbc.transactions.send_request(request, destination, "TCP", loop.time())
            ends.sbc.wake()
            await ends.sbc_user.next(TransportErrorOccurred, timeout=1.0)
            assert ends.sbc.snapshot()["ipsec"]["drop.not_udp"] == 1
            assert ends.sbc.open_connections == 0

    run(scenario())
