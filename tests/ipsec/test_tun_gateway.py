"""The TUN gateway between two network namespaces, with real ping and iperf3.

Each namespace runs ``python -m ipsec.dataplane.gateway`` as a subprocess.
LAN hosts are /32 addresses on each namespace's lo (10.1.0.1 behind A,
10.2.0.1 behind B); the gateways talk ESP (in UDP, or raw) or AH (raw) over
the veth pair 192.0.2.0/24. A capture on the veth is read back by tshark, an
independent dissector, to show what crossed it.
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
from netns import Lab, Namespace, stop, veth_lab
from peer_tools import require_root, require_tool

LAN_A, LAN_B = "10.1.0.1", "10.2.0.1"
SUBNET_A, SUBNET_B = "10.1.0.0/24", "10.2.0.0/24"
# Routed into A's TUN but covered by no policy: must never leave in clear.
UNPROTECTED = "10.3.0.0/24"
SPI_A_TO_B, SPI_B_TO_A = 0x0A0B0001, 0x0B0A0001


@dataclass(frozen=True)
class Variant:
    transport: str
    protocol: str
    encryption: str
    integrity: str

    @property
    def wire(self) -> str:
        """What tshark must see on every frame: the IPsec layer."""
        return ":esp" if self.protocol == "ESP" else ":ah:"

    def keys(self) -> dict[str, str]:
        # AES-GCM-128 KEYMAT is key and salt; HMAC-SHA2-256-128 takes 32 bytes.
        size = 20 if self.protocol == "ESP" else 32
        return {f"{spi:x}": os.urandom(size).hex() for spi in (SPI_A_TO_B, SPI_B_TO_A)}


VARIANTS = {
    "udp-esp": Variant("udp", "ESP", "AES_GCM_16_128", "NONE"),
    "raw-esp": Variant("raw", "ESP", "AES_GCM_16_128", "NONE"),
    "raw-ah": Variant("raw", "AH", "NULL", "HMAC_SHA2_256_128"),
}


@dataclass
class Gateways:
    lab: Lab
    variant: Variant
    keylog: Path
    """The gateways' Wireshark esp_sa key log (both write to it)."""
    stats_paths: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]

    def stats(self, side: str) -> dict:
        """Stop gateway ``side`` and read the counters it wrote on exit."""
        stop(self.processes[side])
        return json.loads(self.stats_paths[side].read_text())


def gateway_config(side: str, lab: Lab, variant: Variant, keys: dict[str, str]) -> dict:
    a_side = side == "a"
    local, peer = (lab.a, lab.b) if a_side else (lab.b, lab.a)
    outbound, inbound = (SPI_A_TO_B, SPI_B_TO_A) if a_side else (SPI_B_TO_A, SPI_A_TO_B)
    key_field = "encryption_key" if variant.protocol == "ESP" else "integrity_key"
    return {
        "tun": {
            "name": f"gw{side}{os.getpid() % 100000}",
            "mtu": 1400,
            "routes": [SUBNET_B, UNPROTECTED] if a_side else [SUBNET_A],
            "route_source": LAN_A if a_side else LAN_B,
        },
        "transport": variant.transport,
        "local": local.address,
        "peer": peer.address,
        "children": [
            {
                "local_subnet": SUBNET_A if a_side else SUBNET_B,
                "remote_subnet": SUBNET_B if a_side else SUBNET_A,
                "protocol": variant.protocol,
                "encryption": variant.encryption,
                "integrity": variant.integrity,
                "outbound": {"spi": outbound, key_field: keys[f"{outbound:x}"]},
                "inbound": {"spi": inbound, key_field: keys[f"{inbound:x}"]},
            }
        ],
    }


def start_gateway(
    namespace: Namespace, config: dict, directory: Path, keylog: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    path = directory / f"{namespace.name}.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    stats = directory / f"{namespace.name}-stats.json"
    process = namespace.spawn(
        [sys.executable, "-m", "ipsec.dataplane.gateway", "--config", str(path),
         "--stats", str(stats), "--keylog", str(keylog)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    line = process.stdout.readline() if process.stdout else b""
    if line.strip() != b"ready":
        stop(process)
        error = process.stderr.read().decode() if process.stderr else ""
        pytest.fail(f"gateway in {namespace.name} did not start: {error}")
    return process, stats


@pytest.fixture(params=list(VARIANTS))
def gateways(request, tmp_path) -> Iterator[Gateways]:
    require_root("network namespaces and TUN devices")
    variant = VARIANTS[request.param]
    keys = variant.keys()
    with veth_lab() as lab:
        lab.a.add_loopback_address(LAN_A)
        lab.b.add_loopback_address(LAN_B)
        processes, stats = {}, {}
        keylog = tmp_path / "esp_sa"
        for side, namespace in (("a", lab.a), ("b", lab.b)):
            config = gateway_config(side, lab, variant, keys)
            processes[side], stats[side] = start_gateway(
                namespace, config, tmp_path, keylog
            )
        yield Gateways(lab, variant, keylog, stats, processes)


class Capture:
    """tcpdump on a veth end, bounded in packets and time, read by tshark."""

    def __init__(self, namespace: Namespace, path: Path) -> None:
        self.path = path
        self.process = namespace.spawn(
            ["tcpdump", "-i", namespace.veth, "-n", "-U", "--immediate-mode",
             "-c", "20000", "-w", str(path)],
            stderr=subprocess.PIPE,
        )  # fmt: skip
        # tcpdump says "listening on" once the capture is armed.
        line = self.process.stderr.readline() if self.process.stderr else b""
        assert b"listening" in line, line

    def protocols(self, tshark: str, keylog: Path | None = None) -> list[str]:
        """Each IP frame's protocol stack (ARP left out); ESP decrypted with keylog."""
        stop(self.process)
        options = []
        if keylog is not None:
            table = "uat:esp_sa:" + keylog.read_text().strip()
            options = ["-o", "esp.enable_encryption_decode:TRUE", "-o", table]
        result = subprocess.run(
            [tshark, "-r", str(self.path), *options, "-T", "fields",
             "-e", "frame.protocols"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return [p for p in result.stdout.split() if not p.endswith(":arp")]


def ping(
    namespace: Namespace, destination: str, count: int = 5
) -> subprocess.CompletedProcess[str]:
    return namespace.exec(
        require_tool("ping", "iputils-ping"), "-c", str(count), "-i", "0.05",
        "-W", "2", "-n", destination, check=False,
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
        # 8 Mbit/s: ~1,700 datagrams in 2 s, a rate the gateways carry with
        # room to spare even while the other test worker loads the CPU.
        argv = [iperf3, "-c", server_address, "-p", port, "-u", "-b", "8M",
                "-l", "1200", "-t", "2", "--json", "--connect-timeout", "3000"]  # fmt: skip
        if reverse:
            argv.append("-R")
        # The server may need a moment to listen; retry refusals, briefly.
        for _ in range(20):
            result = client.exec(*argv, check=False)
            if "Connection refused" not in result.stdout + result.stderr:
                return json.loads(result.stdout)
            time.sleep(0.1)
        pytest.fail("iperf3 server never came up")
    finally:
        stop(daemon)
    return {}


def test_tun_gateway_ping_both_ways_only_ipsec_on_the_wire(gateways, tmp_path) -> None:
    tshark = require_tool("tshark", "tshark")
    lab, variant = gateways.lab, gateways.variant
    capture = Capture(lab.a, tmp_path / "veth.pcap")

    forward = ping(lab.a, LAN_B)
    backward = ping(lab.b, LAN_A)

    assert forward.returncode == 0, forward.stdout + forward.stderr
    assert backward.returncode == 0, backward.stdout + backward.stderr
    assert " 0% packet loss" in forward.stdout and " 0% packet loss" in backward.stdout
    protocols = capture.protocols(tshark)
    # 5 echo requests and 5 replies each way, all inside IPsec; nothing else.
    assert len(protocols) == 20, protocols
    assert all(variant.wire in p for p in protocols), set(protocols)
    if variant.protocol == "ESP":
        assert all(p.endswith(":esp") for p in protocols), set(protocols)
        # Decrypted by tshark with the gateways' key log: the same frames
        # are the pings.
        decrypted = capture.protocols(tshark, gateways.keylog)
        assert sum(":esp:ip:icmp" in p for p in decrypted) == 20, set(decrypted)


def test_tun_gateway_iperf3_udp_both_ways_no_clear_traffic(gateways, tmp_path) -> None:
    tshark = require_tool("tshark", "tshark")
    lab, variant = gateways.lab, gateways.variant
    capture = Capture(lab.a, tmp_path / "veth.pcap")

    forward = iperf3_udp(lab.a, lab.b, LAN_B, reverse=False)
    backward = iperf3_udp(lab.a, lab.b, LAN_B, reverse=True)

    for report in (forward, backward):
        assert "sum" in report.get("end", {}), report.get("error", report)
        summary = report["end"]["sum"]
        assert summary["packets"] > 1000
        assert summary["lost_percent"] < 1.0
    protocols = capture.protocols(tshark)
    assert len(protocols) > 2000
    assert all(variant.wire in p for p in protocols), set(protocols)
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
    assert capture.protocols(tshark) == []
    stats_a = gateways.stats("a")
    assert stats_a["paths"]["tun"]["drops"] == {"no_policy": 3}


# Sent from B to A's gateway: on the UDP path as datagrams to port 4500, on
# the raw path as the payload of IP protocol 50/51 packets.
INJECT_WIRE = """
import os, socket, sys
transport, protocol, target, spi = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
known = spi.to_bytes(4, "big")
esp = [b"\\x01", bytes(4), b"\\x00\\x00\\xde\\xad" + bytes(60), known + bytes(4),
       known + os.urandom(120)]
# AH with HMAC-SHA2-256-128 is 7 words long (Payload Len 5, RFC 4302 §2.2).
ah = [b"\\x01", bytes([4, 5, 0, 0]) + b"\\x00\\x00\\xde\\xad" + bytes(60),
      bytes([4, 4, 0, 0]) + known + bytes(24),
      bytes([4, 5, 0, 0]) + known + b"\\x00\\x00\\x00\\x07" + os.urandom(60)]
if transport == "udp":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for datagram in esp:
        sock.sendto(datagram, (target, 4500))
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol)
    for payload in esp if protocol == 50 else ah:
        sock.sendto(payload, (target, 0))
"""

# Sent inside A towards B's LAN, so it is routed into A's TUN: an IPv4 UDP
# packet cut two bytes into its UDP header (the kernel fills in length and
# checksum of a raw IP_HDRINCL packet, but looks no further).
INJECT_TUN = """
import socket, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 22, 0, 0, 64, 17, 0,
                     socket.inet_aton("10.1.0.1"), socket.inet_aton("10.2.0.1"))
sock.sendto(header + b"\\x13\\x88", ("10.2.0.1", 0))
"""


def test_tun_gateway_malformed_packets_counted_gateway_keeps_working(
    gateways,
) -> None:
    lab, variant = gateways.lab, gateways.variant
    protocol = "50" if variant.protocol == "ESP" else "51"

    lab.b.exec(sys.executable, "-c", INJECT_WIRE, variant.transport, protocol,
               lab.a.address, str(SPI_B_TO_A))  # fmt: skip
    lab.a.exec(sys.executable, "-c", INJECT_TUN)
    still_working = ping(lab.a, LAN_B, count=2)

    assert still_working.returncode == 0, still_working.stdout
    stats = gateways.stats("a")
    inbound = stats["inbound"][str(SPI_B_TO_A)]
    assert stats["paths"]["tun"]["drops"] == {"malformed": 1}
    assert inbound["packets"] == 2
    if variant.transport == "udp":
        assert stats["paths"]["udp:192.0.2.1"]["drops"] == {"malformed": 2}
        assert stats["before_sa"] == {"unknown_spi": 1}
        assert inbound["drops"] == {"truncated": 1, "bad_icv": 1}
    elif variant.protocol == "ESP":
        # Four zero bytes read as SPI 0, which no SA has.
        assert stats["before_sa"] == {"unknown_spi": 2, "truncated": 1}
        assert inbound["drops"] == {"truncated": 1, "bad_icv": 1}
    else:
        assert stats["before_sa"] == {"unknown_spi": 1, "truncated": 1}
        assert inbound["drops"] == {"malformed": 1, "bad_icv": 1}


def test_gateway_config_refuses_ah_in_udp(tmp_path) -> None:
    variant = Variant("udp", "AH", "NULL", "HMAC_SHA2_256_128")
    lab = Lab(Namespace("a", "va", "192.0.2.1"), Namespace("b", "vb", "192.0.2.2"))
    keys = variant.keys()
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(gateway_config("a", lab, variant, keys)))

    result = subprocess.run(
        [sys.executable, "-m", "ipsec.dataplane.gateway", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert result.returncode == 2
    assert "AH needs the raw transport" in result.stderr
    # The keys in the file never reach the error output.
    assert not any(key in result.stderr for key in keys.values())
