"""A profile the IPsec runtime refuses is the one reported as failed.

A new certificate profile whose PEM contents do not parse makes the
runtime refuse the configuration. The outcome must name that profile, not
the first profile of the file, which was running fine and stays applied.
"""

from __future__ import annotations

import copy

from secure_lab import addresses, node_config, run

from sbc.cdr import CallRecord
from sbc.config.model import Config
from sbc.io.settings import TransportSettings
from sbc.node import Node, NodeSettings
from sbc.secure import node_runtime

CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUJz1Zz8bJx3n7V1w6hQ0pLxQy0mYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJc2JjLmxvY2FsMB4XDTI2MTIwNDAwMDAwMFoXDTI3MTIwNDAw
-----END CERTIFICATE-----
"""
GARBAGE_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


class Records:
    def write(self, record: CallRecord) -> None:
        pass


def _with_broken_profile(config: Config, trunk: str) -> Config:
    document = config.model_dump(mode="json", context={"reveal_secrets": True})
    document["ipsec_profiles"].append(
        {
            "name": "broken",
            "auth": "certificate",
            "certificate": CERTIFICATE,
            "private_key": GARBAGE_KEY,
            "ca_certificates": [CERTIFICATE],
        }
    )
    for item in document["trunks"]:
        if item["name"] == trunk:
            item["ipsec_profile"] = "broken"
    return Config.model_validate(copy.deepcopy(document))


def test_unparseable_private_key_fails_its_own_profile_not_the_first():
    async def scenario():
        me, b, c = addresses(3)
        node = Node(
            NodeSettings(TransportSettings(listen=())),
            Records(),
            secure_runtime=node_runtime,
        )
        config = node_config(me, {"to-b": b, "to-c": c}, start="none")
        try:
            started = await node.start(config)
            outcomes = await node.apply(_with_broken_profile(config, "to-c"))
        finally:
            await node.stop()

        assert all(outcome.applied for outcome in started.values()), started
        broken = outcomes[("ipsec_profile", "broken")]
        assert not broken.applied and not broken.reason.startswith("not applied")
        assert outcomes[("ipsec_profile", "p")].applied
        assert outcomes[("trunk", "to-c")].reason == (
            "not applied: ipsec_profile 'broken' failed"
        )
        assert outcomes[("trunk", "to-b")].applied

    run(scenario())
