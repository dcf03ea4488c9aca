"""Dead peer detection against a charon that is killed, then started again.

Our daemon (namespace A) sets up the IKE_SA to charon (namespace B) with a
short DPD delay and a short retransmission schedule. charon is killed with
SIGKILL, so it sends no Delete: only DPD can notice. Our daemon must emit
PeerDead within dpd_delay plus the retransmission give-up, and empty its
data plane. With dpd_action restart it initiates again, and once charon is
running again the new IKE_SA and CHILD_SA come up and carry traffic.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace

import pytest
from test_charon import (
    SUITES,
    OurNode,
    charon_connection,
    charon_lab,  # noqa: F401 (the fixture, used by name)
    check_traffic,
    inside,
    our_connection,
    run,
    until,
)

from ipsec.ike.config import DpdAction
from ipsec.ike.connection import StartAction
from ipsec.ike.daemon import ChildSaInstalled, ChildSaRemoved, IkeSaUp, PeerDead

DPD_DELAY = 1.0
RETRANSMIT_TIMEOUT, RETRANSMIT_TRIES, RETRANSMIT_BASE = 0.5, 3, 1.8
GIVE_UP = RETRANSMIT_TIMEOUT * sum(RETRANSMIT_BASE**n for n in range(4))
"""Time from the first DPD request to giving up: 0.5 s * (1 + 1.8 + ...)."""


def kill(charon):
    """SIGKILL, so charon sends no Delete and only DPD can notice."""
    process = charon.process
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    charon.process = None
    # The next start waits for a fresh vici socket, not the dead one's.
    charon.vici.unlink(missing_ok=True)


def dpd_connection(action):
    connection = our_connection(SUITES[0].values[0], StartAction.START)
    return replace(
        connection,
        dpd_delay=DPD_DELAY,
        dpd_action=action,
        retransmit_timeout=RETRANSMIT_TIMEOUT,
        retransmit_tries=RETRANSMIT_TRIES,
    )


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("action", [DpdAction.CLEAR, DpdAction.RESTART])
def test_dpd_notices_killed_charon_and_restart_comes_back(charon_lab, action):  # noqa: F811
    lab, charon = charon_lab
    charon.load(charon_connection(SUITES[0].values[0]))

    async def scenario():
        loop = asyncio.get_running_loop()
        node = await OurNode.start()
        try:
            node.daemon.load(dpd_connection(action))
            await until(lambda: node.of(ChildSaInstalled), 10, "the CHILD_SA")
            await check_traffic(lab, charon, node)

            await asyncio.to_thread(kill, charon)
            killed_at = loop.time()
            # A DPD round starts at most dpd_delay after the last traffic.
            bound = DPD_DELAY + GIVE_UP + 2.0
            await until(lambda: node.of(PeerDead), bound, "PeerDead")
            noticed = loop.time() - killed_at

            assert noticed <= bound
            assert node.of(ChildSaRemoved)
            stats = node.dataplane.stats()
            assert stats["inbound"] == {} and stats["outbound"] == {}
            if action is DpdAction.CLEAR:
                await asyncio.sleep(1.0)
                assert node.daemon.ike_sas() == []
                return

            await asyncio.to_thread(charon.start)
            await asyncio.to_thread(charon.load, charon_connection(SUITES[0].values[0]))
            await until(
                lambda: len(node.of(ChildSaInstalled)) >= 2, 30, "the new CHILD_SA"
            )
            assert len(node.of(IkeSaUp)) == 2
            del node.events[: node.events.index(node.of(ChildSaInstalled)[1])]
            await check_traffic(lab, charon, node)
        finally:
            node.close()

    with inside(lab):
        run(scenario())
