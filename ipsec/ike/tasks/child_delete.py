"""INFORMATIONAL Delete of CHILD_SAs, and the responder of INFORMATIONAL.

RFC 7296 §1.4.1: a Delete for ESP names the SPIs the sender receives with;
the answer names ours for the same pairs, except for pairs we are deleting
ourselves at that moment (simultaneous deletes answer with no payload).
Unknown SPIs are ignored (§3.11). An empty request is a liveness check.
"""

from __future__ import annotations

from ..child_sa import ChildSa, ChildSaState, ChildSaTable
from ..constants import ProtocolId
from ..events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    ChildSaOutboundSwitched,
    IkeSaDeleteReason,
)
from ..message import IkeMessage
from ..payloads import DeletePayload, Payload
from .base import IkeSaContext, Task
from .ike_delete import ike_sa_deleted_events


class ChildDelete(Task):
    """Initiator of a Delete for one CHILD_SA pair, named by our inbound SPI."""

    def __init__(
        self,
        context: IkeSaContext,
        table: ChildSaTable,
        inbound_spi: bytes,
        reason: ChildSaDeleteReason,
    ) -> None:
        super().__init__(context)
        self._table = table
        self._inbound_spi = inbound_spi
        self._reason = reason
        child = table.get(inbound_spi)
        if child is not None:
            child.delete_reason = reason

    def build_i(self) -> list[Payload]:
        # Already deleted by the peer meanwhile: the exchange stays empty.
        if self._table.get(self._inbound_spi) is None:
            return []
        return [DeletePayload(ProtocolId.ESP, (self._inbound_spi,))]

    def process_i(self, response: IkeMessage) -> None:
        # The answer's Delete may be missing after a simultaneous delete.
        child = self._table.remove(self._inbound_spi)
        if child is not None:
            self.outcome.append(
                ChildSaDeleted(child.inbound_spi, child.outbound_spi, self._reason)
            )


class InformationalResponder(Task):
    """Answers Delete payloads; status Notifies need no answer (§1.4)."""

    def __init__(
        self,
        context: IkeSaContext,
        table: ChildSaTable,
        ike_delete_reason: IkeSaDeleteReason = IkeSaDeleteReason.DELETED_BY_PEER,
    ) -> None:
        super().__init__(context)
        self._table = table
        self.ike_delete_reason = ike_delete_reason
        """Reported if the request deletes the IKE_SA; the engine may change
        it before ``process_r`` once it knows the IKE_SA was rekeyed."""
        self._paired: list[bytes] = []

    def process_r(self, request: IkeMessage) -> None:
        deletes = request.all(DeletePayload)
        if any(d.protocol_id == ProtocolId.IKE for d in deletes):
            # §1.4.1: the IKE_SA and all its CHILD_SAs go; the answer is empty.
            self.outcome += ike_sa_deleted_events(
                self.context, self._table, False, self.ike_delete_reason
            )
            return
        for delete in deletes:
            if delete.protocol_id == ProtocolId.ESP:
                for spi in delete.spis:
                    self._delete(spi)

    def _delete(self, peer_inbound_spi: bytes) -> None:
        child = self._table.by_outbound(peer_inbound_spi)
        if child is None:
            return
        self._table.remove(child.inbound_spi)
        if child.state is not ChildSaState.DELETING:
            self._paired.append(child.inbound_spi)
        reason = self._switch_to_successor(child)
        if child.state is ChildSaState.DELETING and child.delete_reason:
            reason = child.delete_reason  # simultaneous: ours says more
        self.outcome.append(
            ChildSaDeleted(child.inbound_spi, child.outbound_spi, reason)
        )

    def _switch_to_successor(self, child: ChildSa) -> ChildSaDeleteReason:
        """Make-before-break: send on the new SA before the old one goes."""
        if child.successor is None and child.collision is not None:
            # The peer won a collision we have not resolved yet (§2.8.1).
            child.successor = child.collision.inbound_spi
        if child.successor is None:
            return ChildSaDeleteReason.DELETED_BY_PEER
        successor = self._table.get(child.successor)
        if successor is not None and not successor.outbound_active:
            successor.outbound_active = True
            self.outcome.append(
                ChildSaOutboundSwitched(successor.inbound_spi, successor.outbound_spi)
            )
        return ChildSaDeleteReason.REKEYED

    def build_r(self) -> list[Payload]:
        if not self._paired:
            return []
        return [DeletePayload(ProtocolId.ESP, tuple(self._paired))]
