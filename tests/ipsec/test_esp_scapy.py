"""ESP protect/unprotect against scapy's SecurityAssociation, both ways.

scapy implements ESP independently (its own padding, AAD, ICV and header
handling), so byte-for-byte agreement with deterministic IVs and successful
decryption of each other's packets check the whole RFC 4303 path.
"""

from __future__ import annotations

import itertools
from ipaddress import ip_address

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import ESP, SecurityAssociation
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

SPI = 0x1000_0001
SUITES = {
    "aes-gcm-128": (Encryption.AES_GCM_16_128, Integrity.NONE, "AES-GCM", None),
    "aes-gcm-256": (Encryption.AES_GCM_16_256, Integrity.NONE, "AES-GCM", None),
    "chacha20": (
        Encryption.CHACHA20_POLY1305,
        Integrity.NONE,
        "CHACHA20-POLY1305",
        None,
    ),
    "aes-cbc-128-sha256": (
        Encryption.AES_CBC_128,
        Integrity.HMAC_SHA2_256_128,
        "AES-CBC",
        "SHA2-256-128",
    ),
    "aes-cbc-256-sha384": (
        Encryption.AES_CBC_256,
        Integrity.HMAC_SHA2_384_192,
        "AES-CBC",
        "SHA2-384-192",
    ),
    "aes-cbc-256-sha512": (
        Encryption.AES_CBC_256,
        Integrity.HMAC_SHA2_512_256,
        "AES-CBC",
        "SHA2-512-256",
    ),
    "null-sha256": (
        Encryption.NULL,
        Integrity.HMAC_SHA2_256_128,
        "NULL",
        "SHA2-256-128",
    ),
}
OUTER = {4: ("198.51.100.1", "198.51.100.2"), 6: ("2001:db8:ff::1", "2001:db8:ff::2")}
# (mode, inner IP version, outer IP version)
LAYOUTS = {
    "transport-v4": (Mode.TRANSPORT, 4, 4),
    "transport-v6": (Mode.TRANSPORT, 6, 6),
    "tunnel-4in4": (Mode.TUNNEL, 4, 4),
    "tunnel-6in6": (Mode.TUNNEL, 6, 6),
    "tunnel-4in6": (Mode.TUNNEL, 4, 6),
    "tunnel-6in4": (Mode.TUNNEL, 6, 4),
}
SEQUENCES = {False: 0x0000_0007, True: 0x0000_0003_0000_0007}
CBC_IV = bytes(range(0xA0, 0xB0))


def make_config(suite: str, layout: str, esn: bool) -> SAConfig:
    encryption, integrity, _, _ = SUITES[suite]
    mode, _, outer = LAYOUTS[layout]
    tunnel = (None, None)
    if mode is Mode.TUNNEL:
        tunnel = tuple(ip_address(a) for a in OUTER[outer])
    return SAConfig(
        spi=SPI,
        protocol=Protocol.ESP,
        mode=mode,
        encryption=encryption,
        integrity=integrity,
        encryption_key=bytes((i * 13 + 5) & 0xFF for i in range(encryption.key_length)),
        integrity_key=bytes((i * 29 + 3) & 0xFF for i in range(integrity.key_length)),
        esn=esn,
        tunnel_source=tunnel[0],
        tunnel_destination=tunnel[1],
    )


def scapy_sa(
    config: SAConfig, suite: str, sequence: int, outer_header=None, nat_t=False
):
    _, _, crypt_algo, auth_algo = SUITES[suite]
    return SecurityAssociation(
        ESP,
        spi=config.spi,
        seq_num=sequence & 0xFFFFFFFF,
        crypt_algo=crypt_algo,
        crypt_key=config.encryption_key or None,
        auth_algo=auth_algo,
        auth_key=config.integrity_key or None,
        tunnel_header=outer_header,
        nat_t_header=UDP(sport=4500, dport=4500) if nat_t else None,
        esn_en=config.esn,
        esn=sequence >> 32,
    )


def inner_packet(version: int, size: int = 160):
    data = Raw(bytes((i * 11) & 0xFF for i in range(size)))
    if version == 4:
        return (
            IP(src="192.0.2.10", dst="192.0.2.20", tos=0xB8, ttl=61, id=4242)
            / UDP(sport=5004, dport=6004)
            / data
        )
    return (
        IPv6(src="2001:db8::10", dst="2001:db8::20", tc=0xB8, hlim=61)
        / UDP(sport=5004, dport=6004)
        / data
    )


def scapy_outer_header(config: SAConfig, inner, sequence: int):
    """The outer header our engine builds, spelled out for scapy."""
    if config.mode is not Mode.TUNNEL:
        return None
    source, destination = str(config.tunnel_source), str(config.tunnel_destination)
    traffic_class = inner.tos if inner.version == 4 else inner.tc
    if config.tunnel_source.version == 4:
        dont_fragment = "DF" if inner.version == 4 and inner.flags.DF else 0
        return IP(
            src=source,
            dst=destination,
            tos=traffic_class,
            id=sequence & 0xFFFF,
            flags=dont_fragment,
            ttl=64,
        )
    return IPv6(src=source, dst=destination, tc=traffic_class, fl=0, hlim=64)


def fixed_cbc_iv(config: SAConfig):
    """Our IV source for CBC; AEAD SAs keep their sequence-number IVs."""
    return None if config.encryption.is_aead else lambda n: CBC_IV[:n]


def iv_for(config: SAConfig, sequence: int) -> bytes | None:
    if config.encryption.is_aead:
        return sequence.to_bytes(8, "big")
    return CBC_IV if config.encryption is not Encryption.NULL else None


CASES = list(itertools.product(SUITES, LAYOUTS, [False, True]))
IDS = [f"{s}-{layout}-{'esn' if e else 'seq32'}" for s, layout, e in CASES]


@pytest.mark.parametrize(("suite", "layout", "esn"), CASES, ids=IDS)
def test_protect_matches_scapy_bytes(suite, layout, esn):
    config = make_config(suite, layout, esn)
    inner = inner_packet(LAYOUTS[layout][1])
    sequence = SEQUENCES[esn]
    outbound = OutboundSA(
        config, 0.0, iv_source=fixed_cbc_iv(config), last_sequence=sequence - 1
    )

    protected = outbound.protect(bytes(inner), now=0.0)

    reference = scapy_sa(
        config, suite, sequence, scapy_outer_header(config, inner, sequence)
    ).encrypt(inner, iv=iv_for(config, sequence))
    assert protected == bytes(reference)
    assert outbound.sequence == sequence


@pytest.mark.parametrize(("suite", "layout", "esn"), CASES, ids=IDS)
def test_unprotect_accepts_scapy(suite, layout, esn):
    config = make_config(suite, layout, esn)
    inner = inner_packet(LAYOUTS[layout][1])
    sequence = SEQUENCES[esn]
    header = scapy_outer_header(config, inner, 1)
    # scapy's own random IVs: nothing here is chosen to suit our engine.
    protected = scapy_sa(config, suite, sequence, header).encrypt(inner)
    inbound = InboundSA(config, 0.0, last_sequence=sequence - 2)

    result = inbound.unprotect(bytes(protected), now=0.0)

    assert isinstance(result, Unprotected)
    assert result.packet == bytes(inner)
    assert result.sequence == sequence
    assert inbound.counters.packets == 1


@pytest.mark.parametrize(("suite", "layout", "esn"), CASES, ids=IDS)
def test_scapy_decrypts_protect(suite, layout, esn):
    config = make_config(suite, layout, esn)
    inner = inner_packet(LAYOUTS[layout][1])
    sequence = SEQUENCES[esn]
    outbound = OutboundSA(config, 0.0, last_sequence=sequence - 1)

    protected = outbound.protect(bytes(inner), now=0.0)

    outer_class = IP if protected[0] >> 4 == 4 else IPv6
    header = scapy_outer_header(config, inner, sequence)
    decrypted = scapy_sa(config, suite, sequence, header).decrypt(
        outer_class(protected)
    )
    assert bytes(decrypted) == bytes(inner)


@pytest.mark.parametrize("suite", list(SUITES))
@pytest.mark.parametrize("layout", ["transport-v4", "tunnel-6in4", "tunnel-4in6"])
def test_seal_matches_scapy_udp_encapsulation(suite, layout):
    config = make_config(suite, layout, esn=True)
    inner = inner_packet(LAYOUTS[layout][1], size=37)
    sequence = SEQUENCES[True]
    outbound = OutboundSA(
        config, 0.0, iv_source=fixed_cbc_iv(config), last_sequence=sequence - 1
    )
    header = scapy_outer_header(config, inner, sequence)
    reference = scapy_sa(config, suite, sequence, header, nat_t=True).encrypt(
        inner, iv=iv_for(config, sequence)
    )
    if config.mode is Mode.TUNNEL:
        payload, next_header = bytes(inner), 4 if inner.version == 4 else 41
    else:
        payload, next_header = bytes(inner.payload), inner.proto

    sealed = outbound.seal(payload, next_header, now=0.0)

    assert sealed == bytes(reference[UDP].payload)
    opened = InboundSA(config, 0.0, last_sequence=sequence - 1).open(sealed, now=0.0)
    assert (opened.next_header, opened.payload) == (next_header, payload)


def ipv6_with_extensions(routing: bool):
    base = IPv6(src="2001:db8::10", dst="2001:db8::20") / IPv6ExtHdrHopByHop()
    if routing:
        base = base / IPv6ExtHdrRouting(addresses=["2001:db8::30"])
    return base / IPv6ExtHdrDestOpt() / UDP(sport=7, dport=9) / Raw(b"x" * 50)


@pytest.mark.parametrize("routing", [False, True], ids=["no-routing", "routing"])
def test_protect_places_esp_after_ipv6_extension_headers(routing):
    config = make_config("aes-gcm-128", "transport-v6", esn=True)
    packet = ipv6_with_extensions(routing)
    outbound = OutboundSA(config, 0.0)

    protected = outbound.protect(bytes(packet), now=0.0)

    reference = scapy_sa(config, "aes-gcm-128", 1).encrypt(
        packet, iv=(1).to_bytes(8, "big")
    )
    assert protected == bytes(reference)
    # RFC 4303 §3.1.1: a destination options header after a routing header
    # is end-to-end and goes inside ESP; before one, it stays outside.
    assert (IPv6ExtHdrDestOpt in IPv6(protected)) == (not routing)
    result = InboundSA(config, 0.0).unprotect(protected, now=0.0)
    assert result.packet == bytes(packet)


def test_unprotect_tunnel_rejects_non_ip_inner_as_policy_mismatch():
    config = make_config("aes-gcm-128", "tunnel-4in4", esn=True)
    # A peer's tunnel SA carrying a bare UDP datagram, not an IP packet.
    transport_like = scapy_sa(config, "aes-gcm-128", 1).encrypt(inner_packet(4))
    inbound = InboundSA(config, 0.0)

    result = inbound.unprotect(bytes(transport_like), now=0.0)

    assert result.reason is DropReason.POLICY_MISMATCH
    assert inbound.counters.drops[DropReason.POLICY_MISMATCH] == 1
