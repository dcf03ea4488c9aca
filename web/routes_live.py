"""The running node over HTTP: live views, operator actions, an event stream.

Everything here goes through :mod:`web.services.runtime`. Views need the
viewer role, actions the operator role (and are audited). The routes are
``async``: they run on the event loop, where the node's engines live, so a
view is a consistent snapshot and an action takes effect at once.
``GET /api/v1/events`` is a server-sent events stream of the node's typed
events (``event: TrunkStateChanged`` with a JSON ``data:`` line), with a
comment line every 15 s so idle proxies keep it open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sbc.node_views import (
    CallView,
    Subscription,
    TrunkMode,
    TrunkView,
    event_data,
    event_name,
)
from web.app import VIEWER, AdminState, Caller, SessionDep, needs
from web.services import runtime
from web.services.users import Role

KEEPALIVE_SECONDS = 15.0

Operator = Annotated[Caller, Depends(needs(Role.OPERATOR))]
_Name = Annotated[str, Path(min_length=1, max_length=128)]


class CallPublic(BaseModel):
    """A call in progress; times in Unix seconds."""

    call_id: str
    a_trunk: str
    b_trunk: str | None
    calling: str | None
    called: str | None
    state: str
    start_time: float
    answer_time: float | None
    media: dict[str, dict[str, float | int | None]]


class TrunkStatePublic(BaseModel):
    name: str
    kind: str
    state: str
    reason: str
    mode: TrunkMode
    registration: str
    reachable: bool | None
    active_calls: int
    protection: str | None


def live_router() -> APIRouter:
    router = APIRouter(tags=["runtime"])
    _view_routes(router)
    _action_routes(router)
    router.add_api_route(
        "/events", _events, methods=["GET"], dependencies=[VIEWER],
        response_class=StreamingResponse, summary="Server-sent events of the node",
        responses={200: {"content": {"text/event-stream": {}}}, 503: {}},
    )  # fmt: skip
    return router


def _node(request: Request) -> runtime.NodeRuntime | None:
    state: AdminState = request.app.state.admin
    return state.runtime


def _view_routes(router: APIRouter) -> None:
    @router.get("/runtime/calls", dependencies=[VIEWER], responses={503: {}})
    async def list_calls(request: Request) -> list[CallPublic]:
        """The calls in progress, oldest first."""
        return [_call(view) for view in runtime.list_calls(_node(request))]

    @router.get("/runtime/trunks", dependencies=[VIEWER], responses={503: {}})
    async def list_trunk_states(request: Request) -> list[TrunkStatePublic]:
        """Every running trunk's state, with the reason when it is not up."""
        return [_trunk(view) for view in runtime.list_trunks(_node(request))]

    @router.get(
        "/runtime/trunks/{name}", dependencies=[VIEWER], responses={404: {}, 503: {}}
    )
    async def get_trunk_state(name: _Name, request: Request) -> TrunkStatePublic:
        return _trunk(runtime.get_trunk(_node(request), name))

    @router.get(
        "/runtime/security-associations", dependencies=[VIEWER], responses={503: {}}
    )
    async def list_security_associations(request: Request) -> list[dict[str, Any]]:
        """IKE_SAs and their CHILD_SAs (SPIs, algorithms, lifetimes; no keys)."""
        return runtime.list_security_associations(_node(request))


def _action_routes(router: APIRouter) -> None:
    @router.post(
        "/runtime/calls/{call_id}/hangup",
        status_code=204,
        responses={404: {}, 503: {}},
    )
    async def hang_up(
        call_id: _Name, request: Request, caller: Operator, session: SessionDep
    ) -> None:
        """End the call on both legs (BYE, or CANCEL while ringing)."""
        runtime.hang_up(
            session, _node(request), actor=caller.user.username, call_id=call_id,
            now=_clock(request),
        )  # fmt: skip

    @router.post("/runtime/trunks/{name}/{action}", responses={404: {}, 503: {}})
    async def trunk_action(
        name: _Name,
        action: Literal["enable", "drain", "disable"],
        request: Request,
        caller: Operator,
        session: SessionDep,
    ) -> TrunkStatePublic:
        """enable; drain (no new calls, calls in progress continue, then
        disabled); disable (new calls either way refused, 503)."""
        view = runtime.set_trunk_mode(
            session, _node(request), actor=caller.user.username, name=name,
            mode=_MODES[action], now=_clock(request),
        )  # fmt: skip
        return _trunk(view)

    @router.post(
        "/runtime/tunnels/{name}/{action}",
        status_code=202,
        responses={404: {}, 409: {}, 503: {}},
    )
    async def tunnel_action(
        name: _Name,
        action: Literal["initiate", "terminate", "rekey"],
        request: Request,
        caller: Operator,
        session: SessionDep,
    ) -> None:
        """Start, tear down or rekey the IPsec of a trunk or mesh peer; the
        outcome arrives as SA events."""
        await runtime.tunnel_action(
            session, _node(request), actor=caller.user.username, name=name,
            action=action, now=_clock(request),
        )  # fmt: skip


async def _events(request: Request) -> StreamingResponse:
    """Every event of the node from now on, as server-sent events."""
    subscription = runtime.subscribe(_node(request))
    return StreamingResponse(
        _stream(request, subscription),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(request: Request, subscription: Subscription) -> AsyncIterator[str]:
    try:
        yield ": events of the node\n\n"
        while not await request.is_disconnected():
            try:
                event = await subscription.get(KEEPALIVE_SECONDS)
            except EOFError:  # the node stopped
                return
            if event is None:
                yield ": keepalive\n\n"
                continue
            data = json.dumps(event_data(event), separators=(",", ":"))
            yield f"event: {event_name(event)}\ndata: {data}\n\n"
    finally:
        subscription.close()


_MODES = {
    "enable": TrunkMode.ENABLED,
    "drain": TrunkMode.DRAINING,
    "disable": TrunkMode.DISABLED,
}


def _clock(request: Request) -> datetime:
    state: AdminState = request.app.state.admin
    return state.clock()


def _call(view: CallView) -> CallPublic:
    return CallPublic.model_validate(view, from_attributes=True)


def _trunk(view: TrunkView) -> TrunkStatePublic:
    return TrunkStatePublic.model_validate(view, from_attributes=True)
