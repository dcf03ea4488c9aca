"""Call detail records in the database: the writer and the queries.

:class:`DatabaseCdrWriter` is what the call engine writes finished calls to
(``write``/``close``, like `sbc.io.calls.ThreadedCdrWriter`). ``write`` only
puts the record on a queue; one worker thread gathers what arrives within
``BATCH_WINDOW`` of a first record and commits it in one multi-row insert,
so the event loop never waits for the database and a busy node pays one
transaction per window rather than one per call.

A record is *accepted* (safe from a crash of the process or the machine)
once its transaction has committed: ``committed`` counts them, ``flush``
waits for them. Between ``write`` and that commit (one commit time when the
database is reachable: the batch window plus milliseconds) a kill -9 loses
the record. While the
database is unreachable records stay queued in memory and the commit is
retried; at ``close`` (or when a record is refused as data) what cannot be
committed goes to the fallback JSON-lines file instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, insert, or_, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sbc.cdr import CallRecord, CdrWriter
from web.db import CdrRow
from web.metrics import CallOutcomes

_log = logging.getLogger("sbc.web.cdrs")

BATCH_LIMIT = 500
"""Records committed in one transaction at most."""
BATCH_WINDOW = 0.05
"""Seconds the writer waits after a record for others to share its commit,
as the JSON-lines writer does with its fsync."""

NUMBER_COLUMNS = (
    "calling_received",
    "calling_e164",
    "calling_sent",
    "called_received",
    "called_e164",
    "called_sent",
)
IPSEC_SIDES = ("a", "b")
"""Keys of a record's ``ipsec`` figures, one per protected leg
(`sbc.secure.records.IpsecCallRecords`); the first present fills the
``ike_sa``, ``child_sa`` and ``algorithms`` columns."""

_CLOSE = object()


class DatabaseCdrWriter:
    """Commits finished calls to the ``cdrs`` table from one worker thread.

    ``clock_offset`` (wall clock minus the engine's clock) turns the engine's
    monotonic times into Unix times, as `ThreadedCdrWriter` does. ``fallback``
    receives the records the database refuses, and those still queued at
    ``close`` while the database is down.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        node: str = "",
        clock_offset: float = 0.0,
        fallback: CdrWriter | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._node = node
        self._clock_offset = clock_offset
        self._fallback = fallback
        self._retry_delay = retry_delay
        self._queue: queue.SimpleQueue[CallRecord | object] = queue.SimpleQueue()
        self._done = threading.Condition()
        self._accepted = 0
        self.committed = 0
        """Records committed to the database so far."""
        self.diverted = 0
        """Records written to the fallback file (or, without one, logged)."""
        self.retrying = False
        """True while the last commit failed and is being retried."""
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="cdr-db", daemon=True)
        self._thread.start()

    def write(self, record: CallRecord) -> None:
        """Queue ``record``; never blocks (safe on the event loop)."""
        with self._done:
            if self._closing:
                raise ValueError("write to a closed DatabaseCdrWriter")
            self._accepted += 1
        self._queue.put(record)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record written so far is committed or diverted."""
        with self._done:
            target = self._accepted
            return self._done.wait_for(
                lambda: self.committed + self.diverted >= target, timeout
            )

    def snapshot(self) -> dict[str, int]:
        """Counts for the metrics: committed, diverted, still queued."""
        with self._done:
            done = self.committed + self.diverted
            return {
                "committed": self.committed,
                "diverted": self.diverted,
                "queued": self._accepted - done,
            }

    def healthy(self) -> bool:
        """False while commits fail (the records wait in memory)."""
        return not self.retrying

    def close(self) -> None:
        """Commit what is queued (or divert it if the database is down), stop."""
        with self._done:
            if self._closing:
                return
            self._closing = True
        self._queue.put(_CLOSE)
        self._thread.join()
        if self._fallback is not None:
            self._fallback.close()

    # The worker thread

    def _run(self) -> None:
        while True:
            batch, closing = self._next_batch()
            if batch:
                self._store(batch)
            if closing:
                return

    def _next_batch(self) -> tuple[list[CallRecord], bool]:
        first = self._queue.get()
        if first is _CLOSE:
            return [], True
        batch = [self._unix_times(first)]
        deadline = time.monotonic() + BATCH_WINDOW
        while len(batch) < BATCH_LIMIT:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _CLOSE:
                return batch, True
            batch.append(self._unix_times(item))
        return batch, False

    def _unix_times(self, item: object) -> CallRecord:
        assert isinstance(item, CallRecord)
        return item.shifted(self._clock_offset)

    def _store(self, batch: list[CallRecord]) -> None:
        # Retry while the database is unreachable (or its schema missing);
        # give up to the fallback file only when closing, so a restart of
        # the database loses nothing. A record refused as data is set apart.
        while True:
            try:
                self._commit(batch)
            except Exception as exc:
                if _refused_as_data(exc):
                    self._set_apart(batch)
                    return
                if self._closing:
                    self._divert(batch, "the database is unreachable at close")
                    return
                self._wait_to_retry()
                continue
            self.retrying = False
            return

    def _set_apart(self, batch: list[CallRecord]) -> None:
        # Commit the records one by one to find the ones refused.
        if len(batch) == 1:
            self._divert(batch, "the database refused the record")
            return
        for record in batch:
            self._store([record])

    def _wait_to_retry(self) -> None:
        if not self.retrying:
            _log.exception("call records not committed; retrying")
        self.retrying = True
        time.sleep(self._retry_delay)

    def _commit(self, batch: list[CallRecord]) -> None:
        rows = [record_values(r, self._node) for r in batch]
        with self._sessions.begin() as session:
            session.execute(insert(CdrRow), rows)
        self._count(committed=len(batch))

    def _divert(self, batch: list[CallRecord], why: str) -> None:
        for record in batch:
            try:
                if self._fallback is None:
                    raise OSError("no fallback file")
                self._fallback.write(record)
            except Exception:  # a full disk, or a value JSON cannot carry
                _log.error("call record lost (%s): %s", why, record.to_dict())
            else:
                _log.error("call record %s kept in the file: %s", record.call_id, why)
        self._count(diverted=len(batch))

    def _count(self, *, committed: int = 0, diverted: int = 0) -> None:
        with self._done:
            self.committed += committed
            self.diverted += diverted
            self._done.notify_all()


def _refused_as_data(exc: Exception) -> bool:
    # The database judged a value (too long, NUL in text, a duplicate key),
    # or the driver could not convert one before sending: not worth a retry.
    if isinstance(exc, DataError | IntegrityError):
        return True
    return not isinstance(exc, DBAPIError)


def record_values(record: CallRecord, node: str = "") -> dict[str, Any]:
    """The column values of ``record``'s row (times as they are: Unix seconds)."""
    data = record.to_dict()
    data.update(ipsec_columns(record.ipsec))
    data["node"] = node
    return data


def ipsec_columns(ipsec: dict[str, Any]) -> dict[str, str | None]:
    """``ike_sa``, ``child_sa`` and ``algorithms`` of the first protected leg.

    ``child_sa`` is ``0x<inbound SPI>/0x<outbound SPI>``; ``algorithms`` is
    ``esp=<cipher>-<integrity> ike=<cipher>-<prf>-<integrity>-<group>``
    (absent parts left out). The whole figures stay in the ``ipsec`` column.
    """
    leg = next((ipsec[s] for s in IPSEC_SIDES if isinstance(ipsec.get(s), dict)), None)
    if leg is None:
        return {"ike_sa": None, "child_sa": None, "algorithms": None}
    child = leg.get("child_sa")
    child_sa = None
    if isinstance(child, dict):
        child_sa = "/".join(_spi(child.get(key)) for key in ("in", "out"))
    algorithms = " ".join(
        f"{name}={'-'.join(str(part) for part in parts if part)}"
        for name, parts in (
            ("esp", leg.get("esp_algorithms")),
            ("ike", leg.get("ike_algorithms")),
        )
        if isinstance(parts, list) and any(parts)
    )
    ike_sa = leg.get("ike_sa")
    return {
        "ike_sa": None if ike_sa is None else str(ike_sa),
        "child_sa": child_sa,
        "algorithms": algorithms or None,
    }


def _spi(value: object) -> str:
    return f"0x{value:08x}" if isinstance(value, int) else str(value)


def row_record(row: CdrRow) -> dict[str, Any]:
    """The public JSON of a stored record: the record's fields, ``id``, ``node``."""
    return {column: getattr(row, column) for column in PUBLIC_COLUMNS}


PUBLIC_COLUMNS = tuple(column.name for column in CdrRow.__table__.columns)


# Queries


@dataclass(frozen=True, slots=True)
class CdrFilter:
    since: datetime | None = None
    """Calls that started at or after this instant."""
    until: datetime | None = None
    """Calls that started before this instant."""
    trunk: str | None = None
    """Calls that came in on or went out to this trunk."""
    disposition: str | None = None
    number: str | None = None
    """Calls with this calling or called number, in any of its three forms."""
    call_id: str | None = None
    """Calls whose A-leg or B-leg has this Call-ID."""


def list_cdrs(
    session: Session, where: CdrFilter, *, limit: int, offset: int
) -> tuple[int, list[CdrRow]]:
    """Matching records, newest first, and how many match in all."""
    total = session.scalar(_filtered(select(func.count(CdrRow.id)), where)) or 0
    page = _newest_first(_filtered(select(CdrRow), where)).limit(limit).offset(offset)
    return total, list(session.scalars(page))


def iter_cdrs(session: Session, where: CdrFilter) -> Iterator[CdrRow]:
    """Every matching record, newest first, fetched in chunks (for export)."""
    query = _newest_first(_filtered(select(CdrRow), where))
    yield from session.scalars(query.execution_options(yield_per=500))


def _newest_first(query: Select[Any]) -> Select[Any]:
    return query.order_by(CdrRow.start_time.desc(), CdrRow.id.desc())


def _filtered(query: Select[Any], where: CdrFilter) -> Select[Any]:
    if where.since is not None:
        query = query.where(CdrRow.start_time >= _unix(where.since))
    if where.until is not None:
        query = query.where(CdrRow.start_time < _unix(where.until))
    if where.trunk is not None:
        query = query.where(
            or_(CdrRow.a_trunk == where.trunk, CdrRow.b_trunk == where.trunk)
        )
    if where.disposition is not None:
        query = query.where(CdrRow.disposition == where.disposition)
    if where.number is not None:
        columns = (getattr(CdrRow, name) for name in NUMBER_COLUMNS)
        query = query.where(or_(*(column == where.number for column in columns)))
    if where.call_id is not None:
        query = query.where(
            or_(CdrRow.call_id == where.call_id, CdrRow.b_call_id == where.call_id)
        )
    return query


def _unix(instant: datetime) -> float:
    # An instant without a zone is read as UTC, never as the server's zone.
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.timestamp()


# Wiring for `sbc serve`

FALLBACK_FILE_NAME = "cdr-fallback.jsonl"
"""Records the database could not take, in the data directory."""


class CallRecords:
    """The call-record sink of a node: outcome counters, then the database.

    Give :attr:`sink` to the node as its call-record writer, :meth:`close`
    as its closer, :meth:`snapshot_with` around its snapshot for /metrics,
    and :attr:`writer`'s ``healthy`` to the health checks.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_dir: Path,
        *,
        node: str = "",
        clock_offset: float = 0.0,
    ) -> None:
        fallback = CdrWriter(data_dir / FALLBACK_FILE_NAME)
        self.writer = DatabaseCdrWriter(
            sessions, node=node, clock_offset=clock_offset, fallback=fallback
        )
        self.sink = CallOutcomes(self.writer)

    def close(self) -> None:
        """Commit what is queued and stop (blocks: call it off the loop)."""
        self.sink.close()

    def snapshot_with(
        self, node_snapshot: Callable[[], Mapping[str, Any]]
    ) -> Callable[[], dict[str, Any]]:
        """``node_snapshot`` plus the call outcomes and the writer's counts."""

        def snapshot() -> dict[str, Any]:
            merged = dict(node_snapshot())
            merged["calls"] = {**merged.get("calls", {}), **self.sink.section()}
            merged["cdr"] = self.writer.snapshot()
            return merged

        return snapshot
