"""The inbound SA database: dispatch by SPI and drops no SA can count."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from ipsec.esp import (
    DropReason,
    Encryption,
    InboundSA,
    Integrity,
    Mode,
    Opened,
    OutboundSA,
    Protocol,
    SAConfig,
    Unprotected,
)
from ipsec.esp.sad import SADatabase


def make_config(spi: int, protocol: Protocol = Protocol.ESP) -> SAConfig:
    if protocol is Protocol.AH:
        encryption, integrity = Encryption.NULL, Integrity.HMAC_SHA2_256_128
    else:
        encryption, integrity = Encryption.AES_GCM_16_128, Integrity.NONE
    return SAConfig(
        spi=spi,
        protocol=protocol,
        mode=Mode.TRANSPORT,
        encryption=encryption,
        integrity=integrity,
        encryption_key=spi.to_bytes(4, "big") * (encryption.key_length // 4),
        integrity_key=spi.to_bytes(4, "big") * (integrity.key_length // 4),
    )


def packet() -> bytes:
    return bytes(
        IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / Raw(b"sad")
    )


@pytest.fixture
def database() -> SADatabase:
    sad = SADatabase()
    for spi in (0x100, 0x200):
        sad.add(InboundSA(make_config(spi), 0.0))
    sad.add(InboundSA(make_config(0x300, Protocol.AH), 0.0))
    return sad


def test_open_dispatches_by_spi(database):
    sealed = OutboundSA(make_config(0x200), 0.0).seal(b"media", 17, 0.0)

    assert database.open(sealed, 0.0) == Opened(17, b"media", 1)
    assert database.get(0x200).counters.packets == 1
    assert database.get(0x100).counters.packets == 0


@pytest.mark.parametrize(
    ("spi", "protocol"), [(0x100, Protocol.ESP), (0x300, Protocol.AH)]
)
def test_unprotect_dispatches_esp_and_ah(database, spi, protocol):
    protected = OutboundSA(make_config(spi, protocol), 0.0).protect(packet(), 0.0)

    result = database.unprotect(protected, 0.0)

    assert isinstance(result, Unprotected)
    assert result.packet == packet()


def test_unknown_spi_counted_in_database(database):
    stranger = OutboundSA(make_config(0x999), 0.0)

    assert (
        database.open(stranger.seal(b"x", 17, 0.0), 0.0).reason
        is DropReason.UNKNOWN_SPI
    )
    assert database.unprotect(stranger.protect(packet(), 0.0), 0.0).reason is (
        DropReason.UNKNOWN_SPI
    )
    assert database.drops[DropReason.UNKNOWN_SPI] == 2


def test_unreadable_spi_counted_in_database(database):
    assert database.open(b"\x00\x00\x01", 0.0).reason is DropReason.TRUNCATED
    assert database.unprotect(packet(), 0.0).reason is DropReason.MALFORMED
    assert database.drops[DropReason.TRUNCATED] == 1
    assert database.drops[DropReason.MALFORMED] == 1


def test_duplicate_spi_refused_and_remove(database):
    with pytest.raises(ValueError, match="already installed"):
        database.add(InboundSA(make_config(0x100), 0.0))

    removed = database.remove(0x100)

    assert removed is not None and removed.spi == 0x100
    assert 0x100 not in database
    assert len(database) == 2
    assert database.remove(0x100) is None
