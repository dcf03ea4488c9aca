"""NAT detection in IKE_SA_INIT (RFC 7296 §2.23).

Each side sends SHA-1(SPIi | SPIr | IP | port) of its own source and of the
destination it sends to; the receiver compares them with the addresses the
datagram really carried. A mismatch on the source side means the sender is
behind a NAT, on the destination side that we are. The engine only runs
this task when it knows both endpoints.
"""

from __future__ import annotations

from ..constants import NotifyType
from ..crypto import nat_detection_hash
from ..message import IkeMessage
from ..payloads import NotifyPayload, Payload
from .base import Endpoint, Task

_SPI_ZERO = bytes(8)


class IkeNatd(Task):
    def build_i(self) -> list[Payload]:
        return self._notifies(_SPI_ZERO)

    def process_r(self, request: IkeMessage) -> None:
        self._detect(request, _SPI_ZERO)

    def build_r(self) -> list[Payload]:
        return self._notifies(self.context.spi_r)

    def process_i(self, response: IkeMessage) -> None:
        self._detect(response, self.context.spi_r)

    def _hash(self, endpoint: Endpoint, spi_r: bytes) -> bytes:
        address, port = endpoint
        return nat_detection_hash(self.context.spi_i, spi_r, address.packed, port)

    def _notifies(self, spi_r: bytes) -> list[Payload]:
        local, remote = self.context.local_endpoint, self.context.remote_endpoint
        if local is None or remote is None:
            return []
        return [
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, self._hash(local, spi_r)),
            NotifyPayload(
                NotifyType.NAT_DETECTION_DESTINATION_IP, self._hash(remote, spi_r)
            ),
        ]

    def _detect(self, message: IkeMessage, spi_r: bytes) -> None:
        context = self.context
        local, remote = context.local_endpoint, context.remote_endpoint
        sources = _data(message, NotifyType.NAT_DETECTION_SOURCE_IP)
        destinations = _data(message, NotifyType.NAT_DETECTION_DESTINATION_IP)
        if local is None or remote is None or not sources or not destinations:
            return  # the peer does not do NAT detection
        context.remote_behind_nat = self._hash(remote, spi_r) not in sources
        context.local_behind_nat = self._hash(local, spi_r) not in destinations


def _data(message: IkeMessage, notify_type: NotifyType) -> set[bytes]:
    return {
        n.notification_data
        for n in message.all(NotifyPayload)
        if n.notify_type == notify_type
    }
