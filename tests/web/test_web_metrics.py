"""Prometheus metrics from the real engines' snapshots, parsed as Prometheus would.

A SIP endpoint, two IPsec data planes and a media relay run on one uvloop
loop on loopback; the test sends them traffic it counts itself, builds the
node snapshot from their own ``snapshot``/``stats`` methods, and reads the
exposition back with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import pytest
import uvloop
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ipsec.dataplane import DataPlane
from ipsec.esp import Encryption, Integrity, Lifetime, Mode, Protocol, SAConfig
from ipsec.esp.spd import Direction, TrafficSelector
from sbc.admission import AdmissionControl, CallRejected, Limits
from sbc.cdr import CallRecord, CdrWriter, Disposition
from sbc.io.endpoint import SipEndpoint
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.media import MediaRelay, MediaSettings, RemoteMedia, Side
from web.metrics import CallOutcomes, metrics_registry
from web.services.users import Role

LOOPBACK = "127.0.0.1"
INNER_A, INNER_B = "198.51.100.1", "198.51.100.2"
ESP_PACKETS = 5
RTP_PACKETS = 12


def _samples(exposition: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample, keyed by name and labels, as a scraper parses them."""
    samples = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def _udp_peer() -> tuple[asyncio.DatagramTransport, _Collect]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Collect, local_addr=(LOOPBACK, 0)
    )
    return transport, protocol


# Engines, each driven by traffic the test counts


async def _sip_endpoint_traffic() -> SipEndpoint:
    listen = (ListenSpec("UDP", LOOPBACK, 0),)
    endpoint = SipEndpoint(TransportSettings(listen=listen))
    await endpoint.start()
    peer, _ = await _udp_peer()
    port = endpoint.listening[0].port
    options = (
        "OPTIONS sip:sbc@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.get_extra_info('sockname')[1]};"
        "branch=z9hG4bK-metrics-1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=1\r\n"
        "To: <sip:sbc@127.0.0.1>\r\nCall-ID: metrics-1\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    peer.sendto(options.encode(), (LOOPBACK, port))
    peer.sendto(b"this is not SIP\r\n\r\n", (LOOPBACK, port))
    await _until(lambda: endpoint.snapshot()["udp"]["received"] == 2)
    await _until(lambda: endpoint.snapshot()["udp"]["sent"] >= 1)
    peer.close()
    return endpoint


def _sa(spi: int) -> SAConfig:
    encryption = Encryption.AES_GCM_16_128
    return SAConfig(
        soft=Lifetime(),
        hard=Lifetime(),
        spi=spi,
        protocol=Protocol.ESP,
        mode=Mode.TUNNEL,
        encryption=encryption,
        integrity=Integrity.NONE,
        encryption_key=os.urandom(encryption.key_length),
        integrity_key=b"",
        tunnel_source=ip_address(LOOPBACK),
        tunnel_destination=ip_address(LOOPBACK),
    )


async def _data_plane_traffic() -> tuple[DataPlane, DataPlane, int]:
    """Plane A sends ESP_PACKETS datagrams to plane B, and one forged packet."""
    loop = asyncio.get_running_loop()
    a, b = DataPlane(loop), DataPlane(loop)
    a.open_udp_encap(LOOPBACK, 0)
    encap_b = b.open_udp_encap(LOOPBACK, 0)
    a_to_b = _sa(0x1000)
    a.add_sa(a_to_b, inbound=False, peer=LOOPBACK, peer_port=encap_b.local_address[1])
    b.add_sa(a_to_b, inbound=True)
    side_a = TrafficSelector.from_network(f"{INNER_A}/32", 17, None)
    side_b = TrafficSelector.from_network(f"{INNER_B}/32", 17, None)
    a.add_policy(side_a, side_b, a_to_b.spi)
    b.add_policy(side_b, side_a, a_to_b.spi, direction=Direction.INBOUND)
    delivered: list[bytes] = []
    b.bind(INNER_B, 5060, lambda payload, _source: delivered.append(payload))

    for index in range(ESP_PACKETS):
        assert a.send(INNER_A, INNER_B, 17, 5060, 5060, bytes(100 + index)) is None
    forged = (0xDEADBEEF).to_bytes(4, "big") + bytes(40)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(forged, encap_b.local_address[:2])
    await _until(lambda: len(delivered) == ESP_PACKETS)
    await _until(lambda: bool(b.stats()["before_sa"]))
    return a, b, sum(len(payload) for payload in delivered)


async def _media_traffic() -> MediaRelay:
    # A port range per process, so parallel test workers rarely meet.
    low = 20000 + (os.getpid() % 100) * 100
    relay = MediaRelay(MediaSettings(port_min=low, port_max=low + 99))
    session = await relay.allocate("media-call", LOOPBACK, LOOPBACK)
    caller, _ = await _udp_peer()
    callee, heard = await _udp_peer()
    for side, peer in ((Side.A, caller), (Side.B, callee)):
        port = peer.get_extra_info("sockname")[1]
        session.update_leg(side, RemoteMedia(host=LOOPBACK, rtp_port=port))
    to_relay = (LOOPBACK, session.local(Side.A).rtp_port)

    for seq in range(RTP_PACKETS):
        header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + bytes(4) + bytes(4)
        caller.sendto(header + bytes(160), to_relay)
    caller.sendto(b"\x80\x00", to_relay)  # shorter than an RTP header
    await _until(lambda: len(heard.received) == RTP_PACKETS)
    await _until(lambda: _media_totals(relay).get("drop.short") == 1)
    caller.close()
    callee.close()
    return relay


def _media_totals(relay: MediaRelay) -> dict[str, float]:
    # What the node keeps: every leg's counters summed (here no call ended).
    totals: dict[str, float] = {}
    for session in relay.sessions.values():
        for leg in session.snapshot().values():
            for key, value in leg.items():
                if isinstance(value, int | float):
                    totals[key] = totals.get(key, 0) + value
    return totals


def _call_sections(tmp_path) -> tuple[dict[str, Any], CallOutcomes]:
    admission = AdmissionControl({"carrier": Limits(max_calls=1)})
    admission.admit("carrier", now=0.0)
    with pytest.raises(CallRejected):
        admission.admit("carrier", now=0.0)
    outcomes = CallOutcomes(CdrWriter(tmp_path / "cdr.jsonl"))
    for status, disposition in ((200, "answered"), (486, "busy"), (486, "busy")):
        outcomes.write(
            CallRecord(
                call_id=f"c-{status}-{len(outcomes.section()['final_responses'])}",
                start_time=1.0, end_time=2.0, answer_time=1.5 if status == 200 else None,
                disposition=Disposition(disposition), final_status=status,
                a_trunk="carrier", b_trunk="pbx",
            )
        )  # fmt: skip
    outcomes.close()
    stats = dataclasses.asdict(admission.stats("carrier"))
    return {"active": 1, "trunks": {"carrier": stats}, **outcomes.section()}, outcomes


def test_metrics_from_real_engine_snapshots(tmp_path):
    async def scenario() -> bytes:
        endpoint = await _sip_endpoint_traffic()
        a, b, esp_bytes = await _data_plane_traffic()
        relay = await _media_traffic()
        calls, _ = _call_sections(tmp_path)
        snapshot = {
            "sip": endpoint.snapshot(),
            "ipsec": b.stats(),
            "media": {"sessions": len(relay.sessions), "totals": _media_totals(relay)},
            "calls": calls,
            "trunks": {"carrier": {"state": "up"}, "pbx": {"state": "down"}},
            # The IKE daemon keeps no counters yet: this section is the
            # documented shape, filled by hand.
            "ike": {
                "exchanges": {"IKE_SA_INIT": 2},
                "failures": {},
                "ike_sas": 1,
                "established": 1,
                "drops": {"half-open limit": 4},
            },
            "trunk_services": {"registered": 3, "trunk_down": 1},
            "node": {"applies": 2, "apply_failures": 0},
        }
        exposition = generate_latest(metrics_registry(lambda: snapshot))
        await endpoint.close()
        await relay.close()
        a.close()
        b.close()
        assert esp_bytes == sum(100 + i for i in range(ESP_PACKETS))
        return exposition

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        samples = _samples(runner.run(asyncio.wait_for(scenario(), 60)))

    assert _value(samples, "sbc_node_up") == 1
    # SIP: one OPTIONS and one unparseable datagram arrived.
    assert _value(samples, "sbc_sip_transport_received_total", transport="udp") == 2
    assert _value(samples, "sbc_sip_requests_total") == 1
    drops = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "sbc_sip_transport_drops_total"
    }
    assert sum(drops.values()) == 1
    # ESP: five packets accepted on SA 0x1000, one forged SPI dropped.
    assert (
        _value(
            samples, "sbc_ipsec_sa_packets_total", direction="inbound", spi="0x00001000"
        )
        == ESP_PACKETS
    )
    assert _value(samples, "sbc_ipsec_sas", direction="inbound") == 1
    assert _value(samples, "sbc_ipsec_drops_before_sa_total", reason="unknown_spi") == 1
    assert (
        _value(
            samples,
            "sbc_ipsec_path_packets_total",
            path="udp:127.0.0.1",
            direction="in",
        )
        == ESP_PACKETS + 1
    )
    # Media: twelve RTP packets relayed A to B, one short packet dropped.
    assert _value(samples, "sbc_media_packets_received_total") == RTP_PACKETS
    assert _value(samples, "sbc_media_packets_sent_total") == RTP_PACKETS
    assert _value(samples, "sbc_media_drops_total", reason="short") == 1
    assert _value(samples, "sbc_media_sessions") == 1
    # Calls: admission and outcomes per trunk, final responses by code.
    assert _value(samples, "sbc_trunk_calls_admitted_total", trunk="carrier") == 1
    assert (
        _value(samples, "sbc_trunk_calls_rejected_max_calls_total", trunk="carrier")
        == 1
    )
    assert _value(samples, "sbc_trunk_calls_active", trunk="carrier") == 1
    assert (
        _value(
            samples,
            "sbc_calls_ended_total",
            trunk="carrier",
            direction="in",
            disposition="busy",
        )
        == 2
    )
    assert (
        _value(
            samples,
            "sbc_calls_ended_total",
            trunk="pbx",
            direction="out",
            disposition="answered",
        )
        == 1
    )
    assert _value(samples, "sbc_call_final_responses_total", code="486") == 2
    assert _value(samples, "sbc_trunk_up", trunk="carrier") == 1
    assert _value(samples, "sbc_trunk_up", trunk="pbx") == 0
    assert _value(samples, "sbc_trunk_state", trunk="pbx", state="down") == 1
    assert _value(samples, "sbc_ike_exchanges_total", exchange="IKE_SA_INIT") == 2
    assert _value(samples, "sbc_ike_drops_total", reason="half-open limit") == 4
    assert _value(samples, "sbc_ike_sas_established") == 1
    assert _value(samples, "sbc_trunk_service_events_total", event="registered") == 3
    assert _value(samples, "sbc_node_applies_total") == 2
    assert ("process_resident_memory_bytes", frozenset()) in samples  # fmt: skip


def test_metrics_without_a_node_or_with_a_broken_one():
    def broken() -> dict:
        raise RuntimeError("engine gone")

    for snapshot in (lambda: None, broken):
        samples = _samples(generate_latest(metrics_registry(snapshot)))
        assert _value(samples, "sbc_node_up") == 0
        assert not any(name.startswith("sbc_sip") for name, _ in samples)


def test_metrics_route_needs_a_token(client, role_headers, state):
    state.snapshot = lambda: {"calls": {"active": 3}}
    assert client.get("/metrics").status_code == 401
    for role in Role:
        answer = client.get("/metrics", headers=role_headers[role])
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert _value(_samples(answer.content), "sbc_calls_active") == 3
