"""Reassembly of IKE fragments (RFC 7383 §2.6), sans-IO.

One ``FragmentReassembler`` serves one IKE SA and one direction. Each
fragment is authenticated before it can change any state, so a forged
fragment is dropped without disturbing the set being collected.
"""

from __future__ import annotations

from dataclasses import replace

from .crypto import SkCipher
from .errors import DropReason, IkeMessageDropped, InvalidSyntax
from .message import IkeMessage, decrypt_fragment
from .payloads import EncryptedFragmentPayload, decode_payload_chain

# strongSwan accepts up to 255 fragments; the total is also capped in octets.
DEFAULT_MAX_FRAGMENTS = 255
DEFAULT_MAX_MESSAGE_SIZE = 65535


class FragmentReassembler:
    def __init__(
        self,
        cipher: SkCipher,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._cipher = cipher
        self._max_fragments = max_fragments
        self._max_message_size = max_message_size
        self._message_id = -1
        self._total = 0
        self._first_payload = 0
        self._contents: dict[int, bytes] = {}
        self._size = 0

    @property
    def pending_fragments(self) -> int:
        return len(self._contents)

    def add(self, data: bytes, message: IkeMessage) -> IkeMessage | None:
        """Take one decoded SKF datagram; return the whole message once complete.

        Raises ``IkeMessageDropped`` for fragments to discard and
        ``InvalidSyntax`` when the reassembled content does not decode.
        """
        fragment = message.payloads[-1] if message.payloads else None
        if not isinstance(fragment, EncryptedFragmentPayload):
            raise InvalidSyntax("message has no Encrypted Fragment payload")
        if fragment.total_fragments > self._max_fragments:
            raise IkeMessageDropped(DropReason.TOO_MANY_FRAGMENTS)
        if self._is_duplicate(message.message_id, fragment):
            return None
        content = decrypt_fragment(data, fragment, self._cipher)

        # RFC 7383 §2.6.1: a larger total restarts the set, a smaller is stale.
        if message.message_id != self._message_id or (
            fragment.total_fragments > self._total
        ):
            self._restart(message.message_id, fragment.total_fragments)
        elif fragment.total_fragments < self._total:
            raise IkeMessageDropped(DropReason.FRAGMENT_TOTAL_STALE)
        self._store(fragment, content)
        if len(self._contents) < self._total:
            return None
        return self._assemble(message)

    def _is_duplicate(
        self, message_id: int, fragment: EncryptedFragmentPayload
    ) -> bool:
        return (
            message_id == self._message_id
            and fragment.total_fragments == self._total
            and fragment.fragment_number in self._contents
        )

    def _restart(self, message_id: int, total: int) -> None:
        self._message_id = message_id
        self._total = total
        self._first_payload = 0
        self._contents = {}
        self._size = 0

    def _store(self, fragment: EncryptedFragmentPayload, content: bytes) -> None:
        if self._size + len(content) > self._max_message_size:
            self._restart(-1, 0)
            raise IkeMessageDropped(DropReason.REASSEMBLED_TOO_LARGE)
        if fragment.fragment_number == 1:
            self._first_payload = fragment.first_payload
        self._contents[fragment.fragment_number] = content
        self._size += len(content)

    def _assemble(self, last: IkeMessage) -> IkeMessage:
        content = b"".join(self._contents[n] for n in range(1, self._total + 1))
        first_payload = self._first_payload
        self._restart(-1, 0)
        inner = decode_payload_chain(
            first_payload, content, 0, len(content), allow_encrypted=False
        )
        return replace(last, payloads=tuple(inner))
