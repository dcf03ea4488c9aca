"""Trunk state from SA events and keepalive results, without I/O."""

from __future__ import annotations

from ipsec.esp import Encryption, Integrity, Mode
from ipsec.ike.constants import NotifyType
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    IkeSaDown,
    PeerDead,
)
from sbc.b2bua.keepalive import TargetCameUp, TargetWentDown, TrunkWentDown
from sbc.routing import TargetKey
from sbc.secure.state import ProtectionTracker, SecureTrunkStateChanged, TrunkState

SPIS = (bytes(8), bytes(8))


def installed(connection: str, spi: int, rekeyed: int | None = None):
    return ChildSaInstalled(
        connection, "t", spi, spi + 1, Encryption.AES_GCM_16_128, Integrity.NONE,
        True, Mode.TRANSPORT, True, (), (), rekeyed,
    )  # fmt: skip


def tracker(*connections: tuple[str, str]) -> ProtectionTracker:
    states = ProtectionTracker()
    states.configure(connections)
    return states


def test_new_trunk_is_down_until_a_child_sa_is_installed():
    states = tracker(("carrier", "carrier@a"))

    assert states.changes() == [
        SecureTrunkStateChanged("carrier", TrunkState.DOWN, "no IKE_SA yet", False)
    ]
    assert states.unprotected == {"carrier"}

    states.on_daemon_event(installed("carrier@a", 0x100))

    assert states.changes() == [
        SecureTrunkStateChanged("carrier", TrunkState.UP, "", True)
    ]
    assert states.unprotected == set()
    assert states.changes() == []


def test_rekey_keeps_the_trunk_up():
    states = tracker(("carrier", "carrier@a"))
    states.on_daemon_event(installed("carrier@a", 0x100))
    states.changes()

    states.on_daemon_event(installed("carrier@a", 0x200, rekeyed=0x100))
    states.on_daemon_event(ChildSaRemoved("carrier@a", "t", 0x100, 0x101, "rekeyed"))

    assert states.changes() == []
    assert states.state("carrier").state is TrunkState.UP


def test_peer_dead_is_the_reason_after_the_sas_go():
    states = tracker(("carrier", "carrier@a"))
    states.on_daemon_event(installed("carrier@a", 0x100))
    states.changes()

    # In the daemon's order: CHILD_SA removed, IKE_SA down, peer dead.
    states.on_daemon_event(
        ChildSaRemoved("carrier@a", "t", 0x100, 0x101, "no answer from the peer")
    )
    states.on_daemon_event(
        IkeSaDown("carrier@a", *SPIS, None, "no answer from the peer")
    )
    states.on_daemon_event(PeerDead("carrier@a", *SPIS))

    assert states.changes() == [
        SecureTrunkStateChanged("carrier", TrunkState.DOWN, "peer dead (DPD)", False)
    ]
    assert "carrier" in states.unprotected


def test_authentication_failure_named_as_such():
    states = tracker(("carrier", "carrier@a"))

    states.on_daemon_event(
        IkeSaDown(
            "carrier@a", *SPIS, NotifyType.AUTHENTICATION_FAILED, "refused by the peer"
        )
    )

    assert states.state("carrier").reason == "auth failed"


def test_one_of_two_peers_without_child_sa_degrades_the_trunk():
    states = tracker(("carrier", "carrier@a"), ("carrier", "carrier@b"))
    states.on_daemon_event(installed("carrier@a", 0x100))

    state = states.state("carrier")

    assert state == SecureTrunkStateChanged(
        "carrier", TrunkState.DEGRADED, "carrier@b: no IKE_SA yet", True
    )
    assert states.unprotected == set()


def test_keepalive_combines_with_protection():
    states = tracker(("carrier", "carrier@a"))
    states.on_daemon_event(installed("carrier@a", 0x100))
    target = TargetKey("carrier", "198.51.100.7", 5060, "udp")

    states.on_keepalive_event(TargetWentDown(target))
    degraded = states.state("carrier")
    states.on_keepalive_event(TrunkWentDown("carrier"))
    down = states.state("carrier")
    states.on_keepalive_event(TargetCameUp(target))

    assert degraded.state is TrunkState.DEGRADED
    assert degraded.reason == "198.51.100.7:5060 not answering OPTIONS"
    assert (down.state, down.reason, down.protected) == (
        TrunkState.DOWN, "no answer to OPTIONS", True,
    )  # fmt: skip
    # Keepalive down is the engine's own business: routing sees it there.
    assert states.unprotected == set()


def test_reconfigure_keeps_what_survives_and_forgets_the_rest():
    states = tracker(("carrier", "carrier@a"), ("pbx", "pbx@b"))
    states.on_daemon_event(installed("carrier@a", 0x100))
    states.changes()

    states.configure([("carrier", "carrier@a")])

    assert states.state("carrier").state is TrunkState.UP
    assert states.state("pbx") is None
    assert states.unprotected == set()
    states.on_daemon_event(installed("pbx@b", 0x300))
    assert states.state("pbx") is None
