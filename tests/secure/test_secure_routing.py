"""Protection feeds routing: a protected trunk without a CHILD_SA is
skipped and the call fails over; once its SA is up, calls go to it again.

The call engine runs in the in-memory lab of tests/b2bua; its
``unprotected_trunks`` is the live set of a real SecureTrunks runtime
whose trunk ``pbx`` peers with a node that is absent at first.
"""

from __future__ import annotations

import asyncio

from b2bua.b2bua_harness import ANSWER, Lab
from secure_lab import Node, addresses, is_up, node_config, run, until

from sbc.cdr import CdrWriter, read_call_records
from sbc.secure.records import IpsecCallRecords


def call_lands_on(lab: Lab) -> str:
    call = lab.caller.invite()
    lab.run()
    [answering] = [p for p in (lab.callee, lab.backup) if "INVITE" in p.methods()]
    answering.respond(answering.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert call.final is not None and call.final.status == 200
    answering.send_in_dialog(answering.dialog(), "BYE")
    lab.run()
    return lab.sbc.records[-1].b_trunk


def test_unprotected_trunk_skipped_until_its_sa_comes_up(tmp_path):
    async def scenario():
        a_address, b_address = addresses(2)
        a, b = Node(a_address), Node(b_address)
        await a.secure.start(node_config(a_address, {"pbx": b_address}))
        try:
            await asyncio.sleep(0.1)
            assert a.secure.unprotected == {"pbx"}
            lab = lab_with(a)

            assert call_lands_on(lab) == "backup"
            assert "INVITE" not in lab.callee.methods()

            await b.secure.start(
                node_config(b_address, {"to-a": a_address}, start="none")
            )
            await until(lambda: is_up(a, "pbx"))
            assert a.secure.unprotected == set()
            lab = lab_with(a)
            assert call_lands_on(lab) == "pbx"

            # Its call record names the SAs that carried the B-leg.
            writer = CdrWriter(tmp_path / "cdr.jsonl")
            IpsecCallRecords(writer, a.secure.call_identifiers).write(
                lab.sbc.records[-1]
            )
            writer.close()
            written = read_call_records(tmp_path / "cdr.jsonl").records
            [ike] = a.secure.sa_views("pbx")
            [child] = ike.children
            assert "a" not in written[0].ipsec
            assert written[0].ipsec["b"] == {
                "trunk": "pbx",
                "ike_sa": f"{ike.spi_i}_{ike.spi_r}",
                "ike_algorithms": [
                    "ENCR_AES_GCM_16_128", "PRF_HMAC_SHA2_256", "NONE", "CURVE25519"
                ],
                "child_sa": {"in": child.inbound_spi, "out": child.outbound_spi},
                "esp_algorithms": ["AES_GCM_16_128", "NONE"],
                "mode": "transport",
            }  # fmt: skip
        finally:
            await a.secure.stop()
            await b.secure.stop()

    run(scenario())


def lab_with(node: Node) -> Lab:
    """A lab whose call engine routes around ``node``'s unprotected trunks."""
    lab = Lab()
    lab.engine.unprotected_trunks = node.secure.unprotected
    return lab
