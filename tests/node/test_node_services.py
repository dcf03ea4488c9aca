"""Registration restarts only for the trunk that changed.

A registrar on loopback (a UDP socket of the test that answers 200 to
every REGISTER) counts what the node sends while other trunks change, the
registering trunk changes, and is deleted.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

import pytest
from node_harness import HOST, Lab, Records, config_of, new_node, wait_until

from sbc.sip.message import Request, make_response
from sbc.sip.parser import parse_message

pytestmark = pytest.mark.timeout(60)


class Registrar(asyncio.DatagramProtocol):
    """Answers 200 to each REGISTER; keeps the Expires of each one."""

    def __init__(self) -> None:
        self.expires: list[int] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        if not isinstance(request, Request) or request.method != "REGISTER":
            return
        if request.headers.get("Expires") is None:
            return
        self.expires.append(int(request.headers.get("Expires") or 0))
        response = make_response(request, 200, to_tag=os.urandom(4).hex())
        assert self.transport is not None
        self.transport.sendto(response.to_bytes(), addr)


def with_registering_trunk(lab: Lab, port: int, max_calls: int | None = None) -> dict:
    document = lab.document()
    document["trunks"].append(
        {
            "name": "registered",
            "kind": "carrier",
            "listeners": ["lo"],
            "targets": [{"host": HOST, "port": port}],
            "registration": {
                "aor": f"sip:account@{HOST}",
                "registrar": f"sip:{HOST}:{port}",
                "expires": 3600,
            },
            "limits": {"max_calls": max_calls},
        }
    )
    return document


def test_registration_restarts_only_when_its_trunk_changes():
    lab = Lab()

    async def scenario():
        loop = asyncio.get_running_loop()
        transport, registrar = await loop.create_datagram_endpoint(
            Registrar, local_addr=(HOST, 0)
        )
        port = transport.get_extra_info("sockname")[1]
        node = new_node(Records())
        await node.start(config_of(with_registering_trunk(lab, port)))
        await wait_until(lambda: node.trunk("registered").registration == "registered")
        first = list(registrar.expires)

        other_changed = with_registering_trunk(lab, port)
        other_changed["trunks"][1]["limits"] = {"max_calls": 2}  # the callee's
        await node.apply(config_of(other_changed))
        await asyncio.sleep(1.0)
        after_other = list(registrar.expires)

        own_changed = with_registering_trunk(lab, port, max_calls=7)
        own_changed["trunks"][1]["limits"] = {"max_calls": 2}
        await node.apply(config_of(own_changed))
        await wait_until(lambda: len(registrar.expires) == 3)
        after_own = list(registrar.expires)

        await node.apply(
            config_of(other_changed | {"trunks": other_changed["trunks"][:2]})
        )
        await wait_until(lambda: len(registrar.expires) == 4)
        names = [view.name for view in node.trunks()]
        await node.stop()
        transport.close()
        return first, after_other, after_own, list(registrar.expires), names

    first, after_other, after_own, after_delete, names = asyncio.run(scenario())

    assert first == [3600]
    assert after_other == [3600]  # another trunk's change left it alone
    assert after_own == [3600, 0, 3600]  # removed, then registered afresh
    assert after_delete == [3600, 0, 3600, 0]
    assert names == ["caller", "callee"]
