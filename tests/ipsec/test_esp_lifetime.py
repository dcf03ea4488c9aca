"""Soft and hard lifetimes, sequence-space exhaustion and counters."""

from __future__ import annotations

import pytest

from ipsec.esp import (
    DropReason,
    Encryption,
    HardLifetimeReached,
    InboundSA,
    Integrity,
    Lifetime,
    LifetimeKind,
    Mode,
    OutboundSA,
    Protocol,
    SAConfig,
    SAExpired,
    SoftLifetimeReached,
)

SPI = 0x4000
UNLIMITED = Lifetime()


def config(soft=UNLIMITED, hard=UNLIMITED, esn=True) -> SAConfig:
    return SAConfig(
        spi=SPI,
        protocol=Protocol.ESP,
        mode=Mode.TRANSPORT,
        encryption=Encryption.AES_GCM_16_256,
        integrity=Integrity.NONE,
        encryption_key=bytes(36),
        integrity_key=b"",
        esn=esn,
        soft=soft,
        hard=hard,
    )


def drain(sa) -> list:
    events = []
    while (event := sa.next_event()) is not None:
        events.append(event)
    return events


def test_packet_limits_fire_soft_then_hard_then_refuse():
    outbound = OutboundSA(config(Lifetime(packets=3), Lifetime(packets=5)), 0.0)

    sent = [outbound.seal(b"x", 17, 0.0) for _ in range(5)]

    assert len(sent) == 5
    assert drain(outbound) == [
        SoftLifetimeReached(SPI, LifetimeKind.PACKETS),
        HardLifetimeReached(SPI, LifetimeKind.PACKETS),
    ]
    with pytest.raises(SAExpired) as refused:
        outbound.seal(b"x", 17, 0.0)
    assert refused.value.kind is LifetimeKind.PACKETS
    assert outbound.counters.packets == 5


def test_byte_limits_count_payload_bytes():
    outbound = OutboundSA(config(Lifetime(bytes=250), Lifetime(bytes=400)), 0.0)

    outbound.seal(bytes(200), 17, 0.0)
    assert drain(outbound) == []
    outbound.seal(bytes(100), 17, 0.0)
    assert drain(outbound) == [SoftLifetimeReached(SPI, LifetimeKind.BYTES)]
    outbound.seal(bytes(100), 17, 0.0)

    assert drain(outbound) == [HardLifetimeReached(SPI, LifetimeKind.BYTES)]
    assert outbound.counters.bytes == 400


def test_idle_sa_expires_by_time_through_check_lifetime():
    inbound = InboundSA(config(Lifetime(seconds=60), Lifetime(seconds=90)), 1000.0)

    assert inbound.get_timer() == 1060.0
    inbound.check_lifetime(1059.9)
    assert drain(inbound) == []
    inbound.check_lifetime(1060.0)
    assert drain(inbound) == [SoftLifetimeReached(SPI, LifetimeKind.SECONDS)]
    assert inbound.get_timer() == 1090.0
    inbound.check_lifetime(1095.0)

    assert drain(inbound) == [HardLifetimeReached(SPI, LifetimeKind.SECONDS)]
    assert inbound.get_timer() is None


def test_inbound_after_hard_lifetime_drops_as_expired():
    sa_config = config(hard=Lifetime(seconds=10))
    packet = OutboundSA(sa_config, 0.0).seal(b"late", 17, 0.0)
    inbound = InboundSA(sa_config, 0.0)

    result = inbound.open(packet, now=10.5)

    assert result.reason is DropReason.EXPIRED
    assert inbound.counters.drops[DropReason.EXPIRED] == 1
    assert drain(inbound) == [HardLifetimeReached(SPI, LifetimeKind.SECONDS)]


def test_outbound_time_limit_checked_on_send_without_timer():
    outbound = OutboundSA(config(hard=Lifetime(seconds=5)), 0.0)
    outbound.seal(b"ok", 17, 4.9)

    with pytest.raises(SAExpired):
        outbound.seal(b"too late", 17, 5.0)


def test_32bit_sequence_space_ends_without_wrapping():
    outbound = OutboundSA(config(esn=False), 0.0, last_sequence=0xFFFFFFFE)

    last = outbound.seal(b"last", 17, 0.0)

    assert last[4:8] == b"\xff\xff\xff\xff"
    assert drain(outbound) == [
        SoftLifetimeReached(SPI, LifetimeKind.SEQUENCE),
        HardLifetimeReached(SPI, LifetimeKind.SEQUENCE),
    ]
    with pytest.raises(SAExpired) as refused:
        outbound.seal(b"wrapped", 17, 0.0)
    assert refused.value.kind is LifetimeKind.SEQUENCE
    assert outbound.sequence == 0xFFFFFFFF


def test_soft_sequence_event_leaves_time_to_rekey():
    soft_at = 0xFFFFFFFF - (0xFFFFFFFF >> 4)
    outbound = OutboundSA(config(esn=False), 0.0, last_sequence=soft_at - 2)

    outbound.seal(b"a", 17, 0.0)
    assert drain(outbound) == []
    outbound.seal(b"b", 17, 0.0)

    assert drain(outbound) == [SoftLifetimeReached(SPI, LifetimeKind.SEQUENCE)]


def test_counters_track_packets_bytes_and_drops():
    sa_config = config()
    outbound, inbound = OutboundSA(sa_config, 0.0), InboundSA(sa_config, 0.0)
    packets = [outbound.seal(bytes(n), 17, 0.0) for n in (10, 20, 30)]

    for packet in packets + packets[:1]:
        inbound.open(packet, 0.0)

    assert (outbound.counters.packets, outbound.counters.bytes) == (3, 60)
    assert (inbound.counters.packets, inbound.counters.bytes) == (3, 60)
    assert inbound.counters.drops[DropReason.REPLAY] == 1
    assert sum(inbound.counters.drops.values()) == 1


def test_config_repr_hides_keys():
    secret = bytes.fromhex("deadbeef" * 9)
    sa_config = SAConfig(
        spi=SPI,
        protocol=Protocol.ESP,
        mode=Mode.TRANSPORT,
        encryption=Encryption.AES_GCM_16_256,
        integrity=Integrity.NONE,
        encryption_key=secret,
        integrity_key=b"",
    )
    text = repr(sa_config) + str(sa_config) + repr(OutboundSA(sa_config, 0.0))

    assert "deadbeef" not in text.lower()
    assert "de\\xad" not in text.lower()
    assert "0x00004000" in repr(OutboundSA(sa_config, 0.0))


@pytest.mark.parametrize(
    ("encryption", "integrity", "message"),
    [
        (Encryption.AES_GCM_16_128, Integrity.HMAC_SHA2_256_128, "AEAD"),
        (Encryption.AES_CBC_128, Integrity.NONE, "needs an integrity"),
        (Encryption.NULL, Integrity.NONE, "needs an integrity"),
    ],
)
def test_config_refuses_invalid_transform_combinations(encryption, integrity, message):
    with pytest.raises(ValueError, match=message):
        SAConfig(
            spi=SPI,
            protocol=Protocol.ESP,
            mode=Mode.TRANSPORT,
            encryption=encryption,
            integrity=integrity,
            encryption_key=bytes(encryption.key_length),
            integrity_key=bytes(integrity.key_length),
        )


def test_config_refuses_wrong_key_length_and_reserved_spi():
    with pytest.raises(ValueError, match="20-byte key"):
        SAConfig(
            spi=SPI,
            protocol=Protocol.ESP,
            mode=Mode.TRANSPORT,
            encryption=Encryption.AES_GCM_16_128,
            integrity=Integrity.NONE,
            encryption_key=bytes(16),
            integrity_key=b"",
        )
    with pytest.raises(ValueError, match="SPI"):
        SAConfig(
            spi=255,
            protocol=Protocol.ESP,
            mode=Mode.TRANSPORT,
            encryption=Encryption.AES_GCM_16_128,
            integrity=Integrity.NONE,
            encryption_key=bytes(20),
            integrity_key=b"",
        )
