"""Instructions per relayed packet, counted by callgrind: stable under load.

Run: ``.venv/bin/python bench/media_callgrind.py [--baseline DIR]
[--compiled]``; ``--compiled`` also counts this relay with its core compiled
by mypyc (bench/media_compiled.py). The relay server
(bench/media_relay_server.py) runs under valgrind's callgrind with
instrumentation off; once its calls are set up, counting is switched on,
the packets are played closed-loop (a batch goes out, the next waits for
its echo), then switched off. Only user-space instructions count, so the kernel's
share of each send and receive (equal for any relay) is left out, and other
programs on the machine change nothing. Needs valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media_compiled import build_compiled  # noqa: E402

HOST = "127.0.0.1"
PORTS = (30000, 30999)
PAYLOAD = bytes(160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--baseline", type=Path, help="checkout holding sbc/")
    parser.add_argument(
        "--compiled", action="store_true", help="also the core compiled by mypyc"
    )
    parser.add_argument(
        "--keep", type=Path, help="copy the callgrind files here (callgrind_annotate)"
    )
    options = parser.parse_args()

    this_checkout = Path(__file__).resolve().parent.parent
    roots = {"ours": this_checkout}
    if options.baseline is not None:
        roots["baseline"] = options.baseline.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        if options.compiled:
            roots["compiled"] = build_compiled(this_checkout, Path(scratch))
        for name, root in roots.items():
            keep = None if options.keep is None else options.keep / name
            instructions, packets = measure(root, options.calls, options.batches, keep)
            print(
                f"{name}: {instructions / packets:,.0f} instructions per relayed"
                f" packet ({packets} packets, {options.calls} calls)",
                flush=True,
            )


def measure(
    root: Path, calls: int, batches: int, keep: Path | None = None
) -> tuple[int, int]:
    """Instructions counted and packets relayed for one checkout."""
    server = Path(__file__).resolve().parent / "media_relay_server.py"
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "callgrind.out"
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={output}",
                sys.executable,
                str(server),
                *map(str, PORTS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        try:
            packets = _drive(process, calls, batches)
        finally:
            _send(process, {"quit": True})
            process.wait(600)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in output.parent.glob(output.name + "*"):
                shutil.copy(path, keep / path.name)
        return _total_instructions(output), packets


def _drive(process: subprocess.Popen[bytes], calls: int, batches: int) -> int:
    _receive(process)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    sink.bind((HOST, 0))
    sink.settimeout(30.0)
    try:
        _send(
            process,
            {"allocate": calls, "a": peer.getsockname(), "b": sink.getsockname()},
        )
        a_ports = [pair[0] for pair in _receive(process)]
        # One warm-up batch latches every stream before counting starts.
        _play_batch(peer, sink, a_ports, 0)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(process.pid)],
            check=True,
            capture_output=True,
        )
        for batch in range(1, batches + 1):
            _play_batch(peer, sink, a_ports, batch)
        subprocess.run(
            ["callgrind_control", "-i", "off", str(process.pid)],
            check=True,
            capture_output=True,
        )
    finally:
        peer.close()
        sink.close()
    return batches * len(a_ports)


def _play_batch(
    peer: socket.socket, sink: socket.socket, ports: list[int], seq: int
) -> None:
    packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + PAYLOAD
    for port in ports:
        peer.sendto(packet, (HOST, port))
    deadline = time.monotonic() + 60.0
    for _ in ports:
        if time.monotonic() > deadline:
            raise RuntimeError("the relay stopped echoing")
        sink.recv(2048)


def _total_instructions(output: Path) -> int:
    # Each dump file ends with "totals: <Ir>"; counting was on only while playing.
    total = 0
    for path in output.parent.glob(output.name + "*"):
        match = re.search(r"^totals:\s+(\d+)", path.read_text(), re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


def _send(process: subprocess.Popen[bytes], value: object) -> None:
    if process.stdin is not None and process.poll() is None:
        process.stdin.write(json.dumps(value).encode() + b"\n")
        process.stdin.flush()


def _receive(process: subprocess.Popen[bytes]) -> Any:
    if process.stdout is None:
        raise RuntimeError("no pipe to the relay")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the relay under test exited")
    return json.loads(line)


if __name__ == "__main__":
    main()
