"""A new user's first trunk, as docs/admin-api.md walks through it.

``sbc serve`` on an empty data directory (SQLite there by default, or a
PostgreSQL URL) says where its API is and prints the one-time admin
password; the user logs in, creates a listener, a carrier trunk with
OPTIONS keepalive toward a SIPp UAS, a dial plan and a PBX trunk; the
carrier's trunk view has no keepalive verdict until the UAS runs, then
reads reachable; a SIPp call passes and its record is in the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_lab import (
    CARRIER_SCENARIO,
    DIALLED,
    START_TIMEOUT,
    NodeDatabases,
    free_udp_port,
    lab_addresses,
    poll,
    requirements,
)
from interop.sbc_process import SbcProcess

from sbc.demo import Sipp

pytestmark = [pytest.mark.timeout(200), pytest.mark.peer("sipp")]
KEEPALIVE = {"interval": 1, "down_threshold": 2, "up_threshold": 1}


@pytest.fixture
def node_database(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    with NodeDatabases(tmp_path) as make:
        yield make


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_new_user_creates_a_trunk_sees_it_up_and_places_a_call(
    tmp_path: Path, node_database, backend: str
) -> None:
    requirements(root=False)
    sbc_address, _, peers = lab_addresses()
    carrier_port, pbx_port = free_udp_port(peers), free_udp_port(peers)
    data_dir = tmp_path / "data"
    # SQLite: the default, in the data directory. A static listener on the
    # test's own address keeps the loopback defaults (127.0.0.1:5060), which
    # parallel workers cannot share, out of the way.
    database = () if backend == "sqlite" else ("--db", node_database(backend))
    arguments = (*database, "--listen", f"udp:{sbc_address}:0")
    process = SbcProcess(data_dir, *arguments, start_timeout=START_TIMEOUT)
    carrier = None
    try:
        process.start()
        told = "".join(process.lines)
        api = httpx.Client(base_url=f"{process.admin_url}/api/v1", timeout=15)
        login = api.post(
            "/auth/login",
            json={"username": "admin", "password": process.admin_password},
        )
        api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        me = api.get("/auth/me").json()

        created = [
            api.post("/listeners", json={"name": "lan", "transport": "udp",
                                         "address": sbc_address, "port": 5060}),
            api.post("/trunks", json={"name": "carrier", "kind": "carrier",
                                      "listeners": ["lan"],
                                      "targets": [{"host": peers,
                                                   "port": carrier_port}],
                                      "keepalive": KEEPALIVE}),
            api.post("/dial-plans", json={"name": "out", "routes": [
                {"prefix": "", "candidates": [{"trunk": "carrier"}]}]}),
            api.post("/trunks", json={"name": "pbx", "kind": "pbx",
                                      "listeners": ["lan"],
                                      "targets": [{"host": peers, "port": pbx_port}],
                                      "inbound": {"allow": [peers]},
                                      "dial_plan": "out"}),
        ]  # fmt: skip
        applied = poll(lambda: _state(api, "/trunks/carrier", "applied"), 15,
                       "carrier applied")  # fmt: skip
        unknown = api.get("/runtime/trunks/carrier").json()
        carrier = Sipp(tmp_path / "carrier", [
            "sipp", "-sf", str(CARRIER_SCENARIO), "-i", peers,
            "-p", str(carrier_port), "-nostdin",
        ])  # fmt: skip
        answered = poll(lambda: _reachable(api, "carrier"), 20, "carrier reachable")
        call = Sipp(tmp_path / "pbx", [
            "sipp", "-sn", "uac", "-i", peers, "-p", str(pbx_port), "-s", DIALLED,
            "-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error",
            "-trace_stat", "-stf", "stat.csv", f"{sbc_address}:5060",
        ]).wait(90)  # fmt: skip
        records = poll(lambda: api.get("/cdrs").json()["items"] or None, 15,
                       "the call's record")  # fmt: skip
        returncode = process.stop()
    finally:
        if carrier is not None:
            carrier.stop()
        process.stop()

    assert re.search(r"admin API on http://127\.0\.0\.1:\d+/api/v1/docs", told)
    assert "one-time password (shown once, change it): " in told
    assert process.admin_password is not None
    assert process.admin_password not in process.log_text()
    assert login.status_code == 200 and me["role"] == "admin"
    assert [answer.status_code for answer in created] == [201, 201, 201, 201]
    assert applied["applied_revision"] == 1
    # Over UDP an unanswered ping is known only at its timeout (Timer F, 32 s):
    # until the first verdict the trunk counts as reachable, with no verdict.
    assert (unknown["state"], unknown["reachable"]) == ("up", None)
    assert (answered["state"], answered["reachable"], answered["reason"]) == (
        "up", True, ""
    )  # fmt: skip
    assert (call.successful, call.failed) == (1, 0)
    assert [(r["a_trunk"], r["b_trunk"], r["disposition"]) for r in records] == [
        ("pbx", "carrier", "answered")
    ]
    assert returncode == 0


def _state(api: httpx.Client, path: str, state: str) -> dict[str, Any] | None:
    found: dict[str, Any] = api.get(path).json()
    return found if found["state"] == state else None


def _reachable(api: httpx.Client, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] = api.get(f"/runtime/trunks/{name}").json()
    return found if found["reachable"] else None
