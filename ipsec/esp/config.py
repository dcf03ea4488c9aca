"""What an SA is: its protocol, mode, transforms, keys and lifetimes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv6Address

from .algorithms import Encryption, Integrity

IPAddress = IPv4Address | IPv6Address

# RFC 4303 §3.4.3: a window of 32 is the minimum, 64 the recommended default;
# this appliance refuses anything below 64.
MINIMUM_REPLAY_WINDOW = 64


class Protocol(IntEnum):
    """IPsec protocols by their IP protocol numbers."""

    ESP = 50
    AH = 51


class Mode(Enum):
    TRANSPORT = "transport"
    TUNNEL = "tunnel"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Limits after which an SA is rekeyed (soft) or removed (hard).

    None means no limit of that kind (RFC 4301 §4.4.2.1).
    """

    bytes: int | None = None
    packets: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class SAConfig:
    """One direction of a CHILD_SA, as the IKE daemon installs it.

    The keys never appear in repr() or str().
    """

    spi: int
    """The SPI the receiver chose (RFC 4303 §2.1), 256 or more."""
    protocol: Protocol
    mode: Mode
    encryption: Encryption
    """Encryption.NULL for AH and for integrity-only ESP."""
    integrity: Integrity
    """Integrity.NONE with an AEAD encryption transform."""
    encryption_key: bytes = field(repr=False)
    """KEYMAT for encryption; AEAD keys end with their 4-byte salt."""
    integrity_key: bytes = field(repr=False)
    esn: bool = True
    """Extended (64-bit) sequence numbers, RFC 4303 §2.2.1."""
    replay_window: int = 1024
    soft: Lifetime = Lifetime()
    hard: Lifetime = Lifetime()
    tunnel_source: IPAddress | None = None
    """Outer source address in tunnel mode."""
    tunnel_destination: IPAddress | None = None
    """Outer destination address in tunnel mode."""

    def __post_init__(self) -> None:
        _check_spi(self.spi)
        _check_transforms(self)
        _check_keys(self)
        if self.replay_window < MINIMUM_REPLAY_WINDOW:
            raise ValueError(f"replay window below {MINIMUM_REPLAY_WINDOW}")
        _check_tunnel(self)


def _check_spi(spi: int) -> None:
    # RFC 4303 §2.1: 1-255 are reserved by IANA, 0 is for local use only.
    if not 256 <= spi <= 0xFFFFFFFF:
        raise ValueError(f"SPI 0x{spi:x} outside 256..2^32-1")


def _check_transforms(config: SAConfig) -> None:
    encryption, integrity = config.encryption, config.integrity
    if config.protocol is Protocol.AH and encryption is not Encryption.NULL:
        raise ValueError("AH has no encryption transform")
    if encryption.is_aead and integrity is not Integrity.NONE:
        # RFC 7296 §3.3: an AEAD transform carries its own integrity.
        raise ValueError("an AEAD encryption transform takes no integrity")
    if not encryption.is_aead and integrity is Integrity.NONE:
        # RFC 4303 §3.2: ESP without integrity is not offered here (RFC 8221).
        raise ValueError(f"{encryption.name} needs an integrity transform")


def _check_keys(config: SAConfig) -> None:
    if len(config.encryption_key) != config.encryption.key_length:
        raise ValueError(
            f"{config.encryption.name} needs a {config.encryption.key_length}-byte key"
        )
    if len(config.integrity_key) != config.integrity.key_length:
        raise ValueError(
            f"{config.integrity.name} needs a {config.integrity.key_length}-byte key"
        )


def _check_tunnel(config: SAConfig) -> None:
    source, destination = config.tunnel_source, config.tunnel_destination
    if config.mode is not Mode.TUNNEL:
        return
    if source is None or destination is None:
        raise ValueError("tunnel mode needs tunnel_source and tunnel_destination")
    if source.version != destination.version:
        raise ValueError("tunnel addresses of different IP versions")
