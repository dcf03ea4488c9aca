"""What certificate authentication needs from IKE_SA_INIT (RFC 7427 §4, RFC
7296 §3.7).

Both sides announce the hashes they verify with N(SIGNATURE_HASH_ALGORITHMS);
the responder also asks for a certificate with CERTREQ, naming its CAs, so
that peers that send certificates only when asked (strongSwan's default)
send theirs.
"""

from __future__ import annotations

from ..certificates import (
    certificate_request,
    parse_hash_algorithms,
    signature_hash_notify,
)
from ..constants import NotifyType
from ..message import IkeMessage
from ..payloads import Payload
from .base import Task


class IkeCertPre(Task):
    def build_i(self) -> list[Payload]:
        if self.context.config.certificates is None:
            return []
        return [signature_hash_notify()]

    def process_r(self, request: IkeMessage) -> None:
        self._learn_hashes(request)

    def build_r(self) -> list[Payload]:
        certificates = self.context.config.certificates
        if certificates is None:
            return []
        payloads: list[Payload] = []
        if certificates.trust_anchors:
            payloads.append(certificate_request(certificates.trust_anchors))
        return [*payloads, signature_hash_notify()]

    def process_i(self, response: IkeMessage) -> None:
        self._learn_hashes(response)

    def _learn_hashes(self, message: IkeMessage) -> None:
        notify = message.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
        if notify is not None:
            hashes = parse_hash_algorithms(notify.notification_data)
            self.context.peer_signature_hashes = hashes
