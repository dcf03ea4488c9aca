"""Opt-in ESP key log in the form of Wireshark's ``esp_sa`` table.

Debugging encrypted media is otherwise impossible, but a key log undoes the
protection, so it is enabled only by the SBC_IPSEC_KEYLOG environment
variable or an explicit CLI argument, never through the admin API. Each line
is one row of the UAT: copy the file into a Wireshark profile as ``esp_sa``,
or pass a line as ``tshark -o 'uat:esp_sa:<line>'`` with
``-o esp.enable_encryption_decode:TRUE``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import TextIO

from .algorithms import Encryption, Integrity
from .config import SAConfig

KEYLOG_ENVIRONMENT_VARIABLE = "SBC_IPSEC_KEYLOG"

logger = logging.getLogger("ipsec.esp")

# Wireshark's own names for its esp_sa menu entries (epan/dissectors/
# packet-ipsec.c); GCM keys include the salt. ChaCha20-Poly1305 is known
# from Wireshark 4.2 on.
_ENCRYPTION_NAMES = {
    Encryption.NULL: "NULL",
    Encryption.AES_CBC_128: "AES-CBC [RFC3602]",
    Encryption.AES_CBC_256: "AES-CBC [RFC3602]",
    Encryption.AES_GCM_16_128: "AES-GCM with 16 octet ICV [RFC4106]",
    Encryption.AES_GCM_16_256: "AES-GCM with 16 octet ICV [RFC4106]",
    Encryption.CHACHA20_POLY1305: "ChaCha20 with Poly1305 [RFC7634]",
}
_INTEGRITY_NAMES = {
    Integrity.NONE: "NULL",
    Integrity.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    Integrity.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    Integrity.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
}


def write_esp_sa(
    file: TextIO,
    source: IPv4Address | IPv6Address,
    destination: IPv4Address | IPv6Address,
    spi: int,
    encryption: Encryption,
    encryption_key: bytes,
    integrity: Integrity,
    integrity_key: bytes,
) -> None:
    """Write one esp_sa row: protocol, addresses, SPI, algorithms and keys."""
    fields = (
        "IPv4" if source.version == 4 else "IPv6",
        str(source),
        str(destination),
        f"0x{spi:08x}",
        _ENCRYPTION_NAMES[encryption],
        f"0x{encryption_key.hex()}" if encryption_key else "",
        _INTEGRITY_NAMES[integrity],
        f"0x{integrity_key.hex()}" if integrity_key else "",
    )
    file.write(",".join(f'"{field}"' for field in fields) + "\n")
    file.flush()


class EspKeyLog:
    """Appends each installed SA to a key-log file (mode 0600)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Loud on purpose: whoever reads this file can decrypt the traffic.
        logger.warning("ESP key log enabled: SA keys are written to %s", path)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] = os.environ
    ) -> EspKeyLog | None:
        """The key log SBC_IPSEC_KEYLOG names, or None when it is unset."""
        path = environ.get(KEYLOG_ENVIRONMENT_VARIABLE)
        return cls(path) if path else None

    def log(
        self,
        config: SAConfig,
        source: IPv4Address | IPv6Address,
        destination: IPv4Address | IPv6Address,
    ) -> None:
        """Record ``config`` for packets from ``source`` to ``destination``.

        For tunnel mode and UDP encapsulation these are the outer addresses.
        """
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a", encoding="ascii") as file:
            write_esp_sa(
                file,
                source,
                destination,
                config.spi,
                config.encryption,
                config.encryption_key,
                config.integrity,
                config.integrity_key,
            )

    def __repr__(self) -> str:
        return f"EspKeyLog({self.path!r})"
