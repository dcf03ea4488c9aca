"""Two or three SecureTrunks runtimes on loopback, each from its own config.

Every node binds IKE (500) and ESP in UDP (4500) on its own 127.x.y.1
address, drawn at random per test so that parallel workers do not meet.
What goes through a trunk is checked end to end: UDP sent on the trunk's
listener address through one node's data plane channel arrives, decrypted,
at the other node's binding.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ike.test_certificates import Authority
from secure_lab import (
    FAST_DPD,
    SIP_PORT,
    Node,
    addresses,
    is_up,
    node_config,
    round_trip,
    run,
    trunk_pair,
    until,
)

from ipsec.ike.daemon import ChildSaInstalled, IkeSaDown
from sbc.config.model import Config
from sbc.secure.derive import connection_name, protected_connections
from sbc.secure.runtime import SecureTrunks
from sbc.secure.state import SecureTrunkStateChanged, TrunkState


def test_trunks_come_up_from_configs_and_carry_udp():
    async def scenario():
        async with trunk_pair() as (a, b):
            await until(lambda: is_up(a, "to-b") and is_up(b, "to-a"))

            echoed = await round_trip(a, b, b"OPTIONS sip:b SIP/2.0")

            assert echoed == b"OPTIONS sip:b SIP/2.0"
            [a_sa], [b_sa] = (
                a.secure.sa_views("to-b"),
                b.secure.sa_views("to-a"),
            )
            assert (a_sa.spi_i, a_sa.spi_r) == (b_sa.spi_i, b_sa.spi_r)
            assert a_sa.initiator and not b_sa.initiator
            assert a_sa.encryption == "ENCR_AES_GCM_16_128"
            assert a_sa.prf == "PRF_HMAC_SHA2_256" and a_sa.dh_group == "CURVE25519"
            [a_child], [b_child] = a_sa.children, b_sa.children
            assert a_child.inbound_spi == b_child.outbound_spi
            assert a_child.mode == "transport" and a_child.encapsulated
            assert a_child.local_ts == (a.address,)
            assert a_child.remote_ts == (b.address,)
            assert a_child.packets_out == 1 and a_child.packets_in == 1
            assert a_child.rekey_due is not None and a_sa.rekey_due is not None
            assert a.secure.unprotected == set()
            assert a.states("to-b")[0].state is TrunkState.DOWN
            assert a.states("to-b")[-1] == SecureTrunkStateChanged(
                "to-b", TrunkState.UP, "", True
            )

    run(scenario())


def test_changed_profile_renews_its_sas_and_leaves_the_others():
    async def scenario():
        a_address, b_address, c_address = addresses(3)
        a, b, c = Node(a_address), Node(b_address), Node(c_address)
        profiles = {"p": {}, "q": {}}
        routes = {"to-b": "p", "to-c": "q"}
        peers = {"to-b": b_address, "to-c": c_address}
        await b.secure.start(node_config(b_address, {"to-a": a_address}, start="none"))
        await c.secure.start(node_config(c_address, {"to-a": a_address}, start="none"))
        await a.secure.start(
            node_config(a_address, peers, profiles=profiles, trunk_profile=routes)
        )
        try:
            await until(lambda: is_up(a, "to-b") and is_up(a, "to-c"))
            to_b, to_c = a.spis("to-b"), a.spis("to-c")

            # Profile q moves to AES-GCM-256 on A and C; p stays.
            stronger = {"esp_proposals": [{"encryption": "aes256gcm16"}]}
            await c.secure.apply(
                node_config(
                    c_address, {"to-a": a_address}, start="none",
                    profiles={"p": stronger},
                )
            )  # fmt: skip
            await a.secure.apply(
                node_config(
                    a_address, peers, trunk_profile=routes,
                    profiles={"p": {}, "q": stronger},
                )
            )  # fmt: skip
            await until(lambda: a.spis("to-c") and not a.spis("to-c") & to_c)
            await until(lambda: is_up(a, "to-c"))

            [child] = a.secure.sa_views("to-c")[0].children
            assert child.encryption == "AES_GCM_16_256"
            assert a.spis("to-b") == to_b
            assert not [
                e
                for e in a.of(IkeSaDown)
                if e.connection == connection_name("to-b", IPv4Address(b_address))
            ]
            assert await round_trip(a, c, b"after the change") == b"after the change"
        finally:
            for node in (a, b, c):
                await node.secure.stop()

    run(scenario())


def test_deleted_trunk_deletes_its_sas_on_both_sides():
    async def scenario():
        async with trunk_pair() as (a, b):
            await until(lambda: is_up(a, "to-b") and is_up(b, "to-a"))

            await a.secure.apply(node_config(a.address, {}))
            await until(lambda: not b.secure.sa_views())

            assert a.secure.sa_views() == []
            assert a.secure.data_plane.stats()["inbound"] == {}
            assert b.secure.data_plane.stats()["outbound"] == {}
            assert b.secure.trunk_state("to-a").state is TrunkState.DOWN
            assert a.secure.trunk_state("to-b") is None
            # The peer cannot bring it back: A no longer knows the trunk.
            b.secure.initiate("to-a")
            await asyncio.sleep(1.0)
            assert not a.secure.sa_views()
            # Nothing protected and no ipsec section: nothing to refuse.
            await a.secure.apply(Config())
            assert a.secure.trunk_states() == []

    run(scenario())


PEER_SCRIPT = """
import asyncio, json, sys
from sbc.config.model import Config
from sbc.secure.runtime import SecureTrunks

async def main():
    secure = SecureTrunks()
    await secure.start(Config.model_validate(json.loads(sys.argv[1])))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_peer(config: Config) -> subprocess.Popen[str]:
    document = json.dumps(
        config.model_dump(mode="json", context={"reveal_secrets": True})
    )
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT, document],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_killed_peer_takes_the_trunk_down_and_back_up():
    async def scenario():
        a_address, b_address = addresses(2)
        a = Node(a_address)
        b_config = node_config(b_address, {"to-a": a_address}, start="none")
        peer = start_peer(b_config)
        await a.secure.start(node_config(a_address, {"to-b": b_address}))
        loop = asyncio.get_running_loop()
        try:
            await until(lambda: is_up(a, "to-b"))

            peer.send_signal(signal.SIGKILL)
            peer.wait()
            killed = loop.time()
            await until(lambda: a.secure.trunk_state("to-b").state is TrunkState.DOWN)
            noticed = loop.time() - killed

            # DPD after 1 s of silence, then 0.3 s x (1 + 1.8 + 1.8^2)
            # unanswered; slack for a loaded machine.
            assert noticed < 1 + 0.3 * (1 + 1.8 + 1.8**2) + 3
            assert "to-b" in a.secure.unprotected
            # The first down state says why; the failed attempts to set it
            # up again may later say "no response to IKE_SA_INIT".
            down = [s for s in a.states("to-b")[1:] if s.state is TrunkState.DOWN]
            assert down[0].reason == "peer dead (DPD)"

            peer = start_peer(b_config)
            await until(lambda: is_up(a, "to-b"), timeout=15)
            assert a.secure.unprotected == set()
        finally:
            peer.kill()
            peer.wait()
            await a.secure.stop()

    run(scenario())


def test_wrong_psk_reports_auth_failed():
    async def scenario():
        async with trunk_pair(b_profiles={"p": {"psk": "another secret"}}) as (a, _):
            await until(lambda: a.of(IkeSaDown))
            await asyncio.sleep(0.1)

            state = a.secure.trunk_state("to-b")
            assert state.state is TrunkState.DOWN and state.reason == "auth failed"
            assert not a.of(ChildSaInstalled)
            ike = a.secure.snapshot()["ike"]
            assert ike["failures"] == {"AUTHENTICATION_FAILED": 1}
            assert "IKE_AUTH" not in ike["exchanges"]

    run(scenario())


def mesh_config(me: str, peer: str) -> Config:
    return Config.model_validate(
        {
            "ipsec": {
                "node": f"n{me}",
                "address": me,
                "identity": f"{me}.sbc.test",
                "mesh_listener": "mesh",
            },
            "listeners": [
                {
                    "name": "mesh",
                    "transport": "udp",
                    "address": me,
                    "port": SIP_PORT,
                    "ipsec": True,
                }
            ],
            "ipsec_profiles": [{"name": "mesh", "psk": "mesh secret", **FAST_DPD}],
            "mesh_peers": [
                {
                    "name": f"node-{peer}",
                    "address": peer,
                    "identity": f"{peer}.sbc.test",
                    "profile": "mesh",
                }
            ],
        }
    )


def test_two_mesh_peers_set_up_one_ike_sa_between_them():
    async def scenario():
        a_address, b_address = addresses(2)
        a, b = Node(a_address), Node(b_address)
        await a.secure.start(mesh_config(a_address, b_address))
        await b.secure.start(mesh_config(b_address, a_address))
        try:
            await until(
                lambda: is_up(a, f"node-{b_address}") and is_up(b, f"node-{a_address}")
            )
            await asyncio.sleep(0.5)

            [a_sa], [b_sa] = a.secure.sa_views(), b.secure.sa_views()
            assert (a_sa.spi_i, a_sa.spi_r) == (b_sa.spi_i, b_sa.spi_r)
            low = min(a_address, b_address, key=lambda text: IPv4Address(text))
            assert a_sa.initiator == (a_address == low)
            assert await round_trip(b, a, b"INVITE over the mesh") == (
                b"INVITE over the mesh"
            )
        finally:
            await a.secure.stop()
            await b.secure.stop()

    run(scenario())


def certificate_profile(authority, address: str) -> dict:
    """Profile ``p`` with a P-256 certificate naming ``address.sbc.test``."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    certificate, key = authority.end_entity(
        [x509.DNSName(f"{address}.sbc.test")],
        not_before=now - day,
        not_after=now + day,
    )
    return {
        "p": {
            "auth": "certificate",
            "psk": None,
            "certificate": pem(certificate),
            "private_key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "ca_certificates": [pem(authority.certificate)],
        }
    }


def pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_profile_authenticates_both_nodes():
    async def scenario():
        authority = Authority.root()
        a_address, b_address = addresses(2)
        a, b = Node(a_address), Node(b_address)
        a_profiles = certificate_profile(authority, a_address)
        b_config = node_config(
            b_address, {"to-a": a_address}, start="none",
            profiles=certificate_profile(authority, b_address),
        )  # fmt: skip
        await b.secure.start(b_config)
        await a.secure.start(
            node_config(a_address, {"to-b": b_address}, profiles=a_profiles)
        )
        try:
            await until(lambda: is_up(a, "to-b") and is_up(b, "to-a"))

            assert await round_trip(a, b, b"signed") == b"signed"
            key = a_profiles["p"]["private_key"].splitlines()[1]
            config = node_config(a_address, {"to-b": b_address}, profiles=a_profiles)
            assert key not in repr(protected_connections(config))
            # The same certificates again: nothing to renew.
            spis = a.spis("to-b")
            await a.secure.apply(
                node_config(a_address, {"to-b": b_address}, profiles=a_profiles)
            )
            await asyncio.sleep(0.3)
            assert a.spis("to-b") == spis
        finally:
            await a.secure.stop()
            await b.secure.stop()

    run(scenario())


def test_start_on_a_taken_port_raises_and_can_be_retried():
    async def scenario():
        [address] = addresses(1)
        secure = SecureTrunks()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
            blocker.bind((address, 500))
            with pytest.raises(OSError):
                await secure.start(node_config(address, {}))
            with pytest.raises(RuntimeError):
                secure.data_plane  # noqa: B018 - the property raises

        await secure.start(node_config(address, {}))
        await secure.stop()

    run(scenario())


def test_rekey_action_replaces_the_child_sa_and_keeps_the_ike_sa():
    async def scenario():
        async with trunk_pair() as (a, b):
            await until(lambda: is_up(a, "to-b") and is_up(b, "to-a"))
            [before] = a.secure.sa_views("to-b")
            [old_child] = before.children

            await a.secure.tunnel_action("to-b", "rekey")

            def rekeyed():
                views = a.secure.sa_views("to-b")
                return (
                    len(views) == 1
                    and [c.inbound_spi for c in views[0].children]
                    not in ([], [old_child.inbound_spi])
                    and len(views[0].children) == 1
                )

            await until(rekeyed)
            echoed = await round_trip(a, b, b"after the rekey action")

            [after] = a.secure.sa_views("to-b")
            assert (after.spi_i, after.spi_r) == (before.spi_i, before.spi_r)
            assert echoed == b"after the rekey action"
            assert is_up(a, "to-b")
            counts = a.secure.snapshot()["ike"]
            assert counts["exchanges"] == {
                "IKE_SA_INIT": 1,
                "IKE_AUTH": 1,
                "CREATE_CHILD_SA": 1,
            }
            assert counts["failures"] == {}

    run(scenario())
