"""IKEv2 payloads (RFC 7296 §3.2-3.16, RFC 7383 §2.5): typed records and their codec.

Each payload is a frozen dataclass with ``encode_body()``; the generic payload
header (Next Payload, critical bit, length) is written by
``encode_payload_chain`` and read by ``decode_payload_chain``. Decoding raises
only ``IkeError`` subclasses, whatever the input bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, TypeAlias, TypeVar, cast

from .constants import (
    GENERIC_PAYLOAD_HEADER_SIZE,
    MAX_NONCE_SIZE,
    MIN_NONCE_SIZE,
    AuthMethod,
    CertEncoding,
    CfgType,
    DhGroup,
    EncrId,
    EsnId,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformAttributeType,
    TransformType,
    TsType,
)
from .errors import (
    DropReason,
    IkeMessageDropped,
    InvalidSyntax,
    UnsupportedCriticalPayload,
)

CRITICAL_FLAG = 0x80

_GENERIC_HEADER = struct.Struct("!BBH")
_PROPOSAL_HEADER = struct.Struct("!BBHBBBB")
_TRANSFORM_HEADER = struct.Struct("!BBHBBH")
_ATTRIBUTE_HEADER = struct.Struct("!HH")
_KE_HEADER = struct.Struct("!HH")
_NOTIFY_HEADER = struct.Struct("!BBH")
_DELETE_HEADER = struct.Struct("!BBH")
_TS_HEADER = struct.Struct("!BBHHH")
_FRAGMENT_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")

# RFC 7296 §3.3.1 / §3.3.2: Last Substruc values of proposals and transforms.
_MORE_PROPOSALS = 2
_MORE_TRANSFORMS = 3
_ATTRIBUTE_FORMAT_TV = 0x8000

_E = TypeVar("_E", bound=IntEnum)
_ID = TypeVar("_ID", bound="IdPayload")
_CERT = TypeVar("_CERT", bound="CertPayload | CertReqPayload")
_TS = TypeVar("_TS", bound="TsPayload")


def _known(enum: type[_E], value: int) -> _E | int:
    """Return the enum member for a registered value, else the plain int."""
    # A dict lookup: calling the enum costs a microsecond per field.
    return cast("_E | int", enum._value2member_map_.get(value, value))


_TRANSFORM_IDS: dict[int, type[IntEnum]] = {
    TransformType.ENCR: EncrId,
    TransformType.PRF: PrfId,
    TransformType.INTEG: IntegId,
    TransformType.DH: DhGroup,
    TransformType.ESN: EsnId,
}


# ---------------------------------------------------------------------------
# SA payload (RFC 7296 §3.3)


@dataclass(frozen=True, slots=True)
class TransformAttribute:
    """An attribute other than Key Length, kept so policy can refuse it."""

    attribute_type: int
    value: bytes
    tv_format: bool = False


@dataclass(frozen=True, slots=True)
class Transform:
    transform_type: TransformType | int
    transform_id: int
    key_length: int | None = None
    """Key Length attribute in bits (RFC 7296 §3.3.5), when present."""
    other_attributes: tuple[TransformAttribute, ...] = ()

    def encode(self, last: bool) -> bytes:
        attributes = b"".join(_encode_transform_attributes(self))
        return (
            _TRANSFORM_HEADER.pack(
                0 if last else _MORE_TRANSFORMS,
                0,
                _TRANSFORM_HEADER.size + len(attributes),
                self.transform_type,
                0,
                self.transform_id,
            )
            + attributes
        )


def _encode_transform_attributes(transform: Transform) -> Iterable[bytes]:
    if transform.key_length is not None:
        yield _ATTRIBUTE_HEADER.pack(
            _ATTRIBUTE_FORMAT_TV | TransformAttributeType.KEY_LENGTH,
            transform.key_length,
        )
    for attribute in transform.other_attributes:
        if attribute.tv_format:
            yield _ATTRIBUTE_HEADER.pack(
                _ATTRIBUTE_FORMAT_TV | attribute.attribute_type,
                _U16.unpack(attribute.value)[0],
            )
        else:
            yield _ATTRIBUTE_HEADER.pack(attribute.attribute_type, len(attribute.value))
            yield attribute.value


@dataclass(frozen=True, slots=True)
class Proposal:
    number: int
    protocol_id: ProtocolId | int
    transforms: tuple[Transform, ...]
    spi: bytes = b""

    def encode(self, last: bool) -> bytes:
        count = len(self.transforms)
        body = b"".join(t.encode(i == count - 1) for i, t in enumerate(self.transforms))
        header = _PROPOSAL_HEADER.pack(
            0 if last else _MORE_PROPOSALS,
            0,
            _PROPOSAL_HEADER.size + len(self.spi) + len(body),
            self.number,
            self.protocol_id,
            len(self.spi),
            count,
        )
        return header + self.spi + body


@dataclass(frozen=True, slots=True)
class SaPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def encode_body(self) -> bytes:
        count = len(self.proposals)
        return b"".join(p.encode(i == count - 1) for i, p in enumerate(self.proposals))


def _decode_sa(buf: bytes, start: int, end: int) -> SaPayload:
    proposals = []
    offset = start
    more = True
    while more:
        proposal, offset, more = _decode_proposal(buf, offset, end)
        proposals.append(proposal)
    if offset != end:
        raise InvalidSyntax("bytes after the last proposal")
    return SaPayload(tuple(proposals))


def _decode_proposal(buf: bytes, offset: int, end: int) -> tuple[Proposal, int, bool]:
    if end - offset < _PROPOSAL_HEADER.size:
        raise InvalidSyntax("truncated proposal")
    last, _, length, number, protocol, spi_size, count = _PROPOSAL_HEADER.unpack_from(
        buf, offset
    )
    proposal_end = offset + length
    if last not in (0, _MORE_PROPOSALS):
        raise InvalidSyntax(f"proposal Last Substruc {last}")
    if length < _PROPOSAL_HEADER.size + spi_size or proposal_end > end:
        raise InvalidSyntax(f"proposal length {length}")
    _check_spi_size(protocol, spi_size)

    # The SPI, then exactly `count` transforms filling the proposal.
    spi_start = offset + _PROPOSAL_HEADER.size
    cursor = spi_start + spi_size
    transforms = []
    more_transforms = count > 0
    while more_transforms:
        transform, cursor, more_transforms = _decode_transform(
            buf, cursor, proposal_end
        )
        transforms.append(transform)
    if len(transforms) != count or cursor != proposal_end:
        raise InvalidSyntax(f"proposal announces {count} transforms")
    proposal = Proposal(
        number,
        _known(ProtocolId, protocol),
        tuple(transforms),
        buf[spi_start : spi_start + spi_size],
    )
    return proposal, proposal_end, last == _MORE_PROPOSALS


def _check_spi_size(protocol: int, spi_size: int) -> None:
    # RFC 7296 §3.3.1: IKE SPIs are 8 octets (0 in IKE_SA_INIT), AH/ESP 4.
    allowed = (0, 8) if protocol == ProtocolId.IKE else (4,)
    if protocol not in (ProtocolId.IKE, ProtocolId.AH, ProtocolId.ESP):
        raise InvalidSyntax(f"proposal protocol {protocol}")
    if spi_size not in allowed:
        raise InvalidSyntax(f"SPI size {spi_size} for protocol {protocol}")


def _decode_transform(buf: bytes, offset: int, end: int) -> tuple[Transform, int, bool]:
    if end - offset < _TRANSFORM_HEADER.size:
        raise InvalidSyntax("truncated transform")
    last, _, length, transform_type, _, transform_id = _TRANSFORM_HEADER.unpack_from(
        buf, offset
    )
    transform_end = offset + length
    if last not in (0, _MORE_TRANSFORMS):
        raise InvalidSyntax(f"transform Last Substruc {last}")
    if length < _TRANSFORM_HEADER.size or transform_end > end:
        raise InvalidSyntax(f"transform length {length}")

    key_length, others = _decode_attributes(
        buf, offset + _TRANSFORM_HEADER.size, transform_end
    )
    id_enum = _TRANSFORM_IDS.get(transform_type)
    transform = Transform(
        _known(TransformType, transform_type),
        _known(id_enum, transform_id) if id_enum else transform_id,
        key_length,
        others,
    )
    return transform, transform_end, last == _MORE_TRANSFORMS


def _decode_attributes(
    buf: bytes, offset: int, end: int
) -> tuple[int | None, tuple[TransformAttribute, ...]]:
    key_length = None
    others = []
    while offset < end:
        if end - offset < _ATTRIBUTE_HEADER.size:
            raise InvalidSyntax("truncated transform attribute")
        kind, value = _ATTRIBUTE_HEADER.unpack_from(buf, offset)
        offset += _ATTRIBUTE_HEADER.size
        attribute_type = kind & 0x7FFF
        if kind & _ATTRIBUTE_FORMAT_TV:
            # TV format: the two octets after the type are the value itself.
            if attribute_type == TransformAttributeType.KEY_LENGTH:
                key_length = value
            else:
                others.append(
                    TransformAttribute(attribute_type, _U16.pack(value), True)
                )
            continue
        if end - offset < value:
            raise InvalidSyntax("transform attribute overruns its transform")
        if attribute_type == TransformAttributeType.KEY_LENGTH:
            raise InvalidSyntax("Key Length attribute must use TV format")
        others.append(TransformAttribute(attribute_type, buf[offset : offset + value]))
        offset += value
    return key_length, tuple(others)


# ---------------------------------------------------------------------------
# Simple payloads (RFC 7296 §3.4-3.12)


@dataclass(frozen=True, slots=True)
class KePayload:
    payload_type: ClassVar[PayloadType] = PayloadType.KE
    dh_group: DhGroup | int
    key_exchange_data: bytes

    def encode_body(self) -> bytes:
        return _KE_HEADER.pack(self.dh_group, 0) + self.key_exchange_data


def _decode_ke(buf: bytes, start: int, end: int) -> KePayload:
    if end - start < _KE_HEADER.size:
        raise InvalidSyntax("truncated KE payload")
    group, _ = _KE_HEADER.unpack_from(buf, start)
    return KePayload(_known(DhGroup, group), buf[start + _KE_HEADER.size : end])


@dataclass(frozen=True, slots=True)
class IdPayload:
    """Identification payload body shared by IDi and IDr (RFC 7296 §3.5)."""

    payload_type: ClassVar[PayloadType]
    id_type: IdType | int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes((self.id_type, 0, 0, 0)) + self.data


@dataclass(frozen=True, slots=True)
class IdiPayload(IdPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.IDi


@dataclass(frozen=True, slots=True)
class IdrPayload(IdPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.IDr


def _id_decoder(cls: type[_ID]) -> Callable[[bytes, int, int], _ID]:
    def decode(buf: bytes, start: int, end: int) -> _ID:
        if end - start < 4:
            raise InvalidSyntax("truncated ID payload")
        return cls(_known(IdType, buf[start]), buf[start + 4 : end])

    return decode


@dataclass(frozen=True, slots=True)
class CertPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.CERT
    encoding: CertEncoding | int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes((self.encoding,)) + self.data


@dataclass(frozen=True, slots=True)
class CertReqPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.CERTREQ
    encoding: CertEncoding | int
    certification_authority: bytes
    """Concatenated SHA-1 hashes of trusted CA public keys (RFC 7296 §3.7)."""

    def encode_body(self) -> bytes:
        return bytes((self.encoding,)) + self.certification_authority


def _cert_decoder(cls: type[_CERT]) -> Callable[[bytes, int, int], _CERT]:
    def decode(buf: bytes, start: int, end: int) -> _CERT:
        if end - start < 1:
            raise InvalidSyntax("empty certificate payload")
        return cls(_known(CertEncoding, buf[start]), buf[start + 1 : end])

    return decode


@dataclass(frozen=True, slots=True)
class AuthPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.AUTH
    auth_method: AuthMethod | int
    authentication_data: bytes

    def encode_body(self) -> bytes:
        return bytes((self.auth_method, 0, 0, 0)) + self.authentication_data


def _decode_auth(buf: bytes, start: int, end: int) -> AuthPayload:
    if end - start < 4:
        raise InvalidSyntax("truncated AUTH payload")
    return AuthPayload(_known(AuthMethod, buf[start]), buf[start + 4 : end])


@dataclass(frozen=True, slots=True)
class NoncePayload:
    payload_type: ClassVar[PayloadType] = PayloadType.NONCE
    nonce: bytes

    def encode_body(self) -> bytes:
        return self.nonce


def _decode_nonce(buf: bytes, start: int, end: int) -> NoncePayload:
    # RFC 7296 §3.9: between 16 and 256 octets.
    if not MIN_NONCE_SIZE <= end - start <= MAX_NONCE_SIZE:
        raise InvalidSyntax(f"nonce of {end - start} octets")
    return NoncePayload(buf[start:end])


@dataclass(frozen=True, slots=True)
class NotifyPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: NotifyType | int
    notification_data: bytes = b""
    protocol_id: ProtocolId | int = ProtocolId.NONE
    spi: bytes = b""

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384

    def encode_body(self) -> bytes:
        header = _NOTIFY_HEADER.pack(self.protocol_id, len(self.spi), self.notify_type)
        return header + self.spi + self.notification_data


def _decode_notify(buf: bytes, start: int, end: int) -> NotifyPayload:
    if end - start < _NOTIFY_HEADER.size:
        raise InvalidSyntax("truncated Notify payload")
    protocol, spi_size, notify_type = _NOTIFY_HEADER.unpack_from(buf, start)
    spi_start = start + _NOTIFY_HEADER.size
    if end - spi_start < spi_size:
        raise InvalidSyntax("Notify SPI overruns the payload")
    return NotifyPayload(
        _known(NotifyType, notify_type),
        buf[spi_start + spi_size : end],
        _known(ProtocolId, protocol),
        buf[spi_start : spi_start + spi_size],
    )


@dataclass(frozen=True, slots=True)
class DeletePayload:
    payload_type: ClassVar[PayloadType] = PayloadType.DELETE
    protocol_id: ProtocolId | int
    spis: tuple[bytes, ...] = ()
    """Empty for an IKE SA (RFC 7296 §3.11); 4-octet SPIs for AH/ESP."""

    def encode_body(self) -> bytes:
        spi_size = len(self.spis[0]) if self.spis else 0
        if self.protocol_id in (ProtocolId.AH, ProtocolId.ESP):
            spi_size = 4
        header = _DELETE_HEADER.pack(self.protocol_id, spi_size, len(self.spis))
        return header + b"".join(self.spis)


def _decode_delete(buf: bytes, start: int, end: int) -> DeletePayload:
    if end - start < _DELETE_HEADER.size:
        raise InvalidSyntax("truncated Delete payload")
    protocol, spi_size, count = _DELETE_HEADER.unpack_from(buf, start)
    first = start + _DELETE_HEADER.size
    if end - first != spi_size * count:
        raise InvalidSyntax(f"Delete announces {count} SPIs of {spi_size} octets")
    if protocol == ProtocolId.IKE and spi_size not in (0, 8):
        raise InvalidSyntax(f"Delete of an IKE SA with SPI size {spi_size}")
    if protocol in (ProtocolId.AH, ProtocolId.ESP) and spi_size != 4:
        raise InvalidSyntax(f"Delete of a CHILD_SA with SPI size {spi_size}")
    spis = tuple(
        buf[first + i * spi_size : first + (i + 1) * spi_size] for i in range(count)
    )
    return DeletePayload(_known(ProtocolId, protocol), spis)


@dataclass(frozen=True, slots=True)
class VendorIdPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.VENDOR_ID
    vendor_id: bytes

    def encode_body(self) -> bytes:
        return self.vendor_id


def _decode_vendor_id(buf: bytes, start: int, end: int) -> VendorIdPayload:
    return VendorIdPayload(buf[start:end])


@dataclass(frozen=True, slots=True)
class EapPayload:
    """EAP message carried opaquely (RFC 7296 §3.16)."""

    payload_type: ClassVar[PayloadType] = PayloadType.EAP
    eap_message: bytes

    def encode_body(self) -> bytes:
        return self.eap_message


def _decode_eap(buf: bytes, start: int, end: int) -> EapPayload:
    if end - start < 4:
        raise InvalidSyntax("truncated EAP message")
    return EapPayload(buf[start:end])


# ---------------------------------------------------------------------------
# Traffic selectors (RFC 7296 §3.13)

IPAddress: TypeAlias = IPv4Address | IPv6Address
_TS_ADDRESS_SIZE = {TsType.TS_IPV4_ADDR_RANGE: 4, TsType.TS_IPV6_ADDR_RANGE: 16}


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """An address range, port range and IP protocol (0 means any)."""

    start_address: IPAddress
    end_address: IPAddress
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> TsType:
        if self.start_address.version == 4:
            return TsType.TS_IPV4_ADDR_RANGE
        return TsType.TS_IPV6_ADDR_RANGE

    def __post_init__(self) -> None:
        if self.start_address.version != self.end_address.version:
            raise ValueError("traffic selector mixes IPv4 and IPv6")

    def encode(self) -> bytes:
        addresses = self.start_address.packed + self.end_address.packed
        header = _TS_HEADER.pack(
            self.ts_type,
            self.ip_protocol,
            _TS_HEADER.size + len(addresses),
            self.start_port,
            self.end_port,
        )
        return header + addresses


@dataclass(frozen=True, slots=True)
class TsPayload:
    payload_type: ClassVar[PayloadType]
    traffic_selectors: tuple[TrafficSelector, ...]

    def encode_body(self) -> bytes:
        selectors = b"".join(ts.encode() for ts in self.traffic_selectors)
        return bytes((len(self.traffic_selectors), 0, 0, 0)) + selectors


@dataclass(frozen=True, slots=True)
class TsiPayload(TsPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.TSi


@dataclass(frozen=True, slots=True)
class TsrPayload(TsPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.TSr


def _ts_decoder(cls: type[_TS]) -> Callable[[bytes, int, int], _TS]:
    def decode(buf: bytes, start: int, end: int) -> _TS:
        if end - start < 4:
            raise InvalidSyntax("truncated TS payload")
        count = buf[start]
        offset = start + 4
        selectors = []
        for _ in range(count):
            selector, offset = _decode_traffic_selector(buf, offset, end)
            selectors.append(selector)
        if offset != end:
            raise InvalidSyntax(f"TS payload announces {count} selectors")
        return cls(tuple(selectors))

    return decode


def _decode_traffic_selector(
    buf: bytes, offset: int, end: int
) -> tuple[TrafficSelector, int]:
    if end - offset < _TS_HEADER.size:
        raise InvalidSyntax("truncated traffic selector")
    ts_type, protocol, length, start_port, end_port = _TS_HEADER.unpack_from(
        buf, offset
    )
    size = _TS_ADDRESS_SIZE.get(ts_type)
    if size is None:
        raise InvalidSyntax(f"TS type {ts_type}")
    if length != _TS_HEADER.size + 2 * size or offset + length > end:
        raise InvalidSyntax(f"traffic selector length {length}")
    first = offset + _TS_HEADER.size
    address: type[IPv4Address] | type[IPv6Address] = (
        IPv4Address if size == 4 else IPv6Address
    )
    selector = TrafficSelector(
        address(buf[first : first + size]),
        address(buf[first + size : first + 2 * size]),
        protocol,
        start_port,
        end_port,
    )
    return selector, offset + length


# ---------------------------------------------------------------------------
# Configuration payload (RFC 7296 §3.15)


@dataclass(frozen=True, slots=True)
class ConfigAttribute:
    attribute_type: int
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class CpPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.CP
    cfg_type: CfgType | int
    attributes: tuple[ConfigAttribute, ...] = ()

    def encode_body(self) -> bytes:
        parts = [bytes((self.cfg_type, 0, 0, 0))]
        for attribute in self.attributes:
            parts.append(
                _ATTRIBUTE_HEADER.pack(attribute.attribute_type, len(attribute.value))
            )
            parts.append(attribute.value)
        return b"".join(parts)


def _decode_cp(buf: bytes, start: int, end: int) -> CpPayload:
    if end - start < 4:
        raise InvalidSyntax("truncated CP payload")
    offset = start + 4
    attributes = []
    while offset < end:
        if end - offset < _ATTRIBUTE_HEADER.size:
            raise InvalidSyntax("truncated configuration attribute")
        kind, length = _ATTRIBUTE_HEADER.unpack_from(buf, offset)
        offset += _ATTRIBUTE_HEADER.size
        if end - offset < length:
            raise InvalidSyntax("configuration attribute overruns the payload")
        # The top bit is reserved (RFC 7296 §3.15.1) and ignored on receipt.
        attributes.append(ConfigAttribute(kind & 0x7FFF, buf[offset : offset + length]))
        offset += length
    return CpPayload(_known(CfgType, buf[start]), tuple(attributes))


# ---------------------------------------------------------------------------
# Encrypted payloads (RFC 7296 §3.14, RFC 7383 §2.5)


@dataclass(frozen=True, slots=True)
class EncryptedPayload:
    """SK: IV, ciphertext and ICV, still protected.

    ``first_payload`` is the type of the first inner payload; it travels in
    the SK payload's own Next Payload field.
    """

    payload_type: ClassVar[PayloadType] = PayloadType.SK
    first_payload: int
    protected: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return self.protected


@dataclass(frozen=True, slots=True)
class EncryptedFragmentPayload:
    """SKF: one fragment of an SK payload (RFC 7383 §2.5)."""

    payload_type: ClassVar[PayloadType] = PayloadType.SKF
    first_payload: int
    fragment_number: int
    total_fragments: int
    protected: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        header = _FRAGMENT_HEADER.pack(self.fragment_number, self.total_fragments)
        return header + self.protected


def _decode_fragment(
    first_payload: int, buf: bytes, start: int, end: int
) -> EncryptedFragmentPayload:
    if end - start < _FRAGMENT_HEADER.size:
        raise InvalidSyntax("truncated Encrypted Fragment payload")
    number, total = _FRAGMENT_HEADER.unpack_from(buf, start)

    # RFC 7383 §2.6: such fragments are discarded without any answer.
    if not 1 <= number <= total:
        raise IkeMessageDropped(DropReason.FRAGMENT_NUMBER_INVALID)
    if number > 1 and first_payload != PayloadType.NONE:
        raise IkeMessageDropped(DropReason.FRAGMENT_NEXT_PAYLOAD_INVALID)
    return EncryptedFragmentPayload(
        first_payload, number, total, buf[start + _FRAGMENT_HEADER.size : end]
    )


@dataclass(frozen=True, slots=True)
class UnknownPayload:
    """A payload type we do not implement, kept only when not critical."""

    payload_type: int
    data: bytes
    critical: bool = False

    def encode_body(self) -> bytes:
        return self.data


Payload: TypeAlias = (
    SaPayload
    | KePayload
    | IdiPayload
    | IdrPayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsiPayload
    | TsrPayload
    | EncryptedPayload
    | EncryptedFragmentPayload
    | CpPayload
    | EapPayload
    | UnknownPayload
)

_Decoder = Callable[[bytes, int, int], Payload]

_DECODERS: dict[int, _Decoder] = {
    PayloadType.SA: _decode_sa,
    PayloadType.KE: _decode_ke,
    PayloadType.IDi: _id_decoder(IdiPayload),
    PayloadType.IDr: _id_decoder(IdrPayload),
    PayloadType.CERT: _cert_decoder(CertPayload),
    PayloadType.CERTREQ: _cert_decoder(CertReqPayload),
    PayloadType.AUTH: _decode_auth,
    PayloadType.NONCE: _decode_nonce,
    PayloadType.NOTIFY: _decode_notify,
    PayloadType.DELETE: _decode_delete,
    PayloadType.VENDOR_ID: _decode_vendor_id,
    PayloadType.TSi: _ts_decoder(TsiPayload),
    PayloadType.TSr: _ts_decoder(TsrPayload),
    PayloadType.CP: _decode_cp,
    PayloadType.EAP: _decode_eap,
}
_ENCRYPTED_TYPES = (PayloadType.SK, PayloadType.SKF)


def encode_payload_chain(payloads: Iterable[Payload]) -> tuple[int, bytes]:
    """Encode payloads with their generic headers.

    Returns the type of the first payload (for the header or SK Next Payload
    field) and the encoded chain.
    """
    items = list(payloads)
    parts = []
    for index, payload in enumerate(items):
        body = payload.encode_body()
        following = _next_type(items, index)
        critical = CRITICAL_FLAG if getattr(payload, "critical", False) else 0
        parts.append(_GENERIC_HEADER.pack(following, critical, 4 + len(body)))
        parts.append(body)
    first = items[0].payload_type if items else PayloadType.NONE
    return first, b"".join(parts)


def _next_type(items: list[Payload], index: int) -> int:
    payload = items[index]
    # RFC 7296 §3.14: SK's Next Payload names its first inner payload.
    if isinstance(payload, EncryptedPayload | EncryptedFragmentPayload):
        return payload.first_payload
    if index + 1 < len(items):
        return items[index + 1].payload_type
    return PayloadType.NONE


def decode_payload_chain(
    first_type: int, buf: bytes, start: int, end: int, *, allow_encrypted: bool
) -> list[Payload]:
    """Decode the chain of payloads in ``buf[start:end]``.

    An SK or SKF payload ends the chain and must end the data (RFC 7296
    §3.14); inside an SK payload (``allow_encrypted=False``) it is a syntax
    error.
    """
    payloads: list[Payload] = []
    payload_type = first_type
    offset = start
    while payload_type != PayloadType.NONE:
        if end - offset < GENERIC_PAYLOAD_HEADER_SIZE:
            raise InvalidSyntax(f"payload {payload_type} header truncated")
        following, flags, length = _GENERIC_HEADER.unpack_from(buf, offset)
        payload_end = offset + length
        if length < GENERIC_PAYLOAD_HEADER_SIZE or payload_end > end:
            raise InvalidSyntax(f"payload {payload_type} length {length}")
        body = offset + GENERIC_PAYLOAD_HEADER_SIZE

        if payload_type in _ENCRYPTED_TYPES:
            if not allow_encrypted:
                raise InvalidSyntax("encrypted payload inside an encrypted payload")
            payloads.append(
                _decode_encrypted(payload_type, following, buf, body, payload_end, end)
            )
            return payloads
        payloads.append(
            _decode_one(
                payload_type, bool(flags & CRITICAL_FLAG), buf, body, payload_end
            )
        )
        payload_type = following
        offset = payload_end
    if offset != end:
        raise InvalidSyntax(f"{end - offset} octets after the last payload")
    return payloads


def _decode_one(
    payload_type: int, critical: bool, buf: bytes, start: int, end: int
) -> Payload:
    decoder = _DECODERS.get(payload_type)
    if decoder is not None:
        return decoder(buf, start, end)

    # RFC 7296 §2.5: reject the whole message for an unknown critical
    # payload, skip an unknown non-critical one.
    if critical:
        raise UnsupportedCriticalPayload(payload_type)
    return UnknownPayload(payload_type, buf[start:end], False)


def _decode_encrypted(
    payload_type: int,
    first_inner: int,
    buf: bytes,
    start: int,
    payload_end: int,
    end: int,
) -> EncryptedPayload | EncryptedFragmentPayload:
    if payload_end != end:
        raise InvalidSyntax("encrypted payload is not the last payload")
    if payload_type == PayloadType.SKF:
        return _decode_fragment(first_inner, buf, start, end)
    return EncryptedPayload(first_inner, buf[start:end])
