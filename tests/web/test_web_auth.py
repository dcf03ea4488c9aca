"""Login, sessions, API tokens, users and the login rate limit."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from web.db import Token, User
from web.services import users
from web.services.errors import RateLimited
from web.services.users import LoginLimiter, Role

API = "/api/v1"


def _login(client, username, password):
    return client.post(
        f"{API}/auth/login", json={"username": username, "password": password}
    )


def test_login_returns_working_bearer_token(client, role_headers, passwords):
    answer = _login(client, "viewer", passwords[Role.VIEWER])
    assert answer.status_code == 200
    token = answer.json()["access_token"]
    me = client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "viewer" and me.json()["role"] == "viewer"


def test_login_wrong_password_refused(client, role_headers):
    answer = _login(client, "viewer", "not-the-password")
    assert answer.status_code == 401
    assert "access_token" not in answer.text


def test_login_unknown_user_refused_like_wrong_password(client, role_headers):
    unknown = _login(client, "nobody", "whatever-password")
    wrong = _login(client, "viewer", "whatever-password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_login_rate_limited_after_failures(client, role_headers, state, passwords):
    for _ in range(state.limiter.max_failures):
        assert _login(client, "admin", "guess-guess-guess").status_code == 401
    limited = _login(client, "admin", passwords[Role.ADMIN])
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_login_limiter_window_expires():
    limiter = LoginLimiter(max_failures=2, window=10.0)
    keys = ("user:a",)
    limiter.failed(keys, now=0.0)
    limiter.failed(keys, now=1.0)
    with pytest.raises(RateLimited) as refused:
        limiter.check(keys, now=5.0)
    assert refused.value.retry_after == 6
    limiter.check(keys, now=10.5)  # the first failure has left the window
    limiter.failed(keys, now=10.5)
    with pytest.raises(RateLimited):
        limiter.check(keys, now=10.6)


def test_login_limiter_memory_bounded():
    limiter = LoginLimiter(max_failures=1, window=10.0, max_keys=50)
    for index in range(500):
        limiter.failed((f"user:{index}",), now=float(index))
    assert len(limiter._failures) <= 50


def test_logout_revokes_session(client, role_headers, passwords):
    token = _login(client, "viewer", passwords[Role.VIEWER]).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post(f"{API}/auth/logout", headers=headers).status_code == 204
    assert client.get(f"{API}/auth/me", headers=headers).status_code == 401


def test_api_token_shown_once_stored_hashed(client, role_headers, state):
    headers = role_headers[Role.OPERATOR]
    created = client.post(f"{API}/tokens", json={"label": "ci"}, headers=headers)
    assert created.status_code == 201
    secret = created.json()["token"]
    listed = client.get(f"{API}/tokens", headers=headers)
    assert secret not in listed.text
    with state.sessions() as session:
        row = session.get(Token, created.json()["id"])
        assert row is not None
        assert row.token_hash == hashlib.sha256(secret.encode()).digest()
    token_headers = {"Authorization": f"Bearer {secret}"}
    assert (
        client.get(f"{API}/auth/me", headers=token_headers).json()["role"] == "operator"
    )
    gone = client.delete(f"{API}/tokens/{created.json()['id']}", headers=headers)
    assert gone.status_code == 204
    assert client.get(f"{API}/auth/me", headers=token_headers).status_code == 401


def test_api_token_of_another_user_not_deletable(client, role_headers):
    created = client.post(f"{API}/tokens", json={}, headers=role_headers[Role.ADMIN])
    other = client.delete(
        f"{API}/tokens/{created.json()['id']}", headers=role_headers[Role.VIEWER]
    )
    assert other.status_code == 404


def test_user_crud_admin(client, role_headers, state):
    admin = role_headers[Role.ADMIN]
    body = {"username": "alice", "password": "alice-password-1", "role": "viewer"}
    created = client.post(f"{API}/users", json=body, headers=admin)
    assert created.status_code == 201
    assert created.json()["password_set"] is True
    assert "alice-password-1" not in created.text
    with state.sessions() as session:
        row = session.scalars(select(User).where(User.username == "alice")).one()
        assert row.password_hash.startswith("$argon2id$")
    patched = client.patch(
        f"{API}/users/alice", json={"role": "operator"}, headers=admin
    )
    assert patched.json()["role"] == "operator"
    assert _login(client, "alice", "alice-password-1").status_code == 200
    client.patch(
        f"{API}/users/alice", json={"password": "alice-password-2"}, headers=admin
    )
    assert _login(client, "alice", "alice-password-1").status_code == 401
    assert _login(client, "alice", "alice-password-2").status_code == 200
    assert client.delete(f"{API}/users/alice", headers=admin).status_code == 204
    assert client.get(f"{API}/users/alice", headers=admin).status_code == 404


def test_user_short_password_422(client, role_headers):
    body = {"username": "bob", "password": "short", "role": "viewer"}
    answer = client.post(f"{API}/users", json=body, headers=role_headers[Role.ADMIN])
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "password"]
    assert "short" not in answer.text


def test_user_last_admin_kept(client, role_headers):
    admin = role_headers[Role.ADMIN]
    assert client.delete(f"{API}/users/admin", headers=admin).status_code == 409
    demote = client.patch(f"{API}/users/admin", json={"role": "viewer"}, headers=admin)
    assert demote.status_code == 409


def test_user_password_change_ends_sessions(client, role_headers, passwords):
    token = _login(client, "viewer", passwords[Role.VIEWER]).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    client.patch(
        f"{API}/users/viewer",
        json={"password": "a-brand-new-password"},
        headers=role_headers[Role.ADMIN],
    )
    assert client.get(f"{API}/auth/me", headers=headers).status_code == 401


def test_session_token_expiry(state, role_headers):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    with state.sessions.begin() as session:
        user = users.get_user(session, "viewer")
        issued = users.issue_token(
            session, user, kind="session", now=now, expires_at=now + timedelta(hours=1)
        )
    with state.sessions() as session:
        assert users.resolve_token(session, issued.secret, now) is not None
        later = now + timedelta(hours=1, seconds=1)
        assert users.resolve_token(session, issued.secret, later) is None


def test_login_audited(client, role_headers, passwords):
    _login(client, "viewer", passwords[Role.VIEWER])
    page = client.get(
        f"{API}/audit", params={"action": "login"}, headers=role_headers[Role.ADMIN]
    ).json()
    assert [item["actor"] for item in page["items"]] == ["viewer"]


def test_login_purges_expired_sessions(client, state, role_headers, passwords):
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(days=2)
    with state.sessions.begin() as session:
        user = users.get_user(session, "viewer")
        old = users.issue_token(
            session, user, kind="session", now=past, expires_at=past
        )
        kept = users.issue_token(session, user, kind="api", now=past)
    assert _login(client, "viewer", passwords[Role.VIEWER]).status_code == 200
    with state.sessions() as session:
        tokens = session.scalars(select(Token)).all()
    ids = [t.id for t in tokens]
    assert old.token.id not in ids
    assert kept.token.id in ids
