"""Secure trunks: IPsec profiles drive IKEv2 connections, trunk state follows
protection, and mesh peers become protected trunks (docs/secure-trunks.md)."""

from .derive import (
    NodeSectionMissing,
    TrunkConnection,
    mesh_trunks,
    protected_connections,
    with_mesh,
)
from .runtime import (
    ChildSaView,
    IkeSaView,
    RestartRequired,
    SecureEvent,
    SecureTrunks,
    node_runtime,
)
from .state import SecureTrunkStateChanged, TrunkState

__all__ = [
    "ChildSaView",
    "IkeSaView",
    "NodeSectionMissing",
    "RestartRequired",
    "SecureEvent",
    "SecureTrunks",
    "TrunkConnection",
    "TrunkState",
    "SecureTrunkStateChanged",
    "mesh_trunks",
    "node_runtime",
    "protected_connections",
    "with_mesh",
]
