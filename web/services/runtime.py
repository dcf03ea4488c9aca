"""The running node as the admin plane sees it: views, actions, events.

Routes call these functions and never the engines: reads return the node's
frozen views, actions go through the node's own methods and are audited in
the caller's transaction (who, what, when). Runs on the event loop, where
the node lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from sbc.node_views import CallView, Subscription, TrunkMode, TrunkView

from . import audit
from .errors import NotFound, ServiceError

TUNNEL_ACTIONS = ("initiate", "terminate", "rekey")
"""What an operator may ask of a trunk's or mesh peer's IPsec."""


class NodeRuntime(Protocol):
    """What the admin plane uses of `sbc.node.Node`."""

    def calls(self) -> list[CallView]: ...

    def trunks(self) -> list[TrunkView]: ...

    def trunk(self, name: str) -> TrunkView: ...

    def security_associations(self) -> list[dict[str, Any]]: ...

    def hang_up(self, call_id: str, reason: str = ...) -> bool: ...

    def set_trunk_mode(self, name: str, mode: TrunkMode) -> TrunkView: ...

    async def tunnel_action(self, name: str, action: str) -> None: ...

    def subscribe(self, size: int = ...) -> Subscription: ...


class NodeNotRunning(ServiceError):
    """503: no node runs in this process (the API runs on its own)."""

    status = 503


class Unsupported(ServiceError):
    """409: the node cannot do this now (no IPsec runtime, say)."""

    status = 409


def running(node: NodeRuntime | None) -> NodeRuntime:
    if node is None:
        raise NodeNotRunning("no node runs in this process")
    return node


def list_calls(node: NodeRuntime | None) -> Sequence[CallView]:
    return running(node).calls()


def list_trunks(node: NodeRuntime | None) -> Sequence[TrunkView]:
    return running(node).trunks()


def get_trunk(node: NodeRuntime | None, name: str) -> TrunkView:
    try:
        return running(node).trunk(name)
    except LookupError:
        raise NotFound(f"no trunk {name!r} runs") from None


def list_security_associations(node: NodeRuntime | None) -> list[dict[str, Any]]:
    return running(node).security_associations()


def hang_up(
    session: Session,
    node: NodeRuntime | None,
    *,
    actor: str,
    call_id: str,
    now: datetime,
) -> None:
    """End a call on both legs (BYE or CANCEL, Reason: operator)."""
    if not running(node).hang_up(call_id, "operator"):
        raise NotFound(f"no call {call_id!r} in progress")
    audit.record(
        session, actor=actor, action="hangup", kind="call", name=call_id, now=now
    )


def set_trunk_mode(
    session: Session,
    node: NodeRuntime | None,
    *,
    actor: str,
    name: str,
    mode: TrunkMode,
    now: datetime,
) -> TrunkView:
    """Enable, drain or disable a trunk (not stored: a restart enables it)."""
    before = get_trunk(node, name)
    after = running(node).set_trunk_mode(name, mode)
    audit.record(
        session,
        actor=actor,
        action=_MODE_ACTIONS[mode],
        kind="trunk",
        name=name,
        now=now,
        before={"mode": before.mode.value, "state": before.state},
        after={"mode": after.mode.value, "state": after.state},
    )
    return after


async def tunnel_action(
    session: Session,
    node: NodeRuntime | None,
    *,
    actor: str,
    name: str,
    action: str,
    now: datetime,
) -> None:
    """initiate, terminate or rekey the IPsec of a trunk or mesh peer."""
    if action not in TUNNEL_ACTIONS:
        raise NotFound(f"no tunnel action {action!r}")
    try:
        await running(node).tunnel_action(name, action)
    except LookupError:
        raise NotFound(f"no protected trunk or mesh peer {name!r}") from None
    except RuntimeError as exc:
        raise Unsupported(str(exc)) from None
    audit.record(
        session, actor=actor, action=f"tunnel_{action}", kind="tunnel", name=name,
        now=now,
    )  # fmt: skip


def subscribe(node: NodeRuntime | None) -> Subscription:
    """The node's events from now on (`sbc.node_views`)."""
    return running(node).subscribe(1000)


_MODE_ACTIONS = {
    TrunkMode.ENABLED: "enable",
    TrunkMode.DRAINING: "drain",
    TrunkMode.DISABLED: "disable",
}
