"""In-memory SDP peers for the rewriter tests.

`answer_like_a_phone` is an RFC 3264 answerer written with plain string
handling, independent of sbc.sdp, so the rewriter is checked against a
separate reading of the RFC rather than against itself.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from pathlib import Path

from sbc.sdp import RelayPorts, StreamPorts

DATA = Path(__file__).parent / "data"

STATIC = {"0": "pcmu/8000", "8": "pcma/8000", "9": "g722/8000", "18": "g729/8000"}
KEY_LENGTHS = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}
REVERSE = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def seeded(seed: int = 7):
    """Deterministic random bytes for SDES keys."""
    return random.Random(seed).randbytes


@dataclass
class PortPool:
    """Relay ports, stable per m= index as a real relay keeps them."""

    base: int = 30000
    mux_gap: int = 1
    given: dict[int, StreamPorts] = field(default_factory=dict)
    calls: int = 0

    def __call__(self, index: int, media: str) -> StreamPorts:
        self.calls += 1
        if index not in self.given:
            first = self.base + 4 * index
            self.given[index] = StreamPorts(
                RelayPorts(first, first + self.mux_gap),
                RelayPorts(first + 2, first + 2 + self.mux_gap),
            )
        return self.given[index]


def lines_of(body: bytes) -> list[str]:
    return (
        body.decode("utf-8", "surrogateescape")
        .replace("\r\n", "\n")
        .rstrip("\n")
        .split("\n")
    )


def sections(body: bytes) -> tuple[list[str], list[list[str]]]:
    """Session lines and one list of lines (m= first) per media section."""
    session, media = [], []
    for line in lines_of(body):
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def rtpmaps(section: list[str]) -> dict[str, str]:
    """Payload type -> lowercased name/rate[/channels], statics included."""
    names = dict(STATIC)
    for line in section:
        payload_type, _, encoding = line[9:].partition(" ")
        if line.startswith("a=rtpmap:") and encoding:
            names[payload_type] = encoding.lower().removesuffix("/1")
    return names


def answer_like_a_phone(
    offer: bytes,
    *,
    address: str,
    port: int,
    supports: tuple[str, ...] = ("pcma/8000", "pcmu/8000", "telephone-event/8000"),
    own_numbers: dict[str, str] | None = None,
    mux: bool = False,
    crypto_tag: int | None = None,
) -> bytes:
    """Answer as a simple UA: first supported codecs, its own payload numbers."""
    own_numbers = own_numbers or {}
    session, media = sections(offer)
    family = "IP6" if ":" in address else "IP4"
    out = ["v=0", f"o=phone 42 1 IN {family} {address}", "s=-"]
    out += [f"c=IN {family} {address}", "t=0 0"]
    offered_direction = next(
        (line[2:] for line in session if line[2:] in REVERSE), "sendrecv"
    )
    for index, section in enumerate(media):
        out += _answer_section(
            section,
            port + 2 * index,
            supports,
            own_numbers,
            mux,
            crypto_tag,
            offered_direction,
        )
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


def _answer_section(section, port, supports, own_numbers, mux, tag, direction):
    kind, offered_port, proto, *formats = section[0][2:].split(" ")
    names = rtpmaps(section)
    chosen = [pt for pt in formats if names.get(pt) in supports]
    if offered_port == "0" or not chosen:
        return [f"m={kind} 0 {proto} {formats[0]}"]
    numbers = [own_numbers.get(names[pt], pt) for pt in chosen]
    out = [f"m={kind} {port} {proto} {' '.join(numbers)}"]
    out += [f"a=rtpmap:{n} {names[pt]}" for pt, n in zip(chosen, numbers, strict=True)]
    for line in section:
        if line[2:] in REVERSE:
            direction = line[2:]
    out.append(f"a={REVERSE[direction]}")
    if mux and "a=rtcp-mux" in section:
        out.append("a=rtcp-mux")
    cryptos = [line for line in section if line.startswith("a=crypto:")]
    if proto.startswith("RTP/SAVP") and cryptos:
        pick = next(
            (c for c in cryptos if tag is None or c.startswith(f"a=crypto:{tag} ")),
            cryptos[0],
        )
        own_tag, suite = pick[9:].split(" ")[:2]
        key = base64.b64encode(bytes(range(KEY_LENGTHS[suite]))).decode()
        out.append(f"a=crypto:{own_tag} {suite} inline:{key}")
    return out
