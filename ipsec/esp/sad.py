"""The inbound Security Association Database, keyed by SPI (RFC 4301 §4.4.2)."""

from __future__ import annotations

from collections.abc import Iterator

from .config import Protocol
from .ip import IPPROTO_AH, IPPROTO_ESP, locate_protocol
from .results import DROPS, Drop, DropReason, Opened, Unprotected
from .sa import InboundSA


class SADatabase:
    """Finds the inbound SA for a packet and counts what no SA can count.

    ``drops`` holds packets dropped before an SA was found: UNKNOWN_SPI,
    and TRUNCATED or MALFORMED when not even the SPI could be read.
    """

    def __init__(self) -> None:
        self._by_spi: dict[int, InboundSA] = {}
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    def __len__(self) -> int:
        return len(self._by_spi)

    def __iter__(self) -> Iterator[InboundSA]:
        return iter(list(self._by_spi.values()))

    def __contains__(self, spi: int) -> bool:
        return spi in self._by_spi

    def add(self, sa: InboundSA) -> None:
        """Install an inbound SA; its SPI must be free."""
        if sa.spi in self._by_spi:
            raise ValueError(f"SPI 0x{sa.spi:08x} already installed")
        self._by_spi[sa.spi] = sa

    def get(self, spi: int) -> InboundSA | None:
        return self._by_spi.get(spi)

    def remove(self, spi: int) -> InboundSA | None:
        return self._by_spi.pop(spi, None)

    def open(self, esp: bytes, now: float) -> Opened | Drop:
        """Open a UDP-encapsulated ESP packet with the SA its SPI names."""
        if len(esp) < 8:
            return self._drop(DropReason.TRUNCATED)
        sa = self._by_spi.get(int.from_bytes(esp[:4], "big"))
        if sa is None:
            return self._drop(DropReason.UNKNOWN_SPI)
        return sa.open(esp, now)

    def unprotect(self, packet: bytes, now: float) -> Unprotected | Drop:
        """Unprotect an IP packet carrying ESP or AH with the SA its SPI names."""
        spi = self._spi_of(packet)
        if isinstance(spi, DropReason):
            return self._drop(spi)
        sa = self._by_spi.get(spi)
        if sa is None:
            return self._drop(DropReason.UNKNOWN_SPI)
        return sa.unprotect(packet, now)

    def _spi_of(self, packet: bytes) -> int | DropReason:
        # The SPI sits first in ESP and at offset 4 in AH (RFC 4302 §2).
        for protocol, spi_offset in ((IPPROTO_ESP, 0), (IPPROTO_AH, 4)):
            located = locate_protocol(packet, Protocol(protocol))
            if located is DropReason.POLICY_MISMATCH:
                continue
            if isinstance(located, DropReason):
                return located
            start = located[0] + spi_offset
            if start + 4 > located[2]:
                return DropReason.TRUNCATED
            return int.from_bytes(packet[start : start + 4], "big")
        return DropReason.MALFORMED

    def _drop(self, reason: DropReason) -> Drop:
        self.drops[reason] += 1
        return DROPS[reason]
