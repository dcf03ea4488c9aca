"""Shared by the secure-trunk tests: node configurations on random
loopback addresses, a runtime with its events, and waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from peer_tools import require_root

from sbc.config.model import Config
from sbc.secure.runtime import SecureTrunks
from sbc.secure.state import SecureTrunkStateChanged, TrunkState

PSK = "loopback secure trunk"
SIP_PORT = 5060
FAST_DPD = {
    "dpd": {"delay": 1, "action": "restart"},
    "retransmission": {"timeout": 0.3, "tries": 2},
}


def addresses(count: int) -> list[str]:
    base = random.randrange(1, 250)
    picks = random.sample(range(1, 250), count)
    return [f"127.{base}.{pick}.1" for pick in picks]


def node_config(
    me: str, peers: dict[str, str], *, profiles=None, start="start", trunk_profile=None
) -> Config:
    """A node at ``me`` with a transport-mode trunk to each of ``peers``
    (name -> address), protected by profile ``p`` unless told otherwise."""
    profiles = profiles or {"p": {}}
    return Config.model_validate(
        {
            "ipsec": {"node": f"n{me}", "address": me, "identity": f"{me}.sbc.test"},
            "listeners": [
                {
                    "name": "sec",
                    "transport": "udp",
                    "address": me,
                    "port": SIP_PORT,
                    "ipsec": True,
                }
            ],
            "ipsec_profiles": [
                {"name": name, "psk": PSK, "start_action": start, **FAST_DPD, **body}
                for name, body in profiles.items()
            ],
            "trunks": [
                {
                    "name": name,
                    "kind": "peer-sbc",
                    "listeners": ["sec"],
                    "targets": [{"host": address}],
                    "ipsec_profile": (trunk_profile or {}).get(name, "p"),
                    "ipsec_identity": f"{address}.sbc.test",
                }
                for name, address in peers.items()
            ],
        }
    )


class Node:
    def __init__(self, address: str) -> None:
        self.address = address
        self.secure = SecureTrunks(retry_delays=(0.5,))
        self.events: list[object] = []
        self.secure.subscribe(self.events.append)

    def states(self, trunk: str) -> list[SecureTrunkStateChanged]:
        return [
            e
            for e in self.events
            if isinstance(e, SecureTrunkStateChanged) and e.trunk == trunk
        ]

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def spis(self, trunk: str) -> set[str]:
        return {
            child.inbound_spi
            for sa in self.secure.sa_views(trunk)
            for child in sa.children
        }


async def until(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def is_up(node: Node, trunk: str) -> bool:
    state = node.secure.trunk_state(trunk)
    return state is not None and state.state is TrunkState.UP


async def round_trip(a: Node, b: Node, payload: bytes) -> bytes:
    """A's listener address to B's, through the trunk's CHILD_SA, and back."""
    received: list[bytes] = []

    def echo(data: bytes, source: tuple[str, int]) -> None:
        b.secure.data_plane.send(b.address, source[0], 17, SIP_PORT, source[1], data)

    b.secure.data_plane.bind(b.address, SIP_PORT, echo)
    a.secure.data_plane.bind(a.address, SIP_PORT, lambda d, s: received.append(d))
    drop = a.secure.data_plane.send(
        a.address, b.address, 17, SIP_PORT, SIP_PORT, payload
    )
    assert drop is None
    await until(lambda: received, timeout=3)
    return received[0]


def run(coroutine):
    require_root("IKE binds UDP 500 and 4500")
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@contextlib.asynccontextmanager
async def trunk_pair(
    b_profiles: dict | None = None,
) -> AsyncIterator[tuple[Node, Node]]:
    """A with trunk ``to-b`` (starting), B with ``to-a`` (waiting); both
    stopped at the end. ``b_profiles`` changes B's profiles."""
    a_address, b_address = addresses(2)
    a, b = Node(a_address), Node(b_address)
    await b.secure.start(
        node_config(b_address, {"to-a": a_address}, start="none", profiles=b_profiles)
    )
    await a.secure.start(node_config(a_address, {"to-b": b_address}))
    try:
        yield a, b
    finally:
        await a.secure.stop()
        await b.secure.stop()
