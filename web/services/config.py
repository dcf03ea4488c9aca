"""Configuration objects: create, update, delete, list, get, apply, export.

Each change is validated exactly as ``sbc config check`` validates a file:
the object by its pydantic model, then the whole configuration it would make
by the cross-reference checks of :mod:`sbc.config.references`. The change,
its sealed secrets and its audit entry commit in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

from sbc.config import (
    REDACTED,
    REVEAL_SECRETS,
    Config,
    DialPlan,
    Listener,
    Trunk,
    reference_problems,
)
from sbc.config.ipsec import IpsecNode, IpsecProfile, MeshPeer
from sbc.config.model import Media
from web.crypto import Sealed, SecretBox
from web.db import ConfigObject, SecretValue

from . import audit
from .errors import Conflict, FieldProblem, Invalid, NotFound

KINDS: dict[str, type[BaseModel]] = {
    "listener": Listener,
    "trunk": Trunk,
    "dial_plan": DialPlan,
    "ipsec_profile": IpsecProfile,
    "mesh_peer": MeshPeer,
    "ipsec_node": IpsecNode,
    "media": Media,
}
"""Stored kinds and their models: the configuration's lists in their order,
then the node's own sections."""

SECTIONS = {
    "listener": "listeners",
    "trunk": "trunks",
    "dial_plan": "dial_plans",
    "ipsec_profile": "ipsec_profiles",
    "mesh_peer": "mesh_peers",
}
"""The :class:`Config` field holding each kind."""

NODE_SECTIONS = {"ipsec_node": "ipsec", "media": "media"}
"""Kinds of a node's own sections and the :class:`Config` field each fills:
one row per node, named after the field and stored under the node's name
(node-local)."""

SHARED_NODE = ""

CHANGED = "sbc.config_changed"
"""Set in ``session.info`` by every change: the reconciler, listening for
the commit of such a session, applies the new configuration at once."""


@dataclass(frozen=True, slots=True)
class ObjectView:
    """A stored object as the API shows it: secrets only as ``<field>_set``."""

    kind: str
    name: str
    node: str
    revision: int
    desired_revision: int
    applied_revision: int
    state: str
    reason: str
    updated_at: datetime
    document: dict[str, Any]


def list_objects(session: Session, kind: str) -> list[ObjectView]:
    query = select(ConfigObject).where(ConfigObject.kind == _known(kind))
    rows = session.scalars(query.order_by(ConfigObject.name))
    return [_view(session, row) for row in rows]


def get_object(session: Session, kind: str, name: str) -> ObjectView:
    return _view(session, _row(session, kind, name))


def create_object(
    session: Session,
    box: SecretBox,
    *,
    actor: str,
    kind: str,
    data: dict[str, Any],
    now: datetime,
) -> ObjectView:
    item = _validated(kind, data)
    name = str(getattr(item, "name"))  # noqa: B009 - every kind has a name
    if _find(session, kind, name) is not None:
        raise Conflict(f"{kind} {name!r} already exists")
    _check_references(session, box, kind, name, item)
    row = ConfigObject(kind=kind, name=name, node=SHARED_NODE, updated_at=now)
    _store(session, box, row, item, now)
    view = _view(session, row)
    audit.record(
        session,
        actor=actor,
        action="create",
        kind=kind,
        name=name,
        now=now,
        after=view.document,
    )
    return view


def update_object(
    session: Session,
    box: SecretBox,
    *,
    actor: str,
    kind: str,
    name: str,
    data: dict[str, Any],
    now: datetime,
) -> ObjectView:
    """Replace the object whole; a secret the body leaves out keeps its value."""
    row = _row(session, kind, name)
    before = _view(session, row).document
    if data.get("name", name) != name:
        problem = FieldProblem(("body", "name"), "renaming is not supported", "name")
        raise Invalid([problem])
    item = _validated(kind, _with_kept_secrets(session, box, row, data))
    _check_references(session, box, kind, name, item)
    _store(session, box, row, item, now)
    view = _view(session, row)
    audit.record(
        session,
        actor=actor,
        action="update",
        kind=kind,
        name=name,
        now=now,
        before=before,
        after=view.document,
    )
    return view


def delete_object(
    session: Session, box: SecretBox, *, actor: str, kind: str, name: str, now: datetime
) -> None:
    """Delete unless another object still refers to it (422 naming the referrer)."""
    row = _row(session, kind, name)
    before = _view(session, row).document
    _check_references(session, box, kind, name, None)
    session.delete(row)
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action="delete",
        kind=kind,
        name=name,
        now=now,
        before=before,
    )


def get_node_section(session: Session, kind: str, node: str) -> ObjectView:
    """``node``'s own section of ``kind``; NotFound when none is stored."""
    return _view(session, _section_row(session, kind, node))


def put_node_section(
    session: Session,
    box: SecretBox,
    *,
    actor: str,
    kind: str,
    node: str,
    data: dict[str, Any],
    now: datetime,
) -> tuple[ObjectView, bool]:
    """Store ``node``'s section of ``kind`` whole; the view and whether it is new.

    Checked by its model only: what it must agree with (the address of
    transport-mode listeners, the mesh listener, ipsec listeners outside the
    media ports) is checked by the node when it applies, and a refusal
    shows as this object's ``failed`` state.
    """
    item = _validated(kind, data)
    name = NODE_SECTIONS[kind]
    row = _find(session, kind, name, node)
    before = None if row is None else _view(session, row).document
    if row is None:
        row = ConfigObject(kind=kind, name=name, node=node, updated_at=now)
    _store(session, box, row, item, now)
    view = _view(session, row)
    audit.record(
        session, actor=actor, action="create" if before is None else "update",
        kind=kind, name=name, now=now, before=before, after=view.document,
    )  # fmt: skip
    return view, before is None


def delete_node_section(
    session: Session, *, actor: str, kind: str, node: str, now: datetime
) -> None:
    """Forget ``node``'s stored section of ``kind`` (the ``--config`` file's,
    if any, applies again); NotFound when none is stored."""
    row = _section_row(session, kind, node)
    before = _view(session, row).document
    session.delete(row)
    session.info[CHANGED] = True
    audit.record(
        session, actor=actor, action="delete", kind=kind, name=row.name, now=now,
        before=before,
    )  # fmt: skip


def _section_row(session: Session, kind: str, node: str) -> ConfigObject:
    if kind not in NODE_SECTIONS:
        raise NotFound(f"no node section {kind!r}")
    row = _find(session, kind, NODE_SECTIONS[kind], node)
    if row is None:
        raise NotFound(f"no {NODE_SECTIONS[kind]} section stored for node {node!r}")
    return row


def load_config(session: Session, box: SecretBox) -> Config:
    """The stored configuration as one model, secrets opened."""
    return _config_from(_all_items(session, box))


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A configuration object as a node runs it: model (secrets opened) and
    the reconciler's columns."""

    id: int
    kind: str
    name: str
    node: str
    desired_revision: int
    applied_revision: int
    state: str
    reason: str
    item: BaseModel


def node_objects(session: Session, box: SecretBox, node: str) -> list[StoredObject]:
    """What ``node`` runs: the shared objects and its own node-local ones; a
    node-local object replaces a shared one of the same kind and name."""
    query = select(ConfigObject).where(ConfigObject.node.in_({SHARED_NODE, node}))
    chosen: dict[tuple[str, str], ConfigObject] = {}
    for row in session.scalars(query.order_by(ConfigObject.id)):
        key = (row.kind, row.name)
        if key not in chosen or row.node == node:
            chosen[key] = row
    return [
        StoredObject(
            row.id,
            row.kind,
            row.name,
            row.node,
            row.desired_revision,
            row.applied_revision,
            row.state,
            row.reason,
            _open_item(session, box, row),
        )  # fmt: skip
        for row in chosen.values()
    ]


def assemble(objects: list[StoredObject], node: Config | None = None) -> Config:
    """One configuration of ``objects`` plus the node's own sections (media,
    IPsec node) from ``node``, a stored section replacing the file's;
    raises pydantic's ValidationError."""
    sections: dict[str, Any] = {section: [] for section in SECTIONS.values()}
    if node is not None:
        sections.update(media=node.media, ipsec=node.ipsec)
    for stored in objects:
        if stored.kind in NODE_SECTIONS:
            # Set over the API, later than the file: it wins.
            sections[NODE_SECTIONS[stored.kind]] = stored.item
        else:
            sections[SECTIONS[stored.kind]].append(stored.item)
    return Config.model_validate(sections)


def record_outcome(
    session: Session,
    object_id: int,
    *,
    revision: int,
    applied: bool,
    reason: str,
) -> bool:
    """Write the reconciler's outcome for ``revision`` of an object: applied
    (``applied_revision`` becomes it) or failed with ``reason``. False when
    the object has changed (or gone) since: its newer revision stays
    pending for the next round."""
    values: dict[str, Any] = {"state": "applied" if applied else "failed"}
    values["reason"] = "" if applied else reason[:1024]
    if applied:
        values["applied_revision"] = revision
    result = session.execute(
        update(ConfigObject)
        .where(ConfigObject.id == object_id)
        .where(ConfigObject.desired_revision == revision)
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0))


def apply_config(
    session: Session, box: SecretBox, config: Config, *, actor: str, now: datetime
) -> dict[str, int]:
    """Make the stored configuration equal ``config`` (already checked whole).

    Objects are created, updated (only when they differ) or deleted one by
    one, each audited; returns how many of each.
    """
    problems = reference_problems(config)
    if problems:
        raise Invalid([_problem(p.path, p.message) for p in problems])
    counts = {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    wanted = {(kind, item.name): item for kind, item in _items_of(config)}
    in_file = select(ConfigObject).where(ConfigObject.kind.in_(list(SECTIONS)))
    for row in list(session.scalars(in_file)):
        if (row.kind, row.name) not in wanted:
            audit.record(
                session,
                actor=actor,
                action="delete",
                kind=row.kind,
                name=row.name,
                now=now,
                before=_view(session, row).document,
            )
            session.delete(row)
            session.info[CHANGED] = True
            counts["deleted"] += 1
    session.flush()
    for (kind, name), item in wanted.items():
        counts[_apply_one(session, box, kind, name, item, actor, now)] += 1
    return counts


def _apply_one(
    session: Session,
    box: SecretBox,
    kind: str,
    name: str,
    item: BaseModel,
    actor: str,
    now: datetime,
) -> str:
    row = _find(session, kind, name)
    if row is not None and _open_item(session, box, row) == item:
        return "unchanged"
    before = None if row is None else _view(session, row).document
    if row is None:
        row = ConfigObject(kind=kind, name=name, node=SHARED_NODE, updated_at=now)
    _store(session, box, row, item, now)
    action = "create" if before is None else "update"
    after = _view(session, row).document
    audit.record(
        session,
        actor=actor,
        action=action,
        kind=kind,
        name=name,
        now=now,
        before=before,
        after=after,
    )
    return "created" if before is None else "updated"


# Validation


def _known(kind: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no resource kind {kind!r}")
    return kind


def _validated(kind: str, data: dict[str, Any]) -> BaseModel:
    try:
        return KINDS[_known(kind)].model_validate(data)
    except ValidationError as exc:
        problems = [
            FieldProblem(("body", *error["loc"]), error["msg"], error["type"])
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise Invalid(problems) from None


def _check_references(
    session: Session,
    box: SecretBox,
    kind: str,
    name: str,
    item: BaseModel | None,
) -> None:
    """Check the configuration the change would make, as a file is checked."""
    items = [
        pair
        for pair in _all_items(session, box)
        if (pair[0], getattr(pair[1], "name")) != (kind, name)  # noqa: B009
    ]
    if item is not None:
        items.append((kind, item))
    config = _config_from(items)
    problems = [_problem(p.path, p.message, config) for p in reference_problems(config)]
    if problems:
        raise Invalid(problems)


def _problem(
    path: tuple[str | int, ...], message: str, config: Config | None = None
) -> FieldProblem:
    # ("trunks", 2, "listeners", 0) -> ("trunks", "<name>", "listeners", 0): an
    # index into the assembled configuration means nothing to an API client.
    if config is not None and len(path) >= 2 and isinstance(path[1], int):
        objects = getattr(config, str(path[0]))
        path = (path[0], objects[path[1]].name, *path[2:])
    return FieldProblem(path, message, "reference")


def _config_from(items: list[tuple[str, BaseModel]]) -> Config:
    sections: dict[str, list[BaseModel]] = {
        section: [] for section in SECTIONS.values()
    }
    for kind, item in items:
        if kind in SECTIONS:
            sections[SECTIONS[kind]].append(item)
    return Config.model_validate(
        {section: list(objects) for section, objects in sections.items()}
    )


def _items_of(config: Config) -> Iterator[tuple[str, Any]]:
    for kind, section in SECTIONS.items():
        for item in getattr(config, section):
            yield kind, item


# Storage and secrets


def _find(
    session: Session, kind: str, name: str, node: str = SHARED_NODE
) -> ConfigObject | None:
    query = select(ConfigObject).where(
        ConfigObject.kind == _known(kind),
        ConfigObject.name == name,
        ConfigObject.node == node,
    )
    return session.scalars(query).one_or_none()


def _row(session: Session, kind: str, name: str) -> ConfigObject:
    row = _find(session, kind, name)
    if row is None:
        raise NotFound(f"no {kind} {name!r}")
    return row


def _all_items(session: Session, box: SecretBox) -> list[tuple[str, BaseModel]]:
    # The objects of the configuration's lists; nodes' own sections apart.
    query = select(ConfigObject).where(ConfigObject.kind.in_(list(SECTIONS)))
    rows = session.scalars(query.order_by(ConfigObject.id))
    return [(row.kind, _open_item(session, box, row)) for row in rows]


def _store(
    session: Session, box: SecretBox, row: ConfigObject, item: BaseModel, now: datetime
) -> None:
    """Write the masked document, seal each secret, bump the revision."""
    masked = item.model_dump(mode="json")
    revealed = item.model_dump(mode="json", context={REVEAL_SECRETS: True})
    secrets = dict(_secret_fields(masked, revealed, ()))
    if inspect(row).transient:
        row.revision = 1
        row.applied_revision = 0
        session.add(row)
    else:
        row.revision += 1
        for old in _secret_rows(session, row):
            session.delete(old)
    session.info[CHANGED] = True
    row.document = masked
    row.desired_revision = row.revision
    row.state = "pending"
    row.reason = ""
    row.updated_at = now
    session.flush()
    for path, plaintext in secrets.items():
        sealed = box.seal(plaintext, _context(row, path))
        session.add(
            SecretValue(
                object_id=row.id,
                path=path,
                key_id=sealed.key_id,
                nonce=sealed.nonce,
                ciphertext=sealed.ciphertext,
            )
        )
    session.flush()


def _secret_fields(
    masked: Any, revealed: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[str, str]]:
    """Dotted paths where the masked dump holds the mask and the revealed dump
    does not: exactly the Secret fields, found without a list of them."""
    if isinstance(masked, dict):
        for key, value in masked.items():
            yield from _secret_fields(value, revealed[key], (*path, key))
    elif isinstance(masked, list):
        for index, value in enumerate(masked):
            yield from _secret_fields(value, revealed[index], (*path, index))
    elif masked == REDACTED and revealed != REDACTED:
        yield ".".join(str(part) for part in path), revealed


def _secret_rows(session: Session, row: ConfigObject) -> list[SecretValue]:
    query = select(SecretValue).where(SecretValue.object_id == row.id)
    return list(session.scalars(query.order_by(SecretValue.path)))


def _context(row: ConfigObject, path: str) -> str:
    return f"{row.kind}/{row.node}/{row.name}/{path}"


def _opened(session: Session, box: SecretBox, row: ConfigObject) -> dict[str, str]:
    return {
        secret.path: box.open(
            Sealed(secret.key_id, secret.nonce, secret.ciphertext),
            _context(row, secret.path),
        )
        for secret in _secret_rows(session, row)
    }


def _open_item(session: Session, box: SecretBox, row: ConfigObject) -> BaseModel:
    document = _copy(row.document)
    for path, plaintext in _opened(session, box, row).items():
        _set_path(document, path, plaintext)
    return KINDS[row.kind].model_validate(document)


def _with_kept_secrets(
    session: Session, box: SecretBox, row: ConfigObject, data: dict[str, Any]
) -> dict[str, Any]:
    """``data`` with each stored secret put back where the body omits it (or
    sends the mask) but keeps the object that holds it."""
    document: dict[str, Any] = _copy(data)
    for path, plaintext in _opened(session, box, row).items():
        parent, key = _parent(document, path)
        if isinstance(parent, dict) and parent.get(key, REDACTED) == REDACTED:
            parent[key] = plaintext
    return document


def _view(session: Session, row: ConfigObject) -> ObjectView:
    document = _copy(row.document)
    for secret in _secret_rows(session, row):
        parent, key = _parent(document, secret.path)
        if isinstance(parent, dict):
            parent.pop(key, None)
            parent[f"{key}_set"] = True
    return ObjectView(
        kind=row.kind,
        name=row.name,
        node=row.node,
        revision=row.revision,
        desired_revision=row.desired_revision,
        applied_revision=row.applied_revision,
        state=row.state,
        reason=row.reason,
        updated_at=row.updated_at,
        document=document,
    )


def _copy(document: Any) -> Any:
    if isinstance(document, dict):
        return {key: _copy(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_copy(value) for value in document]
    return document


def _parent(document: Any, path: str) -> tuple[Any, str]:
    """The container holding the last part of a dotted ``path`` (None if absent)."""
    parts = path.split(".")
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None, parts[-1]
    return node, parts[-1]


def _set_path(document: Any, path: str, value: str) -> None:
    parent, key = _parent(document, path)
    if isinstance(parent, dict):
        parent[key] = value
