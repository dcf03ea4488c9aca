"""Typed IKE errors: each carries the Notify to answer with, or why to drop.

The codec, the key schedule and the exchange tasks raise only ``IkeError``
subclasses, so one boundary in the engine turns any failure into either an
error Notify (RFC 7296 §2.21) or a silent discard.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import ClassVar

from .constants import NotifyType


class IkeError(Exception):
    """Base of every IKE protocol failure."""


class IkeNotifyError(IkeError):
    """A failure the peer is told about with an error Notify payload.

    ``notify_type`` is fixed per subclass; ``notification_data`` is what goes
    into the Notify's data field (empty for most types).
    """

    notify_type: ClassVar[NotifyType]

    def __init__(self, reason: str, notification_data: bytes = b"") -> None:
        super().__init__(f"{self.notify_type.name}: {reason}")
        self.reason = reason
        self.notification_data = notification_data


class UnsupportedCriticalPayload(IkeNotifyError):
    """RFC 7296 §2.5: data is the one-octet type of the unknown payload."""

    notify_type = NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, payload_type: int) -> None:
        super().__init__(
            f"unknown critical payload type {payload_type}", bytes([payload_type])
        )
        self.payload_type = payload_type


class InvalidIkeSpi(IkeNotifyError):
    notify_type = NotifyType.INVALID_IKE_SPI


class InvalidMajorVersion(IkeNotifyError):
    """RFC 7296 §2.5: the reply header carries the version we speak."""

    notify_type = NotifyType.INVALID_MAJOR_VERSION

    def __init__(self, major_version: int) -> None:
        super().__init__(f"major version {major_version} is not 2")
        self.major_version = major_version


class InvalidSyntax(IkeNotifyError):
    notify_type = NotifyType.INVALID_SYNTAX


class InvalidMessageId(IkeNotifyError):
    notify_type = NotifyType.INVALID_MESSAGE_ID


class InvalidSpi(IkeNotifyError):
    notify_type = NotifyType.INVALID_SPI


class NoProposalChosen(IkeNotifyError):
    notify_type = NotifyType.NO_PROPOSAL_CHOSEN


class InvalidKePayload(IkeNotifyError):
    """RFC 7296 §1.2: data is the two-octet group the responder wants."""

    notify_type = NotifyType.INVALID_KE_PAYLOAD

    def __init__(self, reason: str, wanted_group: int) -> None:
        super().__init__(reason, struct.pack("!H", wanted_group))
        self.wanted_group = wanted_group


class AuthenticationFailed(IkeNotifyError):
    notify_type = NotifyType.AUTHENTICATION_FAILED


class SinglePairRequired(IkeNotifyError):
    notify_type = NotifyType.SINGLE_PAIR_REQUIRED


class NoAdditionalSas(IkeNotifyError):
    notify_type = NotifyType.NO_ADDITIONAL_SAS


class InternalAddressFailure(IkeNotifyError):
    notify_type = NotifyType.INTERNAL_ADDRESS_FAILURE


class FailedCpRequired(IkeNotifyError):
    notify_type = NotifyType.FAILED_CP_REQUIRED


class TsUnacceptable(IkeNotifyError):
    notify_type = NotifyType.TS_UNACCEPTABLE


class InvalidSelectors(IkeNotifyError):
    notify_type = NotifyType.INVALID_SELECTORS


class TemporaryFailure(IkeNotifyError):
    notify_type = NotifyType.TEMPORARY_FAILURE


class ChildSaNotFound(IkeNotifyError):
    notify_type = NotifyType.CHILD_SA_NOT_FOUND


class DropReason(Enum):
    """Why a message was discarded without any answer."""

    INTEGRITY_CHECK_FAILED = "integrity check failed"  # RFC 7296 §2.21.1
    ENCRYPTED_PAYLOAD_TOO_SHORT = "encrypted payload shorter than IV and ICV"
    FRAGMENT_NUMBER_INVALID = "fragment number outside 1..total"  # RFC 7383 §2.6
    FRAGMENT_NEXT_PAYLOAD_INVALID = "next payload set on a non-first fragment"
    FRAGMENT_TOTAL_STALE = "fragment of an older, smaller fragment set"  # §2.6.1
    TOO_MANY_FRAGMENTS = "more fragments than the reassembly limit"
    REASSEMBLED_TOO_LARGE = "reassembled message over the size limit"


class IkeMessageDropped(IkeError):
    """A message the RFC says to discard silently; counted, never answered."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason
