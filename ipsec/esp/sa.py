"""Outbound and inbound SAs: the per-packet ESP (RFC 4303) and AH (RFC 4302) engine.

Sans-IO: the caller passes bytes and ``now`` in and gets bytes or a typed
result back. Inbound processing never raises for any input; outbound raises
only SAExpired, and MalformedPacket for a packet that is not IP.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from .ah import (
    AH_FIXED_LENGTH,
    AH_HEADER,
    ah_length,
    immutable_header,
    zeros,
)
from .algorithms import AeadCipher, EspCipher, HmacIcv, IvSource, new_esp_cipher
from .config import Mode, Protocol, SAConfig
from .events import LifetimeEvent
from .ip import (
    IPPROTO_AH,
    IPPROTO_ESP,
    OuterHeader,
    inner_version_matches,
    locate_insertion,
    locate_protocol,
    rewrite_header,
    tunnel_next_header,
)
from .lifetime import LifetimeTracker, SACounters
from .replay import ReplayWindow
from .results import (
    DROPS,
    Drop,
    DropReason,
    MalformedPacket,
    Opened,
    SAExpired,
    Unprotected,
)

ESP_HEADER = struct.Struct("!LL")
_ESN_AAD = struct.Struct("!LQ")
NO_NEXT_HEADER = 59  # RFC 4303 §2.6: a dummy packet
_LOW_32 = 0xFFFFFFFF

_PADDING = bytes(range(1, 256))
# Every possible trailer (padding | Pad Length | Next Header) built once, so
# sealing a packet allocates no trailer (RFC 4303 §2.4: default padding is
# 1, 2, 3, ...).
_TRAILERS = [
    [
        _PADDING[:pad_length] + bytes((pad_length, next_header))
        for next_header in range(256)
    ]
    for pad_length in range(16)
]


def _sequence_limit(config: SAConfig) -> int:
    # RFC 4303 §3.3.3: the counter must not cycle; the SA ends at the top.
    return 0xFFFFFFFFFFFFFFFF if config.esn else _LOW_32


def _outer_header(config: SAConfig) -> OuterHeader | None:
    if config.mode is not Mode.TUNNEL:
        return None
    if config.tunnel_source is None or config.tunnel_destination is None:
        raise ValueError("tunnel mode needs tunnel_source and tunnel_destination")
    return OuterHeader(config.tunnel_source, config.tunnel_destination, config.protocol)


def _ah_icv(config: SAConfig) -> HmacIcv | None:
    if config.protocol is not Protocol.AH:
        return None
    return HmacIcv(config.integrity, config.integrity_key, config.esn)


def _esp_cipher(config: SAConfig, iv_source: IvSource | None) -> EspCipher | None:
    if config.protocol is not Protocol.ESP:
        return None
    return new_esp_cipher(
        config.spi,
        config.encryption,
        config.encryption_key,
        config.integrity,
        config.integrity_key,
        config.esn,
        iv_source,
    )


class OutboundSA:
    """Protects packets with one SA: numbers them, encrypts, adds the ICV.

    ``iv_source(n)`` supplies IVs for AES-CBC (default os.urandom). For the
    AEAD transforms the IV is the sequence number unless a source is given.
    ``last_sequence`` restores a sequence counter (the next packet gets
    ``last_sequence + 1``).
    """

    def __init__(
        self,
        config: SAConfig,
        now: float,
        *,
        iv_source: IvSource | None = None,
        last_sequence: int = 0,
    ) -> None:
        self.config = config
        self.spi = config.spi
        self.counters = SACounters()
        self.lifetime = LifetimeTracker(
            config.spi, config.soft, config.hard, now, _sequence_limit(config)
        )
        self.sequence = last_sequence
        """The last sequence number sent."""
        self._cipher = _esp_cipher(config, iv_source)
        self._ah_icv = _ah_icv(config)
        self._outer = _outer_header(config)

    def __repr__(self) -> str:
        return f"OutboundSA(spi=0x{self.spi:08x}, sequence={self.sequence})"

    def seal(self, payload: bytes, next_header: int, now: float) -> bytes:
        """Return SPI | seq | IV | ciphertext | ICV for one ESP payload.

        This is the form carried in UDP (RFC 3948) and after an IP header.
        """
        cipher = self._cipher
        if cipher is None:
            raise TypeError("seal() is for ESP SAs; AH protects whole packets")
        sequence = self._next_sequence(now)
        pad_length = -(len(payload) + 2) % cipher.alignment
        plaintext = payload + _TRAILERS[pad_length][next_header]
        header = ESP_HEADER.pack(self.spi, sequence & _LOW_32)
        sealed = cipher.seal(header, sequence, plaintext)
        self._count(len(payload), sequence, now)
        return sealed

    def protect(self, packet: bytes, now: float) -> bytes:
        """Protect a whole IP packet; the result is a whole IP packet.

        Transport mode inserts ESP or AH after the IP header (and the IPv6
        extension headers that must precede it); tunnel mode wraps the packet
        in an outer header between the SA's tunnel addresses.
        """
        if self._ah_icv is not None:
            return self._protect_ah(packet, self._ah_icv, now)
        if self._outer is not None:
            esp = self.seal(packet, tunnel_next_header(packet), now)
            return self._outer.build(packet, len(esp), self.sequence) + esp
        insert, next_header_offset = locate_insertion(packet)
        esp = self.seal(packet[insert:], packet[next_header_offset], now)
        header = rewrite_header(
            packet, insert, next_header_offset, IPPROTO_ESP, len(esp)
        )
        return b"".join((header, esp))

    def next_event(self) -> LifetimeEvent | None:
        """Pop the oldest queued lifetime event."""
        return self.lifetime.next_event()

    def check_lifetime(self, now: float) -> None:
        """Fire time-based limits for an idle SA."""
        counters = self.counters
        self.lifetime.check(counters.bytes, counters.packets, self.sequence, now)

    def get_timer(self) -> float | None:
        """When check_lifetime should next be called."""
        return self.lifetime.next_deadline()

    def _protect_ah(self, packet: bytes, icv: HmacIcv, now: float) -> bytes:
        sequence = self._next_sequence(now)

        # Lay out the IP header(s) as sent, AH's length already counted.
        if self._outer is not None:
            next_header = tunnel_next_header(packet)
            length = ah_length(icv.icv_length, self._outer.version)
            header: bytes | bytearray = self._outer.build(
                packet, length + len(packet), sequence
            )
            payload = packet
        else:
            insert, next_header_offset = locate_insertion(packet)
            next_header = packet[next_header_offset]
            length = ah_length(icv.icv_length, packet[0] >> 4)
            payload = packet[insert:]
            header = rewrite_header(
                packet, insert, next_header_offset, IPPROTO_AH, length + len(payload)
            )

        # RFC 4302 §3.3.3: the ICV covers immutable header fields, AH with a
        # zero ICV field, and the payload.
        immutable = immutable_header(header, sending=True)
        if immutable is None:
            raise MalformedPacket("IPv6 routing header AH cannot predict")
        fixed = AH_HEADER.pack(
            next_header, length // 4 - 2, 0, self.spi, sequence & _LOW_32
        )
        # RFC 4302 §3.3.3.2.1: the ICV field counts as zero, its padding as sent.
        padding = zeros(length - AH_FIXED_LENGTH - icv.icv_length)
        value = icv.compute(
            sequence, immutable, fixed, zeros(icv.icv_length), padding, payload
        )
        self._count(len(payload), sequence, now)
        return b"".join((header, fixed, value, padding, payload))

    def _next_sequence(self, now: float) -> int:
        lifetime = self.lifetime
        if now >= lifetime.time_alarm:
            self.check_lifetime(now)
        if lifetime.expired_by is not None:
            raise SAExpired(self.spi, lifetime.expired_by)
        return self.sequence + 1

    def _count(self, size: int, sequence: int, now: float) -> None:
        counters, lifetime = self.counters, self.lifetime
        self.sequence = sequence
        counters.packets += 1
        counters.bytes += size
        if (
            counters.packets >= lifetime.packets_alarm
            or counters.bytes >= lifetime.bytes_alarm
            or sequence >= lifetime.sequence_alarm
        ):
            lifetime.check(counters.bytes, counters.packets, sequence, now)


def _in_order_opener(
    sa: InboundSA, cipher: AeadCipher
) -> Callable[[bytes, float], Opened | Drop]:
    """``sa.open`` for an AEAD SA, with the common packet inlined.

    Nearly every packet of a healthy SA is the next in sequence, well
    formed and within its lifetime; this closure handles that packet with
    locals only and hands every other one to the full checks. It is the
    per-packet cost of the inbound path, hence written out by hand.
    """
    replay, lifetime = sa.replay, sa.lifetime
    decrypt, salt = cipher.aead.decrypt, cipher.salt
    aad_of = _ESN_AAD.pack if replay.esn else None
    minimum, spi_wanted, mask = sa._minimum_length, sa.spi, replay.window_mask
    checked, finish = sa._open_checked, sa._strip_trailer

    def open_in_order(esp: bytes, now: float) -> Opened | Drop:
        if len(esp) < minimum:
            return checked(esp, now)
        top = replay.top
        spi, sequence_low = ESP_HEADER.unpack_from(esp)
        if (
            sequence_low != (top + 1) & _LOW_32
            or spi != spi_wanted
            or now >= lifetime.time_alarm
            or lifetime.expired_by is not None
            or (aad_of is None and top >= _LOW_32)
        ):
            return checked(esp, now)
        sequence = top + 1
        aad = esp[:8] if aad_of is None else aad_of(spi, sequence)
        try:
            plaintext = decrypt(salt + esp[8:16], esp[16:], aad)
        except InvalidTag:
            return sa._drop(DropReason.BAD_ICV)
        replay.top = sequence
        replay.bitmap = ((replay.bitmap << 1) | 1) & mask
        return finish(plaintext, sequence, now)

    return open_in_order


class InboundSA:
    """Verifies and decrypts packets for one SA, with anti-replay.

    ``counters.packets`` counts authenticated packets; every discarded packet
    is counted once in ``counters.drops`` under its reason.
    """

    def __init__(self, config: SAConfig, now: float, *, last_sequence: int = 0) -> None:
        self.config = config
        self.spi = config.spi
        self.counters = SACounters()
        self.lifetime = LifetimeTracker(config.spi, config.soft, config.hard, now, None)
        self.replay = ReplayWindow(config.replay_window, config.esn, last_sequence)
        self._cipher = _esp_cipher(config, None)
        self._ah_icv = _ah_icv(config)
        self._tunnel = config.mode is Mode.TUNNEL
        self._overhead = self._minimum_length = 0
        if self._cipher is not None:
            # Header, IV and ICV around the ciphertext, which holds at least
            # Pad Length and Next Header.
            cipher = self._cipher
            self._overhead = 8 + cipher.iv_length + cipher.icv_length
            self._minimum_length = self._overhead + 2
        # An attribute, not a method: AEAD SAs get a closure for the common
        # packet, which saves the calls a method would make per packet.
        self.open: Callable[[bytes, float], Opened | Drop] = self._open_checked
        """Verify and decrypt SPI | seq | IV | ciphertext | ICV (inverse of seal)."""
        if isinstance(self._cipher, AeadCipher):
            self.open = _in_order_opener(self, self._cipher)

    def __repr__(self) -> str:
        return f"InboundSA(spi=0x{self.spi:08x}, top={self.replay.top})"

    def _open_checked(self, esp: bytes, now: float) -> Opened | Drop:
        """Every check in full: the path for any cipher and any sequence."""
        cipher = self._cipher
        if cipher is None:
            return self._drop(DropReason.POLICY_MISMATCH)
        lifetime = self.lifetime
        if now >= lifetime.time_alarm:
            self.check_lifetime(now)
        if lifetime.expired_by is not None:
            return self._drop(DropReason.EXPIRED)
        if len(esp) < self._minimum_length:
            return self._drop(DropReason.TRUNCATED)
        if (len(esp) - self._overhead) % cipher.ciphertext_multiple:
            return self._drop(DropReason.MALFORMED)

        # Replay check before the ICV, window update only after it (§3.4.3).
        spi, sequence_low = ESP_HEADER.unpack_from(esp)
        if spi != self.spi:
            return self._drop(DropReason.UNKNOWN_SPI)
        replay = self.replay
        sequence = replay.check(sequence_low)
        if isinstance(sequence, DropReason):
            return self._drop(sequence)
        plaintext = cipher.open(esp, sequence)
        if plaintext is None:
            return self._drop(DropReason.BAD_ICV)
        replay.update(sequence)
        return self._strip_trailer(plaintext, sequence, now)

    def _strip_trailer(
        self, plaintext: bytes, sequence: int, now: float
    ) -> Opened | Drop:
        # RFC 4303 §2.4: the receiver checks the default padding 1, 2, 3, ...
        pad_length, next_header = plaintext[-2], plaintext[-1]
        end = len(plaintext) - 2 - pad_length
        if end < 0 or plaintext[end:-2] != _PADDING[:pad_length]:
            return self._drop(DropReason.BAD_PADDING)
        if next_header == NO_NEXT_HEADER:
            return self._drop(DropReason.DUMMY)
        counters, lifetime = self.counters, self.lifetime
        counters.packets += 1
        counters.bytes += end
        if (
            counters.packets >= lifetime.packets_alarm
            or counters.bytes >= lifetime.bytes_alarm
        ):
            lifetime.check(counters.bytes, counters.packets, 0, now)
        return Opened(next_header, plaintext[:end], sequence)

    def unprotect(self, packet: bytes, now: float) -> Unprotected | Drop:
        """Verify and remove ESP or AH from a whole IP packet (inverse of protect)."""
        located = locate_protocol(packet, self.config.protocol)
        if isinstance(located, DropReason):
            return self._drop(located)
        offset, next_header_offset, end = located
        if self._ah_icv is not None:
            return self._unprotect_ah(packet, located, self._ah_icv, now)
        opened = self.open(packet[offset:end], now)
        if isinstance(opened, Drop):
            return opened
        return self._decapsulate(
            packet,
            offset,
            next_header_offset,
            opened.next_header,
            opened.payload,
            opened.sequence,
        )

    def next_event(self) -> LifetimeEvent | None:
        """Pop the oldest queued lifetime event."""
        return self.lifetime.next_event()

    def check_lifetime(self, now: float) -> None:
        """Fire time-based limits for an idle SA."""
        counters = self.counters
        self.lifetime.check(counters.bytes, counters.packets, 0, now)

    def get_timer(self) -> float | None:
        """When check_lifetime should next be called."""
        return self.lifetime.next_deadline()

    def count_drop(self, reason: DropReason) -> Drop:
        """Count a drop decided outside the SA (e.g. an inbound policy check)."""
        return self._drop(reason)

    def _unprotect_ah(
        self,
        packet: bytes,
        located: tuple[int, int, int],
        icv: HmacIcv,
        now: float,
    ) -> Unprotected | Drop:
        offset, next_header_offset, end = located
        verified = self._verify_ah(packet, offset, end, icv, now)
        if isinstance(verified, DropReason):
            return self._drop(verified)
        next_header, length, sequence = verified
        self.replay.update(sequence)
        if next_header == NO_NEXT_HEADER:
            return self._drop(DropReason.DUMMY)
        payload = packet[offset + length : end]
        self._count(len(payload), now)
        return self._decapsulate(
            packet, offset, next_header_offset, next_header, payload, sequence
        )

    def _verify_ah(
        self, packet: bytes, offset: int, end: int, icv: HmacIcv, now: float
    ) -> tuple[int, int, int] | DropReason:
        if self._is_expired(now):
            return DropReason.EXPIRED
        if end - offset < AH_FIXED_LENGTH + icv.icv_length:
            return DropReason.TRUNCATED
        next_header, payload_length, _, spi, sequence_low = AH_HEADER.unpack_from(
            packet, offset
        )
        # RFC 4302 §2.2: Payload Length is AH's length in 32-bit words minus 2.
        length = (payload_length + 2) * 4
        if length < AH_FIXED_LENGTH + icv.icv_length:
            return DropReason.MALFORMED
        if offset + length > end:
            return DropReason.TRUNCATED
        if spi != self.spi:
            return DropReason.UNKNOWN_SPI
        sequence = self.replay.check(sequence_low)
        if isinstance(sequence, DropReason):
            return sequence

        immutable = immutable_header(packet[:offset], sending=False)
        if immutable is None:
            return DropReason.MALFORMED
        view = memoryview(packet)
        icv_end = offset + AH_FIXED_LENGTH + icv.icv_length
        expected = icv.compute(
            sequence,
            immutable,
            view[offset : offset + AH_FIXED_LENGTH],
            zeros(icv.icv_length),
            view[icv_end : offset + length],
            view[offset + length : end],
        )
        received = view[offset + AH_FIXED_LENGTH : icv_end]
        if not hmac.compare_digest(expected, received):
            return DropReason.BAD_ICV
        return next_header, length, sequence

    def _decapsulate(
        self,
        packet: bytes,
        offset: int,
        next_header_offset: int,
        next_header: int,
        payload: bytes,
        sequence: int,
    ) -> Unprotected | Drop:
        if self._tunnel:
            # RFC 4301 §5.2: a tunnel SA carries whole IP packets only.
            if not inner_version_matches(next_header, payload):
                return self._drop(DropReason.POLICY_MISMATCH)
            return Unprotected(payload, next_header, sequence)
        header = rewrite_header(
            packet, offset, next_header_offset, next_header, len(payload)
        )
        return Unprotected(b"".join((header, payload)), next_header, sequence)

    def _is_expired(self, now: float) -> bool:
        if now >= self.lifetime.time_alarm:
            self.check_lifetime(now)
        return self.lifetime.expired_by is not None

    def _count(self, size: int, now: float) -> None:
        counters, lifetime = self.counters, self.lifetime
        counters.packets += 1
        counters.bytes += size
        if (
            counters.packets >= lifetime.packets_alarm
            or counters.bytes >= lifetime.bytes_alarm
        ):
            lifetime.check(counters.bytes, counters.packets, 0, now)

    def _drop(self, reason: DropReason) -> Drop:
        self.counters.drops[reason] += 1
        return DROPS[reason]
