"""Packets per second through the sans-IO ESP engine on one core.

Run: .venv/bin/python -m bench.esp_engine [--seconds 1.0]

Measures seal/open (the UDP-encapsulated form) and protect/unprotect (whole
IPv4 packets, transport and tunnel mode) for 200- and 1400-byte packets.
The target for the whole data path is 100,000 packets/s of 200 bytes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from ipaddress import ip_address

from ipsec.esp import (
    Encryption,
    InboundSA,
    Integrity,
    Mode,
    OutboundSA,
    Protocol,
    SAConfig,
)

SUITES = {
    "AES-GCM-128": (Encryption.AES_GCM_16_128, Integrity.NONE),
    "ChaCha20-Poly1305": (Encryption.CHACHA20_POLY1305, Integrity.NONE),
    "AES-CBC-128/SHA-256": (Encryption.AES_CBC_128, Integrity.HMAC_SHA2_256_128),
}
SIZES = (200, 1400)
# Far beyond any run, so neither lifetimes nor the replay window interfere.
BATCH = 2000


def make_config(suite: str, mode: Mode) -> SAConfig:
    encryption, integrity = SUITES[suite]
    tunnel = mode is Mode.TUNNEL
    return SAConfig(
        spi=0xBE4C,
        protocol=Protocol.ESP,
        mode=mode,
        encryption=encryption,
        integrity=integrity,
        encryption_key=bytes(range(encryption.key_length)),
        integrity_key=bytes(range(integrity.key_length)),
        tunnel_source=ip_address("198.51.100.1") if tunnel else None,
        tunnel_destination=ip_address("198.51.100.2") if tunnel else None,
    )


def udp_packet(size: int) -> bytes:
    """An IPv4/UDP packet of ``size`` bytes in total (checksums left zero)."""
    payload = bytes(size - 28)
    header = bytearray(
        bytes.fromhex("4500") + size.to_bytes(2, "big") + bytes.fromhex("00004000")
    )
    header += bytes.fromhex("4011") + bytes(2)
    header += ip_address("192.0.2.1").packed + ip_address("192.0.2.2").packed
    udp = (5004).to_bytes(2, "big") + (5006).to_bytes(2, "big")
    udp += (size - 20).to_bytes(2, "big") + bytes(2)
    return bytes(header) + udp + payload


def rate(step: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``step(i)``, run in batches for at least ``seconds``."""
    calls, started = 0, time.perf_counter()
    while True:
        for index in range(calls, calls + BATCH):
            step(index)
        calls += BATCH
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def measure_seal_open(suite: str, size: int, seconds: float) -> tuple[float, float]:
    config = make_config(suite, Mode.TRANSPORT)
    payload = udp_packet(size)[20:]
    outbound = OutboundSA(config, 0.0)
    sealed_rate = rate(lambda i: outbound.seal(payload, 17, 0.0), seconds)

    # Open fresh packets in order, as a receiver sees them.
    sender = OutboundSA(config, 0.0)
    sealed = [
        sender.seal(payload, 17, 0.0) for _ in range(int(sealed_rate * seconds * 1.5))
    ]
    inbound = InboundSA(config, 0.0)
    opened_rate = rate(lambda i: inbound.open(sealed[i % len(sealed)], 0.0), seconds)
    return sealed_rate, opened_rate


def measure_protect(
    suite: str, size: int, mode: Mode, seconds: float
) -> tuple[float, float]:
    config = make_config(suite, mode)
    packet = udp_packet(size)
    outbound = OutboundSA(config, 0.0)
    protected_rate = rate(lambda i: outbound.protect(packet, 0.0), seconds)

    sender = OutboundSA(config, 0.0)
    count = int(protected_rate * seconds * 1.5)
    protected = [sender.protect(packet, 0.0) for _ in range(count)]
    inbound = InboundSA(config, 0.0)
    unprotected_rate = rate(
        lambda i: inbound.unprotect(protected[i % len(protected)], 0.0), seconds
    )
    return protected_rate, unprotected_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    arguments = parser.parse_args()
    seconds = arguments.seconds

    print(
        f"{'suite':<22}{'bytes':>6}  {'operation':<22}{'packets/s':>12}{'µs/packet':>11}"
    )
    for suite in SUITES:
        for size in SIZES:
            rows = list(
                zip(
                    ("seal", "open"),
                    measure_seal_open(suite, size, seconds),
                    strict=True,
                )
            )
            for mode in (Mode.TRANSPORT, Mode.TUNNEL):
                names = (f"protect {mode.value}", f"unprotect {mode.value}")
                rows += zip(
                    names, measure_protect(suite, size, mode, seconds), strict=True
                )
            for operation, per_second in rows:
                print(
                    f"{suite:<22}{size:>6}  {operation:<22}"
                    f"{per_second:>12,.0f}{1e6 / per_second:>11.2f}"
                )


if __name__ == "__main__":
    main()
