"""The TUN gateway between two network namespaces, with real ping and iperf3.

Each namespace runs ``python -m ipsec.dataplane.gateway`` as a subprocess.
LAN hosts are /32 addresses on each namespace's lo (10.1.0.1 behind A,
10.2.0.1 behind B); the gateways talk ESP over the veth pair 192.0.2.0/24.
A capture on the veth is read back by tshark, an independent dissector, to
show that only ESP crossed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_root, require_tool
from netns import Lab, Namespace, stop, veth_lab

LAN_A, LAN_B = "10.1.0.1", "10.2.0.1"
SUBNET_A, SUBNET_B = "10.1.0.0/24", "10.2.0.0/24"
# Routed into A's TUN but covered by no policy: must never leave in clear.
UNPROTECTED = "10.3.0.0/24"
SPI_A_TO_B, SPI_B_TO_A = 0x0A0B0001, 0x0B0A0001


@dataclass
class Gateways:
    lab: Lab
    keys: dict[str, str]
    stats_a: Path
    stats_b: Path
    processes: list[subprocess.Popen[bytes]]

    def stats(self, which: str) -> dict:
        process = self.processes[0 if which == "a" else 1]
        stop(process)
        return json.loads((self.stats_a if which == "a" else self.stats_b).read_text())


def gateway_config(
    side: str, lab: Lab, keys: dict[str, str], transport: str, encryption: str
) -> dict:
    local, peer = (lab.a, lab.b) if side == "a" else (lab.b, lab.a)
    local_subnet, remote_subnet = (
        (SUBNET_A, SUBNET_B) if side == "a" else (SUBNET_B, SUBNET_A)
    )
    outbound, inbound = (
        (SPI_A_TO_B, SPI_B_TO_A) if side == "a" else (SPI_B_TO_A, SPI_A_TO_B)
    )
    routes = [remote_subnet] + ([UNPROTECTED] if side == "a" else [])
    return {
        "tun": {
            "name": f"gw{side}{os.getpid() % 100000}",
            "mtu": 1400,
            "routes": routes,
            "route_source": LAN_A if side == "a" else LAN_B,
        },
        "transport": transport,
        "local": local.address,
        "peer": peer.address,
        "children": [
            {
                "local_subnet": local_subnet,
                "remote_subnet": remote_subnet,
                "encryption": encryption,
                "outbound": {"spi": outbound, "encryption_key": keys[f"{outbound:x}"]},
                "inbound": {"spi": inbound, "encryption_key": keys[f"{inbound:x}"]},
            }
        ],
    }


def start_gateway(
    namespace: Namespace, config: dict, directory: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    path = directory / f"{namespace.name}.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    stats = directory / f"{namespace.name}-stats.json"
    process = namespace.spawn(
        [sys.executable, "-m", "ipsec.dataplane.gateway", "--config", str(path),
         "--stats", str(stats)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    line = process.stdout.readline() if process.stdout else b""
    if line.strip() != b"ready":
        stop(process)
        error = process.stderr.read().decode() if process.stderr else ""
        pytest.fail(f"gateway in {namespace.name} did not start: {error}")
    return process, stats


@pytest.fixture(params=["udp", "raw"])
def gateways(request, tmp_path) -> Iterator[Gateways]:
    require_root("network namespaces and TUN devices")
    transport = request.param
    encryption = getattr(request, "encryption", "AES_GCM_16_128")
    keys = {f"{spi:x}": os.urandom(20).hex() for spi in (SPI_A_TO_B, SPI_B_TO_A)}
    with veth_lab() as lab:
        lab.a.add_loopback_address(LAN_A)
        lab.b.add_loopback_address(LAN_B)
        process_a, stats_a = start_gateway(
            lab.a, gateway_config("a", lab, keys, transport, encryption), tmp_path
        )
        process_b, stats_b = start_gateway(
            lab.b, gateway_config("b", lab, keys, transport, encryption), tmp_path
        )
        yield Gateways(lab, keys, stats_a, stats_b, [process_a, process_b])


class Capture:
    """tcpdump on a veth end, bounded in packets and time, read by tshark."""

    def __init__(self, namespace: Namespace, path: Path) -> None:
        self.path = path
        self.process = namespace.spawn(
            ["tcpdump", "-i", namespace.veth, "-n", "-U", "--immediate-mode", "-c", "20000",
             "-w", str(path)],
            stderr=subprocess.PIPE,
        )  # fmt: skip
        # tcpdump says "listening on" once the capture is armed.
        line = self.process.stderr.readline() if self.process.stderr else b""
        assert b"listening" in line, line

    def protocols(self, tshark: str, keys: dict[str, str] | None = None) -> list[str]:
        """Each captured frame's protocol stack; ESP decrypted if keys are given."""
        stop(self.process)
        options = []
        if keys:
            options = [
                "-o",
                "esp.enable_encryption_decode:TRUE",
                "-o",
                esp_sa_uat(keys),
            ]
        result = subprocess.run(
            [tshark, "-r", str(self.path), *options, "-T", "fields", "-e", "frame.protocols"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return result.stdout.split()


def esp_sa_uat(keys: dict[str, str]) -> str:
    """Wireshark's esp_sa table for both SAs (any addresses, by SPI)."""
    rows = [
        f'"IPv4","*","*","0x{spi}","AES-GCM with 16 octet ICV [RFC4106]","0x{key}","NULL",""'
        for spi, key in keys.items()
    ]
    return "uat:esp_sa:" + "\n".join(rows)


def ping(
    namespace: Namespace, destination: str, count: int = 5
) -> subprocess.CompletedProcess[str]:
    return namespace.exec(
        require_tool("ping", "iputils-ping"), "-c", str(count), "-i", "0.05", "-W", "2", "-n", destination,
        check=False,
    )  # fmt: skip


def iperf3_udp(
    client: Namespace, server: Namespace, server_address: str, reverse: bool
) -> dict:
    iperf3 = require_tool("iperf3", "iperf3")
    port = str(5201 + os.getpid() % 1000)
    daemon = server.spawn(
        [iperf3, "-s", "-1", "-B", server_address, "-p", port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        argv = [iperf3, "-c", server_address, "-p", port, "-u", "-b", "20M",
                "-l", "1200", "-t", "2", "--json", "--connect-timeout", "3000"]  # fmt: skip
        if reverse:
            argv.append("-R")
        for _ in range(20):
            result = client.exec(*argv, check=False)
            if result.returncode == 0:
                return json.loads(result.stdout)
            if "Connection refused" not in result.stdout + result.stderr:
                pytest.fail(f"iperf3 failed: {result.stdout}{result.stderr}")
            time.sleep(0.1)
        pytest.fail("iperf3 server never came up")
    finally:
        stop(daemon)
    return {}


def test_tun_gateway_ping_both_ways_only_esp_on_the_wire(gateways, tmp_path) -> None:
    tshark = require_tool("tshark", "tshark")
    lab = gateways.lab
    capture = Capture(lab.a, tmp_path / "veth.pcap")

    forward = ping(lab.a, LAN_B)
    backward = ping(lab.b, LAN_A)

    assert forward.returncode == 0, forward.stdout + forward.stderr
    assert backward.returncode == 0, backward.stdout + backward.stderr
    assert " 0% packet loss" in forward.stdout and " 0% packet loss" in backward.stdout
    protocols = [p for p in capture.protocols(tshark) if not p.endswith(":arp")]
    # 5 echo requests and 5 replies each way, all as ESP; nothing else.
    assert len(protocols) >= 20
    assert all(p.endswith(":esp") for p in protocols), set(protocols)
    # Decrypted by tshark with the SA keys, the same frames are the pings.
    decrypted = capture.protocols(tshark, gateways.keys)
    assert sum(":esp:ip:icmp" in p for p in decrypted) == 20, set(decrypted)


def test_tun_gateway_iperf3_udp_both_ways_no_clear_traffic(gateways, tmp_path) -> None:
    tshark = require_tool("tshark", "tshark")
    lab = gateways.lab
    capture = Capture(lab.a, tmp_path / "veth.pcap")

    forward = iperf3_udp(lab.a, lab.b, LAN_B, reverse=False)
    backward = iperf3_udp(lab.a, lab.b, LAN_B, reverse=True)

    for report in (forward, backward):
        summary = report["end"]["sum"]
        assert summary["packets"] > 1000
        assert summary["lost_percent"] < 1.0
    protocols = [p for p in capture.protocols(tshark) if not p.endswith(":arp")]
    assert len(protocols) > 2000
    assert all(p.endswith(":esp") for p in protocols), set(protocols)
    stats_a = gateways.stats("a")
    assert stats_a["outbound"][str(SPI_A_TO_B)]["packets"] > 1000
    assert stats_a["inbound"][str(SPI_B_TO_A)]["packets"] > 1000


def test_tun_gateway_unprotected_destination_dropped_never_in_clear(
    gateways, tmp_path
) -> None:
    tshark = require_tool("tshark", "tshark")
    lab = gateways.lab
    capture = Capture(lab.a, tmp_path / "veth.pcap")

    result = ping(lab.a, "10.3.0.1", count=3)

    assert result.returncode != 0
    assert [p for p in capture.protocols(tshark) if not p.endswith(":arp")] == []
    stats_a = gateways.stats("a")
    assert stats_a["paths"]["tun"]["drops"]["no_policy"] == 3
