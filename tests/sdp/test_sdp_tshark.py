"""SDP written and read by the SBC, checked with tshark's SDP dissector.

Each body travels in a SIP INVITE inside a pcap written to a temporary file
(no packet is sent); tshark, an independent implementation, must read the
same owner, connection, ports, profiles and SDES fields as sbc.sdp.
"""

from __future__ import annotations

import subprocess

import pytest
from peer_tools import require_tool
from scapy.all import IP, UDP, Ether, Raw, wrpcap

from sbc.sdp import (
    SRTP_SUITES,
    CryptoAttribute,
    Leg,
    LegPolicy,
    SessionDescription,
    anchor_answer,
    anchor_offer,
)

from .peers import DATA, PortPool, answer_like_a_phone, seeded

FIELDS = [
    "sdp.owner.address",
    "sdp.connection_info.address",
    "sdp.media.port",
    "sdp.media.proto",
    "sdp.crypto.tag",
    "sdp.crypto.crypto_suite",
    "sdp.crypto.master_key",
    "sdp.crypto.master_salt",
    "sdp.crypto.lifetime",
    "sdp.crypto.mki-valu",
    "sdp.crypto.mki_length",
]


def sip_invite(body: bytes) -> bytes:
    head = (
        "INVITE sip:+15550100@192.0.2.2 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsdp\r\n"
        "From: <sip:+15550101@192.0.2.1>;tag=1\r\n"
        "To: <sip:+15550100@192.0.2.2>\r\n"
        "Call-ID: sdp@192.0.2.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def dissect(bodies: list[bytes], tmp_path) -> list[dict[str, list[str]]]:
    """tshark's reading of each body: field name -> values in order."""
    tshark = require_tool("tshark", "tshark")
    capture = tmp_path / "sdp.pcap"
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=5060, dport=5060)
        / Raw(sip_invite(body))
        for body in bodies
    ]
    wrpcap(str(capture), frames)
    command = [tshark, "-r", str(capture), "-T", "fields", "-E", "separator=;"]
    command += ["-E", "occurrence=a", "-E", "aggregator=|"]
    for field in FIELDS:
        command += ["-e", field]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=True
    )
    rows = result.stdout.rstrip("\n").split("\n")
    assert len(rows) == len(bodies)
    return [
        {
            field: value.split("|") if value else []
            for field, value in zip(FIELDS, row.split(";"), strict=True)
        }
        for row in rows
    ]


def single_crypto_sdp(value: str) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/SAVP 0\r\na=crypto:{value}\r\n"
    ).encode()


def crypto_samples() -> list[str]:
    samples = [
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        "2 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^31|1:1",
        "3 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|1048576",
    ]
    for tag, name in enumerate(sorted(SRTP_SUITES), 10):
        samples.append(
            CryptoAttribute.generate(tag, SRTP_SUITES[name], seeded(tag)).to_value()
        )
    return samples


def test_crypto_lines_read_alike_by_tshark(tmp_path):
    samples = crypto_samples()

    readings = dissect([single_crypto_sdp(value) for value in samples], tmp_path)
    # The comparison below must not pass by tshark reading no key at all.
    assert sum(1 for r in readings if r["sdp.crypto.master_key"]) >= 5

    for value, theirs in zip(samples, readings, strict=True):
        ours = CryptoAttribute.parse(value)
        key = ours.key_params[0]
        assert theirs["sdp.crypto.tag"] == [str(ours.tag)]
        assert theirs["sdp.crypto.crypto_suite"] == [ours.suite.name]
        # tshark decodes keys only for the AES_CM suites it knows.
        if theirs["sdp.crypto.master_key"]:
            assert theirs["sdp.crypto.master_key"] == [key.key.hex()]
            assert theirs["sdp.crypto.master_salt"] == [key.salt.hex()]
        if key.lifetime is not None:
            assert theirs["sdp.crypto.lifetime"] in (
                [str(key.lifetime)],
                [f"2^{key.lifetime.bit_length() - 1}"],
            )
        if key.mki is not None:
            assert theirs["sdp.crypto.mki-valu"] == [str(key.mki.value)]
            assert theirs["sdp.crypto.mki_length"] == [str(key.mki.length)]


def rewritten_bodies() -> list[tuple[str, SessionDescription]]:
    out = []
    suites = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")
    srtp = LegPolicy(srtp_suites=suites)
    for path in sorted(DATA.glob("*.sdp")):
        if "dtls_only" in path.name:
            continue
        a, b = Leg("203.0.113.1", 1, srtp), Leg("2001:db8::1", 2, srtp)
        sent, pending = anchor_offer(
            SessionDescription.parse(path.read_bytes()),
            offerer=a,
            answerer=b,
            allocate_ports=PortPool(),
            random_bytes=seeded(),
        )
        answer = answer_like_a_phone(sent.to_bytes(), address="192.0.2.9", port=7000)
        answered, _ = anchor_answer(
            SessionDescription.parse(answer), pending, random_bytes=seeded()
        )
        out += [(f"{path.name} offer", sent), (f"{path.name} answer", answered)]
    return out


def test_rewritten_corpus_read_alike_by_tshark(tmp_path):
    bodies = rewritten_bodies()

    readings = dissect([body.to_bytes() for _, body in bodies], tmp_path)

    for (name, ours), theirs in zip(bodies, readings, strict=True):
        connections = [value.split(" ")[2] for kind, value in ours.lines if kind == "c"]
        for section in ours.media:
            connections += [
                value.split(" ")[2] for kind, value in section.lines if kind == "c"
            ]
        assert theirs["sdp.owner.address"] == [ours.origin.address], name
        assert theirs["sdp.connection_info.address"] == connections, name
        assert theirs["sdp.media.port"] == [str(m.port) for m in ours.media], name
        assert theirs["sdp.media.proto"] == [m.proto for m in ours.media], name
        tags = [v.split(" ")[0] for m in ours.media for v in m.attributes("crypto")]
        assert theirs["sdp.crypto.tag"] == tags, name


@pytest.mark.parametrize("address", ["2001:db8::1", "203.0.113.1"])
def test_rewritten_owner_address_family_read_by_tshark(address, tmp_path):
    a, b = Leg("192.0.2.1", 1), Leg(address, 2)
    sent, _ = anchor_offer(
        SessionDescription.parse((DATA / "pbx_asterisk_offer.sdp").read_bytes()),
        offerer=a,
        answerer=b,
        allocate_ports=PortPool(),
        random_bytes=seeded(),
    )

    (reading,) = dissect([sent.to_bytes()], tmp_path)

    assert reading["sdp.owner.address"] == [address]
    assert reading["sdp.connection_info.address"] == [address]
