"""charon as initiator against our daemon while it demands a COOKIE.

With ``cookie_threshold = 0`` our daemon answers every fresh IKE_SA_INIT
with N(COOKIE) and keeps nothing; charon must repeat its request with the
cookie first (RFC 7296 §2.6), and the tunnel then carries traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from test_charon import (
    SUITES,
    OurNode,
    charon_connection,
    charon_lab,  # noqa: F401 - the fixture, used by name
    check_traffic,
    inside,
    our_connection,
    run,
    until,
)

from ipsec.ike.daemon import ChildSaInstalled, IkeSaUp


@pytest.mark.peer("charon")
@pytest.mark.root
def test_charon_answers_our_cookie_challenge(charon_lab):  # noqa: F811
    lab, charon = charon_lab
    suite = SUITES[0].values[0]
    charon.load(charon_connection(suite))

    async def scenario():
        node = await OurNode.start()
        try:
            daemon = node.daemon
            daemon.settings = replace(daemon.settings, cookie_threshold=0)
            daemon.load(our_connection(suite))
            outcome = await asyncio.to_thread(charon.initiate)
            await until(lambda: node.of(ChildSaInstalled), 10, "our CHILD_SA")

            assert "initiate completed successfully" in outcome, outcome
            assert daemon.drops["COOKIE required"] == 1
            assert len(node.of(IkeSaUp)) == 1
            await check_traffic(lab, charon, node)
        finally:
            node.close()

    with inside(lab):
        run(scenario())
