"""Concurrent G.711 calls one node carries over a secure trunk, beside the
same calls over a plain trunk: loss and CPU per call.

Run: ``.venv/bin/python -m bench.secure_calls`` (root: IKE binds UDP 500 and
4500); ``--calls 200,400,600`` picks the steps, ``--seconds`` their length,
``--trunks secure,plain,composed`` the subjects, ``--no-pin`` leaves the
placement to the scheduler (where other pinned work shares CPU 0).

The node under test is this project's media relay with the secure-trunk
runtime (``SecureTrunks``: data plane and IKE daemon), pinned to CPU 0, on a
loopback address of its own. Each call's A-leg is on sockets, facing a
PBX-side traffic process; its B-leg faces the peer node:

- ``secure``: the B-leg is bound in the data plane's channel and its RTP
  crosses the trunk's CHILD_SA (AES-GCM-16, ESP in UDP 4500) to a peer
  process running its own ``SecureTrunks``, which plays the callees inside
  its channel;
- ``plain``: the same relay with the B-leg on sockets, the peer playing the
  callees from a plain UDP socket.

Every call carries 172-byte RTP at 50 packets/s each way (100 packets/s
through the node); each packet carries its send time, and loss counts what
never arrived and what arrived over 200 ms late. The traffic processes and
the peer share CPU 1. The node's CPU comes from /proc; CPU per call is its
CPU share divided by the calls. Both subjects take turns at each step, in
the same run and under the same machine load.

The third subject, ``composed``, is the anchor the targets compare with:
rtpengine (userspace, one thread) behind strongSwan's charon with
kernel-libipsec (tunnel mode, ESP in UDP), both pinned to CPU 0 in network
namespace A; the callees sit behind a second charon in namespace B (CPU 1),
the callers on namespace A's LAN address. Its CPU is rtpengine's plus charon
A's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_relay import (  # noqa: E402
    _cpu_seconds,
    _machine,
    _raise_file_limit,
    _read_json,
    _write_json,
)
from media_traffic import DRAIN, LATE_AFTER, PACKET_INTERVAL, SLICES, run_traffic  # noqa: E402

PIN_VARIABLE = "SECURE_CALLS_PIN"
"""``0`` in the environment (``--no-pin``, inherited by every role): no
process is pinned, the scheduler places them all."""


def _cpu(number: int) -> int | None:
    return None if os.environ.get(PIN_VARIABLE) == "0" else number


NODE_CPU = 0
TRAFFIC_CPU = 1
LOSS_LIMIT = 0.001
PEER_PORT = 7000
"""The peer's callee port, inside its channel (secure) or on a socket (plain)."""
SIP_PORT = 5062
PSK = "secure calls benchmark only"
NODE_PORTS = (20000, 29999)


def trunk_config(me: str, peer: str, *, starts: bool) -> dict[str, Any]:
    """A node with one transport-mode protected trunk to ``peer``."""
    return {
        "ipsec": {"node": f"n-{me}", "address": me, "identity": f"{me}.bench.example"},
        "listeners": [
            {"name": "sec", "transport": "udp", "address": me, "port": SIP_PORT,
             "ipsec": True},
        ],
        "ipsec_profiles": [
            {"name": "p", "psk": PSK, "start_action": "start" if starts else "none"}
        ],
        "trunks": [
            {"name": "peer", "kind": "peer-sbc", "listeners": ["sec"],
             "targets": [{"host": peer, "port": SIP_PORT}],
             "ipsec_profile": "p", "ipsec_identity": f"{peer}.bench.example"},
        ],
    }  # fmt: skip


# -- the node under test ---------------------------------------------------


async def serve_node(me: str, peer: str, secure: bool) -> None:
    """The relay (and, for ``secure``, the runtime); commands on stdin."""
    from sbc.config.model import Config
    from sbc.media import MediaRelay, MediaSettings, RemoteMedia, Side, rtcp
    from sbc.secure import SecureTrunks

    trunks = None
    if secure:
        trunks = SecureTrunks()
        await trunks.start(Config.model_validate(trunk_config(me, peer, starts=True)))
        await _until(lambda: trunks.trunk_protection() == {"peer": "up"}, 20)
    relay = MediaRelay(
        MediaSettings(
            port_min=NODE_PORTS[0], port_max=NODE_PORTS[1], media_timeout=3600.0
        ),
        data_plane=None if trunks is None else trunks.data_plane,
    )
    rtcp.preload()
    reader = await _stdin_reader()
    _reply({"ready": os.getpid()})
    while line := await reader.readline():
        command = json.loads(line)
        if "quit" in command:
            break
        if "counters" in command:
            plane = None if trunks is None else trunks.data_plane
            _reply(_node_counters(relay, plane))
            continue
        ports = []
        a_host, a_port = command["a"]
        for n in range(command["allocate"]):
            # Both legs on the node's own address: sockets facing the PBX,
            # the channel (or sockets, plain) facing the peer.
            session = await relay.allocate(f"call-{n}", me, me, ipsec=(False, secure))
            session.update_leg(Side.A, RemoteMedia(a_host, a_port))
            session.update_leg(Side.B, RemoteMedia(peer, PEER_PORT))
            ports.append(
                [session.local(Side.A).rtp_port, session.local(Side.B).rtp_port]
            )
        _reply(ports)
    await relay.close()
    if trunks is not None:
        await trunks.stop()


def _node_counters(relay: Any, plane: Any) -> dict[str, Any]:
    """Where the node dropped packets: the relay's drop reasons summed over
    the calls, and the data plane's paths and SAs (secure)."""
    drops: dict[str, int] = {}
    for session in relay.sessions.values():
        for numbers in session.snapshot().values():
            for key, value in numbers.items():
                if key.startswith("drop.") and value:
                    drops[key] = drops.get(key, 0) + int(value)
    if plane is None:
        return {"relay": drops}
    stats = plane.stats()
    sas = [*stats["inbound"].values(), *stats["outbound"].values()]
    return {"relay": drops, "paths": stats["paths"], "before_sa": stats["before_sa"],
            "sa_drops": [{k: v for k, v in sa.items() if "drop" in k and v} for sa in sas]}  # fmt: skip


# -- the peer node (secure): callees inside its channel --------------------


async def serve_peer(me: str, node: str) -> None:
    """The peer's runtime; ``{"play": ports, "start_at", "seconds"}`` plays
    the callees to the node's B-leg ports and replies with the counts."""
    from sbc.config.model import Config
    from sbc.secure import SecureTrunks

    if (cpu := _cpu(TRAFFIC_CPU)) is not None:
        os.sched_setaffinity(0, {cpu})
    trunks = SecureTrunks()
    await trunks.start(Config.model_validate(trunk_config(me, node, starts=False)))
    counts = _Counts()
    trunks.data_plane.bind(me, PEER_PORT, counts.received_one)
    reader = await _stdin_reader()
    _reply({"ready": os.getpid()})
    while line := await reader.readline():
        command = json.loads(line)
        if "quit" in command:
            break
        await _until(lambda: trunks.trunk_protection() == {"peer": "up"}, 20)
        counts.reset()
        usage = time.process_time()
        counts.sent = await _play_inside(trunks.data_plane, me, node, command)
        await asyncio.sleep(DRAIN)
        paths = trunks.data_plane.stats()["paths"]
        _reply({**counts.result(), "cpu_seconds": time.process_time() - usage,
                "paths": paths})  # fmt: skip
    await trunks.stop()


class _Counts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sent = self.received = self.late = 0
        self.delays: list[float] = []

    def received_one(self, data: bytes, source: tuple[str, int]) -> None:
        delay = time.monotonic() - _SENT_AT.unpack_from(data, 12)[0]
        self.received += 1
        if delay > LATE_AFTER:
            self.late += 1
        if not self.received & 15:
            self.delays.append(delay)

    def result(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": self.received, "late": self.late,
                "delays": self.delays}  # fmt: skip


_SENT_AT = struct.Struct("!d")


async def _play_inside(plane: Any, me: str, node: str, command: dict[str, Any]) -> int:
    """Paced like media_traffic: each 20 ms split in slots, each slot one
    share of the streams. Returns how many packets left."""
    ports = command["play"]
    packets = [_packet(ssrc) for ssrc in range(1, len(ports) + 1)]
    slot_length = PACKET_INTERVAL / SLICES
    per_slot = -(-len(ports) // SLICES)
    start_at, end = command["start_at"], command["start_at"] + command["seconds"]
    slot = sent = 0
    while (deadline := start_at + slot * slot_length) < end:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        tick, part = divmod(slot, SLICES)
        for index in range(part * per_slot, min((part + 1) * per_slot, len(ports))):
            packet = packets[index]
            struct.pack_into("!HI", packet, 2, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF)
            _SENT_AT.pack_into(packet, 12, time.monotonic())
            if plane.send(me, node, 17, PEER_PORT, ports[index], bytes(packet)) is None:
                sent += 1
        slot += 1
    return sent


def _packet(ssrc: int) -> bytearray:
    header = struct.pack("!BBHII", 0x80, 0, 0, 0, ssrc)
    return bytearray(header + bytes([0xD5]) * (172 - len(header)))


# -- glue shared by the roles ----------------------------------------------


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the trunk did not come up")
        await asyncio.sleep(0.05)


def _reply(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# -- the driver -------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="200,400,600,800")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--trunks", default="secure,plain,composed")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--nice", type=int, default=-15)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="pin nothing (on a machine whose CPU 0 other pinned work shares)",
    )
    options = parser.parse_args()
    if options.no_pin:
        os.environ[PIN_VARIABLE] = "0"
    if os.geteuid() != 0:
        raise SystemExit("run as root: IKE binds UDP 500 and 4500")
    _raise_file_limit()
    os.nice(options.nice - os.nice(0))
    print(_machine(), "| load", _load())
    results: list[dict[str, Any]] = []
    for calls in (int(n) for n in options.calls.split(",")):
        for trial in range(options.trials):
            for trunk in options.trunks.split(","):
                if trunk == "composed":
                    result = measure_composed(calls, options.seconds)
                else:
                    result = measure(trunk == "secure", calls, options.seconds)
                result["trial"] = trial
                results.append(result)
                print(_row(result), flush=True)
    print(_summary(results))
    print("load after:", _load())
    if options.json:
        options.json.write_text(
            json.dumps({"machine": _machine(), "results": results}, indent=1)
        )


def measure(secure: bool, calls: int, seconds: float) -> dict[str, Any]:
    """One step: the node and its peer up, ``calls`` calls, traffic, down."""
    load = _load()
    node_address, peer_address, pbx_address = _addresses()
    caller = _bound_socket(pbx_address, 0)
    # The peer first: it only answers, so the node's first IKE_SA_INIT finds it.
    peer = _spawn("peer", peer_address, node_address, secure) if secure else None
    node = _spawn("node", node_address, peer_address, secure, cpu=_cpu(NODE_CPU))
    try:
        _write_json(node, {"allocate": calls, "a": list(caller.getsockname())})
        ports = [tuple(pair) for pair in _read_json(node)]
        traffic = _play(
            node.pid, caller, peer, (node_address, peer_address), ports, seconds
        )
        _write_json(node, {"counters": True})
        traffic["node_counters"] = _read_json(node)
    finally:
        for process in (node, peer):
            if process is not None:
                _quit(process)
        caller.close()
    return _step("secure" if secure else "plain", calls, seconds, load, traffic)


def _step(
    trunk: str, calls: int, seconds: float, load: list[float], traffic: dict[str, Any]
) -> dict[str, Any]:
    """One step's row: the subject's CPU share and cost per call beside the
    traffic's counts."""
    node_cpu = traffic.pop("node_cpu_seconds") / seconds
    return {
        "trunk": trunk,
        "calls": calls,
        "offered_pps": calls * 100,
        "load_before": load,
        "node_cpu": round(node_cpu, 3),
        "cpu_per_call_us_per_s": round(1e6 * node_cpu / calls, 1),
        "calls_per_core": round(calls / node_cpu) if node_cpu else None,
        **traffic,
    }


def _play(
    node_pid: int,
    caller: socket.socket,
    peer: subprocess.Popen[bytes] | None,
    addresses: tuple[str, str],
    ports: list[tuple[int, ...]],
    seconds: float,
) -> dict[str, Any]:
    """Callers from ``caller`` to the A-legs; callees from the peer process
    (inside its channel) or, without one, from a plain socket."""
    node_address, peer_address = addresses
    context = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 1.0
    a_ports = [(node_address, pair[0]) for pair in ports]
    with context.Pool(2) as pool:
        cpu_before = _cpu_seconds(node_pid)
        jobs = [
            pool.apply_async(
                run_traffic, (caller, a_ports, start_at, seconds, _cpu(TRAFFIC_CPU))
            )
        ]
        if peer is None:
            callee = _bound_socket(peer_address, PEER_PORT)
            b_ports = [(node_address, pair[1]) for pair in ports]
            jobs.append(
                pool.apply_async(
                    run_traffic, (callee, b_ports, start_at, seconds, _cpu(TRAFFIC_CPU))
                )
            )
        else:
            _write_json(peer, {"play": [pair[1] for pair in ports], "start_at": start_at,
                               "seconds": seconds})  # fmt: skip
        results = [_as_dict(job.get(seconds + 60)) for job in jobs]
        # The peer's data-plane paths: what its encap socket sent and dropped.
        peer_paths = {}
        if peer is not None:
            results.append(_read_json(peer))
            peer_paths = results[-1].pop("paths")
        node_cpu_seconds = _cpu_seconds(node_pid) - cpu_before
    return {
        **_totals(results, seconds),
        "node_cpu_seconds": node_cpu_seconds,
        "peer_paths": peer_paths,
    }


def _totals(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Both directions' counts, loss, delay and the generators' CPU."""
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    late = sum(r["late"] for r in results)
    delays = sorted(d for r in results for d in r["delays"])
    return {
        # Per generator (PBX side first): sent, received, late.
        "sides": [[r["sent"], r["received"], r["late"]] for r in results],
        "sent": sent,
        "received": received,
        "loss": (sent - received + late) / sent if sent else 1.0,
        "never_arrived": sent - received,
        "late": late,
        "delay_p99_ms": round(1000 * delays[int(0.99 * (len(delays) - 1))], 2)
        if delays
        else None,
        # The PBX side, the callee side and (secure) the peer's ESP, on CPU 1.
        "rig_cpu": round(sum(r["cpu_seconds"] for r in results) / seconds, 3),
    }


# -- the composed anchor: charon (kernel-libipsec) + rtpengine ---------------

COMPOSED_PORTS = (30000, 39999)
PBX_PORT = 7100
NG_SCRIPT = """
import json, sys, time
from bench.media_rtpengine import NgClient
calls, a, b = int(sys.argv[1]), (sys.argv[2], int(sys.argv[3])), (sys.argv[4], int(sys.argv[5]))
client = NgClient()
for attempt in range(100):
    try:
        client.command({"command": "ping"}, timeout=0.2)
        break
    except (TimeoutError, ConnectionRefusedError):
        time.sleep(0.1)
print(json.dumps([client.call(f"bench-{n}", a, b) for n in range(calls)]))
"""


def measure_composed(calls: int, seconds: float) -> dict[str, Any]:
    """One step through rtpengine behind a charon tunnel (see the docstring)."""
    import tempfile

    from bench.esp_charon import start_pair, stop_pair
    from bench.esp_lab import LAN_A, LAN_B, lab

    load = _load()
    with lab() as namespaces, tempfile.TemporaryDirectory() as directory:
        charons = start_pair(
            namespaces.a, namespaces.b, Path(directory), "AES_GCM_16_128"
        )
        try:
            _pin(charons[0].process.pid, _cpu(NODE_CPU))
            _pin(charons[1].process.pid, _cpu(TRAFFIC_CPU))
            rtpengine = namespaces.a.spawn(
                ["rtpengine", "--config-file=none", "--table=-1",
                 f"--interface={LAN_A}", "--listen-ng=127.0.0.1:22223",
                 "--foreground", "--log-stderr", "--log-level=3", "--num-threads=1",
                 f"--port-min={COMPOSED_PORTS[0]}", f"--port-max={COMPOSED_PORTS[1]}"],
                cpu=_cpu(NODE_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            ng = namespaces.a.spawn(
                [sys.executable, "-c", NG_SCRIPT, str(calls), LAN_A, str(PBX_PORT),
                 LAN_B, str(PEER_PORT)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            output, _ = ng.communicate(timeout=120)
            ports = json.loads(output)
            pids = (rtpengine.pid, charons[0].process.pid)
            traffic = _play_composed(namespaces, pids, ports, seconds)
        finally:
            stop_pair(charons)
    return _step("composed", calls, seconds, load, traffic)


def _play_composed(
    namespaces: Any, pids: tuple[int, ...], ports: list[list[int]], seconds: float
) -> dict[str, Any]:
    from bench.esp_lab import LAN_A, LAN_B

    start_at = time.monotonic() + 1.0
    sides = (
        (namespaces.a, LAN_A, PBX_PORT, [[LAN_A, pair[0]] for pair in ports]),
        (namespaces.b, LAN_B, PEER_PORT, [[LAN_A, pair[1]] for pair in ports]),
    )
    before = [_cpu_seconds(pid) for pid in pids]
    players = [
        namespace.spawn(
            [
                sys.executable,
                "-m",
                "bench.secure_calls",
                "--role",
                "traffic",
                "--me",
                f"{address}:{port}",
                "--other",
                json.dumps(destinations),
                "--start-at",
                repr(start_at),
                "--seconds",
                repr(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for namespace, address, port, destinations in sides
    ]
    results = [
        json.loads(player.communicate(timeout=seconds + 60)[0]) for player in players
    ]
    spent = [_cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
    return {
        **_totals(results, seconds),
        "node_cpu_seconds": sum(spent),
        # rtpengine's share, then charon's (kernel-libipsec's ESP threads).
        "anchor_cpu_split": [round(cpu / seconds, 3) for cpu in spent],
    }


def play_traffic(me: str, destinations: str, start_at: float, seconds: float) -> None:
    """The ``traffic`` role: one side's streams from ``me`` (host:port)."""
    host, port = me.rsplit(":", 1)
    sock = _bound_socket(host, int(port))
    targets = [(str(h), int(p)) for h, p in json.loads(destinations)]
    result = run_traffic(sock, targets, start_at, seconds, _cpu(TRAFFIC_CPU))
    print(json.dumps(_as_dict(result)), flush=True)


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is None:
        return
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
                   check=True, capture_output=True)  # fmt: skip


def _as_dict(result: Any) -> dict[str, Any]:
    return {"sent": result.sent, "received": result.received,
            "late": result.late, "delays": result.delays,
            "cpu_seconds": result.cpu_seconds}  # fmt: skip


def _addresses() -> tuple[str, str, str]:
    """Fresh 127/8 addresses for the node, the peer and the PBX side: IKE
    binds 500 and 4500 on the first two, and no other process's ports
    collide with the relay's range."""
    second = random.randrange(10, 250)
    node, peer, pbx = random.sample(range(1, 250), 3)
    return tuple(f"127.{second}.{n}.1" for n in (node, peer, pbx))  # type: ignore[return-value]


def _bound_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Bursts of replies from many streams must not overflow the receiver.
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE
    sock.bind((address, port))
    return sock


def _spawn(
    role: str, me: str, other: str, secure: bool, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.secure_calls", "--role", role,
            "--me", me, "--other", other, *(["--secure"] if secure else [])]  # fmt: skip
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    _read_json(process)
    return process


def _quit(process: subprocess.Popen[bytes]) -> None:
    try:
        _write_json(process, {"quit": True})
        process.wait(15)
    except (BrokenPipeError, subprocess.TimeoutExpired):
        process.kill()
        process.wait(5)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _row(result: dict[str, Any]) -> str:
    return (
        f"{result['trunk']:>6} {result['calls']:>5} calls  offered "
        f"{result['offered_pps']:>6} pps  loss {100 * result['loss']:7.3f} % "
        f"(lost {result['never_arrived']}, late {result['late']}, "
        f"p99 {result['delay_p99_ms']} ms)  node CPU {100 * result['node_cpu']:5.1f} %"
        f"  {result['cpu_per_call_us_per_s']:6.1f} us/s per call"
        f"  ({result['calls_per_core']} calls/core)  rig CPU "
        f"{100 * result['rig_cpu']:5.1f} %  load {result['load_before'][0]}"
    )


def _summary(results: list[dict[str, Any]]) -> str:
    lines = ["largest step within 0.1 % loss, per trunk:"]
    for trunk in dict.fromkeys(r["trunk"] for r in results):
        clean = [r for r in results if r["trunk"] == trunk and r["loss"] <= LOSS_LIMIT]
        best = max(clean, key=lambda r: r["calls"], default=None)
        if best is None:
            lines.append(f"  {trunk}: no step within the loss limit")
            continue
        lines.append(
            f"  {trunk}: {best['calls']} calls, loss {100 * best['loss']:.3f} %, "
            f"{best['cpu_per_call_us_per_s']} us CPU per call-second, "
            f"{best['calls_per_core']} calls per core at that CPU cost"
        )
    return "\n".join(lines)


def _role() -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("node", "peer", "traffic"))
    parser.add_argument("--me")
    parser.add_argument("--other")
    parser.add_argument("--secure", action="store_true")
    parser.add_argument("--start-at", type=float)
    parser.add_argument("--seconds", type=float)
    options = parser.parse_args()
    if options.role == "traffic":
        play_traffic(options.me, options.other, options.start_at, options.seconds)
    elif options.role == "node":
        uvloop.run(serve_node(options.me, options.other, options.secure))
    else:
        uvloop.run(serve_peer(options.me, options.other))


if __name__ == "__main__":
    _role() if "--role" in sys.argv else main()
