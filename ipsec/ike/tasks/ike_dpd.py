"""Liveness checks (RFC 7296 §1.4, §2.4) and INITIAL_CONTACT (§2.4).

A liveness check is an empty INFORMATIONAL request, sent when nothing
protected has come from the peer for ``dpd_delay``; its answer, like any
authenticated message, proves the peer alive. If the retransmissions run
out, the engine declares the peer dead.
"""

from __future__ import annotations

from ..constants import NotifyType
from ..events import InitialContactReceived
from ..message import IkeMessage
from ..payloads import NotifyPayload, Payload
from .base import Task


class LivenessCheck(Task):
    """An empty INFORMATIONAL exchange; the engine's timers do the rest."""


class InitialContact(Task):
    """N(INITIAL_CONTACT) in IKE_AUTH; put after ``IkeAuth`` in the task list.

    The receiver reports it once the peer is authenticated, so that the
    manager deletes older IKE_SAs with the same identity (§2.4).
    """

    def build_i(self) -> list[Payload]:
        if not self.context.config.send_initial_contact:
            return []
        return [NotifyPayload(NotifyType.INITIAL_CONTACT)]

    def process_r(self, request: IkeMessage) -> None:
        contact = any(
            n.notify_type == NotifyType.INITIAL_CONTACT
            for n in request.all(NotifyPayload)
        )
        remote_id = self.context.remote_id
        if contact and remote_id is not None:
            self.outcome.append(
                InitialContactReceived(
                    self.context.spi_i, self.context.spi_r, remote_id
                )
            )
