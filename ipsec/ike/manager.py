"""The IKE SA manager: which IKE_SA a datagram belongs to (RFC 7296 §2.6).

Every IKE_SA is found by the SPI this end chose. A responder's IKE_SA is
also found, until it is established, by the initiator's SPI and address, so
a retransmitted IKE_SA_INIT (SPIr still zero) reaches the IKE_SA it already
created instead of starting a second one. Half-open IKE_SAs are capped:
each costs a DH computation, and they are what a flood of forged
IKE_SA_INIT requests creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ipsec.esp.spd import Policy
from ipsec.esp.spd import TrafficSelector as PolicySelector

from .connection import ConnectionDefinition
from .ike_sa import IkeSa
from .message import IkeHeader
from .payloads import IdPayload
from .tasks.base import Endpoint

_SPI_ZERO = bytes(8)


@dataclass(eq=False)
class InstalledChild:
    """A CHILD_SA as installed in the data plane, to move or remove it later."""

    name: str
    inbound_spi: int
    outbound_spi: int
    local_selectors: tuple[PolicySelector, ...]
    remote_selectors: tuple[PolicySelector, ...]
    policies: list[Policy] = field(default_factory=list, repr=False)
    outbound_active: bool = False
    """Outbound policies point at this pair (after a rekey, once switched)."""


@dataclass(eq=False)
class ManagedIkeSa:
    """One IKE_SA, the connection it runs and where its peer is."""

    engine: IkeSa
    connection: ConnectionDefinition
    local: Endpoint
    """Our address and the port we send from (500, or 4500 once floated)."""
    remote: Endpoint
    """Where the peer's last request came from, or where we reach it."""
    is_initiator: bool
    created: float
    floated: bool = False
    """On port 4500 with the non-ESP marker (RFC 3948 §2.2)."""
    children: list[InstalledChild] = field(default_factory=list)
    established: bool = False
    remote_id: IdPayload | None = None
    """The identity the peer authenticated with."""
    peer_request_id: int = -1
    """The highest message ID of a peer request we answered."""
    child_pending: bool = False
    """We asked for a CHILD_SA (a trap or close_action) and await the answer."""
    reauth_at: float | None = None
    """When to reauthenticate (``reauth_time``); an IKE_SA rekey keeps it."""
    reauth_of: ManagedIkeSa | None = field(default=None, repr=False)
    """The IKE_SA this one reauthenticates, until it carries the CHILD_SA."""
    replaced_by: ManagedIkeSa | None = field(default=None, repr=False)
    """The IKE_SA reauthenticating this one; this one is deleted after."""

    def child(self, inbound_spi: int) -> InstalledChild | None:
        return next((c for c in self.children if c.inbound_spi == inbound_spi), None)

    @property
    def our_spi(self) -> bytes:
        return self.engine.spi_i if self.is_initiator else self.engine.spi_r

    @property
    def label(self) -> str:
        """The log prefix: connection name and SPIi_SPIr."""
        engine = self.engine
        return f"{self.connection.name}[{engine.spi_i.hex()}_{engine.spi_r.hex()}]"


class HalfOpenLimitReached(Exception):
    """A new IKE_SA_INIT arrived while the half-open cap is reached."""


class IkeSaManager:
    """IKE_SAs by our SPI and, while half-open, by the initiator's SPI."""

    def __init__(self, max_half_open: int) -> None:
        self.max_half_open = max_half_open
        self._by_spi: dict[bytes, ManagedIkeSa] = {}
        self._half_open: dict[tuple[bytes, Endpoint], ManagedIkeSa] = {}

    def __len__(self) -> int:
        return len(self._by_spi)

    def __contains__(self, sa: object) -> bool:
        return isinstance(sa, ManagedIkeSa) and self._by_spi.get(sa.our_spi) is sa

    def __iter__(self) -> Iterator[ManagedIkeSa]:
        # A copy: callers remove IKE_SAs while they walk them.
        return iter(list(self._by_spi.values()))

    @property
    def half_open(self) -> int:
        return len(self._half_open)

    def is_taken(self, spi: bytes) -> bool:
        return spi in self._by_spi

    def lookup(self, header: IkeHeader, remote: Endpoint) -> ManagedIkeSa | None:
        """The IKE_SA a message belongs to, by the SPI this end chose.

        The I flag says who sent it: the original initiator's messages carry
        our SPI as SPIr, the original responder's as SPIi (RFC 7296 §3.1).
        """
        if not header.is_initiator:
            return self._by_spi.get(header.spi_i)
        if header.spi_r == _SPI_ZERO:
            return self._half_open.get((header.spi_i, remote))
        return self._by_spi.get(header.spi_r)

    def add(self, sa: ManagedIkeSa, initiator_spi: bytes | None = None) -> None:
        """Register a new IKE_SA.

        A responder's (``initiator_spi`` given: the SPIi of the IKE_SA_INIT)
        counts as half-open until :meth:`mark_established`.
        """
        if initiator_spi is not None:
            if len(self._half_open) >= self.max_half_open:
                raise HalfOpenLimitReached(f"{len(self._half_open)} half-open")
            self._half_open[(initiator_spi, sa.remote)] = sa
        self._by_spi[sa.our_spi] = sa

    def mark_established(self, sa: ManagedIkeSa) -> None:
        sa.established = True
        self._forget_half_open(sa)

    def remove(self, sa: ManagedIkeSa) -> None:
        self._by_spi.pop(sa.our_spi, None)
        self._forget_half_open(sa)

    def _forget_half_open(self, sa: ManagedIkeSa) -> None:
        stale = [key for key, value in self._half_open.items() if value is sa]
        for key in stale:
            del self._half_open[key]
