"""The measured processes of the ESP benchmark, each on one core with uvloop.

    python -m bench.esp_worker MODE CONFIG.json

MODE is one of:

- ``ours-protect``: an application socket receives cleartext UDP and hands
  each payload to the data plane's channel, which seals it (tunnel mode) and
  sends it UDP-encapsulated, batched with GSO.
- ``ours-unprotect``: the data plane's UDP encapsulation socket receives ESP,
  opens it, checks the inbound policy, and the channel handler forwards the
  payload to a cleartext socket.
- ``bare-protect`` / ``bare-unprotect``: the floor to compare against, a
  uvloop datagram endpoint doing recv, AES-GCM or ChaCha20-Poly1305 in ESP's
  layout (no replay window, no policy, no padding check) and send.

The worker prints ``ready``, answers ``stats`` with a JSON line and exits
when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
from ipaddress import ip_address
from pathlib import Path
from typing import Any, cast

import uvloop
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ipsec.dataplane import DataPlane
from ipsec.dataplane.packet import IPPROTO_IPIP
from ipsec.esp import Encryption, Integrity, Mode, Protocol, SAConfig
from ipsec.esp.spd import Direction, TrafficSelector

ESP_PORT = 4500
BUFFER = 16 * 1024 * 1024
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
_HEADER = struct.Struct("!LL")
_ESN_AAD = struct.Struct("!LLL")


def sa_config(raw: dict[str, Any]) -> SAConfig:
    return SAConfig(
        spi=raw["spi"], protocol=Protocol.ESP, mode=Mode.TUNNEL,
        encryption=Encryption[raw["encryption"]], integrity=Integrity.NONE,
        encryption_key=bytes.fromhex(raw["key"]), integrity_key=b"",
        tunnel_source=ip_address(raw["outer_source"]),
        tunnel_destination=ip_address(raw["outer_destination"]),
    )  # fmt: skip


def udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BUFFER)
    sock.setblocking(False)
    sock.bind((host, port))
    return sock


def ours_protect(
    loop: asyncio.AbstractEventLoop, raw: dict[str, Any]
) -> dict[str, Any]:
    plane = DataPlane(loop)
    plane.open_udp_encap(raw["outer_source"], ESP_PORT, buffer_size=BUFFER)
    config = sa_config(raw)
    plane.add_sa(config, inbound=False)
    local = TrafficSelector.from_network(f"{raw['inner_source']}/32")
    remote = TrafficSelector.from_network(f"{raw['inner_destination']}/32")
    plane.add_policy(local, remote, config.spi)
    ingress = udp_socket(*raw["ingress"])
    inner_source, inner_destination = raw["inner_source"], raw["inner_destination"]
    source_port, destination_port = (
        raw["inner_source_port"],
        raw["inner_destination_port"],
    )
    send, receive = plane.send, ingress.recv

    # The application: drain the cleartext socket, hand each payload over.
    def on_readable() -> None:
        for _ in range(256):
            try:
                payload = receive(65535)
            except BlockingIOError:
                return
            send(
                inner_source,
                inner_destination,
                17,
                source_port,
                destination_port,
                payload,
            )

    loop.add_reader(ingress.fileno(), on_readable)
    return {"plane": plane}


def ours_unprotect(
    loop: asyncio.AbstractEventLoop, raw: dict[str, Any]
) -> dict[str, Any]:
    plane = DataPlane(loop)
    plane.open_udp_encap(raw["outer_destination"], ESP_PORT, buffer_size=BUFFER)
    config = sa_config(raw)
    plane.add_sa(config, inbound=True)
    local = TrafficSelector.from_network(f"{raw['inner_destination']}/32")
    remote = TrafficSelector.from_network(f"{raw['inner_source']}/32")
    plane.add_policy(local, remote, config.spi, direction=Direction.INBOUND)
    egress = udp_socket(raw["inner_destination"], 0)
    sendto, sink = egress.sendto, tuple(raw["egress"])

    def forward(payload: bytes, _source: tuple[str, int]) -> None:
        sendto(payload, sink)

    plane.bind(raw["inner_destination"], raw["inner_destination_port"], forward)
    return {"plane": plane}


def aead(raw: dict[str, Any]) -> tuple[AESGCM | ChaCha20Poly1305, bytes]:
    key = bytes.fromhex(raw["key"])
    if raw["encryption"] == "CHACHA20_POLY1305":
        return ChaCha20Poly1305(key[:-4]), key[-4:]
    return AESGCM(key[:-4]), key[-4:]


class BareProtect(asyncio.DatagramProtocol):
    def __init__(self, raw: dict[str, Any]) -> None:
        self.cipher, self.salt = aead(raw)
        self.spi = raw["spi"]
        self.peer = (raw["outer_destination"], ESP_PORT)
        self.sequence = 0
        self.transport: asyncio.DatagramTransport
        self.trailer = bytes((1, 2, 0, IPPROTO_IPIP))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sequence += 1
        sequence = self.sequence
        header = _HEADER.pack(self.spi, sequence)
        iv = sequence.to_bytes(8, "big")
        aad = _ESN_AAD.pack(self.spi, 0, sequence)
        sealed = self.cipher.encrypt(self.salt + iv, data + self.trailer, aad)
        self.transport.sendto(header + iv + sealed, self.peer)


class BareUnprotect(asyncio.DatagramProtocol):
    def __init__(self, raw: dict[str, Any]) -> None:
        self.cipher, self.salt = aead(raw)
        self.sink = tuple(raw["egress"])
        self.egress = udp_socket(raw["inner_destination"], 0)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        spi, sequence = _HEADER.unpack_from(data)
        aad = _ESN_AAD.pack(spi, 0, sequence)
        plain = self.cipher.decrypt(self.salt + data[8:16], data[16:], aad)
        # Inner IPv4 + UDP headers (28 bytes) off the front, trailer off the end.
        self.egress.sendto(plain[28 : len(plain) - 2 - plain[-2]], self.sink)


async def serve(mode: str, raw: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {}
    if mode == "ours-protect":
        state = ours_protect(loop, raw)
    elif mode == "ours-unprotect":
        state = ours_unprotect(loop, raw)
    elif mode == "bare-protect":
        await loop.create_datagram_endpoint(
            lambda: BareProtect(raw), sock=udp_socket(*raw["ingress"])
        )
    else:
        await loop.create_datagram_endpoint(
            lambda: BareUnprotect(raw),
            sock=udp_socket(raw["outer_destination"], ESP_PORT),
        )
    print("ready", flush=True)

    # Commands arrive on stdin; reading it in a thread keeps the loop free.
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip() == "stats":
            plane = state.get("plane")
            print(json.dumps(plane.stats() if plane else {}, default=str), flush=True)


def main() -> None:
    mode, config = sys.argv[1], Path(sys.argv[2])
    uvloop.run(serve(mode, json.loads(config.read_text())))


if __name__ == "__main__":
    main()
