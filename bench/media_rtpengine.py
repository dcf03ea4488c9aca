"""rtpengine (Debian rtpengine-daemon) as the media benchmark's anchor.

It runs in userspace (``--table=-1``) with one worker thread; calls are made
with the ng control protocol: bencoded dictionaries over UDP, each prefixed
with a cookie that the reply echoes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

NG_ADDRESS = ("127.0.0.1", 22223)


def start_rtpengine(
    port_min: int, port_max: int, cpu: int | None
) -> subprocess.Popen[bytes]:
    binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
    command = [
        binary,
        "--config-file=none",
        "--table=-1",
        "--interface=127.0.0.1",
        f"--listen-ng={NG_ADDRESS[0]}:{NG_ADDRESS[1]}",
        "--foreground",
        "--log-stderr",
        "--log-level=3",
        "--num-threads=1",
        f"--port-min={port_min}",
        f"--port-max={port_max}",
    ]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    if _answers_ping():
        raise RuntimeError(f"another rtpengine already listens on {NG_ADDRESS}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = NgClient()
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError("rtpengine exited at start-up")
        try:
            client.command({"command": "ping"}, timeout=0.1)
            break
        except TimeoutError:
            time.sleep(0.05)
    client.close()
    return process


def _answers_ping() -> bool:
    client = NgClient()
    try:
        client.command({"command": "ping"}, timeout=0.2)
    except (TimeoutError, ConnectionRefusedError):
        return False
    finally:
        client.close()
    return True


class NgClient:
    """Blocking ng protocol client (one command in flight)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._serial = 0
        # rtpengine caches replies by cookie: never reuse one across clients.
        self._prefix = os.urandom(6).hex()

    def command(
        self, message: dict[str, object], timeout: float = 2.0
    ) -> dict[str, object]:
        self._serial += 1
        cookie = f"{self._prefix}_{self._serial}".encode()
        self.sock.settimeout(timeout)
        self.sock.sendto(cookie + b" " + bencode(message), NG_ADDRESS)
        while True:
            reply = self.sock.recv(65535)
            echoed, _, body = reply.partition(b" ")
            if echoed == cookie:
                value, _ = bdecode(body, 0)
                if not isinstance(value, dict):
                    raise ValueError("ng reply is not a dictionary")
                return value

    def call(
        self, call_id: str, a: tuple[str, int], b: tuple[str, int]
    ) -> tuple[int, int]:
        """Offer from ``a``, answer from ``b``; the ports each side must send to."""
        offer = self.command(
            {"command": "offer", "call-id": call_id, "from-tag": "a", "sdp": _sdp(*a)}
        )
        answer = self.command(
            {
                "command": "answer",
                "call-id": call_id,
                "from-tag": "a",
                "to-tag": "b",
                "sdp": _sdp(*b),
            }
        )
        return _audio_port(answer), _audio_port(offer)

    def close(self) -> None:
        self.sock.close()


def bencode(value: object) -> bytes:
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode(), v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes, at: int) -> tuple[object, int]:
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        items: list[object] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = bdecode(data, at)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        pairs = zip(items[::2], items[1::2], strict=True)
        return {_text(k): v for k, v in pairs}, at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sdp(host: str, port: int) -> str:
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=sendrecv\r\n"
    )


def _audio_port(reply: dict[str, object]) -> int:
    if reply.get("result") != b"ok":
        raise RuntimeError(f"rtpengine refused: {reply.get('error-reason')!r}")
    sdp = reply["sdp"]
    match = re.search(rb"m=audio (\d+)", sdp if isinstance(sdp, bytes) else b"")
    if match is None:
        raise RuntimeError("rtpengine answered without an audio m-line")
    return int(match.group(1))
