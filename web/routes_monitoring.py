"""Health and Prometheus metrics.

``GET /api/v1/health`` needs no token and says only whether the database
answers and the named checks pass: no versions, addresses or counters.
``GET /metrics`` needs a bearer token of any role (a viewer API token for
the Prometheus scrape job; see docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from web.app import API_PREFIX, VIEWER, AdminState
from web.metrics import metrics_registry

_log = logging.getLogger("sbc.web.health")

Check = Literal["ok", "failing"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Check
    checks: dict[str, Check]
    """Each named check of the node (``cdr_writer``, ``node`` ...)."""


def monitoring_router(state: AdminState) -> APIRouter:
    router = APIRouter()
    registry = metrics_registry(
        lambda: None if state.snapshot is None else state.snapshot()
    )

    @router.get(
        f"{API_PREFIX}/health", tags=["health"], responses={503: {"model": Health}}
    )
    def health(response: Response) -> Health:
        """``ok`` (200) or ``degraded`` (503); needs no token."""
        checks = {name: _run(check) for name, check in state.health_checks.items()}
        database: Check = "ok" if _database_answers(state) else "failing"
        healthy = database == "ok" and "failing" not in checks.values()
        if healthy:
            return Health(status="ok", database=database, checks=checks)
        response.status_code = 503
        return Health(status="degraded", database=database, checks=checks)

    @router.get(
        "/metrics",
        tags=["metrics"],
        dependencies=[VIEWER],
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}
        },
    )
    async def metrics() -> Response:
        """Prometheus text exposition of the node's counters (any role).

        Runs on the event loop, where the engines live: the snapshot reads
        their counters without racing them.
        """
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _database_answers(state: AdminState) -> bool:
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        _log.warning("health: the database does not answer", exc_info=True)
        return False
    return True


def _run(check: Callable[[], bool]) -> Check:
    try:
        passed = check()
    except Exception:
        _log.exception("health check failed")
        return "failing"
    return "ok" if passed else "failing"
