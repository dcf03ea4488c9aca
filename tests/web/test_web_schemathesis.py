"""Schemathesis against the app's own OpenAPI document, as an admin.

Every operation gets MAX_EXAMPLES generated requests (valid and invalid);
the checks are schemathesis' defaults: no 5xx, and status codes, content
types, headers and bodies as documented. Left out: "schema-valid data is
accepted". A configuration object passes its model and then the checks over
the whole configuration (a trunk's listener must exist, a name must not be
empty), which no JSON Schema can state; such a body gets 422, by design. Each request carries a fresh admin
API token, so a generated logout or token deletion cannot disarm the next.
No node runs here, so the live views and actions are only checked for
answering their documented 503.
Runs on SQLite and PostgreSQL like every test here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from sqlalchemy import select

from web.app import AdminState, create_app
from web.db import User
from web.services import users

MAX_EXAMPLES = 20
OPENAPI = "/api/v1/openapi.json"


def _operations(state: AdminState) -> dict[str, schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_asgi(OPENAPI, create_app(state))
    found = (result.ok() for result in schema.get_all_operations())
    return {operation.label: operation for operation in found}


# The document does not depend on the database: list the operations once.
LABELS = sorted(_operations(AdminState(None, None)))  # type: ignore[arg-type]


def _fresh_admin_token(state: AdminState) -> str:
    with state.sessions.begin() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        issued = users.issue_token(session, admin, kind="api", now=datetime.now(UTC))
        return issued.secret


def _no_node(response: schemathesis.Response) -> bool:
    # No node runs in these tests: the live views and actions answer 503,
    # as documented. Any other 5xx still fails.
    if response.status_code != 503:
        return False
    return bool(response.json() == {"detail": "no node runs in this process"})


@pytest.mark.parametrize("label", LABELS)
def test_operation_answers_as_documented(state, role_headers, label):
    operation = _operations(state)[label]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        headers = {"Authorization": f"Bearer {_fresh_admin_token(state)}"}
        response = case.call(headers=headers)
        excluded = [positive_data_acceptance]
        if _no_node(response):
            excluded.append(not_a_server_error)
        case.validate_response(response, excluded_checks=excluded)

    check()


def test_every_operation_is_walked():
    assert len(LABELS) >= 40
