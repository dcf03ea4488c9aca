"""AH (RFC 4302) against scapy's independent implementation, both ways."""

from __future__ import annotations

import itertools
from ipaddress import ip_address

import pytest
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, RouterAlert
from scapy.layers.ipsec import AH, SecurityAssociation
from scapy.packet import Raw

from ipsec.esp import (
    DropReason,
    Encryption,
    InboundSA,
    Integrity,
    Mode,
    OutboundSA,
    Protocol,
    SAConfig,
    Unprotected,
)

SPI = 0x2000_0002
INTEGRITY = {
    Integrity.HMAC_SHA2_256_128: "SHA2-256-128",
    Integrity.HMAC_SHA2_384_192: "SHA2-384-192",
    Integrity.HMAC_SHA2_512_256: "SHA2-512-256",
}
OUTER = {4: ("198.51.100.1", "198.51.100.2"), 6: ("2001:db8:ff::1", "2001:db8:ff::2")}
LAYOUTS = {
    "transport-v4": (Mode.TRANSPORT, 4, 4),
    "transport-v6": (Mode.TRANSPORT, 6, 6),
    "tunnel-4in4": (Mode.TUNNEL, 4, 4),
    "tunnel-6in6": (Mode.TUNNEL, 6, 6),
    "tunnel-4in6": (Mode.TUNNEL, 4, 6),
    "tunnel-6in4": (Mode.TUNNEL, 6, 4),
}
SEQUENCES = {False: 0x0000_0011, True: 0x0000_0001_0000_0002}


def make_config(integrity: Integrity, layout: str, esn: bool) -> SAConfig:
    mode, _, outer = LAYOUTS[layout]
    tunnel = (None, None)
    if mode is Mode.TUNNEL:
        tunnel = tuple(ip_address(a) for a in OUTER[outer])
    return SAConfig(
        spi=SPI,
        protocol=Protocol.AH,
        mode=mode,
        encryption=Encryption.NULL,
        integrity=integrity,
        encryption_key=b"",
        integrity_key=bytes((i * 17 + 1) & 0xFF for i in range(integrity.key_length)),
        esn=esn,
        tunnel_source=tunnel[0],
        tunnel_destination=tunnel[1],
    )


def scapy_sa(config: SAConfig, sequence: int, outer_header=None):
    return SecurityAssociation(
        AH,
        spi=config.spi,
        seq_num=sequence & 0xFFFFFFFF,
        auth_algo=INTEGRITY[config.integrity],
        auth_key=config.integrity_key,
        tunnel_header=outer_header,
        esn_en=config.esn,
        esn=sequence >> 32,
    )


def inner_packet(version: int):
    data = Raw(bytes(range(90)))
    if version == 4:
        return (
            IP(src="192.0.2.10", dst="192.0.2.20", tos=0x28, ttl=33, id=7)
            / UDP(sport=5060, dport=5060)
            / data
        )
    return (
        IPv6(src="2001:db8::10", dst="2001:db8::20", tc=0x28, fl=0x12345)
        / UDP(sport=5060, dport=5060)
        / data
    )


def scapy_outer_header(config: SAConfig, inner, sequence: int):
    if config.mode is not Mode.TUNNEL:
        return None
    source, destination = str(config.tunnel_source), str(config.tunnel_destination)
    traffic_class = inner.tos if inner.version == 4 else inner.tc
    if config.tunnel_source.version == 4:
        return IP(
            src=source, dst=destination, tos=traffic_class, id=sequence & 0xFFFF, ttl=64
        )
    return IPv6(src=source, dst=destination, tc=traffic_class, hlim=64)


def parse(packet: bytes):
    return IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)


CASES = list(itertools.product(INTEGRITY, LAYOUTS, [False, True]))
IDS = [f"{i.name}-{layout}-{'esn' if e else 'seq32'}" for i, layout, e in CASES]


@pytest.mark.parametrize(("integrity", "layout", "esn"), CASES, ids=IDS)
def test_ah_protect_matches_scapy_bytes(integrity, layout, esn):
    config = make_config(integrity, layout, esn)
    inner = inner_packet(LAYOUTS[layout][1])
    sequence = SEQUENCES[esn]
    outbound = OutboundSA(config, 0.0, last_sequence=sequence - 1)

    protected = outbound.protect(bytes(inner), now=0.0)

    header = scapy_outer_header(config, inner, sequence)
    reference = scapy_sa(config, sequence, header).encrypt(inner)
    assert protected == bytes(reference)
    # scapy verifies our ICV as well (raises on a mismatch).
    scapy_sa(config, sequence, header).decrypt(parse(protected))


@pytest.mark.parametrize(("integrity", "layout", "esn"), CASES, ids=IDS)
def test_ah_unprotect_accepts_scapy_after_mutable_fields_change(integrity, layout, esn):
    config = make_config(integrity, layout, esn)
    inner = inner_packet(LAYOUTS[layout][1])
    sequence = SEQUENCES[esn]
    header = scapy_outer_header(config, inner, 99)
    protected = parse(bytes(scapy_sa(config, sequence, header).encrypt(inner)))
    # Routers on the way rewrite the mutable fields (RFC 4302 §3.3.3.1).
    if protected.version == 4:
        protected.ttl, protected.tos, protected.flags = 3, 0x01, "DF"
        del protected.chksum
    else:
        protected.hlim, protected.tc, protected.fl = 3, 0x01, 0xABCDE
    inbound = InboundSA(config, 0.0, last_sequence=sequence - 1)

    result = inbound.unprotect(bytes(protected), now=0.0)

    assert isinstance(result, Unprotected)
    assert result.sequence == sequence
    # Transport mode keeps the header as received (mutated fields and all),
    # exactly as scapy strips AH from it.
    stripped = scapy_sa(config, sequence, header).decrypt(parse(bytes(protected)))
    assert result.packet == bytes(stripped)
    if config.mode is Mode.TUNNEL:
        assert result.packet == bytes(inner)


@pytest.mark.parametrize("integrity", list(INTEGRITY))
@pytest.mark.parametrize("version", [4, 6])
def test_ah_rejects_changed_immutable_field(integrity, version):
    config = make_config(integrity, f"transport-v{version}", esn=True)
    protected = parse(
        OutboundSA(config, 0.0).protect(bytes(inner_packet(version)), 0.0)
    )
    protected.src = "192.0.2.99" if version == 4 else "2001:db8::99"
    if version == 4:
        del protected.chksum
    inbound = InboundSA(config, 0.0)

    result = inbound.unprotect(bytes(protected), now=0.0)

    assert result.reason is DropReason.BAD_ICV
    assert inbound.replay.top == 0


def test_ah_ipv4_options_mutable_zeroed_immutable_kept():
    config = make_config(Integrity.HMAC_SHA2_256_128, "transport-v4", esn=False)
    packet = (
        IP(
            src="192.0.2.10",
            dst="192.0.2.20",
            options=[IPOption_Router_Alert(), IPOption_RR(routers=["192.0.2.1"])],
        )
        / UDP(sport=1, dport=2)
        / Raw(b"options")
    )

    protected = OutboundSA(config, 0.0).protect(bytes(packet), 0.0)

    reference = scapy_sa(config, 1).encrypt(packet)
    assert protected == bytes(reference)
    # Record Route is filled in on the way: still valid. Router Alert's value
    # is immutable: a change must fail the ICV.
    on_route = parse(protected)
    on_route.options[1].routers = ["192.0.2.77"]
    del on_route.chksum
    assert isinstance(
        InboundSA(config, 0.0).unprotect(bytes(on_route), 0.0), Unprotected
    )
    tampered = parse(protected)
    tampered.options[0].alert = 1
    del tampered.chksum
    assert (
        InboundSA(config, 0.0).unprotect(bytes(tampered), 0.0).reason
        is DropReason.BAD_ICV
    )


def test_ah_ipv6_routing_header_predicted_and_hop_options_zeroed():
    config = make_config(Integrity.HMAC_SHA2_512_256, "transport-v6", esn=True)
    packet = (
        IPv6(src="2001:db8::10", dst="2001:db8::1")
        / IPv6ExtHdrHopByHop(options=[RouterAlert()])
        / IPv6ExtHdrRouting(addresses=["2001:db8::2", "2001:db8::20"], segleft=2)
        / UDP(sport=1, dport=2)
        / Raw(b"route")
    )

    protected = OutboundSA(config, 0.0).protect(bytes(packet), 0.0)

    assert protected == bytes(scapy_sa(config, 1).encrypt(packet))
    # Deliver it as the final destination sees it: destination swapped in,
    # Segments Left 0 (RFC 8200 §4.4).
    arrived = IPv6(protected)
    routing = arrived[IPv6ExtHdrRouting]
    routing.addresses = ["2001:db8::1", "2001:db8::2"]
    routing.segleft = 0
    arrived.dst = "2001:db8::20"
    result = InboundSA(config, 0.0).unprotect(bytes(arrived), 0.0)
    assert isinstance(result, Unprotected)
    scapy_sa(config, 1).decrypt(IPv6(bytes(arrived)))


def test_ah_dummy_packet_counted_not_delivered():
    config = make_config(Integrity.HMAC_SHA2_256_128, "transport-v4", esn=True)
    dummy = IP(src="192.0.2.10", dst="192.0.2.20", proto=59) / Raw(b"")
    protected = OutboundSA(config, 0.0).protect(bytes(dummy), 0.0)
    inbound = InboundSA(config, 0.0)

    result = inbound.unprotect(protected, 0.0)

    assert result.reason is DropReason.DUMMY
    assert inbound.counters.drops[DropReason.DUMMY] == 1
    assert inbound.counters.packets == 0
