"""The reconciler: makes the running node follow the stored configuration.

Each round loads what this node runs from the database (the shared objects
and the node's own node-local ones, secrets opened), hands the whole
configuration to the node's ``apply`` and writes each object's outcome
back: ``applied`` with ``applied_revision`` set to the revision that now
runs, or ``failed`` with the reason. Only rows whose outcome changed are
written, and a row changed again meanwhile is left pending for the next
round (the write names the revision it is about).

A round runs right after every committed change (the service layer marks
the session; :meth:`Reconciler.watch` listens for its commit) and on a
periodic poll, which picks up changes made by other processes: ``sbc
config apply`` from a shell, or another node sharing one PostgreSQL.

Known limit: the outcome columns live on the object's row, so with several
nodes sharing an object the last node to reconcile it writes its outcome;
a per-node outcome table is the change that several nodes will need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from sbc.config import Config
from web.crypto import SecretBox
from web.services import config as config_service
from web.services.config import StoredObject

_log = logging.getLogger("sbc.web.reconciler")

DEFAULT_INTERVAL = 5.0
"""Seconds between polls of the database for changes made elsewhere."""


class OutcomeLike(Protocol):
    @property
    def applied(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class ApplyingNode(Protocol):
    """What the reconciler needs of `sbc.node.Node`."""

    async def apply(self, config: Config) -> Mapping[tuple[str, str], OutcomeLike]: ...


@dataclass(frozen=True, slots=True)
class _Write:
    object_id: int
    revision: int
    applied: bool
    reason: str


class Reconciler:
    """Applies the stored configuration to ``node``; see the module docstring.

    ``base`` supplies the node's own sections the database does not hold
    (``media`` and ``ipsec``, from the file ``sbc serve --config`` was given).
    """

    def __init__(
        self,
        node: ApplyingNode,
        sessions: sessionmaker[Session],
        box: SecretBox,
        *,
        node_name: str = "",
        base: Config | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._node = node
        self._sessions = sessions
        self._box = box
        self._node_name = node_name
        self._base = base or Config()
        self._interval = interval
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rounds = 0
        self.writes = 0
        self.failures: dict[tuple[str, str], str] = {}
        """Objects the last round could not apply, with the reason."""

    def watch(self) -> None:
        """Run a round after each commit that changed the configuration."""
        self._loop = asyncio.get_running_loop()
        event.listen(self._sessions, "after_commit", self._committed)
        event.listen(self._sessions, "after_rollback", _forget_change)

    def unwatch(self) -> None:
        event.remove(self._sessions, "after_commit", self._committed)
        event.remove(self._sessions, "after_rollback", _forget_change)

    def notify(self) -> None:
        """Ask for a round soon; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wanted.set)

    async def run(self) -> None:
        """Rounds until cancelled: after a notification or each interval."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.reconcile()
            except Exception:
                # A database that went away must not end reconciling for good.
                _log.exception("reconciliation round failed")
            try:
                await asyncio.wait_for(self._wanted.wait(), self._interval)
            except TimeoutError:
                pass
            self._wanted.clear()

    async def reconcile(self) -> int:
        """One round; returns how many objects' outcomes were written."""
        async with self._lock:
            self.rounds += 1
            objects = await asyncio.to_thread(self._load)
            writes = await self._outcomes(objects)
            if writes:
                await asyncio.to_thread(self._write, writes)
                self.writes += len(writes)
            return len(writes)

    async def _outcomes(self, objects: list[StoredObject]) -> list[_Write]:
        try:
            config = self._assembled(objects)
        except ValidationError as exc:
            # Each change was checked whole when made; a set that no longer
            # holds together (edits racing on two nodes) runs nothing new.
            reason = f"the stored configuration does not hold together: {exc}"
            refused = _Outcome(False, reason)
            outcomes: Mapping[tuple[str, str], OutcomeLike] = {
                (stored.kind, stored.name): refused
                for stored in objects
                if _pending(stored)
            }
        else:
            outcomes = _with_node_sections(objects, await self._node.apply(config))
        self.failures = {
            key: outcome.reason
            for key, outcome in outcomes.items()
            if not outcome.applied
        }
        writes = []
        for stored in objects:
            outcome = outcomes.get((stored.kind, stored.name))
            if outcome is not None and _differs(stored, outcome):
                writes.append(
                    _Write(
                        stored.id,
                        stored.desired_revision,
                        outcome.applied,
                        outcome.reason,
                    )
                )
        return writes

    def _assembled(self, objects: list[StoredObject]) -> Config:
        return config_service.assemble(objects, self._base)

    def _load(self) -> list[StoredObject]:
        with self._sessions.begin() as session:
            return config_service.node_objects(session, self._box, self._node_name)

    def _write(self, writes: list[_Write]) -> None:
        with self._sessions.begin() as session:
            for item in writes:
                config_service.record_outcome(
                    session,
                    item.object_id,
                    revision=item.revision,
                    applied=item.applied,
                    reason=item.reason,
                )

    def _committed(self, session: Session) -> None:
        if session.info.pop(config_service.CHANGED, False):
            self.notify()


def _forget_change(session: Session) -> None:
    session.info.pop(config_service.CHANGED, None)


def _pending(stored: StoredObject) -> bool:
    return stored.state != "applied" or stored.applied_revision != (
        stored.desired_revision
    )


def _differs(stored: StoredObject, outcome: OutcomeLike) -> bool:
    if outcome.applied:
        return _pending(stored) or stored.reason != ""
    return stored.state != "failed" or stored.reason != outcome.reason


def _with_node_sections(
    objects: list[StoredObject], outcomes: Mapping[tuple[str, str], OutcomeLike]
) -> Mapping[tuple[str, str], OutcomeLike]:
    """Outcomes with one for each stored node section the node names none
    for (it names the media section only when refusing it): it applies a
    configuration whole, so a changed section runs when nothing was refused
    and does not when anything was."""
    sections = [o for o in objects if o.kind in config_service.NODE_SECTIONS]
    refused = [
        f"{kind} {name!r}: {outcome.reason}"
        for (kind, name), outcome in outcomes.items()
        if not outcome.applied
    ]
    refused.sort(key=lambda text: ": not applied" in text)  # the cause first
    with_sections = dict(outcomes)
    for stored in sections:
        key = (stored.kind, stored.name)
        if key in outcomes:
            continue
        running = not refused or not _pending(stored)
        reason = "" if running else f"not applied: {refused[0]}"
        with_sections[key] = _Outcome(running, reason)
    return with_sections


@dataclass(frozen=True, slots=True)
class _Outcome:
    applied: bool
    reason: str
