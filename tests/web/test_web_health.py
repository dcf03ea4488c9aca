"""GET /api/v1/health: open to all, says ok or degraded, and nothing more."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient

from web.app import create_app
from web.db import make_engine, make_sessions
from web.services.cdrs import DatabaseCdrWriter

HEALTH = "/api/v1/health"
UNREACHABLE = "postgresql+psycopg://sbc:db-password-1@127.0.0.1:1/none"


def test_health_ok_without_a_token(client):
    answer = client.get(HEALTH)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "checks": {}}


def test_health_runs_named_checks(client, state):
    writer = DatabaseCdrWriter(state.sessions)
    state.health_checks = {"cdr_writer": writer.healthy, "node": lambda: True}
    assert client.get(HEALTH).json()["checks"] == {"cdr_writer": "ok", "node": "ok"}
    writer.close()


def test_health_degraded_when_a_check_fails_or_raises(client, state):
    def broken() -> bool:
        raise RuntimeError("secret internals: 10.0.0.1")

    state.health_checks = {"node": lambda: False, "relay": broken}
    answer = client.get(HEALTH)
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "degraded",
        "database": "ok",
        "checks": {"node": "failing", "relay": "failing"},
    }
    assert "10.0.0.1" not in answer.text


def test_health_degraded_when_the_database_is_unreachable(state):
    engine = make_engine(UNREACHABLE)
    away = dataclasses.replace(state, sessions=make_sessions(engine))
    with TestClient(create_app(away)) as client:
        answer = client.get(HEALTH)
    assert answer.status_code == 503
    assert answer.json()["database"] == "failing"
    # Neither the URL nor its password nor the driver's error reach the caller.
    for leaked in ("db-password-1", "127.0.0.1", "psycopg", "connection"):
        assert leaked not in answer.text
    engine.dispose()
