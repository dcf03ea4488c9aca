"""Known-answer tests: published ESP vectors, independent of any implementation here."""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path

from ipsec.esp import (
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

VECTORS = Path(__file__).parent / "vectors"


def rfc7634_vector() -> dict:
    return json.loads((VECTORS / "rfc7634_appendix_a.json").read_text())


def rfc7634_config(vector: dict) -> SAConfig:
    return SAConfig(
        spi=int(vector["spi"], 16),
        protocol=Protocol.ESP,
        mode=Mode.TUNNEL,
        encryption=Encryption.CHACHA20_POLY1305,
        integrity=Integrity.NONE,
        encryption_key=bytes.fromhex(vector["keymat"]),
        integrity_key=b"",
        esn=False,
        tunnel_source=ip_address(vector["tunnel_source"]),
        tunnel_destination=ip_address(vector["tunnel_destination"]),
    )


def test_rfc7634_appendix_a_seal_known_answer():
    vector = rfc7634_vector()
    iv = bytes.fromhex(vector["iv"])
    outbound = OutboundSA(
        rfc7634_config(vector),
        0.0,
        iv_source=lambda n: iv,
        last_sequence=vector["sequence"] - 1,
    )

    sealed = outbound.seal(bytes.fromhex(vector["inner_packet"]), 4, now=0.0)

    assert sealed.hex() == vector["esp"]


def test_rfc7634_appendix_a_protect_wraps_vector_in_outer_header():
    vector = rfc7634_vector()
    iv = bytes.fromhex(vector["iv"])
    config = rfc7634_config(vector)
    outbound = OutboundSA(
        config, 0.0, iv_source=lambda n: iv, last_sequence=vector["sequence"] - 1
    )

    protected = outbound.protect(bytes.fromhex(vector["inner_packet"]), now=0.0)

    assert protected[20:].hex() == vector["esp"]
    assert protected[9] == 50
    assert (
        protected[12:20]
        == config.tunnel_source.packed + config.tunnel_destination.packed
    )


def test_rfc7634_appendix_a_open_known_answer():
    vector = rfc7634_vector()
    inbound = InboundSA(rfc7634_config(vector), 0.0)

    opened = inbound.open(bytes.fromhex(vector["esp"]), now=0.0)

    assert opened == Opened(
        4, bytes.fromhex(vector["inner_packet"]), vector["sequence"]
    )


def test_rfc7634_appendix_a_unprotect_returns_inner_packet():
    vector = rfc7634_vector()
    config = rfc7634_config(vector)
    outer = bytes.fromhex("4500008c000000004032" + "0000") + (
        config.tunnel_source.packed + config.tunnel_destination.packed
    )

    result = InboundSA(config, 0.0).unprotect(outer + bytes.fromhex(vector["esp"]), 0.0)

    assert result == Unprotected(
        bytes.fromhex(vector["inner_packet"]), 4, vector["sequence"]
    )
