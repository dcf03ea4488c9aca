"""Call detail records, written durably as JSON lines.

One record is one line of compact JSON. :class:`CdrWriter` appends it with
a single ``write`` on an ``O_APPEND`` descriptor and then ``fsync``: when
:meth:`CdrWriter.write` returns, the record survives a crash of the process
or the machine. :meth:`CdrWriter.write_all` does the same for several
records with one ``write`` and one ``fsync``, which costs the kernel about
as much CPU as one record does (about 160 µs on the lab VM). A crash during a write can only leave a torn last line
(no newline); :func:`read_call_records` skips it, and a writer opening such
a file ends the torn line first so the next record starts on its own line.

Times are seconds since the Unix epoch (floats), as the caller's clock gave
them; this module reads no clock.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

CDR_FILE_NAME = "cdr.jsonl"


class Disposition(StrEnum):
    """How the call ended, from the caller's point of view."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    """Refused by the SBC itself (403, 404, 480, 503 of its policy)."""
    FAILED = "failed"


class HangupSide(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SBC = "sbc"
    """The SBC ended the call (session timer expiry, shutdown, limits)."""


def disposition_for(final_status: int, *, cancelled: bool = False) -> Disposition:
    """The usual disposition of a call whose A-leg got ``final_status``."""
    if 200 <= final_status < 300:
        return Disposition.ANSWERED
    if cancelled or final_status == 487:
        return Disposition.CANCELLED
    if final_status in (486, 600):
        return Disposition.BUSY
    if final_status in (408, 480):
        return Disposition.NO_ANSWER
    return Disposition.FAILED


_TEXT_FIELDS = (
    "b_call_id",
    "a_trunk",
    "b_trunk",
    "calling_received",
    "calling_e164",
    "calling_sent",
    "called_received",
    "called_e164",
    "called_sent",
    "end_reason",
)


@dataclass(slots=True)
class CallRecord:
    """One finished call, as both legs saw it."""

    call_id: str
    """Call-ID of the A-leg."""
    start_time: float
    """When the initial INVITE arrived."""
    end_time: float
    """When the call ended (final failure response, or BYE)."""
    disposition: Disposition
    final_status: int
    """Final status sent on the A-leg (RFC 3261 §21)."""
    answer_time: float | None = None
    """When the 2xx was sent on the A-leg; None if never answered."""
    b_call_id: str | None = None
    a_trunk: str | None = None
    """Trunk the call came from (None when refused before classification)."""
    b_trunk: str | None = None
    """Trunk of the last attempt."""
    calling_received: str | None = None
    """Calling number as received, before normalization."""
    calling_e164: str | None = None
    calling_sent: str | None = None
    """Calling number as sent on the B-leg, after outbound normalization."""
    called_received: str | None = None
    called_e164: str | None = None
    called_sent: str | None = None
    hangup_side: HangupSide | None = None
    end_reason: str | None = None
    """Why the SBC ended the call itself (e.g. "media_timeout"); None when
    a party hung up or the call failed on its own."""
    media: dict[str, Any] = field(default_factory=dict)
    """Media figures (packets, loss, jitter), filled by the media relay."""
    ipsec: dict[str, Any] = field(default_factory=dict)
    """The SAs of legs on protected trunks, by side (``"a"``, ``"b"``): the
    trunk, ``ike_sa`` (``SPIi_SPIr``), ``ike_algorithms``, ``child_sa``
    (``{"in": SPI, "out": SPI}``), ``esp_algorithms`` and ``mode``, as
    in use when the call ended (sbc.secure.records); empty otherwise."""

    def __post_init__(self) -> None:
        # Records are also rebuilt from files: check what JSON could get wrong.
        if not isinstance(self.call_id, str) or not self.call_id:
            raise ValueError("call record needs a Call-ID")
        if not isinstance(self.final_status, int) or isinstance(
            self.final_status, bool
        ):
            raise ValueError("call record final status must be an integer")
        for name in _TEXT_FIELDS:
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"call record {name} must be text")
        if not isinstance(self.media, dict) or not isinstance(self.ipsec, dict):
            raise ValueError("call record media and ipsec must be objects")
        self.disposition = Disposition(self.disposition)
        if self.hangup_side is not None:
            self.hangup_side = HangupSide(self.hangup_side)
        times = [self.start_time, self.end_time]
        if self.answer_time is not None:
            times.append(self.answer_time)
        if not all(isinstance(t, int | float) and math.isfinite(t) for t in times):
            raise ValueError("call record times must be finite numbers")
        if self.end_time < self.start_time:
            raise ValueError("call record ends before it starts")
        if self.answer_time is not None and not (
            self.start_time <= self.answer_time <= self.end_time
        ):
            raise ValueError("call record answer time outside the call")
        if not 100 <= self.final_status <= 699:
            raise ValueError("call record final status must be 100-699")

    @property
    def duration(self) -> float:
        """Seconds from answer to end; 0 for a call never answered."""
        if self.answer_time is None:
            return 0.0
        return self.end_time - self.answer_time

    def shifted(self, offset: float) -> CallRecord:
        """A copy with every time moved by ``offset`` seconds (an engine's
        monotonic clock to Unix time: wall clock minus engine clock)."""
        answer = self.answer_time
        return dataclasses.replace(
            self,
            start_time=self.start_time + offset,
            end_time=self.end_time + offset,
            answer_time=None if answer is None else answer + offset,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record (``duration`` included)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["disposition"] = self.disposition.value
        data["hangup_side"] = (
            None if self.hangup_side is None else self.hangup_side.value
        )
        data["duration"] = self.duration
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a record; unknown keys (from newer writers) are ignored.

        Raises ValueError or TypeError when the data is not a record.
        """
        known = {name: data[name] for name in _FIELDS if name in data}
        return cls(**known)


_FIELDS = tuple(name for name in CallRecord.__dataclass_fields__)


def encode_record(record: CallRecord) -> bytes:
    """One record as one line of JSON, newline included.

    Raises ValueError when ``media`` or ``ipsec`` hold values JSON cannot
    carry (NaN, objects), before anything is written.
    """
    text = json.dumps(
        record.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8") + b"\n"


class CdrWriter:
    """Appends records to one JSON-lines file, each one synced to disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1
        self._open()

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> CdrWriter:
        """The writer of ``<data_dir>/cdr.jsonl``; the directory is created."""
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / CDR_FILE_NAME)

    def write(self, record: CallRecord) -> None:
        """Append ``record``; it is on disk when this returns.

        Blocking (``fsync`` takes milliseconds on most disks): asyncio code
        calls it in an executor.
        """
        self.write_all([record])

    def write_all(self, records: Sequence[CallRecord]) -> None:
        """Append ``records`` in order; they are on disk when this returns.

        Raises ValueError, before anything is written, when one of them
        cannot be encoded (see encode_record).
        """
        if self._fd < 0:
            raise ValueError("write to a closed CdrWriter")
        _write_all(self._fd, b"".join([encode_record(record) for record in records]))
        os.fsync(self._fd)

    def reopen(self) -> None:
        """Open the path again, after an external rotation renamed the file."""
        self.close()
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        created = not self.path.exists()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        if created:
            # The new directory entry must survive a crash too.
            _fsync_directory(self.path.parent)
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with self.path.open("rb") as existing:
            existing.seek(size - 1)
            last = existing.read(1)
        if last != b"\n":
            _write_all(self._fd, b"\n")
            os.fsync(self._fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class CdrReadResult:
    records: list[CallRecord]
    skipped: int
    """Lines that were not records: a torn last line, or damage."""


def read_call_records(path: str | Path) -> CdrReadResult:
    """Every whole record of a CDR file, in the order written."""
    records: list[CallRecord] = []
    skipped = 0
    with Path(path).open("rb") as stream:
        for line in stream:
            if not line.endswith(b"\n"):
                skipped += 1  # torn by a crash mid-write
                continue
            record = _decode_line(line)
            if record is None:
                skipped += line.strip() != b""
            else:
                records.append(record)
    return CdrReadResult(records, skipped)


def _decode_line(line: bytes) -> CallRecord | None:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            return None
        return CallRecord.from_dict(data)
    except (ValueError, TypeError):
        return None
