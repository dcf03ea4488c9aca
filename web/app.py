"""The admin plane's HTTP API (FastAPI), under /api/v1.

Routes only translate between HTTP and :mod:`web.services`: they open one
transaction per request, check the caller's role, call a service function
and shape its answer with :mod:`web.schemas`. Every route names the least
role it needs (``_needs``); the test suite walks every route with each role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sbc.config import REVEAL_SECRETS, DialPlan, Listener, Trunk
from sbc.config.ipsec import IpsecNode, IpsecProfile, MeshPeer
from sbc.config.model import Media
from web.body_limit import BodyLimit
from web.crypto import SecretBox
from web.db import Token, User
from web.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    AuditPage,
    AuditPublic,
    LoginRequest,
    ObjectPublic,
    SessionToken,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from web.services import audit, config, users
from web.services.errors import (
    Forbidden,
    Invalid,
    RateLimited,
    ServiceError,
    Unauthorized,
)
from web.services.runtime import NodeRuntime
from web.services.users import Role

API_PREFIX = "/api/v1"
ROW_ID_MAX = 2**31 - 1
"""Largest row id or offset a request may name: an INTEGER column's range."""

RESOURCES: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("listeners", "listener", Listener),
    ("trunks", "trunk", Trunk),
    ("dial-plans", "dial_plan", DialPlan),
    ("ipsec-profiles", "ipsec_profile", IpsecProfile),
    ("mesh-peers", "mesh_peer", MeshPeer),
)
"""URL segment, service kind and model of each configuration resource.
Number rules and header rules are fields of a trunk in the model, edited
with the trunk."""


@dataclass
class AdminState:
    """What the routes need, built once by the caller (tests pass their own)."""

    sessions: sessionmaker[Session]
    box: SecretBox
    limiter: users.LoginLimiter = field(default_factory=users.LoginLimiter)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    cors_origins: tuple[str, ...] = ()
    """Origins allowed cross-site; empty (the default) sends no CORS headers."""
    snapshot: Callable[[], Mapping[str, Any]] | None = None
    """The running node's counters, for /metrics (see :mod:`web.metrics`)."""
    health_checks: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    """Named checks /api/v1/health runs besides the database's (True: passing)."""
    runtime: NodeRuntime | None = None
    """The node running in this process, for live views and actions."""
    node_name: str = ""
    """This node's name (``--node-name``): its own sections are stored under it."""


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    token: str


def create_app(state: AdminState) -> FastAPI:
    app = FastAPI(
        title="SBC admin API",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.admin = state
    app.add_middleware(BodyLimit)
    if state.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(state.cors_origins),
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    router = APIRouter(prefix=API_PREFIX)
    _auth_routes(router)
    for segment, kind, model in RESOURCES:
        _config_routes(router, segment, kind, model)
    for segment, kind, model in NODE_SECTIONS:
        _node_section_routes(router, segment, kind, model)
    _user_routes(router)
    _token_routes(router)
    _audit_routes(router)
    app.include_router(router)
    _include_operations(app, state)
    return app


def _include_operations(app: FastAPI, state: AdminState) -> None:
    # Imported here: these modules build on this one's dependencies.
    from web.routes_cdrs import cdr_router
    from web.routes_live import live_router
    from web.routes_monitoring import monitoring_router

    app.include_router(cdr_router(), prefix=API_PREFIX)
    app.include_router(live_router(), prefix=API_PREFIX)
    app.include_router(monitoring_router(state))


# Plumbing: transaction, caller, role, errors


def _admin(request: Request) -> AdminState:
    state: AdminState = request.app.state.admin
    return state


def _session(request: Request) -> Iterator[Session]:
    # One transaction per request: commits if the route returns, rolls back
    # if it raises, so a refused change leaves neither data nor audit entry.
    with _admin(request).sessions.begin() as session:
        yield session


# scope="function": the commit runs before the answer is sent, so a commit
# that fails turns into an error answer instead of a 200 already on its way.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
_bearer = HTTPBearer(auto_error=False)


def _caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        raise Unauthorized("a bearer token is required")
    user = users.resolve_token(
        session, credentials.credentials, _admin(request).clock()
    )
    if user is None:
        raise Unauthorized("the token is unknown or expired")
    return Caller(user, credentials.credentials)


def _needs(role: Role) -> Callable[..., Caller]:
    def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if not users.role_allows(Role(caller.user.role), role):
            raise Forbidden(f"this needs the {role.value} role")
        return caller

    return check


needs = _needs
"""The dependency that admits a caller with at least the given role."""
Viewer = Annotated[Caller, Depends(_needs(Role.VIEWER))]
Admin = Annotated[Caller, Depends(_needs(Role.ADMIN))]
VIEWER = Depends(_needs(Role.VIEWER))
ADMIN = Depends(_needs(Role.ADMIN))


def _service_error(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ServiceError):  # registered for ServiceError only
        raise exc
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Invalid):
        detail: Any = [
            {"loc": list(p.loc), "msg": p.msg, "type": p.type} for p in exc.problems
        ]
    else:
        detail = exc.message
    return JSONResponse({"detail": detail}, status_code=exc.status, headers=headers)


def _validation_error(_request: Request, exc: Exception) -> Response:
    # FastAPI echoes the offending input by default, which may be a password:
    # answer with where and what only.
    if not isinstance(exc, RequestValidationError):  # registered for it only
        raise exc
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _integrity_error(_request: Request, _exc: Exception) -> Response:
    # Two requests (or two nodes) creating the same name at once: the unique
    # key of the losing transaction fails at commit. The statement is not
    # echoed: it carries the row's values.
    detail = "a concurrent change conflicts with this one; read and retry"
    return JSONResponse({"detail": detail}, status_code=409)


# Routes


def _auth_routes(router: APIRouter) -> None:
    @router.post("/auth/login", tags=["auth"], responses={401: {}, 429: {}})
    def login(
        body: LoginRequest, request: Request, session: SessionDep
    ) -> SessionToken:
        """Exchange a username and password for a session token."""
        state = _admin(request)
        client = request.client.host if request.client else "unknown"
        keys = (f"user:{body.username}", f"address:{client}")
        state.limiter.check(keys, state.monotonic())
        user = users.authenticate(
            session, body.username, body.password.get_secret_value()
        )
        now = state.clock()
        if user is None:
            state.limiter.failed(keys, state.monotonic())
            raise Unauthorized("wrong username or password")
        state.limiter.succeeded(keys)
        users.purge_expired(session, now)
        expires = now + users.SESSION_LIFETIME
        issued = users.issue_token(
            session, user, kind="session", now=now, expires_at=expires
        )
        audit.record(
            session, actor=user.username, action="login", kind="user",
            name=user.username, now=now,
        )  # fmt: skip
        return SessionToken(access_token=issued.secret, expires_at=expires)

    @router.post("/auth/logout", tags=["auth"], status_code=204)
    def logout(caller: Viewer, session: SessionDep) -> None:
        """End the session (or revoke the API token) used for this request."""
        users.revoke_token_secret(session, caller.token)

    @router.get("/auth/me", tags=["auth"])
    def me(caller: Viewer) -> UserPublic:
        return _user_public(caller.user)


def _config_routes(
    router: APIRouter, segment: str, kind: str, model: type[BaseModel]
) -> None:
    tag = segment
    item_path = f"/{segment}/{{name}}"

    def list_all(session: SessionDep) -> list[ObjectPublic]:
        return [_object_public(view) for view in config.list_objects(session, kind)]

    def get_one(name: str, session: SessionDep) -> ObjectPublic:
        return _object_public(config.get_object(session, kind, name))

    def create(
        body: Annotated[Any, Body()],
        request: Request,
        caller: Admin,
        session: SessionDep,
    ) -> ObjectPublic:
        view = config.create_object(
            session,
            _admin(request).box,
            actor=caller.user.username,
            kind=kind,
            data=_revealed(body),
            now=_admin(request).clock(),
        )
        return _object_public(view)

    def update(
        name: str,
        body: Annotated[dict[str, Any], Body()],
        request: Request,
        caller: Admin,
        session: SessionDep,
    ) -> ObjectPublic:
        """Replace the object; a secret left out keeps its stored value."""
        view = config.update_object(
            session,
            _admin(request).box,
            actor=caller.user.username,
            kind=kind,
            name=name,
            data=body,
            now=_admin(request).clock(),
        )
        return _object_public(view)

    def delete(name: str, request: Request, caller: Admin, session: SessionDep) -> None:
        config.delete_object(
            session,
            _admin(request).box,
            actor=caller.user.username,
            kind=kind,
            name=name,
            now=_admin(request).clock(),
        )

    # The create body is typed by the model so the OpenAPI document shows it.
    create.__annotations__["body"] = Annotated[model, Body()]
    router.add_api_route(
        f"/{segment}", list_all, methods=["GET"], tags=[tag], dependencies=[VIEWER],
        operation_id=f"list_{kind}s", summary=f"List {segment}",
    )  # fmt: skip
    router.add_api_route(
        f"/{segment}", create, methods=["POST"], tags=[tag], status_code=201,
        operation_id=f"create_{kind}", summary=f"Create a {kind}",
        responses={409: {}, 422: {}},
    )  # fmt: skip
    router.add_api_route(
        item_path, get_one, methods=["GET"], tags=[tag], dependencies=[VIEWER],
        operation_id=f"get_{kind}", summary=f"Get a {kind}", responses={404: {}},
    )  # fmt: skip
    router.add_api_route(
        item_path, update, methods=["PUT"], tags=[tag],
        operation_id=f"update_{kind}", summary=f"Replace a {kind}",
        responses={404: {}, 422: {}}, openapi_extra=_update_body(model),
    )  # fmt: skip
    router.add_api_route(
        item_path, delete, methods=["DELETE"], tags=[tag], status_code=204,
        operation_id=f"delete_{kind}", summary=f"Delete a {kind}",
        responses={404: {}, 422: {}},
    )  # fmt: skip


NODE_SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("ipsec", "ipsec_node", IpsecNode),
    ("media", "media", Media),
)
"""URL segment under /node, service kind and model of this node's own sections."""


def _node_section_routes(
    router: APIRouter, segment: str, kind: str, model: type[BaseModel]
) -> None:
    """One of this node's own sections, stored under its node name."""
    path, tag = f"/node/{segment}", "node"

    def get_section(request: Request, session: SessionDep) -> ObjectPublic:
        node = _admin(request).node_name
        return _object_public(config.get_node_section(session, kind, node))

    def put_section(
        body: Annotated[Any, Body()],
        request: Request,
        response: Response,
        caller: Admin,
        session: SessionDep,
    ) -> ObjectPublic:
        """Create or replace it; it replaces a ``--config`` file's section."""
        view, created = config.put_node_section(
            session,
            _admin(request).box,
            actor=caller.user.username,
            kind=kind,
            node=_admin(request).node_name,
            data=_revealed(body),
            now=_admin(request).clock(),
        )
        response.status_code = 201 if created else 200
        return _object_public(view)

    def delete_section(request: Request, caller: Admin, session: SessionDep) -> None:
        config.delete_node_section(
            session,
            actor=caller.user.username,
            kind=kind,
            node=_admin(request).node_name,
            now=_admin(request).clock(),
        )

    put_section.__annotations__["body"] = Annotated[model, Body()]
    router.add_api_route(
        path, get_section, methods=["GET"], tags=[tag], dependencies=[VIEWER],
        operation_id=f"get_{kind}", summary=f"Get this node's {segment} section",
        responses={404: {}},
    )  # fmt: skip
    router.add_api_route(
        path, put_section, methods=["PUT"], tags=[tag],
        operation_id=f"put_{kind}", summary=f"Set this node's {segment} section",
        responses={201: {}, 422: {}},
    )  # fmt: skip
    router.add_api_route(
        path, delete_section, methods=["DELETE"], tags=[tag], status_code=204,
        operation_id=f"delete_{kind}", summary=f"Forget this node's {segment} section",
        responses={404: {}},
    )  # fmt: skip


def _update_body(model: type[BaseModel]) -> dict[str, Any]:
    # The route reads the body as plain data (secret fields may be left out
    # to keep them), but documents it as the resource's model.
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


def _revealed(body: Any) -> dict[str, Any]:
    # The service validates again from plain data, secrets included.
    if isinstance(body, BaseModel):
        data: dict[str, Any] = body.model_dump(
            mode="json", context={REVEAL_SECRETS: True}
        )
        return data
    return dict(body)


def _user_routes(router: APIRouter) -> None:
    @router.get("/users", tags=["users"], dependencies=[ADMIN])
    def list_users(session: SessionDep) -> list[UserPublic]:
        return [_user_public(user) for user in users.list_users(session)]

    @router.post("/users", tags=["users"], status_code=201, responses={409: {}})
    def create_user(
        body: UserCreate, request: Request, caller: Admin, session: SessionDep
    ) -> UserPublic:
        user = users.create_user(
            session,
            actor=caller.user.username,
            username=body.username,
            password=body.password.get_secret_value(),
            role=body.role,
            now=_admin(request).clock(),
        )
        return _user_public(user)

    @router.get(
        "/users/{username}", tags=["users"], dependencies=[ADMIN], responses={404: {}}
    )
    def get_user(username: str, session: SessionDep) -> UserPublic:
        return _user_public(users.get_user(session, username))

    @router.patch("/users/{username}", tags=["users"], responses={404: {}})
    def update_user(
        username: str,
        body: UserUpdate,
        request: Request,
        caller: Admin,
        session: SessionDep,
    ) -> UserPublic:
        password = body.password.get_secret_value() if body.password else None
        user = users.update_user(
            session,
            actor=caller.user.username,
            username=username,
            now=_admin(request).clock(),
            password=password,
            role=body.role,
        )
        return _user_public(user)

    @router.delete(
        "/users/{username}",
        tags=["users"],
        status_code=204,
        responses={404: {}, 409: {}},
    )
    def delete_user(
        username: str, request: Request, caller: Admin, session: SessionDep
    ) -> None:
        users.delete_user(
            session,
            actor=caller.user.username,
            username=username,
            now=_admin(request).clock(),
        )


def _token_routes(router: APIRouter) -> None:
    @router.get("/tokens", tags=["tokens"])
    def list_tokens(caller: Viewer, session: SessionDep) -> list[ApiTokenPublic]:
        """The caller's own API tokens (never their values)."""
        return [_token_public(t) for t in users.list_tokens(session, caller.user)]

    @router.post("/tokens", tags=["tokens"], status_code=201)
    def create_token(
        body: ApiTokenCreate, request: Request, caller: Viewer, session: SessionDep
    ) -> ApiTokenCreated:
        """An API token acting with the caller's role; its value is shown once."""
        now = _admin(request).clock()
        issued = users.issue_token(
            session, caller.user, kind="api", now=now, label=body.label
        )
        audit.record(
            session, actor=caller.user.username, action="create", kind="api_token",
            name=str(issued.token.id), now=now, after={"label": body.label},
        )  # fmt: skip
        public = _token_public(issued.token)
        return ApiTokenCreated(**public.model_dump(), token=issued.secret)

    @router.delete(
        "/tokens/{token_id}", tags=["tokens"], status_code=204, responses={404: {}}
    )
    def delete_token(
        token_id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)],
        request: Request,
        caller: Viewer,
        session: SessionDep,
    ) -> None:
        users.delete_token(session, caller.user, token_id, now=_admin(request).clock())


def _audit_routes(router: APIRouter) -> None:
    @router.get("/audit", tags=["audit"], dependencies=[VIEWER])
    def list_audit(
        session: SessionDep,
        actor: str | None = None,
        action: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
    ) -> AuditPage:
        """Audit entries, newest first; secrets were redacted when written."""
        where = audit.AuditFilter(actor, action, kind, name, since, until)
        total, entries = audit.list_entries(session, where, limit=limit, offset=offset)
        items = [AuditPublic.model_validate(e, from_attributes=True) for e in entries]
        return AuditPage(total=total, items=items)


# Shaping answers


def _object_public(view: config.ObjectView) -> ObjectPublic:
    return ObjectPublic.model_validate(view, from_attributes=True)


def _user_public(user: User) -> UserPublic:
    return UserPublic(
        username=user.username, role=Role(user.role), created_at=user.created_at
    )


def _token_public(token: Token) -> ApiTokenPublic:
    return ApiTokenPublic(
        id=token.id,
        label=token.label,
        created_at=token.created_at,
        expires_at=token.expires_at,
    )
