"""Call records of calls on protected trunks name the SAs that carried them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sbc.b2bua.settings import CallRecordWriter
from sbc.cdr import CallRecord

Identifiers = Callable[[str], dict[str, Any] | None]
"""A trunk's SA identifiers now (`SecureTrunks.call_identifiers`), or None."""


class IpsecCallRecords:
    """A call record writer that fills ``CallRecord.ipsec`` before writing.

    ``ipsec["a"]`` and ``ipsec["b"]`` describe the leg on the call's A and
    B trunk when that trunk is protected: the trunk, the IKE_SA
    (``SPIi_SPIr`` in hex) and its algorithms, the CHILD_SA's SPIs and ESP
    algorithms, and the mode. They are read when the call ends: a call that
    lived across a rekey names the SAs of its end.
    """

    def __init__(self, inner: CallRecordWriter, identifiers: Identifiers) -> None:
        self._inner = inner
        self._identifiers = identifiers

    def write(self, record: CallRecord) -> None:
        sides: dict[str, Any] = {}
        for side, trunk in (("a", record.a_trunk), ("b", record.b_trunk)):
            found = None if trunk is None else self._identifiers(trunk)
            if found is not None:
                sides[side] = {"trunk": trunk, **found}
        if sides:
            record = dataclasses.replace(record, ipsec={**record.ipsec, **sides})
        self._inner.write(record)
