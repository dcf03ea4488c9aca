"""Inbound CHILD_SA SPIs come from the allocator the IKE_SA is given."""

import asyncio
import itertools

from ipsec.dataplane import DataPlane
from ipsec.ike.daemon import ChildSaInstalled, DaemonSettings, IkeDaemon, IkeSaDown
from ipsec.ike.events import ChildSaEstablished
from ipsec.ike.ike_sa import IkeSa

from .test_daemon import Node, echo_round_trip, pair, run, until
from .test_ike_sa import (
    INITIATOR_ID,
    RESPONDER_ID,
    drain,
    exchange_all,
    make_config,
    seeded,
)


def counting_allocator(start):
    counter = itertools.count(start)
    return lambda: next(counter).to_bytes(4, "big")


def test_child_sa_spis_come_from_the_allocator_on_both_sides():
    initiator = IkeSa(
        make_config(INITIATOR_ID, RESPONDER_ID),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(1),
        spi_allocator=counting_allocator(0x1000),
    )
    responder = IkeSa(
        make_config(RESPONDER_ID, INITIATOR_ID),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(2),
        spi_allocator=counting_allocator(0x2000),
    )

    initiator.initiate(0.0)
    exchange_all(initiator, responder)
    [i_child] = [e for e in drain(initiator) if isinstance(e, ChildSaEstablished)]
    [r_child] = [e for e in drain(responder) if isinstance(e, ChildSaEstablished)]
    initiator.rekey_child_sa(i_child.inbound_spi, 1.0)
    exchange_all(initiator, responder, now=1.0)
    rekeyed = [e for e in drain(initiator) if isinstance(e, ChildSaEstablished)]

    assert i_child.inbound_spi == (0x1000).to_bytes(4, "big")
    assert r_child.inbound_spi == (0x2000).to_bytes(4, "big")
    assert i_child.outbound_spi == r_child.inbound_spi
    assert [e.inbound_spi for e in rekeyed] == [(0x1001).to_bytes(4, "big")]


class FixedSpiNode(Node):
    """A daemon whose data plane draws SPIs from a scripted source."""

    def __init__(self, host, spi_values):
        loop = asyncio.get_running_loop()
        values = iter(spi_values)
        self.dataplane = DataPlane(loop, spi_source=lambda: next(values))
        settings = DaemonSettings(host, ike_port=0, nat_t_port=0)
        self.daemon = IkeDaemon(self.dataplane, settings)
        self.events = []
        self.daemon.subscribe(self.events.append)
        self.daemon.start()


def test_daemon_takes_inbound_spis_from_the_dataplane_even_when_repeated():
    # The source repeats 0x500: the data plane skips the taken value, so the
    # rekeyed CHILD_SA gets 0x600 although the source offered 0x500 again.
    spis = [0x500, 0x500, 0x500, 0x600] + list(range(0x700, 0x800))

    async def scenario():
        a, b = FixedSpiNode("127.0.0.1", spis), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True, "child_rekey_time": 0.3})
            await until(lambda: len(a.of(ChildSaInstalled)) >= 2)
            assert await echo_round_trip(a, b, b"after rekey")

            first, second = a.of(ChildSaInstalled)[:2]
            assert (first.inbound_spi, second.inbound_spi) == (0x500, 0x600)
            assert not a.of(IkeSaDown) and not b.of(IkeSaDown)
        finally:
            a.close()
            b.close()

    run(scenario())
