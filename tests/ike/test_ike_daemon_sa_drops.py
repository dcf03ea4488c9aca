"""Messages an established IKE_SA drops are counted by its daemon.

The daemon's ``drops`` feed the ``sbc_ike_drops_total`` metric. A forged
request that carries the IKE_SA's real SPIs but no valid integrity
checksum reaches the IKE_SA and is dropped there; that drop must show in
the daemon's counts too, or an attack on a live SA goes unseen.
"""

import asyncio
import os
import struct

from ipsec.ike.daemon import ChildSaInstalled

from .test_daemon import Node, echo_round_trip, pair, probe_socket, run, until


def test_forged_requests_with_real_spis_are_counted_by_the_daemon():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        sock = probe_socket()
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [sa] = b.daemon.ike_sas()
            spis = sa.engine.spi_i + sa.engine.spi_r
            before = sum(b.daemon.drops.values())
            for message_id in (2, 3, 4):
                sk = struct.pack("!BBH", 0, 0, 64) + os.urandom(60)
                header = struct.pack("!BBBBII", 46, 0x20, 37, 0x08, message_id, 92)
                forged = b"\x00\x00\x00\x00" + spis + header + sk
                sock.sendto(forged, ("127.0.0.2", b.daemon.nat_t_port))
            await asyncio.sleep(0.3)

            assert sum(b.daemon.drops.values()) - before == 3
            assert await echo_round_trip(a, b, b"still up") == [b"still up"]
        finally:
            sock.close()
            a.close()
            b.close()

    run(scenario())
