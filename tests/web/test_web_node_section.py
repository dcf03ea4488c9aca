"""The node's own sections over the API (SQLite and PostgreSQL).

A protected trunk needs ``ipsec``, media anchoring needs ``media``; each is
one object per node at /api/v1/node/<section>, stored under the node's
name, audited, left alone by ``config apply``, and joined by the reconciler
to the rest (replacing a ``--config`` file's).
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

import pytest

from sbc.config import Config
from sbc.config.ipsec import IpsecNode
from web.app import AdminState
from web.services import config
from web.services.users import Role

pytestmark = pytest.mark.timeout(60)
SECTION = {"node": "node-a", "address": "192.0.2.1", "identity": "a.example"}
PROTECTED = [
    ("listeners", {"name": "sec", "transport": "udp", "address": "192.0.2.1",
                   "ipsec": True}),
    ("ipsec-profiles", {"name": "mesh", "psk": "a long enough key"}),
    ("trunks", {"name": "peer", "kind": "peer-sbc", "listeners": ["sec"],
                "targets": [{"host": "192.0.2.2"}], "ipsec_profile": "mesh"}),
]  # fmt: skip


def test_put_get_delete_and_audit(client, role_headers) -> None:
    admin, viewer = role_headers[Role.ADMIN], role_headers[Role.VIEWER]

    absent = client.get("/api/v1/node/ipsec", headers=viewer)
    created = client.put("/api/v1/node/ipsec", json=SECTION, headers=admin)
    changed = {**SECTION, "ike_port": 1500}
    replaced = client.put("/api/v1/node/ipsec", json=changed, headers=admin)
    read = client.get("/api/v1/node/ipsec", headers=viewer)
    by_viewer = client.put("/api/v1/node/ipsec", json=SECTION, headers=viewer)
    wildcard = {**SECTION, "address": "0.0.0.0"}
    refused = client.put("/api/v1/node/ipsec", json=wildcard, headers=admin)
    deleted = client.delete("/api/v1/node/ipsec", headers=admin)
    gone = client.get("/api/v1/node/ipsec", headers=viewer)
    audit = client.get("/api/v1/audit", params={"kind": "ipsec_node"}, headers=admin)

    assert [absent.status_code, created.status_code, replaced.status_code] == [
        404, 201, 200
    ]  # fmt: skip
    body = read.json()
    assert (body["kind"], body["name"], body["revision"], body["state"]) == (
        "ipsec_node", "ipsec", 2, "pending"
    )  # fmt: skip
    assert body["document"]["ike_port"] == 1500
    assert by_viewer.status_code == 403
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"][0] == "body"
    assert [deleted.status_code, gone.status_code] == [204, 404]
    assert [entry["action"] for entry in audit.json()["items"]] == [
        "delete", "update", "create"
    ]  # fmt: skip


def test_assembled_with_the_stored_section_over_the_file_s(
    state: AdminState, client, role_headers
) -> None:
    admin = role_headers[Role.ADMIN]
    answers = [client.post(f"/api/v1/{path}", json=body, headers=admin)
               for path, body in PROTECTED]  # fmt: skip
    file_section = IpsecNode(node="from-file", address=ip_address("192.0.2.9"))
    without = _assembled(state, Config(ipsec=file_section))
    client.put("/api/v1/node/ipsec", json=SECTION, headers=admin)
    stored = _assembled(state, Config(ipsec=file_section))
    with state.sessions.begin() as session:
        counts = config.apply_config(
            session, state.box, stored.model_copy(update={"ipsec": None}),
            actor="cli", now=datetime.now(UTC),
        )  # fmt: skip
    kept = client.get("/api/v1/node/ipsec", headers=admin)

    assert [answer.status_code for answer in answers] == [201, 201, 201]
    assert without.ipsec == file_section
    assert stored.ipsec is not None and stored.ipsec.node == "node-a"
    assert stored.ipsec.address == ip_address("192.0.2.1")
    assert counts["deleted"] == 0 and kept.status_code == 200


def test_sections_of_other_nodes_are_not_this_node_s(state: AdminState) -> None:
    now = datetime.now(UTC)
    with state.sessions.begin() as session:
        for node in ("node-a", "node-b"):
            data: dict[str, Any] = {**SECTION, "node": node}
            config.put_node_section(
                session, state.box, actor="test", kind="ipsec_node", node=node,
                data=data, now=now,
            )  # fmt: skip
    with state.sessions.begin() as session:
        mine = config.node_objects(session, state.box, "node-b")

    assert [(item.kind, item.node) for item in mine] == [("ipsec_node", "node-b")]
    assert config.assemble(mine).ipsec == IpsecNode.model_validate(
        {**SECTION, "node": "node-b"}
    )


def _assembled(state: AdminState, base: Config) -> Config:
    with state.sessions.begin() as session:
        return config.assemble(config.node_objects(session, state.box, ""), base)


def test_media_section_stored_and_assembled(
    state: AdminState, client, role_headers
) -> None:
    admin = role_headers[Role.ADMIN]
    media = {"address": "192.0.2.1", "port_min": 30000, "port_max": 30999}

    created = client.put("/api/v1/node/media", json=media, headers=admin)
    empty_range = {**media, "port_max": 30000}
    refused = client.put("/api/v1/node/media", json=empty_range, headers=admin)
    assembled = _assembled(state, Config())
    deleted = client.delete("/api/v1/node/media", headers=admin)

    assert created.status_code == 201
    assert (created.json()["kind"], created.json()["name"]) == ("media", "media")
    assert refused.status_code == 422
    assert str(assembled.media.address) == "192.0.2.1"
    assert (assembled.media.port_min, assembled.media.port_max) == (30000, 30999)
    assert deleted.status_code == 204
    assert _assembled(state, Config()).media.address is None
