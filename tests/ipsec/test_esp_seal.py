"""ESP seal/open (the UDP-encapsulated form) against scapy's independent ESP."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
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
)

SPI = 0x0000C0DE
AEADS = {
    Encryption.AES_GCM_16_128: "AES-GCM",
    Encryption.AES_GCM_16_256: "AES-GCM",
    Encryption.CHACHA20_POLY1305: "CHACHA20-POLY1305",
}


def gcm_config(encryption: Encryption, esn: bool) -> SAConfig:
    key = bytes(range(1, encryption.key_length + 1))
    return SAConfig(
        spi=SPI,
        protocol=Protocol.ESP,
        mode=Mode.TRANSPORT,
        encryption=encryption,
        integrity=Integrity.NONE,
        encryption_key=key,
        integrity_key=b"",
        esn=esn,
    )


def scapy_sa(config: SAConfig, sequence: int) -> SecurityAssociation:
    return SecurityAssociation(
        ESP,
        spi=config.spi,
        seq_num=sequence & 0xFFFFFFFF,
        crypt_algo=AEADS[config.encryption],
        crypt_key=config.encryption_key,
        nat_t_header=UDP(sport=4500, dport=4500),
        esn_en=config.esn,
        esn=sequence >> 32,
    )


def inner_packet(size: int) -> IP:
    data = bytes((i * 7) & 0xFF for i in range(size))
    return (
        IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5004, dport=5006) / Raw(data)
    )


@pytest.mark.parametrize("encryption", list(AEADS))
@pytest.mark.parametrize(
    ("esn", "sequence"),
    [(False, 1), (False, 0xFFFFFFFF), (True, 1), (True, 0x1_0000_0005)],
)
def test_seal_matches_scapy_aead(encryption, esn, sequence):
    config = gcm_config(encryption, esn)
    packet = inner_packet(173)
    ours = OutboundSA(config, 0.0, last_sequence=sequence - 1)

    sealed = ours.seal(bytes(packet[UDP]), 17, now=0.0)

    theirs = scapy_sa(config, sequence).encrypt(packet, iv=sequence.to_bytes(8, "big"))
    assert sealed == bytes(theirs[UDP].payload)
    assert ours.counters.packets == 1


@pytest.mark.parametrize("encryption", list(AEADS))
@pytest.mark.parametrize("esn", [True, False])
def test_open_accepts_scapy_aead(encryption, esn):
    config = gcm_config(encryption, esn)
    sequence = 0x2_0000_0010 if esn else 0x10
    packet = inner_packet(200)
    sealed = scapy_sa(config, sequence).encrypt(packet, iv=b"\xa5" * 8)
    inbound = InboundSA(config, 0.0, last_sequence=sequence - 3)

    opened = inbound.open(bytes(sealed[UDP].payload), now=0.0)

    assert opened == Opened(17, bytes(packet[UDP]), sequence)
    assert inbound.open(bytes(sealed[UDP].payload), now=0.0).reason is DropReason.REPLAY
    assert inbound.counters.drops[DropReason.REPLAY] == 1
