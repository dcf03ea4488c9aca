"""Two ``sbc serve`` nodes configured only through their admin APIs.

Each node is a real subprocess with its own data directory and database;
the tests log in with the one-time password it printed and build the
configuration with the API, as an operator would. SIPp plays the PBX
calling node A and the carrier behind node B. Addresses are random
127.x.y.1 (node A, node B, the SIPp ends), so parallel workers never share
a socket; IKE binds UDP 500 and 4500 on the nodes' addresses (root).

    SIPp PBX --> A pbx-udp :5060      A to-node-b :5062 (ipsec) ==IKE/ESP==>
    B to-node-a :5062 (ipsec)         B carrier-udp :5060 --> SIPp carrier
    SIPp PBX-B --> B pbx-b-udp :5064 (a plain path through node B alone)
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from interop.sbc_process import SbcProcess
from peer_tools import require_root, require_tool
from pg_admin import PG_SERVER, pg_admin_connect

from sbc.demo import PCAP_AUDIO, UAC_SCENARIO, Sipp, SippOutcome

T = TypeVar("T")
SCENARIOS = Path(__file__).parents[1] / "interop" / "scenarios"
CARRIER_SCENARIO = SCENARIOS / "carrier_options_and_calls.xml"
DIALLED = "2125550100"
PCMU = "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"
BOTH_LAWS = (
    "m=audio [media_port] RTP/AVP 0 8\n      a=rtpmap:0 PCMU/8000\n"
    "      a=rtpmap:8 PCMA/8000"
)
"""The carrier's answer: SIPp's built-in UAC offers μ-law, the audio
calls A-law; the node keeps what each offer had."""
PBX_MEDIA_PORT, CARRIER_MEDIA_PORT = 6000, 6100
"""SIPp's RTP ports, on the lab's own SIPp address."""
PSK = "e2e only: a key for the admin plane's two-node test"
START_TIMEOUT = 60.0
"""A start on a loaded machine: migrations, first apply, IKE sockets."""
FAST_DPD = {
    "dpd": {"delay": 1, "action": "restart"},
    "retransmission": {"timeout": 0.5, "tries": 2},
}
"""A dead peer is declared in about 4 s instead of a minute and more."""
RESOURCES = ("listeners", "ipsec-profiles", "trunks", "dial-plans")
_database_numbers = itertools.count(1)


class NodeDatabases:
    """Makes the URL of a new, empty database for one node: SQLite (a file)
    or PostgreSQL on 127.0.0.1:5432 (a database of its own, dropped on
    leaving), so two nodes, or two xdist workers, never share one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.created: list[str] = []

    def __enter__(self) -> Callable[[str], str]:
        return self.make

    def __exit__(self, *exc_info: object) -> None:
        if self.created:
            with pg_admin_connect() as connection:
                for name in self.created:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make(self, backend: str) -> str:
        """``backend``: ``sqlite`` or ``postgresql``."""
        number = next(_database_numbers)
        if backend == "sqlite":
            return f"sqlite:///{self.directory / f'node{number}.sqlite'}"
        name = f"sbc_e2e_{os.getpid()}_{number}"
        with pg_admin_connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"{PG_SERVER}/{name}"


def requirements(*, root: bool) -> None:
    """SIPp, and root when IKE binds UDP 500 and 4500, or a skip (which
    tests/conftest.py turns into a failure under SBC_STRICT=1)."""
    if root:
        require_root("IKE binds UDP 500 and 4500")
    require_tool("sipp", "sip-tester")


def lab_addresses() -> tuple[str, str, str]:
    """Node A, node B and the SIPp ends: three distinct 127.x.y.1."""
    second = random.randrange(10, 250)
    a, b, peers = (f"127.{second}.{n}.1" for n in random.sample(range(1, 250), 3))
    return a, b, peers


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def poll(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """The first result of ``check`` other than None within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


class ApiNode:
    """One ``sbc serve`` and a logged-in client of its admin API."""

    def __init__(
        self, name: str, data_dir: Path, database_url: str, address: str
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        # A static listener on the node's own address: without any, an empty
        # node would take the loopback defaults (127.0.0.1:5060), which two
        # nodes, or two workers, cannot share.
        self.arguments = ("--db", database_url, "--node-name", name,
                          "--listen", f"udp:{address}:0")  # fmt: skip
        self.password: str | None = None
        self.process: SbcProcess | None = None
        self.api = httpx.Client(timeout=15)

    def start(self) -> ApiNode:
        process = SbcProcess(
            self.data_dir, *self.arguments, start_timeout=START_TIMEOUT
        )
        process.start()
        self.process = process
        if self.password is None:
            self.password = process.admin_password
        assert process.admin_url is not None and self.password is not None
        self.api.base_url = httpx.URL(f"{process.admin_url}/api/v1")
        login = self.api.post(
            "/auth/login", json={"username": "admin", "password": self.password}
        )
        login.raise_for_status()
        self.api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        return self

    def kill(self) -> int:
        """kill -9: no stop path runs, nothing is flushed."""
        return self.stop(signal.SIGKILL)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        process, self.process = self.process, None
        return -1 if process is None else process.stop(signum)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.api.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.api.post(path, json=body)
        assert answer.status_code == 201, (path, answer.status_code, answer.text)
        created: dict[str, Any] = answer.json()
        return created

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.api.put(path, json=body)
        assert answer.status_code in (200, 201), (path, answer.status_code, answer.text)
        replaced: dict[str, Any] = answer.json()
        return replaced

    def delete(self, path: str) -> None:
        answer = self.api.delete(path)
        assert answer.status_code == 204, (path, answer.status_code, answer.text)

    def objects(self) -> list[dict[str, Any]]:
        """Every stored object this node runs, its own sections included."""
        stored = [item for path in RESOURCES for item in self.get(f"/{path}")]
        sections = [self.api.get(f"/node/{name}") for name in ("ipsec", "media")]
        return stored + [item.json() for item in sections if item.status_code == 200]

    def wait_applied(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every object ``applied`` at its latest revision; fails naming the
        ones that failed."""

        def all_applied() -> list[dict[str, Any]] | None:
            objects = self.objects()
            failed = [(o["kind"], o["name"], o["reason"]) for o in objects
                      if o["state"] == "failed"]  # fmt: skip
            assert not failed, f"{self.name}: {failed}"
            done = all(
                o["state"] == "applied" and o["applied_revision"] == o["revision"]
                for o in objects
            )
            return objects if done else None

        return poll(all_applied, timeout, f"{self.name}: every object applied")

    def sas(self) -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = self.get("/runtime/security-associations")
        return views

    def wait_sas(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float,
                 what: str) -> list[dict[str, Any]]:  # fmt: skip
        def seen() -> list[dict[str, Any]] | None:
            views = self.sas()
            return views if check(views) else None

        return poll(seen, timeout, f"{self.name}: {what}")

    def cdrs(self) -> list[dict[str, Any]]:
        page = self.get("/cdrs", limit=500)
        items: list[dict[str, Any]] = page["items"]
        return items

    def audit(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.get("/audit", limit=500, offset=len(items))
            items += page["items"]
            if len(items) >= page["total"]:
                return items


def one_child_up(views: list[dict[str, Any]]) -> bool:
    """Exactly one established IKE_SA carrying exactly one CHILD_SA."""
    return (
        len(views) == 1 and views[0]["established"] and len(views[0]["children"]) == 1
    )


def spis(views: list[dict[str, Any]]) -> set[str]:
    """Every CHILD_SA SPI of the views, both directions."""
    return {
        spi
        for ike in views
        for sa in ike["children"]
        for spi in (sa["inbound_spi"], sa["outbound_spi"])
    }


class TwoNodeLab:
    """One test's two nodes (each on its own database URL), their addresses
    and the SIPp ports; as a context manager it starts both nodes, builds
    their configuration through the APIs and runs the carrier, and stops
    all of it on leaving."""

    def __init__(self, tmp_path: Path, database_a: str, database_b: str) -> None:
        requirements(root=True)
        self.work = tmp_path / "run"
        self.a, self.b, self.peers = lab_addresses()
        self.pbx_port, self.carrier_port, self.pbx_b_port = (
            free_udp_port(self.peers) for _ in range(3)
        )
        self.profile = {"name": "mesh", "auth": "psk", "psk": PSK,
                        "mode": "transport", **FAST_DPD}  # fmt: skip
        self.node_a = ApiNode("node-a", tmp_path / "a", database_a, self.a)
        self.node_b = ApiNode("node-b", tmp_path / "b", database_b, self.b)
        self._carrier: Sipp | None = None

    def __enter__(self) -> TwoNodeLab:
        try:
            self.node_b.start()
            self.node_a.start()
            self.configure_b(self.node_b)
            self.configure_a(self.node_a)
            self._carrier = self.carrier()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._carrier is not None:
            self._carrier.stop()
        self.node_a.stop()
        self.node_b.stop()

    # Configuration through the API

    def configure_a(self, node: ApiNode) -> None:
        """Node A: the PBX in clear, node B over the protected trunk."""
        a, b, peers = self.a, self.b, self.peers
        node.replace(
            "/node/ipsec",
            {"node": "node-a", "address": a, "identity": "node-a.e2e.example"},
        )
        node.replace("/node/media", media(a))
        node.create("/listeners", listener("pbx-udp", a, 5060))
        node.create("/listeners", {**listener("to-node-b", a, 5062), "ipsec": True})
        node.create("/ipsec-profiles", {**self.profile, "start_action": "start"})
        node.create("/trunks", plain_trunk("pbx", "pbx-udp", peers, self.pbx_port))
        node.create(
            "/trunks",
            {
                **plain_trunk("node-b", "to-node-b", b, 5062),
                "kind": "peer-sbc",
                "ipsec_profile": "mesh",
                "ipsec_identity": "node-b.e2e.example",
            },
        )
        node.create("/dial-plans", dial_plan("from-pbx", "node-b"))
        node.create("/dial-plans", dial_plan("from-node-b", "pbx"))
        self.route(node, "pbx", "from-pbx")
        self.route(node, "node-b", "from-node-b")

    def configure_b(self, node: ApiNode) -> None:
        """Node B: node A over the protected trunk, the carrier in clear
        (OPTIONS keepalive), and a PBX of its own in clear."""
        a, b, peers = self.a, self.b, self.peers
        node.replace(
            "/node/ipsec",
            {"node": "node-b", "address": b, "identity": "node-b.e2e.example"},
        )
        node.replace("/node/media", media(b))
        node.create("/listeners", {**listener("to-node-a", b, 5062), "ipsec": True})
        # An ipsec listener before any protected trunk: it starts the runtime.
        node.wait_applied()
        node.create("/listeners", listener("carrier-udp", b, 5060))
        node.create("/listeners", listener("pbx-b-udp", b, 5064))
        node.create("/ipsec-profiles", {**self.profile, "start_action": "none"})
        node.create(
            "/trunks",
            {
                **plain_trunk("node-a", "to-node-a", a, 5062),
                "kind": "peer-sbc",
                "ipsec_profile": "mesh",
                "ipsec_identity": "node-a.e2e.example",
            },
        )
        node.create("/trunks", carrier_trunk("carrier-udp", peers, self.carrier_port))
        node.create(
            "/trunks", plain_trunk("pbx-b", "pbx-b-udp", peers, self.pbx_b_port)
        )
        node.create("/dial-plans", dial_plan("to-carrier", "carrier"))
        self.route(node, "node-a", "to-carrier")
        self.route(node, "pbx-b", "to-carrier")

    @staticmethod
    def route(node: ApiNode, trunk: str, plan: str | None) -> None:
        """Set (or with None clear) the dial plan of a trunk's calls."""
        document = node.get(f"/trunks/{trunk}")["document"]
        node.replace(f"/trunks/{trunk}", {**document, "dial_plan": plan})

    # SIPp

    def carrier(self, name: str = "carrier") -> Sipp:
        """SIPp answering OPTIONS and calls (μ-law or A-law), echoing RTP."""
        directory = self.work / name
        directory.mkdir(parents=True, exist_ok=True)
        scenario = directory / "carrier.xml"
        scenario.write_text(
            CARRIER_SCENARIO.read_text().replace(PCMU, BOTH_LAWS), encoding="utf-8"
        )
        return Sipp(directory, [
            "sipp", "-sf", str(scenario), "-i", self.peers,
            "-p", str(self.carrier_port), "-mi", self.peers,
            "-mp", str(CARRIER_MEDIA_PORT), "-rtp_echo", "-nostdin",
        ])  # fmt: skip

    def call_with_audio(self, name: str) -> SippOutcome:
        """One call from the PBX to node A playing seven seconds of A-law."""
        directory = self.work / name
        directory.mkdir(parents=True, exist_ok=True)
        scenario = directory / "pbx.xml"
        text = UAC_SCENARIO.replace("@PCAP@", str(PCAP_AUDIO))
        scenario.write_text(text.replace("@PAUSE@", "7500"), encoding="utf-8")
        return Sipp(directory, [
            "sipp", "-sf", str(scenario), "-s", DIALLED, "-i", self.peers,
            "-p", str(self.pbx_port), "-mi", self.peers,
            "-mp", str(PBX_MEDIA_PORT), "-m", "1", "-nostdin", "-timeout", "60s",
            "-timeout_error", "-trace_stat", "-stf", "stat.csv", f"{self.a}:5060",
        ]).wait(90)  # fmt: skip

    def call(self, name: str, *, calls: int = 1, hold_ms: int = 0,
             via_b: bool = False) -> Sipp:  # fmt: skip
        """SIPp calls from the PBX to node A (or from PBX-B to node B)."""
        port, target = (
            (self.pbx_b_port, f"{self.b}:5064") if via_b
            else (self.pbx_port, f"{self.a}:5060")
        )  # fmt: skip
        return Sipp(self.work / name, [
            "sipp", "-sn", "uac", "-i", self.peers, "-p", str(port),
            "-s", DIALLED, "-m", str(calls), "-l", str(calls), "-r", "5",
            "-d", str(hold_ms), "-nostdin", "-timeout", "90s", "-timeout_error",
            "-trace_stat", "-stf", "stat.csv", target,
        ])  # fmt: skip

    def calls_pass(self, name: str, calls: int = 1) -> SippOutcome:
        outcome = self.call(name, calls=calls).wait(120)
        assert (outcome.successful, outcome.failed) == (calls, 0), (name, outcome)
        return outcome


def media(address: str) -> dict[str, Any]:
    """Media anchored on the node's address; its relay ports clear of SIP's."""
    return {"address": address, "port_min": 20000, "port_max": 20999}


def listener(name: str, address: str, port: int) -> dict[str, Any]:
    return {"name": name, "transport": "udp", "address": address, "port": port}


def plain_trunk(name: str, listener: str, host: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "pbx",
        "listeners": [listener],
        "targets": [{"host": host, "port": port}],
        "inbound": {"allow": [f"{host}/32"]},
    }


def carrier_trunk(listener: str, host: str, port: int) -> dict[str, Any]:
    """A carrier in clear, pinged with OPTIONS every second."""
    keepalive = {"interval": 1, "down_threshold": 2, "up_threshold": 1}
    trunk = plain_trunk("carrier", listener, host, port)
    return {**trunk, "kind": "carrier", "keepalive": keepalive}


def dial_plan(name: str, trunk: str) -> dict[str, Any]:
    return {"name": name, "routes": [{"prefix": "", "candidates": [{"trunk": trunk}]}]}
