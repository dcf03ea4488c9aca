"""Outbound and inbound SAs: the per-packet ESP (RFC 4303) engine.

Sans-IO: the caller passes bytes and ``now`` in and gets bytes or a typed
result back. Inbound processing never raises for any input; outbound raises
only SAExpired (and MalformedPacket for a packet that is not IP).
"""

from __future__ import annotations

import struct

from .algorithms import EspCipher, IvSource, new_esp_cipher
from .config import Protocol, SAConfig
from .events import LifetimeEvent
from .lifetime import LifetimeTracker, SACounters
from .replay import ReplayWindow
from .results import DROPS, Drop, DropReason, Opened, SAExpired

ESP_HEADER = struct.Struct("!LL")
NO_NEXT_HEADER = 59  # RFC 4303 §2.6: a dummy packet

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
    return 0xFFFFFFFFFFFFFFFF if config.esn else 0xFFFFFFFF


class OutboundSA:
    """Protects packets with one SA: numbers them, encrypts, adds the ICV.

    ``iv_source(n)`` supplies IVs for AES-CBC (default os.urandom). For the
    AEAD transforms the IV is the sequence number unless a source is given.
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
        self._cipher: EspCipher | None = None
        if config.protocol is Protocol.ESP:
            self._cipher = new_esp_cipher(
                config.encryption,
                config.encryption_key,
                config.integrity,
                config.integrity_key,
                config.esn,
                iv_source,
            )

    def __repr__(self) -> str:
        return f"OutboundSA(spi=0x{self.spi:08x}, sequence={self.sequence})"

    def seal(self, payload: bytes, next_header: int, now: float) -> bytes:
        """Return SPI | seq | IV | ciphertext | ICV for one ESP payload.

        This is the form carried in UDP (RFC 3948) and after an IP header.
        """
        cipher = self._esp_cipher()
        sequence = self._next_sequence(now)
        pad_length = -(len(payload) + 2) % cipher.alignment
        plaintext = payload + _TRAILERS[pad_length][next_header]
        header = ESP_HEADER.pack(self.spi, sequence & 0xFFFFFFFF)
        sealed = cipher.seal(header, sequence, plaintext)
        self._count(len(payload), sequence, now)
        return sealed

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

    def _esp_cipher(self) -> EspCipher:
        if self._cipher is None:
            raise TypeError("seal() is for ESP SAs; AH SAs protect whole packets")
        return self._cipher

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


class InboundSA:
    """Verifies and decrypts packets for one SA, with anti-replay."""

    def __init__(self, config: SAConfig, now: float, *, last_sequence: int = 0) -> None:
        self.config = config
        self.spi = config.spi
        self.counters = SACounters()
        self.lifetime = LifetimeTracker(config.spi, config.soft, config.hard, now, None)
        self.replay = ReplayWindow(config.replay_window, config.esn, last_sequence)
        self._cipher: EspCipher | None = None
        self._minimum_length = 0
        if config.protocol is Protocol.ESP:
            cipher = new_esp_cipher(
                config.encryption,
                config.encryption_key,
                config.integrity,
                config.integrity_key,
                config.esn,
            )
            self._cipher = cipher
            # Header, IV, Pad Length, Next Header and ICV at the very least.
            self._minimum_length = 8 + cipher.iv_length + 2 + cipher.icv_length

    def __repr__(self) -> str:
        return f"InboundSA(spi=0x{self.spi:08x}, top={self.replay.top})"

    def open(self, esp: bytes, now: float) -> Opened | Drop:
        """Verify and decrypt SPI | seq | IV | ciphertext | ICV (inverse of seal)."""
        cipher = self._cipher
        if cipher is None:
            return self._drop(DropReason.POLICY_MISMATCH)
        if self._is_expired(now):
            return self._drop(DropReason.EXPIRED)
        if len(esp) < self._minimum_length:
            return self._drop(DropReason.TRUNCATED)
        if (
            len(esp) - 8 - cipher.iv_length - cipher.icv_length
        ) % cipher.ciphertext_multiple:
            return self._drop(DropReason.MALFORMED)

        # Replay check before the ICV, window update only after it (§3.4.3).
        spi, sequence_low = ESP_HEADER.unpack_from(esp)
        if spi != self.spi:
            return self._drop(DropReason.UNKNOWN_SPI)
        sequence = self.replay.check(sequence_low)
        if isinstance(sequence, DropReason):
            return self._drop(sequence)
        plaintext = cipher.open(memoryview(esp), sequence)
        if plaintext is None:
            return self._drop(DropReason.BAD_ICV)
        self.replay.update(sequence)
        return self._strip_trailer(plaintext, sequence, now)

    def next_event(self) -> LifetimeEvent | None:
        return self.lifetime.next_event()

    def check_lifetime(self, now: float) -> None:
        counters = self.counters
        self.lifetime.check(counters.bytes, counters.packets, 0, now)

    def get_timer(self) -> float | None:
        return self.lifetime.next_deadline()

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
        self._count(end, now)
        return Opened(next_header, plaintext[:end], sequence)

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
