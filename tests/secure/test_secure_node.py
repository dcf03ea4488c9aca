"""The node with its secure runtime: a protected trunk's SIP rides its SAs.

A `sbc.node.Node` built with `node_runtime` runs a protected trunk to a
peer node (a SecureTrunks runtime of its own on another loopback address).
The peer sends SIP OPTIONS through its data plane's channel; the node's
IPsec listener answers through the same SAs. Removing the trunk live
deletes its SAs on both sides.
"""

from __future__ import annotations

import copy

from secure_lab import SIP_PORT, Node, addresses, is_up, node_config, run, until

from sbc.cdr import CallRecord
from sbc.config.model import Config
from sbc.io.settings import TransportSettings
from sbc.node import Node as SbcNode
from sbc.node import NodeSettings
from sbc.secure import TrunkState, node_runtime


class Records:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        self.records.append(record)


def options(source: str, destination: str) -> bytes:
    return (
        f"OPTIONS sip:{destination} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{SIP_PORT};branch=z9hG4bK-secure-1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:peer@{source}>;tag=peer1\r\n"
        f"To: <sip:{destination}>\r\n"
        "Call-ID: secure-options-1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def with_inbound(config: Config, trunk: str, source: str) -> Config:
    document = config.model_dump(mode="json", context={"reveal_secrets": True})
    for item in document["trunks"]:
        if item["name"] == trunk:
            item["inbound"] = {"allow": [f"{source}/32"]}
    return Config.model_validate(copy.deepcopy(document))


def test_node_answers_sip_inside_the_trunk_sas_and_drops_them_live():
    async def scenario():
        a_address, b_address = addresses(2)
        peer = Node(b_address)
        await peer.secure.start(
            node_config(b_address, {"to-a": a_address}, start="none")
        )
        node = SbcNode(
            NodeSettings(TransportSettings(listen=())),
            Records(),
            secure_runtime=node_runtime,
        )
        config = with_inbound(
            node_config(a_address, {"to-b": b_address}), "to-b", b_address
        )
        try:
            outcomes = await node.start(config)
            assert all(outcome.applied for outcome in outcomes.values()), outcomes
            secure = node.secure
            assert secure is not None
            await until(lambda: is_up(peer, "to-a"))
            await until(lambda: secure.trunk_protection() == {"to-b": "up"})

            answers: list[bytes] = []
            plane = peer.secure.data_plane
            plane.bind(b_address, SIP_PORT, lambda data, _: answers.append(data))
            sent = plane.send(
                b_address, a_address, 17, SIP_PORT, SIP_PORT,
                options(b_address, a_address),
            )  # fmt: skip
            assert sent is None
            await until(lambda: answers, timeout=5)

            assert answers[0].startswith(b"SIP/2.0 200")
            assert b"secure-options-1" in answers[0]
            assert node.trunk("to-b").protection == "up"
            assert node.engine is not None
            assert node.engine.unprotected_trunks is secure.unprotected
            [ike] = node.security_associations()
            assert ike["trunk"] == "to-b" and ike["children"]

            await node.apply(node_config(a_address, {}))
            await until(lambda: not peer.secure.sa_views())
            state = peer.secure.trunk_state("to-a")
            assert state is not None and state.state is TrunkState.DOWN
        finally:
            await node.stop()
            await peer.secure.stop()

    run(scenario())
