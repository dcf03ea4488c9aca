"""Walk every route of the app with each role: allowed or refused as documented.

The expected policy is written here independently of the app: reads need
viewer, configuration and user writes need admin, a caller's own tokens,
logout and ``me`` need only a login; runtime actions need operator.
"""

from __future__ import annotations

import re

import pytest

from web.app import create_app
from web.services.users import Role

OPEN = {("POST", "/api/v1/auth/login"), ("GET", "/api/v1/health")}
ANY_LOGIN = {
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{token_id}"),
}
ADMIN_READS = {("GET", "/api/v1/users"), ("GET", "/api/v1/users/{username}")}
OPERATOR_ACTIONS = {
    ("POST", "/api/v1/runtime/calls/{call_id}/hangup"),
    ("POST", "/api/v1/runtime/trunks/{name}/{action}"),
    ("POST", "/api/v1/runtime/tunnels/{name}/{action}"),
}


def _expected(method: str, path: str) -> Role:
    if (method, path) in ANY_LOGIN:
        return Role.VIEWER
    if (method, path) in OPERATOR_ACTIONS:
        return Role.OPERATOR
    if (method, path) in ADMIN_READS or method != "GET":
        return Role.ADMIN
    return Role.VIEWER


def _routes(state):
    # The OpenAPI document lists every route (the app hides none from it).
    document = create_app(state).openapi()
    for path, item in document["paths"].items():
        for method in item:
            yield method.upper(), path


def _concrete(path: str) -> str:
    path = path.replace("{action}", "drain" if "/trunks/" in path else "rekey")
    return re.sub(r"\{token_id\}", "999999", re.sub(r"\{[a-z_]+\}", "nothing", path))


def test_every_route_enforces_its_role(client, role_headers, state):
    rank = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
    walked = 0
    for method, path in _routes(state):
        if (method, path) in OPEN:
            continue
        url = _concrete(path)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        anonymous = client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, path)
        needed = _expected(method, path)
        # Logout last: it would revoke the token the next requests use.
        for role in Role:
            if (method, path) == ("POST", "/api/v1/auth/logout"):
                continue
            answer = client.request(method, url, json=body, headers=role_headers[role])
            if rank[role] >= rank[needed]:
                assert answer.status_code not in (401, 403), (method, path, role)
            else:
                assert answer.status_code == 403, (method, path, role)
        walked += 1
    assert walked >= 20


@pytest.mark.parametrize("role", list(Role))
def test_logout_allowed_for_role(client, role_headers, role):
    answer = client.post("/api/v1/auth/logout", headers=role_headers[role])
    assert answer.status_code == 204


def test_openapi_document_clean(state):
    document = create_app(state).openapi()
    operation_ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))
    # No response schema may have a field able to carry a secret.
    for name, schema in document["components"]["schemas"].items():
        if name.endswith("Public") or name in ("SessionToken", "AuditPage"):
            assert "password" not in schema.get("properties", {}), name


def test_openapi_bodies_reference_resource_models(state):
    paths = create_app(state).openapi()["paths"]
    for segment, model in (("trunks", "Trunk"), ("mesh-peers", "MeshPeer")):
        ref = f"#/components/schemas/{model}"
        post = paths[f"/api/v1/{segment}"]["post"]["requestBody"]
        put = paths[f"/api/v1/{segment}/{{name}}"]["put"]["requestBody"]
        assert post["content"]["application/json"]["schema"]["$ref"] == ref
        assert put["content"]["application/json"]["schema"]["$ref"] == ref
