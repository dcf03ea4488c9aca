"""INFORMATIONAL Delete of the IKE_SA (RFC 7296 §1.4.1).

Deleting the IKE_SA deletes its CHILD_SAs without further Deletes; the
response is empty. Our own request ends the IKE_SA when answered, or when
its retransmissions run out (then the peer is taken as dead).
"""

from __future__ import annotations

from ..child_sa import ChildSaTable
from ..constants import ProtocolId
from ..events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    IkeEvent,
    IkeSaDeleted,
    IkeSaDeleteReason,
)
from ..message import IkeMessage
from ..payloads import DeletePayload, Payload
from .base import IkeSaContext, Task


class IkeDelete(Task):
    def __init__(
        self,
        context: IkeSaContext,
        table: ChildSaTable,
        reason: IkeSaDeleteReason = IkeSaDeleteReason.DELETED_LOCALLY,
    ) -> None:
        super().__init__(context)
        self._table = table
        self._reason = reason

    def build_i(self) -> list[Payload]:
        return [DeletePayload(ProtocolId.IKE)]

    def process_i(self, response: IkeMessage) -> None:
        self.outcome += ike_sa_deleted_events(
            self.context, self._table, True, self._reason
        )


def ike_sa_deleted_events(
    context: IkeSaContext,
    table: ChildSaTable,
    locally: bool,
    reason: IkeSaDeleteReason | None = None,
    restart: bool = False,
) -> list[IkeEvent]:
    """Empty the CHILD_SA table and report every pair, then the IKE_SA."""
    events: list[IkeEvent] = []
    for child in table:
        table.remove(child.inbound_spi)
        events.append(
            ChildSaDeleted(
                child.inbound_spi, child.outbound_spi, ChildSaDeleteReason.IKE_SA_GONE
            )
        )
    if reason is None:
        reason = (
            IkeSaDeleteReason.DELETED_LOCALLY
            if locally
            else IkeSaDeleteReason.DELETED_BY_PEER
        )
    events.append(IkeSaDeleted(context.spi_i, context.spi_r, reason, restart))
    table.pending.clear()
    return events
