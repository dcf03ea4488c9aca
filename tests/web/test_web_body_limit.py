"""Request bodies over the ceiling are refused before they are read.

FastAPI parses a body before the token is checked, and the API shares the
node's event loop; so an oversized body gets 413 (a chunked one 411) from
anyone, with or without a token, and an ordinary body is served as before.
"""

from __future__ import annotations

from collections.abc import Iterator

from web.body_limit import MAX_BODY_BYTES
from web.services.users import Role

LISTENERS = "/api/v1/listeners"


def test_oversized_body_gets_413_with_or_without_a_token(client, role_headers):
    body = b'{"name": "' + b"a" * MAX_BODY_BYTES + b'"}'
    json = {"Content-Type": "application/json"}

    anonymous = client.post(LISTENERS, content=body, headers=json)
    admin = client.post(
        LISTENERS, content=body, headers={**json, **role_headers[Role.ADMIN]}
    )

    assert (anonymous.status_code, admin.status_code) == (413, 413)
    assert "at most" in admin.json()["detail"]


def test_chunked_body_gets_411_and_a_normal_body_is_served(client, role_headers):
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "lan", "transport": "udp", '
        yield b'"address": "127.0.0.1", "port": 0}'

    headers = {"Content-Type": "application/json", **role_headers[Role.ADMIN]}
    chunked = client.post(LISTENERS, content=chunks(), headers=headers)
    normal = client.post(LISTENERS, content=b"".join(chunks()), headers=headers)

    assert chunked.status_code == 411
    assert normal.status_code == 201 and normal.json()["name"] == "lan"
