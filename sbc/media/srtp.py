"""SRTP and SRTCP with SDES keys (RFC 3711, RFC 4568, RFC 7714) via libsrtp.

One leg's context holds two libsrtp sessions: one that unprotects what the
peer sends, keyed with the key the peer declared in its a=crypto, and one that
protects what we send, keyed with the key we declared. Keys live only inside
these objects; their repr never shows them, and nothing here logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pylibsrtp

from sbc.media.errors import BadSrtpParameters


class SrtpSuite(StrEnum):
    """Crypto-suites as named in a=crypto (RFC 4568 §6.2, RFC 7714 §14.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
    AEAD_AES_256_GCM = "AEAD_AES_256_GCM"

    @property
    def key_length(self) -> int:
        """Master key plus master salt, in bytes (the inline: key-params)."""
        return _KEY_LENGTHS[self]


_KEY_LENGTHS = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: 16 + 14,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: 16 + 14,
    SrtpSuite.AEAD_AES_128_GCM: 16 + 12,
    SrtpSuite.AEAD_AES_256_GCM: 32 + 12,
}

_PROFILES = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    SrtpSuite.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    SrtpSuite.AEAD_AES_256_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


@dataclass(frozen=True, slots=True)
class SrtpParameters:
    """The SDES outcome for one leg: one suite, one key per direction."""

    suite: SrtpSuite
    send_key: bytes = field(repr=False)
    """Master key || salt we declared in our a=crypto; protects what we send."""
    receive_key: bytes = field(repr=False)
    """Master key || salt the peer declared; unprotects what it sends."""

    def __post_init__(self) -> None:
        expected = self.suite.key_length
        if len(self.send_key) != expected or len(self.receive_key) != expected:
            raise BadSrtpParameters(
                f"{self.suite.value} needs {expected}-byte key||salt values"
            )


class SrtpContext:
    """Protects toward one peer and unprotects from it, RTP and RTCP."""

    __slots__ = ("parameters", "_inbound", "_outbound")

    def __init__(self, parameters: SrtpParameters) -> None:
        profile = _PROFILES[parameters.suite]
        self.parameters = parameters
        self._inbound = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=parameters.receive_key,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile,
            )
        )
        # Repeated sequence numbers come from the plain leg (duplicates); let
        # libsrtp protect them again rather than fail (RFC 3711 §3.3.2 is
        # about the receiver's replay list).
        outbound = pylibsrtp.Policy(
            key=parameters.send_key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile,
        )
        outbound.allow_repeat_tx = True
        self._outbound = pylibsrtp.Session(outbound)

    def __repr__(self) -> str:
        return f"SrtpContext({self.parameters.suite.value})"

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet, or None if it fails authentication or replay."""
        try:
            return self._inbound.unprotect(packet)
        except pylibsrtp.Error:
            return None

    def protect(self, packet: bytes) -> bytes | None:
        try:
            return self._outbound.protect(packet)
        except pylibsrtp.Error:
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._inbound.unprotect_rtcp(packet)
        except pylibsrtp.Error:
            return None

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._outbound.protect_rtcp(packet)
        except pylibsrtp.Error:
            return None
