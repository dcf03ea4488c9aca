"""Errors raised while setting up a data path (never per packet)."""

from __future__ import annotations


class DataPlaneError(Exception):
    """A data path could not be set up or configured."""


class CapabilityMissing(DataPlaneError, PermissionError):
    """The process lacks the Linux capability an operation needs.

    The message names the capability so that an operator knows what to grant
    (``setcap``, a systemd ``AmbientCapabilities=`` line, or a container's
    ``cap_add``).
    """

    def __init__(self, capability: str, action: str) -> None:
        super().__init__(
            f"{action} needs {capability}; run as root or grant {capability} "
            f"(for example: setcap {capability.lower()}+ep on the interpreter)"
        )
        self.capability = capability
        self.action = action


class UnknownSA(DataPlaneError, KeyError):
    """An SA-management call named an SPI that is not installed."""

    def __init__(self, spi: int) -> None:
        super().__init__(f"no SA with SPI 0x{spi:08x}")
        self.spi = spi


class DuplicateSA(DataPlaneError):
    """An SA with this SPI (and direction) is installed already."""

    def __init__(self, spi: int) -> None:
        super().__init__(f"an SA with SPI 0x{spi:08x} is installed already")
        self.spi = spi
