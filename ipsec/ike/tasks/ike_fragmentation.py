"""IKE fragmentation support, agreed in IKE_SA_INIT (RFC 7383 §2.3).

Each side announces N(IKEV2_FRAGMENTATION_SUPPORTED); the responder only
answers with it when the initiator sent it. Once both have, messages after
IKE_SA_INIT that would not fit the configured size leave as SKF fragments.
"""

from __future__ import annotations

from ..constants import NotifyType
from ..message import IkeMessage
from ..payloads import NotifyPayload, Payload
from .base import IkeSaContext, Task

DEFAULT_FRAGMENT_SIZE_IPV4 = 576
DEFAULT_FRAGMENT_SIZE_IPV6 = 1280
"""RFC 7383 §2.5.1: IP datagram sizes every path must carry."""

_IPV4_HEADER, _IPV6_HEADER, _UDP_HEADER = 20, 40, 8
_NON_ESP_MARKER = 4  # RFC 3948 §2.2, once the IKE_SA floats to port 4500


class IkeFragmentation(Task):
    def build_i(self) -> list[Payload]:
        return [_supported()] if self.context.config.fragmentation else []

    def process_r(self, request: IkeMessage) -> None:
        self.context.fragmentation = self.context.config.fragmentation and (
            request.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )

    def build_r(self) -> list[Payload]:
        return [_supported()] if self.context.fragmentation else []

    def process_i(self, response: IkeMessage) -> None:
        self.context.fragmentation = self.context.config.fragmentation and (
            response.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )


def _supported() -> NotifyPayload:
    return NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)


def message_size_limit(context: IkeSaContext) -> int | None:
    """The largest IKE message to send whole, or None (no fragmentation).

    The configured size is that of the IP datagram (§2.5.1), so the IP and
    UDP headers and a possible non-ESP marker come off it.
    """
    if not context.fragmentation:
        return None
    remote = context.remote_endpoint
    is_ipv6 = remote is not None and remote[0].version == 6
    size = context.config.fragment_size
    if size is None:
        size = DEFAULT_FRAGMENT_SIZE_IPV6 if is_ipv6 else DEFAULT_FRAGMENT_SIZE_IPV4
    ip_header = _IPV6_HEADER if is_ipv6 else _IPV4_HEADER
    return size - ip_header - _UDP_HEADER - _NON_ESP_MARKER
