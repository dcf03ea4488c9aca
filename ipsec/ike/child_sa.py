"""The CHILD_SAs of one IKE_SA, as the rekey and delete tasks see them.

State diagram of one CHILD_SA pair (RFC 7296 §1.3.3, §1.4.1, §2.8)::

    INSTALLED --we send REKEY_SA--> REKEYING --response--> REKEYED --Delete--> gone
        |  \\--peer rekeys it--> REKEYED (successor set, wait for its Delete)
        +--we send Delete--> DELETING --response--> gone
    any --peer's Delete--> gone

A CHILD_SA whose rekey by the peer collided with ours (§2.8.1) keeps the
peer's new SA in ``collision`` until our own response decides which of the
two new SAs survives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .constants import ExchangeType
from .events import ChildSaDeleteReason, ChildSaEstablished

if TYPE_CHECKING:
    # The tasks import this module; Task is needed for annotations only.
    from .tasks.base import IkeSaContext, Task

    Exchange = tuple[ExchangeType, list[Task]]


class ChildSaState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    """Our CREATE_CHILD_SA with REKEY_SA for it is outstanding."""
    REKEYED = "rekeyed"
    """Replaced; its Delete exchange is pending (ours or the peer's)."""
    DELETING = "deleting"
    """Our INFORMATIONAL Delete for it is outstanding."""


@dataclass(frozen=True, slots=True)
class PeerRekey:
    """The peer's rekey of a CHILD_SA that collided with ours (§2.8.1)."""

    inbound_spi: bytes
    """Our inbound SPI of the SA the peer's exchange created."""
    lowest_nonce: bytes
    """The lower of the two nonces of the peer's exchange."""


@dataclass(eq=False)
class ChildSa:
    established: ChildSaEstablished
    state: ChildSaState
    rekey_at: float | None
    """When the soft lifetime runs out (``None``: rekeyed on request only)."""
    outbound_active: bool
    successor: bytes | None = None
    """Inbound SPI of the SA that replaces this one once it is deleted."""
    expire_at: float | None = None
    """When the hard lifetime runs out; set by the table from its config."""
    delete_reason: ChildSaDeleteReason | None = None
    """Why we are deleting it, once our Delete is queued."""
    collision: PeerRekey | None = None

    @property
    def inbound_spi(self) -> bytes:
        return self.established.inbound_spi

    @property
    def outbound_spi(self) -> bytes:
        return self.established.outbound_spi


def soft_lifetime(context: IkeSaContext, now: float) -> float | None:
    """When a new CHILD_SA is due for rekeying, up to rand_time early."""
    config = context.config
    if config.child_rekey_time is None:
        return None
    return now + config.child_rekey_time - jitter(context, config.rand_time)


def jitter(context: IkeSaContext, rand_time: float) -> float:
    """A uniform draw in [0, rand_time) from the injected randomness."""
    if rand_time <= 0:
        return 0.0
    return rand_time * int.from_bytes(context.random_bytes(4)) / 2**32


class ChildSaTable:
    """CHILD_SAs by our inbound SPI, plus exchanges the tasks have queued.

    ``now`` is the time of the input being processed, set by the engine, so
    that tasks can start lifetimes without reading a clock.
    """

    def __init__(self, life_time: float | None = None) -> None:
        self._by_inbound: dict[bytes, ChildSa] = {}
        self._life_time = life_time
        self.pending: deque[Exchange] = deque()
        """Requests to send once the window is free (RFC 7296 §2.3)."""
        self.now = 0.0
        self.ike_rekeying = False
        """An IKE_SA rekey is under way: CHILD_SA rekeys wait (§2.25.2)."""

    def __iter__(self) -> Iterator[ChildSa]:
        return iter(list(self._by_inbound.values()))

    def __len__(self) -> int:
        return len(self._by_inbound)

    def add(self, child: ChildSa) -> None:
        if self._life_time is not None and child.expire_at is None:
            child.expire_at = self.now + self._life_time
        self._by_inbound[child.inbound_spi] = child

    def get(self, inbound_spi: bytes) -> ChildSa | None:
        return self._by_inbound.get(inbound_spi)

    def by_outbound(self, outbound_spi: bytes) -> ChildSa | None:
        """The SA the peer names by its own inbound SPI (Delete, REKEY_SA)."""
        return next(
            (c for c in self._by_inbound.values() if c.outbound_spi == outbound_spi),
            None,
        )

    def remove(self, inbound_spi: bytes) -> ChildSa | None:
        return self._by_inbound.pop(inbound_spi, None)

    def queue(self, exchange: ExchangeType, tasks: list[Task]) -> None:
        self.pending.append((exchange, tasks))

    def move_to(self, other: ChildSaTable) -> None:
        """Give every CHILD_SA to the table of a new IKE_SA (§2.18).

        Tasks of this IKE_SA still holding this table then see it empty.
        """
        other._by_inbound.update(self._by_inbound)
        self._by_inbound = {}
        self.pending.clear()
