"""``sbc serve`` end to end: one process, its admin API, the reconciler, SSE.

The appliance runs as a real subprocess on ephemeral ports; the test talks
to it only as an operator would: the one-time password from stderr, the
REST API over HTTP, the event stream, SIGTERM.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from interop.sbc_process import SbcProcess

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(120)


class EventStream:
    """Reads ``GET /api/v1/events`` on a thread; events land in a queue."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.status: int | None = None
        self.ended = threading.Event()
        self.opened = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(url, token), daemon=True
        )
        self._thread.start()

    def _read(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream(
                "GET", f"{url}/api/v1/events", headers=headers, timeout=60
            ) as answer:
                self.status = answer.status_code
                self.opened.set()
                name = None
                for line in answer.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name is not None:
                        self.events.put((name, json.loads(line[6:])))
                        name = None
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def next(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next event called ``name`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} event within {timeout} s")
            try:
                seen, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if seen == name:
                return data


def poll(check, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_serve_runs_the_api_applies_changes_streams_events_and_stops(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    arguments = ("--listen", "udp:127.0.0.1:0", "--db", database_url)
    with SbcProcess(data_dir, *arguments) as sbc:
        assert sbc.admin_url is not None and sbc.admin_password is not None
        api = httpx.Client(base_url=f"{sbc.admin_url}/api/v1", timeout=10)
        login = api.post(
            "/auth/login", json={"username": "admin", "password": sbc.admin_password}
        )
        token = login.json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        stream = EventStream(sbc.admin_url, token)
        assert stream.opened.wait(10) and stream.status == 200

        created = [
            api.post("/listeners", json={"name": "lo", "transport": "udp",
                                         "address": HOST, "port": 0}),
            api.post("/trunks", json={"name": "carrier", "kind": "carrier",
                                      "listeners": ["lo"],
                                      "targets": [{"host": HOST, "port": 5999}]}),
        ]  # fmt: skip
        applied = poll(lambda: _applied(api, "/trunks/carrier"))
        stream.next("ConfigurationApplied")
        trunks = api.get("/runtime/trunks").json()
        disabled = api.post("/runtime/trunks/carrier/disable")
        change = stream.next("TrunkStateChanged")
        audit = api.get("/audit", params={"action": "disable"}).json()
        refusals = [
            api.post("/runtime/calls/no-such-call/hangup").status_code,
            api.post("/runtime/tunnels/carrier/rekey").status_code,
        ]
        associations = api.get("/runtime/security-associations").json()
        sbc.wait_for("listening on udp:127.0.0.1", 5)

        returncode = sbc.stop()
        stream.ended.wait(10)

    assert [answer.status_code for answer in created] == [201, 201]
    assert (applied["state"], applied["applied_revision"]) == ("applied", 1)
    assert [(t["name"], t["state"], t["mode"]) for t in trunks] == [
        ("carrier", "up", "enabled")
    ]
    assert disabled.status_code == 200 and disabled.json()["state"] == "disabled"
    assert change == {"trunk": "carrier", "state": "disabled",
                      "reason": "disabled by an operator"}  # fmt: skip
    assert [(e["actor"], e["kind"], e["name"]) for e in audit["items"]] == [
        ("admin", "trunk", "carrier")
    ]
    assert refusals == [404, 409]  # no such call; no IPsec runtime runs
    assert associations == []
    assert returncode == 0
    assert stream.ended.is_set()
    log = sbc.log_text()
    assert "stopped" in log and sbc.admin_password not in log
    assert len(sbc.listening) == 2  # the static listener, then the stored one


def test_serve_second_start_prints_no_password_and_runs_stored_config(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "node.yaml"
    config.write_text(
        "listeners:\n"
        "  - {name: lo, transport: udp, address: 127.0.0.1, port: 0}\n"
        "trunks:\n"
        "  - {name: carrier, kind: carrier, listeners: [lo],\n"
        "     targets: [{host: 127.0.0.1, port: 5999}]}\n"
    )
    with SbcProcess(data_dir, "--config", str(config)) as first:
        password = first.admin_password
    with SbcProcess(data_dir) as second:
        api = httpx.Client(base_url=f"{second.admin_url}/api/v1", timeout=10)
        token = api.post(
            "/auth/login", json={"username": "admin", "password": password}
        ).json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        stored = api.get("/trunks/carrier").json()
        running = api.get("/runtime/trunks/carrier").json()

    assert password is not None and second.admin_password is None
    assert [spec.transport for spec in second.listening] == ["UDP"]
    assert (stored["state"], stored["applied_revision"]) == ("applied", 1)
    assert running["state"] == "up"


def test_serve_admin_listen_off_and_busy_admin_port(tmp_path: Path) -> None:
    with SbcProcess(
        tmp_path / "off", "--listen", "udp:127.0.0.1:0", "--admin-listen", "off"
    ) as sbc:
        url = sbc.admin_url
    assert url is None and "admin API off" in sbc.log_text()

    with SbcProcess(tmp_path / "first", "--listen", "udp:127.0.0.1:0") as first:
        assert first.admin_url is not None
        taken = first.admin_url.removeprefix("http://")
        busy = SbcProcess(
            tmp_path / "second", "--listen", "udp:127.0.0.1:0", "--admin-listen", taken
        )
        with pytest.raises(RuntimeError, match="cannot listen for the admin API"):
            busy.start()
        assert busy.stop() == 1


def _applied(api: httpx.Client, path: str) -> dict[str, Any] | None:
    answer = api.get(path).json()
    return answer if answer["state"] == "applied" else None


def test_loopback_defaults_only_when_nothing_else_would_listen(state, tmp_path):
    from sbc.io.settings import DEFAULT_LISTEN, ListenSpec, TransportSettings
    from sbc.node import NodeSettings
    from sbc.serve import ServeOptions, with_default_listeners
    from web.services import config

    bare = ServeOptions(tmp_path, NodeSettings(TransportSettings(listen=())))
    given = ServeOptions(
        tmp_path, NodeSettings(TransportSettings(listen=(ListenSpec("UDP", HOST, 0),)))
    )
    before = with_default_listeners(bare, state).node.transport.listen
    with state.sessions.begin() as session:
        config.create_object(
            session, state.box, actor="test", kind="listener",
            data={"name": "lo", "transport": "udp", "address": HOST, "port": 0},
            now=datetime.now(UTC),
        )  # fmt: skip
    after = with_default_listeners(bare, state).node.transport.listen

    assert before == DEFAULT_LISTEN
    assert after == ()
    assert with_default_listeners(given, state) is given
