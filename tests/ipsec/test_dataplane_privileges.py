"""Without CAP_NET_RAW or CAP_NET_ADMIN the data paths say which is missing.

Each case runs in a subprocess whose capability bounding set lacks the one
capability (``setpriv --bounding-set``), so even root loses it there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from peer_tools import require_root, require_tool

RAW_SOCKET = """
import asyncio
from ipsec.dataplane import CapabilityMissing, DataPlane
from ipsec.esp import Protocol
plane = DataPlane(asyncio.new_event_loop())
try:
    plane.open_raw(Protocol.{protocol}, "127.0.0.1")
except CapabilityMissing as error:
    print(error.capability)
    print(error)
else:
    print("opened")
"""

TUN_DEVICE = """
import asyncio
from ipsec.dataplane import CapabilityMissing, TunDevice
try:
    asyncio.run(TunDevice.create("nocap{pid}"))
except CapabilityMissing as error:
    print(error.capability)
    print(error)
else:
    print("created")
"""


def without(capability: str, script: str) -> list[str]:
    setpriv = require_tool("setpriv", "util-linux")
    result = subprocess.run(
        [setpriv, "--inh-caps=-all", f"--bounding-set=-{capability}",
         sys.executable, "-c", script],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("protocol", ["ESP", "AH"])
def test_raw_socket_without_cap_net_raw_names_the_capability(protocol) -> None:
    require_root("dropping a capability root holds")

    lines = without("net_raw", RAW_SOCKET.format(protocol=protocol))

    assert lines[0] == "CAP_NET_RAW"
    assert "CAP_NET_RAW" in lines[1] and "raw socket" in lines[1]


def test_raw_socket_with_cap_net_raw_opens() -> None:
    require_root("raw sockets")

    lines = without("net_admin", RAW_SOCKET.format(protocol="ESP"))

    assert lines == ["opened"]


def test_tun_device_without_cap_net_admin_names_the_capability() -> None:
    require_root("dropping a capability root holds")

    lines = without("net_admin", TUN_DEVICE.format(pid=os.getpid() % 10000))

    assert lines[0] == "CAP_NET_ADMIN"
    assert "TUN device" in lines[1]
