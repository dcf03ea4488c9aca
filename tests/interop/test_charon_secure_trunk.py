"""A protected trunk of ours against strongSwan's charon, from configuration.

SecureTrunks runs in namespace A (192.0.2.1) from a YAML-shaped Config: a
tunnel-mode profile with its IKE defaults (AES-GCM-16, PRF-SHA256, X25519;
ESP AES-GCM-16 without ESN, which charon's kernel-libipsec lacks), the trunk ``carrier`` behind gateway 192.0.2.2 with
inner network 10.2.0.0/24, and the ipsec listener 10.1.0.2:7 on which the
test binds an echo. charon (namespace B) runs ``encap = yes``, the setting
docs/secure-trunks.md names for interoperation. Our side initiates; UDP
from charon's inner address reaches the echo through the SAs; charon then
deletes the IKE_SA, the trunk goes down, and our close_action brings it up
again.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from test_charon import (
    CHARON_ADDRESS,
    CHARON_ID,
    CHARON_INNER,
    ECHO_ADDRESS,
    ECHO_PORT,
    OUR_ADDRESS,
    OUR_ID,
    PSK,
    UDP_PROBE,
    charon_connection,
    charon_lab,  # noqa: F401 (the fixture, used by name)
    inside,
    run,
    until,
)

from sbc.config.model import Config
from sbc.secure import SecureTrunks, TrunkState

SUITE = ("aes128gcm16-prfsha256-x25519", "aes128gcm16")


def trunk_config() -> Config:
    return Config.model_validate(
        {
            "ipsec": {"node": "sbc-a", "address": OUR_ADDRESS, "identity": OUR_ID},
            "listeners": [
                {
                    "name": "sec",
                    "transport": "udp",
                    "address": ECHO_ADDRESS,
                    "port": ECHO_PORT,
                    "ipsec": True,
                }
            ],
            "ipsec_profiles": [
                {
                    "name": "carrier",
                    "psk": PSK,
                    "mode": "tunnel",
                    # kernel-libipsec refuses ESN ("ESN not supported").
                    "esp_proposals": [{"encryption": "aes128gcm16", "esn": False}],
                }
            ],
            "trunks": [
                {
                    "name": "carrier",
                    "kind": "carrier",
                    "listeners": ["sec"],
                    "targets": [{"host": CHARON_INNER, "port": ECHO_PORT}],
                    "ipsec_profile": "carrier",
                    "ipsec_gateway": CHARON_ADDRESS,
                    "ipsec_networks": ["10.2.0.0/24"],
                    "ipsec_identity": CHARON_ID,
                }
            ],
        }
    )


def state(secure: SecureTrunks) -> TrunkState | None:
    current = secure.trunk_state("carrier")
    return None if current is None else current.state


@pytest.mark.peer("charon")
@pytest.mark.root
def test_configured_trunk_comes_up_with_charon_and_recovers(charon_lab):  # noqa: F811
    lab, charon = charon_lab
    charon.load(charon_connection(SUITE))

    async def scenario():
        secure = SecureTrunks(retry_delays=(0.5,))
        await secure.start(trunk_config())
        echoed: list[bytes] = []

        def echo(data: bytes, source: tuple[str, int]) -> None:
            echoed.append(data)
            secure.data_plane.send(
                ECHO_ADDRESS, source[0], 17, ECHO_PORT, source[1], data
            )

        secure.data_plane.bind(ECHO_ADDRESS, ECHO_PORT, echo)
        try:
            await until(lambda: state(secure) is TrunkState.UP, 15, "the trunk up")
            probe = await asyncio.to_thread(
                lab.b.exec, sys.executable, "-c", UDP_PROBE, check=False
            )
            listing = await asyncio.to_thread(charon.list_sas)

            assert probe.stdout.startswith(f"{ECHO_ADDRESS} {ECHO_PORT} OPTIONS")
            [ike] = secure.sa_views("carrier")
            [child] = ike.children
            assert ike.initiator and ike.dh_group == "CURVE25519"
            assert child.mode == "tunnel" and not child.esn and child.encapsulated
            assert f"in  {child.outbound_spi}" in listing, listing
            assert f"out {child.inbound_spi}" in listing, listing

            outcome = await asyncio.to_thread(charon.terminate_ike)
            assert "terminate completed successfully" in outcome, outcome
            await until(
                lambda: (
                    secure.sa_views("carrier")
                    and secure.sa_views("carrier")[0].spi_i != ike.spi_i
                    and state(secure) is TrunkState.UP
                ),
                15,
                "the trunk up again",
            )
            assert secure.unprotected == set()
        finally:
            await secure.stop()

    with inside(lab):
        run(scenario())
