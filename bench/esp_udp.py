"""Loss-free ESP-in-UDP rates: this data plane, a bare Python loop, strongSwan.

Run as root: ``.venv/bin/python -m bench.esp_udp`` (or ``python
bench/esp_udp.py``); ``--quick`` measures AES-GCM-128 at 200 bytes only.

Topology: namespaces A (192.0.2.1) and B (192.0.2.2) over a veth pair, LAN
addresses 10.1.0.1 and 10.2.0.1 on their lo. For each cipher and inner
packet size (200 bytes, RTP-like, and 1400 bytes) the offered rate is
stepped up until the first loss, then bisected, and the best rate confirmed
by a 2-second trial (a lost trial is retried once):

- ours protect: cleartext UDP from a generator process reaches an
  application socket in A, goes through the data plane's channel (policy,
  inner IP/UDP, ESP seal, GSO-batched UDP encapsulation) and is counted as
  ESP-in-UDP by a sink in B;
- ours unprotect: pre-sealed ESP-in-UDP from A reaches the data plane in B
  (SPI, replay, ICV, padding, inbound policy), whose channel handler sends
  the payload to a cleartext sink;
- bare protect / unprotect: the same with a bare uvloop recv/AEAD/send loop;
- strongSwan: charon + kernel-libipsec in both namespaces (tunnel mode,
  encap = yes, log level 1), cleartext from 10.1.0.1 to 10.2.0.1;
- ours TUN pair: this project's TUN gateway in both namespaces, the same
  path as strongSwan's (AES-GCM-128 at 200 bytes only, unless --tun-pairs).

The measured worker (ours, bare) is pinned to CPU 1, generator and sink to
CPU 0; the charons and TUN gateways are not pinned (they may use both cores).
Besides the rate, the table gives the worker's CPU time per packet in the
confirming trial (user + system, from /proc), which varies less with other
load on the machine than the loss-free rate does. For strongSwan it is both
charons' together (one seals, the other opens), to set against ours
protect plus ours unprotect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable as for ``-m bench.esp_udp``.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import esp_charon
from bench.esp_lab import (
    LAN_A,
    LAN_B,
    OUTER_A,
    OUTER_B,
    SUBNET_A,
    SUBNET_B,
    Helper,
    Lab,
    lab,
)

CIPHERS = {"AES_GCM_16_128": "AES-GCM-128", "CHACHA20_POLY1305": "ChaCha20-Poly1305"}
SIZES = (200, 1400)
IP_UDP_HEADERS = 28
WORKER_CPU, TRAFFIC_CPU = 1, 0
APP_PORT, SINK_PORT, ESP_PORT = 5000, 9000, 4500
SPI = 0x0B0E0001
GROWTH = 1.5
BISECTIONS = 3
CONFIRMATIONS = 4
GENERATOR_SHORTFALL = 0.95


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Trial:
    offered: float
    sent: int
    received: int
    elapsed: float
    cpu_seconds: float | None = None
    """CPU time (user + system) the measured worker spent in the trial."""

    @property
    def lossless(self) -> bool:
        return self.received >= self.sent > 0

    @property
    def generator_limited(self) -> bool:
        return self.sent / self.elapsed < GENERATOR_SHORTFALL * self.offered


@dataclass
class Result:
    rate: float
    """Highest confirmed loss-free rate, packets per second."""
    limited: bool = False
    """True when the generator, not the path, set the ceiling."""
    notes: str = ""
    cpu_per_packet: float | None = None
    """Worker CPU microseconds per packet in the confirming trial."""


class Rig:
    """Generator in A, sink in B, and whatever sits between them."""

    def __init__(
        self,
        generator: Helper,
        sink: Helper,
        restart: Callable[[], None] | None = None,
        worker: Helper | None = None,
        measured: Callable[[], list[int]] | None = None,
    ) -> None:
        self.generator = generator
        self.sink = sink
        self.restart = restart
        self.worker = worker
        self.measured = measured
        """The pids whose CPU time counts, when not the worker's (the charons)."""

    def trial(self, rate: float, seconds: float) -> Trial:
        before = int(self.sink.ask("count"))
        cpu_before = self.worker_cpu()
        answer = self.generator.ask(
            f"run {rate:.0f} {seconds}", timeout=seconds * 10 + 60
        )
        sent, elapsed = answer.split()
        received = self.settled_count() - before
        cpu_after = self.worker_cpu()
        cpu = (
            None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        )
        trial = Trial(rate, int(sent), received, float(elapsed), cpu)
        log(
            f"    offered {rate:9.0f}/s  sent {trial.sent:8d} in {trial.elapsed:5.2f} s  "
            f"received {received:8d}  {'ok' if trial.lossless else 'LOSS'}"
        )
        if not trial.lossless and self.restart is not None:
            self.restart()
        return trial

    def worker_cpu(self) -> float | None:
        """The measured processes' user + system CPU seconds, from /proc (the
        pids are the programs': ip netns exec, taskset and sh exec them)."""
        if self.measured is not None:
            pids = self.measured()
        elif self.worker is not None:
            pids = [self.worker.process.pid]
        else:
            return None
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text()
            utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
            total += int(utime) + int(stime)
        return total / os.sysconf("SC_CLK_TCK")

    def settled_count(self) -> int:
        """The sink's count once it stops moving: queues drained (at most 5 s)."""
        count = int(self.sink.ask("count"))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            latest = int(self.sink.ask("count"))
            if latest == count:
                break
            count = latest
        return count


def lossless(rig: Rig, rate: float, seconds: float) -> Trial | None:
    """A loss-free trial at ``rate``, or None; a loss is retried once, since
    a single scheduling stall of another process on the machine can cause it."""
    for _ in range(2):
        trial = rig.trial(rate, seconds)
        if trial.lossless:
            return trial
    return None


def search(rig: Rig, start: float, seconds: float, confirm_seconds: float) -> Result:
    """Step the rate up by GROWTH to the first loss, bisect, then confirm."""
    good, bad, rate = 0.0, 0.0, start
    while True:
        trial = lossless(rig, rate, seconds)
        if trial is None:
            bad = rate
            break
        good = rate
        if trial.generator_limited:
            return Result(good, limited=True, notes="generator-limited")
        rate *= GROWTH
    if good == 0.0:
        good = start / GROWTH**2
    for _ in range(BISECTIONS):
        middle = (good + bad) / 2
        if lossless(rig, middle, seconds):
            good = middle
        else:
            bad = middle

    # A longer trial must confirm the rate; step down 10 % at a time if not.
    best = good
    for _ in range(CONFIRMATIONS):
        trial = rig.trial(good, confirm_seconds)
        if trial.lossless:
            cpu = trial.cpu_seconds
            return Result(good, cpu_per_packet=cpu / trial.sent * 1e6 if cpu else None)
        good *= 0.9
    return Result(best, notes="not confirmed by a longer trial")


# -- rigs -----------------------------------------------------------------------


def sa_parameters(encryption: str, size: int, key: str) -> dict[str, object]:
    return {
        "spi": SPI,
        "encryption": encryption,
        "key": key,
        "outer_source": OUTER_A,
        "outer_destination": OUTER_B,
        "inner_source": LAN_A,
        "inner_destination": LAN_B,
        "inner_source_port": APP_PORT,
        "inner_destination_port": SINK_PORT,
        "ingress": [LAN_A, APP_PORT],
        "egress": [LAN_B, SINK_PORT],
        "payload": size - IP_UDP_HEADERS,
    }


def private_file(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.touch(mode=0o600)
    path.write_text(content)
    return path


@contextmanager
def worker_rig(
    lab: Lab, mode: str, encryption: str, size: int, directory: Path
) -> Iterator[Rig]:
    """A measured worker (ours or bare) between a generator and a sink."""
    key = secrets.token_hex(36 if "CHACHA" in encryption else 20)
    parameters = sa_parameters(encryption, size, key)
    config = private_file(directory, f"{mode}.json", json.dumps(parameters))
    payload = str(size - IP_UDP_HEADERS)
    try:
        if mode.endswith("protect") and not mode.endswith("unprotect"):
            worker = lab.a.python("bench.esp_worker", mode, str(config), cpu=WORKER_CPU)
            sink = lab.b.python(
                "bench.esp_traffic", "sink", OUTER_B, str(ESP_PORT), cpu=TRAFFIC_CPU
            )
            generator = lab.a.python(
                "bench.esp_traffic", "generate", LAN_A, LAN_A, str(APP_PORT), payload,
                cpu=TRAFFIC_CPU,
            )  # fmt: skip
        else:
            worker = lab.b.python("bench.esp_worker", mode, str(config), cpu=WORKER_CPU)
            sink = lab.b.python(
                "bench.esp_traffic", "sink", LAN_B, str(SINK_PORT), cpu=TRAFFIC_CPU
            )
            generator = lab.a.python(
                "bench.esp_traffic", "generate", OUTER_A, OUTER_B, str(ESP_PORT), payload,
                str(config), cpu=TRAFFIC_CPU,
            )  # fmt: skip
        yield Rig(generator, sink, worker=worker)
    finally:
        lab.stop_processes()


@contextmanager
def strongswan_rig(
    lab: Lab, encryption: str, size: int, directory: Path
) -> Iterator[Rig]:
    state: dict[str, tuple[esp_charon.Charon, esp_charon.Charon]] = {}

    def restart() -> None:
        # An overloaded libipsec queue keeps growing; start afresh after loss.
        if "pair" in state:
            esp_charon.stop_pair(state["pair"])
        state["pair"] = esp_charon.start_pair(
            lab.a, lab.b, directory / "charon", encryption
        )
        time.sleep(0.2)

    def charons() -> list[int]:
        return [charon.process.pid for charon in state["pair"]]

    try:
        restart()
        rig = cleartext_rig(lab, size, restart)
        rig.measured = charons
        yield rig
    finally:
        lab.stop_processes()


@contextmanager
def tun_pair_rig(
    lab: Lab, encryption: str, size: int, directory: Path
) -> Iterator[Rig]:
    keys = {
        side: secrets.token_hex(36 if "CHACHA" in encryption else 20) for side in "ab"
    }
    try:
        for namespace, side in ((lab.a, "a"), (lab.b, "b")):
            config = gateway_config(side, encryption, keys)
            path = private_file(directory, f"gateway-{side}.json", json.dumps(config))
            lab_process = namespace.spawn(
                [
                    sys.executable,
                    "-m",
                    "ipsec.dataplane.gateway",
                    "--config",
                    str(path),
                ],
                stdout=subprocess.PIPE,
            )
            line = lab_process.stdout.readline() if lab_process.stdout else b""
            if line.strip() != b"ready":
                raise RuntimeError(f"gateway {side} did not start")
        yield cleartext_rig(lab, size, None)
    finally:
        lab.stop_processes()


def gateway_config(
    side: str, encryption: str, keys: dict[str, str]
) -> dict[str, object]:
    a_side = side == "a"
    spi_out, spi_in = (SPI, SPI + 1) if a_side else (SPI + 1, SPI)
    key_out, key_in = (keys["a"], keys["b"]) if a_side else (keys["b"], keys["a"])
    return {
        "tun": {
            "name": f"bgw{side}{os.getpid() % 10000}",
            "mtu": 1400,
            "routes": [SUBNET_B if a_side else SUBNET_A],
            "route_source": LAN_A if a_side else LAN_B,
        },
        "local": OUTER_A if a_side else OUTER_B,
        "peer": OUTER_B if a_side else OUTER_A,
        "children": [
            {
                "local_subnet": SUBNET_A if a_side else SUBNET_B,
                "remote_subnet": SUBNET_B if a_side else SUBNET_A,
                "encryption": encryption,
                "outbound": {"spi": spi_out, "encryption_key": key_out},
                "inbound": {"spi": spi_in, "encryption_key": key_in},
            }
        ],
    }


def cleartext_rig(lab: Lab, size: int, restart: Callable[[], None] | None) -> Rig:
    sink = lab.b.python(
        "bench.esp_traffic", "sink", LAN_B, str(SINK_PORT), cpu=TRAFFIC_CPU
    )
    generator = lab.a.python(
        "bench.esp_traffic", "generate", LAN_A, LAN_B, str(SINK_PORT),
        str(size - IP_UDP_HEADERS), cpu=TRAFFIC_CPU,
    )  # fmt: skip
    return Rig(generator, sink, restart)


# -- the run --------------------------------------------------------------------


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def megabits(rate: float, size: int) -> float:
    return rate * size * 8 / 1e6


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, TUN, charon)")
    for tool in ("taskset", "swanctl", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found")
    if not Path(esp_charon.CHARON).exists():
        sys.exit(f"{esp_charon.CHARON} not found (Debian package strongswan-charon)")


def measure(arguments: argparse.Namespace) -> dict[tuple[str, int, str], Result]:
    results: dict[tuple[str, int, str], Result] = {}
    ciphers = ["AES_GCM_16_128"] if arguments.quick else list(CIPHERS)
    sizes = (200,) if arguments.quick else SIZES
    seconds, confirm = arguments.seconds, arguments.confirm_seconds
    with (
        tempfile.TemporaryDirectory(prefix="esp-bench-") as temporary,
        lab() as the_lab,
    ):
        directory = Path(temporary)
        for encryption in ciphers:
            for size in sizes:
                start = 60000.0 if size == 200 else 30000.0
                for mode in (
                    "ours-protect",
                    "bare-protect",
                    "ours-unprotect",
                    "bare-unprotect",
                ):
                    log(f"{CIPHERS[encryption]} {size} B {mode}")
                    with worker_rig(the_lab, mode, encryption, size, directory) as rig:
                        results[(encryption, size, mode)] = search(
                            rig, start, seconds, confirm
                        )
                        if rig.worker is not None:
                            log(f"    worker counters: {rig.worker.ask('stats')}")
                log(f"{CIPHERS[encryption]} {size} B strongswan")
                with strongswan_rig(the_lab, encryption, size, directory) as rig:
                    results[(encryption, size, "strongswan")] = search(
                        rig, 5000.0, seconds, confirm
                    )
                if (size, encryption) == (200, "AES_GCM_16_128") or arguments.tun_pairs:
                    log(f"{CIPHERS[encryption]} {size} B ours TUN pair")
                    with tun_pair_rig(the_lab, encryption, size, directory) as rig:
                        results[(encryption, size, "tun-pair")] = search(
                            rig, 10000.0, seconds, confirm
                        )
    return results


LABELS = {
    "ours-protect": "ours protect (channel)",
    "ours-unprotect": "ours unprotect (channel)",
    "bare-protect": "bare loop protect",
    "bare-unprotect": "bare loop unprotect",
    "strongswan": "strongSwan pair (libipsec)",
    "tun-pair": "ours TUN gateway pair",
}


def report(
    results: dict[tuple[str, int, str], Result], load: float, began: str
) -> None:
    print(
        f"ESP in UDP between two network namespaces: highest loss-free rate ({began})"
    )
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}, load average before run {load:.2f}")  # fmt: skip
    print()
    print(
        f"{'cipher':<18} {'size':>5}  {'path':<28} {'packets/s':>10} {'Mbit/s':>8}"
        f" {'CPU us/pkt':>10}"
    )
    for (encryption, size, mode), result in results.items():
        note = f"  ({result.notes})" if result.notes else ""
        cpu = f"{result.cpu_per_packet:10.2f}" if result.cpu_per_packet else " " * 10
        print(
            f"{CIPHERS[encryption]:<18} {size:>5}  {LABELS[mode]:<28} "
            f"{result.rate:>10.0f} {megabits(result.rate, size):>8.1f} {cpu}{note}"
        )
    print()
    print("ratios (targets: >= 4x strongSwan at 200 B; >= 0.80 of the bare loop)")
    combinations = sorted({(e, s) for e, s, _ in results})
    for encryption, size in combinations:
        rates = {
            m: r.rate
            for (e, s, m), r in results.items()
            if (e, s) == (encryption, size)
        }
        swan = rates.get("strongswan") or float("nan")
        parts = [
            f"protect/strongSwan {rates['ours-protect'] / swan:.2f}x",
            f"unprotect/strongSwan {rates['ours-unprotect'] / swan:.2f}x",
            f"protect/bare {rates['ours-protect'] / (rates['bare-protect'] or float('nan')):.2f}",
            f"unprotect/bare {rates['ours-unprotect'] / (rates['bare-unprotect'] or float('nan')):.2f}",
        ]
        if rates.get("tun-pair"):
            parts.append(f"TUN pair/strongSwan {rates['tun-pair'] / swan:.2f}x")
        print(f"  {CIPHERS[encryption]} {size} B: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description="ESP-in-UDP loss-free rates")
    parser.add_argument("--quick", action="store_true", help="AES-GCM-128, 200 B only")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="search trial length"
    )
    parser.add_argument("--confirm-seconds", type=float, default=2.0)
    parser.add_argument(
        "--tun-pairs",
        action="store_true",
        help="the TUN pair for every cipher and size (default: AES-GCM 200 B)",
    )
    arguments = parser.parse_args()
    check_prerequisites()
    load = os.getloadavg()[0]
    began = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if load > 0.5:
        log(f"warning: load average {load:.2f}; figures will be low and noisy")
    started = time.monotonic()
    results = measure(arguments)
    report(results, load, began)
    print(f"run time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
