"""Hostile input: every inbound path returns a counted Drop, never raises.

An attacker controls every byte that reaches InboundSA. The invariant held
here (as h11's fuzzing holds its parser): any input either opens or yields
exactly one counted Drop, and a Drop never moves the replay window.
"""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.esp import (
    Drop,
    DropReason,
    Encryption,
    InboundSA,
    Integrity,
    MalformedPacket,
    Mode,
    Opened,
    OutboundSA,
    Protocol,
    SAConfig,
    Unprotected,
)

SPI = 0x5000
SUITES = {
    "gcm": (Encryption.AES_GCM_16_128, Integrity.NONE),
    "chacha": (Encryption.CHACHA20_POLY1305, Integrity.NONE),
    "cbc": (Encryption.AES_CBC_256, Integrity.HMAC_SHA2_384_192),
    "null": (Encryption.NULL, Integrity.HMAC_SHA2_256_128),
}


def make_config(
    suite: str = "gcm",
    protocol: Protocol = Protocol.ESP,
    mode: Mode = Mode.TRANSPORT,
    outer: int = 4,
) -> SAConfig:
    encryption, integrity = SUITES[suite]
    if protocol is Protocol.AH:
        encryption = Encryption.NULL
        integrity = (
            integrity
            if integrity is not Integrity.NONE
            else Integrity.HMAC_SHA2_256_128
        )
    addresses = {4: ("198.51.100.1", "198.51.100.2"), 6: ("2001:db8::1", "2001:db8::2")}
    tunnel = (
        [ip_address(a) for a in addresses[outer]]
        if mode is Mode.TUNNEL
        else [None, None]
    )
    return SAConfig(
        spi=SPI,
        protocol=protocol,
        mode=mode,
        encryption=encryption,
        integrity=integrity,
        encryption_key=bytes(range(7, 7 + encryption.key_length)),
        integrity_key=bytes(range(90, 90 + integrity.key_length)),
        replay_window=64,
        tunnel_source=tunnel[0],
        tunnel_destination=tunnel[1],
    )


def ipv4_udp(payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP

    return bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / payload)


def ipv6_udp(payload: bytes) -> bytes:
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6

    return bytes(
        IPv6(src="2001:db8::a", dst="2001:db8::b") / UDP(sport=1, dport=2) / payload
    )


# Reasons that can be found after the ICV passed: such a packet is genuine
# and its sequence number is used up.
AUTHENTICATED_DROPS = {
    DropReason.DUMMY,
    DropReason.BAD_PADDING,
    DropReason.POLICY_MISMATCH,
}


def total_drops(sa: InboundSA) -> int:
    return sum(sa.counters.drops.values())


def feed(config: SAConfig, data: bytes, whole_packet: bool):
    """Run one input through a fresh SA; check the counting invariant."""
    inbound = InboundSA(config, 0.0, last_sequence=1)
    before_top = inbound.replay.top
    result = inbound.unprotect(data, 0.0) if whole_packet else inbound.open(data, 0.0)
    if isinstance(result, Drop):
        assert total_drops(inbound) == 1
        assert inbound.counters.drops[result.reason] == 1
        assert inbound.counters.packets == 0
        if result.reason not in AUTHENTICATED_DROPS:
            assert inbound.replay.top == before_top
    else:
        assert isinstance(result, Opened | Unprotected)
        assert total_drops(inbound) == 0
    return result


SEALED_CASES = [
    (suite, protocol, mode, outer)
    for suite in SUITES
    for protocol, mode, outer in [
        (Protocol.ESP, Mode.TRANSPORT, 4),
        (Protocol.ESP, Mode.TUNNEL, 6),
    ]
] + [("cbc", Protocol.AH, Mode.TRANSPORT, 4), ("null", Protocol.AH, Mode.TUNNEL, 6)]
SEALED_IDS = [f"{s}-{p.name}-{m.name}-v{o}" for s, p, m, o in SEALED_CASES]


def protected_sample(config: SAConfig, inner_version: int = 4) -> bytes:
    inner = ipv4_udp(b"payload" * 5) if inner_version == 4 else ipv6_udp(b"payload" * 5)
    return OutboundSA(config, 0.0, last_sequence=1).protect(inner, 0.0)


@pytest.mark.parametrize(
    ("suite", "protocol", "mode", "outer"), SEALED_CASES, ids=SEALED_IDS
)
def test_truncated_at_every_length_dropped_and_counted(suite, protocol, mode, outer):
    config = make_config(suite, protocol, mode, outer)
    packet = protected_sample(config, inner_version=outer)

    for length in range(len(packet)):
        assert isinstance(feed(config, packet[:length], whole_packet=True), Drop)
    if protocol is Protocol.ESP:
        esp = OutboundSA(config, 0.0, last_sequence=1).seal(b"rtp" * 20, 17, 0.0)
        for length in range(len(esp)):
            assert isinstance(feed(config, esp[:length], whole_packet=False), Drop)


@pytest.mark.parametrize(
    ("suite", "protocol", "mode", "outer"), SEALED_CASES, ids=SEALED_IDS
)
def test_flipped_bit_in_every_byte_dropped_or_harmless(suite, protocol, mode, outer):
    config = make_config(suite, protocol, mode, outer)
    packet = protected_sample(config, inner_version=outer)
    header_length = 20 if outer == 4 else 40

    for position in range(len(packet)):
        mutated = bytearray(packet)
        mutated[position] ^= 1 << (position % 8)
        result = feed(config, bytes(mutated), whole_packet=True)
        # Only outer IP header bits outside ESP's coverage (or AH's mutable
        # fields) may still verify; nothing past the IP header may.
        if position >= header_length:
            assert isinstance(result, Drop), position


def test_esp_sealed_bit_flips_all_rejected():
    config = make_config("gcm")
    esp = OutboundSA(config, 0.0, last_sequence=1).seal(b"x" * 40, 17, 0.0)

    reasons = set()
    for position in range(len(esp)):
        for bit in range(8):
            mutated = bytearray(esp)
            mutated[position] ^= 1 << bit
            reasons.add(feed(config, bytes(mutated), whole_packet=False).reason)

    assert reasons <= {
        DropReason.UNKNOWN_SPI,
        DropReason.BAD_ICV,
        DropReason.REPLAY,
        DropReason.OUTSIDE_WINDOW,
    }
    assert DropReason.UNKNOWN_SPI in reasons and DropReason.BAD_ICV in reasons


def test_wrong_spi_counted_as_unknown_spi():
    config = make_config("gcm")
    other = make_config("gcm")
    esp = bytearray(OutboundSA(other, 0.0).seal(b"x", 17, 0.0))
    esp[0:4] = (SPI + 1).to_bytes(4, "big")

    assert feed(config, bytes(esp), whole_packet=False).reason is DropReason.UNKNOWN_SPI


def gcm_with_trailer(config: SAConfig, sequence: int, plaintext: bytes) -> bytes:
    """Seal with AESGCM directly, so the trailer is whatever the test says."""
    key, salt = config.encryption_key[:-4], config.encryption_key[-4:]
    header = SPI.to_bytes(4, "big") + (sequence & 0xFFFFFFFF).to_bytes(4, "big")
    aad = header[:4] + (sequence >> 32).to_bytes(4, "big") + header[4:]
    iv = b"\x01" * 8
    return header + iv + AESGCM(key).encrypt(salt + iv, plaintext, aad)


@pytest.mark.parametrize(
    "trailer",
    [
        b"data\x00\x00\x02\x11",
        b"data\x01\x03\x02\x11",
        b"\x09\x11",
        b"d\x01\x02\x04\x11",
    ],
    ids=["zero-padding", "wrong-order", "pad-length-past-start", "short-padding"],
)
def test_bad_padding_counted_after_valid_icv(trailer):
    config = make_config("gcm")

    result = feed(config, gcm_with_trailer(config, 2, trailer), whole_packet=False)

    assert result.reason is DropReason.BAD_PADDING


def test_cbc_ciphertext_not_whole_blocks_is_malformed():
    config = make_config("cbc")
    esp = OutboundSA(config, 0.0, last_sequence=1).seal(b"x" * 30, 17, 0.0)
    cut = esp[:-30] + esp[-24:]  # drop 6 bytes of ciphertext, keep the ICV

    assert feed(config, cut, whole_packet=False).reason is DropReason.MALFORMED


def test_dummy_packet_counted_and_consumes_its_sequence_number():
    config = make_config("gcm")
    outbound = OutboundSA(config, 0.0)
    inbound = InboundSA(config, 0.0)
    dummy = outbound.seal(b"", 59, 0.0)

    assert inbound.open(dummy, 0.0).reason is DropReason.DUMMY
    assert inbound.open(dummy, 0.0).reason is DropReason.REPLAY
    assert inbound.counters.drops[DropReason.DUMMY] == 1
    assert inbound.counters.packets == 0


def test_wrong_protocol_and_fragment_dropped():
    config = make_config("gcm")
    clear = ipv4_udp(b"not esp")
    fragment = bytearray(protected_sample(config))
    fragment[6] |= 0x20  # More Fragments

    assert feed(config, clear, whole_packet=True).reason is DropReason.POLICY_MISMATCH
    assert (
        feed(config, bytes(fragment), whole_packet=True).reason is DropReason.MALFORMED
    )
    assert feed(config, b"\x75" * 60, whole_packet=True).reason is DropReason.MALFORMED


def test_ipv6_extension_header_loop_is_bounded():
    config = make_config("gcm")
    # Nine hop-by-hop headers in a row, each claiming another follows.
    chain = (b"\x00\x00" + bytes(6)) * 9
    header = bytes.fromhex("60000000") + len(chain).to_bytes(2, "big") + b"\x00\x40"
    packet = header + bytes(32) + chain

    assert feed(config, packet, whole_packet=True).reason is DropReason.MALFORMED


def test_esp_open_on_ah_sa_is_policy_mismatch():
    config = make_config("cbc", Protocol.AH)

    assert (
        feed(config, bytes(64), whole_packet=False).reason is DropReason.POLICY_MISMATCH
    )


# -- property tests -----------------------------------------------------------

FUZZ_CONFIGS = [make_config(*case) for case in SEALED_CASES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), index=st.integers(0, len(FUZZ_CONFIGS) - 1))
def test_random_bytes_never_raise(data, index):
    config = FUZZ_CONFIGS[index]

    feed(config, data, whole_packet=True)
    if config.protocol is Protocol.ESP:
        assert isinstance(feed(config, data, whole_packet=False), Drop)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("grow"), st.integers(0, 10_000), st.integers(0, 255)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(FUZZ_CONFIGS) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=4),
)
def test_random_mutations_never_raise(index, mutations):
    config = FUZZ_CONFIGS[index]
    packet = bytearray(protected_sample(config, inner_version=6 if index % 2 else 4))

    for kind, position, value in mutations:
        if kind == "flip" and packet:
            packet[position % len(packet)] ^= value
        elif kind == "cut":
            del packet[position % (len(packet) + 1) :]
        else:
            packet.insert(position % (len(packet) + 1), value)

    feed(config, bytes(packet), whole_packet=True)


@pytest.mark.parametrize("mode", [Mode.TRANSPORT, Mode.TUNNEL])
def test_protect_refuses_packet_too_large_once_protected(mode):
    config = make_config("gcm", mode=mode)
    largest = ipv4_udp(bytes(0xFFFF - 28))

    with pytest.raises(MalformedPacket, match="too large"):
        OutboundSA(config, 0.0).protect(largest, 0.0)


def test_protect_refuses_non_ip_input():
    outbound = OutboundSA(make_config("gcm"), 0.0)

    for garbage in (b"", b"\x45" * 10, b"\x99" * 64, ipv4_udp(b"x")[:-1]):
        with pytest.raises(MalformedPacket):
            outbound.protect(garbage, 0.0)
    assert outbound.sequence == 0
