"""SDES: the a=crypto attribute for SRTP (RFC 4568).

The key in an a=crypto line is the one its author protects its own media
with (RFC 4568 §6.1). Key bytes appear only in `CryptoAttribute.to_value`,
which writes the SDP line: never in repr, str or error messages.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UnusableCrypto


@dataclass(frozen=True, slots=True)
class SrtpSuite:
    """A crypto-suite: name and master key and salt lengths in bytes."""

    name: str
    key_length: int
    salt_length: int


# RFC 4568 §6.2, RFC 6188 §7 (AES-256 counter mode), RFC 7714 §12 (AEAD GCM).
SRTP_SUITES: dict[str, SrtpSuite] = {
    suite.name: suite
    for suite in (
        SrtpSuite("AES_CM_128_HMAC_SHA1_80", 16, 14),
        SrtpSuite("AES_CM_128_HMAC_SHA1_32", 16, 14),
        SrtpSuite("AES_256_CM_HMAC_SHA1_80", 32, 14),
        SrtpSuite("AES_256_CM_HMAC_SHA1_32", 32, 14),
        SrtpSuite("AEAD_AES_128_GCM", 16, 12),
        SrtpSuite("AEAD_AES_256_GCM", 32, 12),
    )
}

# RFC 3711 §9.2 and RFC 7714 §13: at most 2^48 SRTP packets under one key.
MAX_LIFETIME = 2**48

# Session parameters (RFC 4568 §6.3) the relay can honour: WSH is only a hint.
_HARMLESS_SESSION_PARAMS = ("WSH=",)

_TAG = re.compile(r"[0-9]{1,9}")
_LIFETIME = re.compile(r"(?:2\^([0-9]{1,2})|([0-9]{1,15}))")
_MKI = re.compile(r"([0-9]{1,20}):([0-9]{1,3})")


class InvalidCrypto(UnusableCrypto):
    """488: one a=crypto line is malformed or names something unsupported."""


@dataclass(frozen=True, slots=True)
class Mki:
    """Master key identifier: its value and its length in bytes on the wire."""

    value: int
    length: int


@dataclass(frozen=True, slots=True)
class KeyParams:
    """One ``inline:`` key-param: master key and salt, lifetime, MKI."""

    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int | None = None
    mki: Mki | None = None

    @property
    def key_salt(self) -> bytes:
        """Master key || master salt, as an SRTP library takes them."""
        return self.key + self.salt

    def to_value(self) -> str:
        text = "inline:" + base64.b64encode(self.key + self.salt).decode("ascii")
        if self.lifetime is not None:
            text += f"|{_format_lifetime(self.lifetime)}"
        if self.mki is not None:
            text += f"|{self.mki.value}:{self.mki.length}"
        return text


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """``a=crypto:<tag> <suite> <key-params> [<session-params>]`` (RFC 4568 §9.1)."""

    tag: int
    suite: SrtpSuite
    key_params: tuple[KeyParams, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse an a=crypto value; raises `InvalidCrypto` (488) when unusable."""
        fields = value.split()
        if len(fields) < 3 or not _TAG.fullmatch(fields[0]):
            raise InvalidCrypto("a=crypto needs a tag, a suite and key params")
        suite = SRTP_SUITES.get(fields[1])
        if suite is None:
            raise InvalidCrypto("a=crypto names an unsupported crypto-suite")
        key_params = tuple(_parse_key_param(p, suite) for p in fields[2].split(";"))
        # RFC 4568 §6.1: several keys only when each carries an MKI to tell them apart.
        if len(key_params) > 1 and any(k.mki is None for k in key_params):
            raise InvalidCrypto("several a=crypto keys without an MKI each")
        session_params = tuple(fields[3:])
        _check_session_params(session_params)
        return cls(int(fields[0]), suite, key_params, session_params)

    @classmethod
    def generate(
        cls, tag: int, suite: SrtpSuite, random_bytes: Callable[[int], bytes]
    ) -> CryptoAttribute:
        """A fresh attribute with one key drawn from ``random_bytes``."""
        material = random_bytes(suite.key_length + suite.salt_length)
        key = KeyParams(material[: suite.key_length], material[suite.key_length :])
        return cls(tag, suite, (key,))

    def to_value(self) -> str:
        """The a=crypto value, key included: goes into SDP bodies only."""
        keys = ";".join(k.to_value() for k in self.key_params)
        params = "".join(f" {p}" for p in self.session_params)
        return f"{self.tag} {self.suite.name} {keys}{params}"

    def __repr__(self) -> str:
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite.name})"


def _parse_key_param(text: str, suite: SrtpSuite) -> KeyParams:
    method, colon, info = text.partition(":")
    if method != "inline" or not colon:
        raise InvalidCrypto("a=crypto key method is not inline")
    encoded, *extras = info.split("|")
    if len(extras) > 2:
        raise InvalidCrypto("a=crypto key has too many | fields")
    material = _decode_key(encoded, suite)
    lifetime, mki = None, None
    for extra in extras:
        # RFC 4568 §9.2: the MKI field holds a colon; the lifetime never does.
        if ":" in extra and mki is None:
            mki = _parse_mki(extra)
        elif lifetime is None and mki is None:
            lifetime = _parse_lifetime(extra)
        else:
            raise InvalidCrypto("a=crypto key fields out of order")
    split = suite.key_length
    return KeyParams(material[:split], material[split:], lifetime, mki)


def _decode_key(encoded: str, suite: SrtpSuite) -> bytes:
    try:
        material = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCrypto("a=crypto key is not base64") from None
    if len(material) != suite.key_length + suite.salt_length:
        raise InvalidCrypto("a=crypto key length does not fit its suite")
    return material


def _parse_lifetime(text: str) -> int:
    match = _LIFETIME.fullmatch(text)
    if match is None:
        raise InvalidCrypto("a=crypto lifetime is malformed")
    lifetime = 2 ** int(match[1]) if match[1] else int(match[2])
    if not 0 < lifetime <= MAX_LIFETIME:
        raise InvalidCrypto("a=crypto lifetime out of range")
    return lifetime


def _format_lifetime(lifetime: int) -> str:
    if lifetime.bit_count() == 1 and lifetime > 1:
        return f"2^{lifetime.bit_length() - 1}"
    return str(lifetime)


def _parse_mki(text: str) -> Mki:
    match = _MKI.fullmatch(text)
    if match is None:
        raise InvalidCrypto("a=crypto MKI is malformed")
    value, length = int(match[1]), int(match[2])
    # RFC 4568 §6.1: the MKI length is 1 to 128 bytes and the value must fit it.
    if not 1 <= length <= 128 or value.bit_length() > 8 * length:
        raise InvalidCrypto("a=crypto MKI length out of range")
    return Mki(value, length)


def _check_session_params(params: tuple[str, ...]) -> None:
    # RFC 4568 §6.3: an answerer that does not support a session parameter
    # must not accept that crypto line.
    for param in params:
        if not param.startswith(_HARMLESS_SESSION_PARAMS):
            raise InvalidCrypto("a=crypto session parameter not supported")
