"""The SBC's side of one call leg: its media address, policy and o= line."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .crypto import SRTP_SUITES, CryptoAttribute, SrtpSuite
from .model import Line, Origin, SessionDescription, address_type

RandomBytes = Callable[[int], bytes]
"""Returns that many random bytes (os.urandom in production, seeded in tests)."""


@dataclass(frozen=True, slots=True)
class LegPolicy:
    """What the SBC accepts and offers on one leg (usually set per trunk)."""

    codecs: frozenset[str] | None = None
    """Allowed encoding names, case-insensitive (e.g. "pcma", "telephone-event");
    None allows every codec."""
    srtp_suites: tuple[str, ...] = ()
    """SDES suites accepted and offered, in preference order; empty means plain RTP."""
    srtp_required: bool = False
    """Refuse plain RTP offers on this leg with 488."""
    rtcp_mux: bool = True
    """Accept and offer RTP/RTCP multiplexing (RFC 5761) on this leg."""
    srtp_mki: bool = False
    """Accept offered keys that carry an MKI; off for relays without MKI support."""

    def __post_init__(self) -> None:
        unknown = [name for name in self.srtp_suites if name not in SRTP_SUITES]
        if unknown:
            raise ValueError(f"unknown SRTP suites: {', '.join(unknown)}")
        if self.srtp_required and not self.srtp_suites:
            raise ValueError("srtp_required needs at least one SRTP suite")
        if self.codecs is not None:
            object.__setattr__(
                self, "codecs", frozenset(name.lower() for name in self.codecs)
            )

    def allows(self, codec_name: str | None) -> bool:
        """True when the allow-list admits the codec; unknown codecs need no list."""
        if self.codecs is None:
            return True
        return codec_name is not None and codec_name.lower() in self.codecs


Signature = tuple[tuple[Line, ...], tuple[tuple[str, tuple[Line, ...]], ...]]


@dataclass(slots=True)
class Leg:
    """The SBC as a peer on one leg: its address, its o= line and SDES keys.

    One `Leg` lives as long as the dialog; every SDP the SBC sends on the leg
    carries the leg's own o= line, whose version grows whenever the body
    changes (RFC 3264 §8).
    """

    media_address: str
    """The SBC's media address on this leg, IPv4 or IPv6 (without brackets)."""
    session_id: int
    """Drawn by the caller (RFC 8866 §5.2 suggests an NTP timestamp)."""
    policy: LegPolicy = field(default_factory=LegPolicy)
    username: str = "-"
    version: int = 0
    _last_sent: Signature | None = field(default=None, repr=False)
    _keys: dict[tuple[int, str], CryptoAttribute] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.media_address)

    @property
    def addr_type(self) -> str:
        return address_type(self.media_address)

    @property
    def media_count(self) -> int:
        """How many m= lines the last SDP sent on this leg had (0 before any)."""
        return 0 if self._last_sent is None else len(self._last_sent[1])

    def stamp(self, description: SessionDescription) -> None:
        """Write the leg's o= line, incrementing its version on any change."""
        signature = _signature(description)
        if self._last_sent is not None and signature != self._last_sent:
            self.version += 1
        self._last_sent = signature
        origin = Origin(
            self.username,
            str(self.session_id),
            self.version,
            "IN",
            self.addr_type,
            self.media_address,
        )
        description.set_origin(origin)

    def local_crypto(
        self, index: int, tag: int, suite: SrtpSuite, random_bytes: RandomBytes
    ) -> CryptoAttribute:
        """The SBC's key for stream ``index`` and ``suite``, kept across re-offers.

        Keeping the key lets hold and resume go on without an SRTP rekey
        (RFC 4568 §7.1.4 allows either).
        """
        key = (index, suite.name)
        crypto = self._keys.get(key)
        if crypto is None:
            crypto = CryptoAttribute.generate(tag, suite, random_bytes)
            self._keys[key] = crypto
        return crypto if crypto.tag == tag else replace(crypto, tag=tag)


def _signature(description: SessionDescription) -> Signature:
    session = tuple(line for line in description.lines if line[0] != "o")
    media = tuple((m.m_line_value(), tuple(m.lines)) for m in description.media)
    return session, media
