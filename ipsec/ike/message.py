"""IKEv2 messages: the fixed header (RFC 7296 §3.1) and SK protection (§3.14).

``decode_message`` turns a datagram into an ``IkeMessage`` whose last payload
may still be an ``EncryptedPayload``; ``decrypt_message`` verifies and opens
it with the peer's ``SkCipher``. ``protect_message`` does the reverse and
splits into RFC 7383 fragments when a size limit asks for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from .constants import (
    GENERIC_PAYLOAD_HEADER_SIZE,
    IKE_HEADER_SIZE,
    IKE_MAJOR_VERSION,
    ExchangeType,
    HeaderFlag,
    NotifyType,
    PayloadType,
)
from .crypto import RandomBytes, SkCipher, pad, strip_padding
from .errors import InvalidMajorVersion, InvalidSyntax
from .payloads import (
    EncryptedFragmentPayload,
    EncryptedPayload,
    NotifyPayload,
    Payload,
    decode_payload_chain,
    encode_payload_chain,
)

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC_HEADER = struct.Struct("!BBH")
_FRAGMENT_FIELDS_SIZE = 4
_SPI_ZERO = bytes(8)

_P = TypeVar("_P")
# Plain ints: IntFlag arithmetic is slow on the per-message path.
_INITIATOR = int(HeaderFlag.INITIATOR)
_RESPONSE = int(HeaderFlag.RESPONSE)


@dataclass(frozen=True, slots=True)
class IkeHeader:
    """The fixed 28-octet IKE header as received."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major_version: int
    minor_version: int
    exchange_type: ExchangeType | int
    flags: int
    message_id: int
    length: int

    @property
    def is_initiator(self) -> bool:
        """I flag: the sender is the original initiator of the IKE SA."""
        return bool(self.flags & _INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _RESPONSE)


def decode_header(data: bytes) -> IkeHeader:
    """Parse and check the fixed header; the length must match the datagram."""
    if len(data) < IKE_HEADER_SIZE:
        raise InvalidSyntax(f"{len(data)} octets is shorter than the IKE header")
    spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = (
        _HEADER.unpack_from(data)
    )

    # RFC 7296 §2.5: a different major version is refused, minor is ignored.
    if version >> 4 != IKE_MAJOR_VERSION:
        raise InvalidMajorVersion(version >> 4)
    if length != len(data):
        raise InvalidSyntax(f"header length {length} for a {len(data)}-octet message")
    exchange_type = cast(
        "ExchangeType | int", ExchangeType._value2member_map_.get(exchange, exchange)
    )
    return IkeHeader(
        spi_i,
        spi_r,
        next_payload,
        version >> 4,
        version & 0x0F,
        exchange_type,
        flags,
        message_id,
        length,
    )


@dataclass(frozen=True, slots=True)
class IkeMessage:
    """A decoded (or to-be-encoded) IKE message and its payloads in order."""

    exchange_type: ExchangeType | int
    message_id: int
    spi_i: bytes
    spi_r: bytes = _SPI_ZERO
    is_initiator: bool = True
    """I flag (RFC 7296 §3.1): set by the original initiator of the IKE SA."""
    is_response: bool = False
    payloads: tuple[Payload, ...] = ()

    def first(self, payload_class: type[_P]) -> _P | None:
        for payload in self.payloads:
            if isinstance(payload, payload_class):
                return payload
        return None

    def all(self, payload_class: type[_P]) -> list[_P]:
        return [p for p in self.payloads if isinstance(p, payload_class)]

    def notify(self, notify_type: NotifyType) -> NotifyPayload | None:
        for payload in self.payloads:
            if (
                isinstance(payload, NotifyPayload)
                and payload.notify_type == notify_type
            ):
                return payload
        return None

    def encode_header(self, next_payload: int, length: int) -> bytes:
        flags = (_INITIATOR if self.is_initiator else 0) | (
            _RESPONSE if self.is_response else 0
        )
        return _HEADER.pack(
            self.spi_i,
            self.spi_r,
            next_payload,
            IKE_MAJOR_VERSION << 4,
            self.exchange_type,
            flags,
            self.message_id,
            length,
        )


def encode_message(message: IkeMessage) -> bytes:
    """Encode header and payloads as they are (no encryption applied)."""
    first, chain = encode_payload_chain(message.payloads)
    return message.encode_header(first, IKE_HEADER_SIZE + len(chain)) + chain


def decode_message(data: bytes) -> IkeMessage:
    """Decode a datagram; raises only ``IkeError`` subclasses."""
    header = decode_header(data)
    payloads = decode_payload_chain(
        header.next_payload, data, IKE_HEADER_SIZE, len(data), allow_encrypted=True
    )
    return IkeMessage(
        header.exchange_type,
        header.message_id,
        header.spi_i,
        header.spi_r,
        header.is_initiator,
        header.is_response,
        tuple(payloads),
    )


def decrypt_message(data: bytes, message: IkeMessage, cipher: SkCipher) -> IkeMessage:
    """Verify and decrypt the SK payload of ``message`` (decoded from ``data``).

    Returns the message with only its inner, authenticated payloads; payloads
    sent in the clear before SK are dropped, as nothing vouches for them.
    """
    encrypted = message.payloads[-1] if message.payloads else None
    if not isinstance(encrypted, EncryptedPayload):
        raise InvalidSyntax("message has no Encrypted payload")
    body_start = len(data) - len(encrypted.protected)
    padded = cipher.open(data[:body_start], encrypted.protected)
    content = strip_padding(padded)
    inner = decode_payload_chain(
        encrypted.first_payload, content, 0, len(content), allow_encrypted=False
    )
    return replace(message, payloads=tuple(inner))


def decrypt_fragment(
    data: bytes, fragment: EncryptedFragmentPayload, cipher: SkCipher
) -> bytes:
    """Verify and decrypt one SKF fragment; return its share of the content.

    RFC 7383 §2.5: each fragment is authenticated on its own, the Fragment
    Number and Total Fragments fields included.
    """
    body_start = len(data) - len(fragment.protected)
    return strip_padding(cipher.open(data[:body_start], fragment.protected))


def protect_message(
    message: IkeMessage,
    cipher: SkCipher,
    random_bytes: RandomBytes,
    max_size: int | None = None,
) -> list[bytes]:
    """Encrypt all payloads of ``message`` into one SK datagram.

    When ``max_size`` is given (negotiated IKEV2_FRAGMENTATION_SUPPORTED) and
    the datagram would exceed it, the content is split into SKF fragments
    of at most ``max_size`` octets each (RFC 7383 §2.5).
    """
    first, content = encode_payload_chain(message.payloads)
    single_size = (
        IKE_HEADER_SIZE
        + GENERIC_PAYLOAD_HEADER_SIZE
        + cipher.overhead
        + cipher.padded_size(len(content))
    )
    if max_size is None or single_size <= max_size:
        return [_seal_sk(message, cipher, random_bytes, first, content)]
    return _seal_fragments(message, cipher, random_bytes, first, content, max_size)


def _seal_sk(
    message: IkeMessage,
    cipher: SkCipher,
    random_bytes: RandomBytes,
    first: int,
    content: bytes,
) -> bytes:
    padded_size = cipher.padded_size(len(content))
    sk_length = GENERIC_PAYLOAD_HEADER_SIZE + cipher.overhead + padded_size
    associated = message.encode_header(
        PayloadType.SK, IKE_HEADER_SIZE + sk_length
    ) + _GENERIC_HEADER.pack(first, 0, sk_length)
    iv = random_bytes(cipher.encr.iv_size)
    return associated + cipher.seal(associated, iv, pad(content, padded_size))


def _seal_fragments(
    message: IkeMessage,
    cipher: SkCipher,
    random_bytes: RandomBytes,
    first: int,
    content: bytes,
    max_size: int,
) -> list[bytes]:
    chunk = fragment_capacity(cipher, max_size)
    if chunk <= 0 or len(content) > chunk * 0xFFFF:
        raise ValueError(f"cannot fragment into datagrams of {max_size} octets")
    total = -(-len(content) // chunk)
    return [
        _seal_fragment(
            message,
            cipher,
            random_bytes,
            first if number == 1 else PayloadType.NONE,
            number,
            total,
            content[(number - 1) * chunk : number * chunk],
        )
        for number in range(1, total + 1)
    ]


def fragment_capacity(cipher: SkCipher, max_size: int) -> int:
    """Content octets one SKF datagram of ``max_size`` octets can carry."""
    room = (
        max_size
        - IKE_HEADER_SIZE
        - GENERIC_PAYLOAD_HEADER_SIZE
        - _FRAGMENT_FIELDS_SIZE
        - cipher.overhead
    )
    block = cipher.encr.block_size
    return room // block * block - 1


def _seal_fragment(
    message: IkeMessage,
    cipher: SkCipher,
    random_bytes: RandomBytes,
    first: int,
    number: int,
    total: int,
    content: bytes,
) -> bytes:
    padded_size = cipher.padded_size(len(content))
    skf_length = (
        GENERIC_PAYLOAD_HEADER_SIZE
        + _FRAGMENT_FIELDS_SIZE
        + cipher.overhead
        + padded_size
    )
    associated = (
        message.encode_header(PayloadType.SKF, IKE_HEADER_SIZE + skf_length)
        + _GENERIC_HEADER.pack(first, 0, skf_length)
        + struct.pack("!HH", number, total)
    )
    iv = random_bytes(cipher.encr.iv_size)
    return associated + cipher.seal(associated, iv, pad(content, padded_size))
