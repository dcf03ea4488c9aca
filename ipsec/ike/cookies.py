"""Stateless COOKIE challenges against IKE_SA_INIT floods (RFC 7296 §2.6).

While too many IKE_SAs are half-open, a responder answers a fresh
IKE_SA_INIT with only N(COOKIE) and keeps nothing; a genuine initiator
repeats its request with that cookie first, which proves it receives at
its source address. The cookie is

    Cookie = <VersionIDofSecret> | HMAC-SHA-256(<secret>, Ni | IPi | SPIi)

with a secret that is replaced every ``secret_lifetime`` seconds; cookies
made with the one before stay valid, so a challenge never fails just
because the secret rotated while the initiator answered. Sans-IO: the
caller passes the time and the random source.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from .constants import ExchangeType, NotifyType
from .crypto import RandomBytes
from .errors import InvalidSyntax
from .message import IkeMessage, decode_message, encode_message
from .payloads import NoncePayload, NotifyPayload

_VERSION_SIZE = 4
_SECRET_SIZE = 32
_COOKIE_SIZE = _VERSION_SIZE + hashlib.sha256().digest_size
_SPI_ZERO = bytes(8)


@dataclass(eq=False)
class _Secret:
    version: int
    key: bytes = field(repr=False)


class CookieJar:
    """Makes and checks cookies; holds only the current and previous secret."""

    def __init__(
        self, random_bytes: RandomBytes, now: float, secret_lifetime: float = 60.0
    ) -> None:
        self._random_bytes = random_bytes
        self._secret_lifetime = secret_lifetime
        self._current = _Secret(0, random_bytes(_SECRET_SIZE))
        self._previous: _Secret | None = None
        self._rotate_at = now + secret_lifetime

    def make(
        self,
        nonce_i: bytes,
        address: IPv4Address | IPv6Address,
        spi_i: bytes,
        now: float,
    ) -> bytes:
        """The cookie for one initiator's nonce, address and SPI."""
        self._rotate(now)
        return self._cookie(self._current, nonce_i, address, spi_i)

    def verify(
        self,
        cookie: bytes,
        nonce_i: bytes,
        address: IPv4Address | IPv6Address,
        spi_i: bytes,
        now: float,
    ) -> bool:
        """Whether ``cookie`` was made here, recently, for these values."""
        self._rotate(now)
        if len(cookie) != _COOKIE_SIZE:
            return False
        version = int.from_bytes(cookie[:_VERSION_SIZE])
        secret = next(
            (s for s in (self._current, self._previous) if s and s.version == version),
            None,
        )
        if secret is None:
            return False
        expected = self._cookie(secret, nonce_i, address, spi_i)
        return hmac.compare_digest(cookie, expected)

    def screen(
        self, data: bytes, address: IPv4Address | IPv6Address, now: float
    ) -> bytes | None:
        """Check a fresh IKE_SA_INIT request for a valid cookie.

        Returns None to let the request through, or the datagram to answer
        it with (a new N(COOKIE)). Raises ``InvalidSyntax`` for a request
        that does not decode, which the caller drops.
        """
        request = decode_message(data)
        nonce = request.first(NoncePayload)
        if nonce is None:
            raise InvalidSyntax("IKE_SA_INIT without a Nonce")
        offered = _leading_cookie(request)
        if offered is not None and self.verify(
            offered, nonce.nonce, address, request.spi_i, now
        ):
            return None
        cookie = self.make(nonce.nonce, address, request.spi_i, now)
        return _challenge(request, cookie)

    def _rotate(self, now: float) -> None:
        if now < self._rotate_at:
            return
        self._previous = self._current
        version = (self._current.version + 1) & 0xFFFFFFFF
        self._current = _Secret(version, self._random_bytes(_SECRET_SIZE))
        self._rotate_at = now + self._secret_lifetime

    @staticmethod
    def _cookie(
        secret: _Secret,
        nonce_i: bytes,
        address: IPv4Address | IPv6Address,
        spi_i: bytes,
    ) -> bytes:
        mac = hmac.new(secret.key, nonce_i + address.packed + spi_i, hashlib.sha256)
        return secret.version.to_bytes(_VERSION_SIZE) + mac.digest()


def _leading_cookie(request: IkeMessage) -> bytes | None:
    # §2.6: the initiator puts N(COOKIE) first; elsewhere it does not count.
    first = request.payloads[0] if request.payloads else None
    if isinstance(first, NotifyPayload) and first.notify_type == NotifyType.COOKIE:
        return first.notification_data
    return None


def _challenge(request: IkeMessage, cookie: bytes) -> bytes:
    response = IkeMessage(
        ExchangeType.IKE_SA_INIT,
        request.message_id,
        request.spi_i,
        _SPI_ZERO,
        is_initiator=False,
        is_response=True,
        payloads=(NotifyPayload(NotifyType.COOKIE, cookie),),
    )
    return encode_message(response)
