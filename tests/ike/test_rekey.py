"""CREATE_CHILD_SA: new CHILD_SAs, CHILD_SA rekeying with and without PFS (RFC 7296
§1.3, §2.8), C23(b), soft lifetimes, lost messages; traffic checked throughout."""

from dataclasses import replace

import pytest

from ipsec.ike.constants import DhGroup, ExchangeType, NotifyType, TransformType
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaOutboundSwitched,
    ChildSaRekeyFailed,
)
from ipsec.ike.keymat import derive_child_sa_keys
from ipsec.ike.message import decode_message, decrypt_message
from ipsec.ike.payloads import KePayload, NotifyPayload, Transform

from .rekey_harness import Pair
from .test_ike_sa import esp_proposal


def pfs_proposal(*groups):
    plain = esp_proposal()
    dh = tuple(Transform(TransformType.DH, group) for group in groups)
    return type(plain)(plain.number, plain.protocol_id, plain.transforms + dh)


def pfs(*groups):
    return {"esp_proposals": (pfs_proposal(*groups),)}


def only_child(side):
    [child] = side.sa.child_sas
    return child


def opened(side, data):
    """The decrypted IKE message ``data`` sent to ``side``."""
    return decrypt_message(data, decode_message(data), side.sa._context.cipher_in)


@pytest.mark.parametrize("rekeyer", ["a", "b"], ids=["by-initiator", "by-responder"])
def test_child_sa_rekey_replaces_the_pair_both_roles(rekeyer):
    pair = Pair()
    side = getattr(pair, rekeyer)
    peer = pair.other(side)
    old = only_child(side)

    side.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.settle(check_traffic=True)

    new_a, new_b = pair.assert_one_pair()
    new_side, new_peer = (new_a, new_b) if side is pair.a else (new_b, new_a)
    assert new_side.inbound_spi != old.inbound_spi
    assert new_side.established.rekeyed_spi == old.inbound_spi
    assert new_peer.established.rekeyed_spi == old.outbound_spi
    assert side.of_type(ChildSaDeleted) == [
        ChildSaDeleted(old.inbound_spi, old.outbound_spi, ChildSaDeleteReason.REKEYED)
    ]
    assert peer.of_type(ChildSaDeleted) == [
        ChildSaDeleted(old.outbound_spi, old.inbound_spi, ChildSaDeleteReason.REKEYED)
    ]


def test_child_sa_rekey_is_make_before_break():
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()

    for to in (pair.b, pair.a, pair.b, pair.a):  # rekey, then Delete
        pair.deliver(to)
    order_b = [type(e) for e in pair.b.events[3:]]
    order_a = [type(e) for e in pair.a.events[2:]]

    # The responder installs inbound only, switches when the Delete comes,
    # and only then removes the old pair; the rekeyer sends on the new SA at once.
    assert order_b == [ChildSaEstablished, ChildSaOutboundSwitched, ChildSaDeleted]
    assert order_a == [ChildSaEstablished, ChildSaDeleted]
    assert pair.b.events[3].outbound_active is False
    assert pair.a.events[2].outbound_active is True


def test_rekey_request_carries_rekey_sa_for_our_inbound_spi():
    pair = Pair()
    old = only_child(pair.a)

    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()
    request = opened(pair.b, pair.wire["b"][0])

    assert request.exchange_type == ExchangeType.CREATE_CHILD_SA
    [notify] = request.all(NotifyPayload)
    assert (notify.notify_type, notify.spi) == (NotifyType.REKEY_SA, old.inbound_spi)
    assert request.first(KePayload) is None


def test_new_child_sa_created_next_to_the_first():
    pair = Pair()
    first = only_child(pair.a)

    pair.a.sa.create_child_sa(1.0)
    pair.settle(check_traffic=True)

    assert len(pair.a.sa.child_sas) == len(pair.b.sa.child_sas) == 2
    new = pair.a.of_type(ChildSaEstablished)[-1]
    assert new.rekeyed_spi is None and new.outbound_active
    assert new.inbound_spi != first.inbound_spi
    assert {c.inbound_spi for c in pair.a.sa.child_sas} == {
        c.outbound_spi for c in pair.b.sa.child_sas
    }
    outbound, _ = pair.a.plane.active[new.inbound_spi]
    packet = outbound.seal(b"on the second CHILD_SA", 17, 0.0)
    assert pair.b.plane.receive(packet) == b"on the second CHILD_SA"


@pytest.mark.parametrize(
    "group", [DhGroup.CURVE25519, DhGroup.ECP_256, DhGroup.MODP_2048]
)
def test_child_sa_rekey_with_pfs_uses_a_fresh_dh_secret(group):
    pair = Pair(pfs(group), pfs(group))
    old = only_child(pair.a)

    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()
    request = opened(pair.b, pair.wire["b"][0])
    pair.settle(check_traffic=True)

    new_a, _ = pair.assert_one_pair()
    assert request.first(KePayload).dh_group == group
    # Independent check: KEYMAT without the DH secret would differ.
    nonce_only = derive_child_sa_keys(
        pair.a.sa._context.suite.transforms.prf,
        pair.a.sa._context.keys.sk_d,
        b"\0" * 32,
        b"\0" * 32,
        20,
        0,
    )
    assert new_a.established.keys != nonce_only
    assert new_a.established.keys != old.established.keys


def test_c23_pfs_rekey_retries_with_the_group_the_responder_wants():
    pair = Pair(pfs(DhGroup.CURVE25519, DhGroup.ECP_256), pfs(DhGroup.ECP_256))
    old = only_child(pair.a)

    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()
    first = opened(pair.b, pair.wire["b"][0])
    pair.deliver(pair.b)
    refusal = opened(pair.a, pair.wire["a"][0])
    pair.deliver(pair.a)
    retry = opened(pair.b, pair.wire["b"][0])
    pair.settle(check_traffic=True)

    assert first.first(KePayload).dh_group == DhGroup.CURVE25519
    assert refusal.all(NotifyPayload) == [
        NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13")
    ]
    assert retry.first(KePayload).dh_group == DhGroup.ECP_256
    pair.assert_one_pair()
    assert pair.a.of_type(ChildSaRekeyFailed) == []


def reconfigure(side, **changes):
    """Change one engine's policy after IKE_AUTH, as a reload would."""
    context = side.sa._context
    context.config = replace(context.config, **changes)


def test_c23_pfs_group_not_proposed_fails_the_rekey_only():
    pair = Pair(pfs(DhGroup.CURVE25519), pfs(DhGroup.CURVE25519))
    reconfigure(pair.b, esp_proposals=(pfs_proposal(DhGroup.ECP_256),))

    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.settle(check_traffic=True)

    [failure] = pair.a.of_type(ChildSaRekeyFailed)
    assert failure.inbound_spi == old.inbound_spi
    assert failure.notify_type == NotifyType.NO_PROPOSAL_CHOSEN
    assert pair.assert_one_pair()[0] is old
    assert old.state.name == "INSTALLED"


def test_c23_pfs_retries_are_bounded():
    # The responder always asks for a group the initiator proposes but did
    # not send: after max_invalid_ke_retries the rekey gives up.
    pair = Pair(
        pfs(DhGroup.CURVE25519, DhGroup.ECP_256) | {"max_invalid_ke_retries": 0},
        pfs(DhGroup.ECP_256),
    )
    old = only_child(pair.a)

    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.settle(check_traffic=True)

    [failure] = pair.a.of_type(ChildSaRekeyFailed)
    assert failure.notify_type == NotifyType.INVALID_KE_PAYLOAD
    pair.assert_one_pair()


def test_new_child_sa_refused_reports_child_sa_failed():
    pair = Pair()
    reconfigure(pair.b, esp_proposals=(pfs_proposal(DhGroup.ECP_256),))

    pair.a.sa.create_child_sa(1.0)
    pair.settle(check_traffic=True)

    [failure] = pair.a.of_type(ChildSaFailed)
    assert failure.notify_type == NotifyType.NO_PROPOSAL_CHOSEN
    pair.assert_one_pair()


def test_rekey_of_unknown_child_sa_answered_child_sa_not_found():
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()
    # The responder loses the SA meanwhile (its table no longer has it).
    pair.b.sa._children.remove(only_child(pair.b).inbound_spi)

    pair.deliver(pair.b, check_traffic=False)
    answer = opened(pair.a, pair.wire["a"][0])
    pair.deliver(pair.a, check_traffic=False)

    assert answer.all(NotifyPayload) == [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND)]
    assert pair.a.of_type(ChildSaRekeyFailed)[0].notify_type == (
        NotifyType.CHILD_SA_NOT_FOUND
    )


def test_lost_rekey_response_is_replayed_not_recreated():
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()

    pair.deliver(pair.b)
    lost = pair.drop(pair.a)
    pair.advance(pair.a.sa.get_timer())
    pair.deliver(pair.b)
    replayed = pair.wire["a"][0]
    pair.settle(check_traffic=True)

    assert replayed == lost
    assert len(pair.b.of_type(ChildSaEstablished)) == 2
    pair.assert_one_pair()


def test_lost_rekey_request_is_retransmitted():
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    pair.collect()

    pair.drop(pair.b)
    pair.advance(pair.a.sa.get_timer())
    pair.settle(check_traffic=True)

    pair.assert_one_pair()
    assert only_child(pair.a).established.rekeyed_spi == old.inbound_spi


def test_soft_lifetime_starts_the_rekey_with_jitter():
    changes = {"child_rekey_time": 100.0, "rand_time": 10.0}
    pair = Pair(changes, changes)
    old_a, old_b = only_child(pair.a), only_child(pair.b)

    deadline = pair.a.sa.get_timer()
    assert 90.0 < old_a.rekey_at <= 100.0 and 90.0 < old_b.rekey_at <= 100.0
    assert old_a.rekey_at != old_b.rekey_at
    assert deadline == min(old_a.rekey_at, old_b.rekey_at) or deadline == old_a.rekey_at
    pair.advance(min(old_a.rekey_at, old_b.rekey_at))
    pair.settle(check_traffic=True)

    new_a, new_b = pair.assert_one_pair()
    assert new_a.inbound_spi != old_a.inbound_spi
    assert new_a.rekey_at is not None and new_a.rekey_at > 90.0 + pair.now - 1


def test_rekey_of_a_child_sa_not_installed_is_refused_locally():
    pair = Pair()
    old = only_child(pair.a)
    pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)

    with pytest.raises(RuntimeError):
        pair.a.sa.rekey_child_sa(old.inbound_spi, 1.0)
    with pytest.raises(RuntimeError):
        pair.a.sa.rekey_child_sa(b"\0\0\0\0", 1.0)


def test_hard_lifetime_deletes_a_child_sa_not_rekeyed_in_time():
    changes = {"child_life_time": 50.0}
    pair = Pair(changes, changes)
    [child] = pair.a.sa.child_sas

    assert pair.a.sa.get_timer() == child.expire_at == 50.0
    pair.advance(50.0)
    pair.settle()

    reasons = {e.reason for s in (pair.a, pair.b) for e in s.of_type(ChildSaDeleted)}
    assert reasons <= {ChildSaDeleteReason.EXPIRED, ChildSaDeleteReason.DELETED_BY_PEER}
    assert ChildSaDeleteReason.EXPIRED in reasons
    assert pair.a.sa.child_sas == pair.b.sa.child_sas == ()
    assert pair.a.plane.inbound == pair.b.plane.inbound == {}


def test_rekey_before_the_hard_lifetime_gives_the_new_sa_its_own():
    changes = {"child_rekey_time": 40.0, "child_life_time": 50.0}
    pair = Pair(changes, changes)
    [old] = pair.a.sa.child_sas

    pair.advance(45.0)
    pair.settle(check_traffic=True)
    pair.advance(55.0)

    new_a, _ = pair.assert_one_pair()
    assert new_a.inbound_spi != old.inbound_spi
    assert new_a.expire_at == pytest.approx(45.0 + 50.0)  # answered at 45


def test_soft_lifetime_waits_while_the_ike_sa_is_rekeyed():
    changes = {"child_rekey_time": 10.0}
    pair = Pair(changes, changes)
    pair.a.sa.rekey_ike_sa(1.0)
    pair.collect()

    # Due, but blocked by the IKE_SA rekey: postponed, not fired forever.
    pair.a.sa.handle_timer(10.0)
    assert pair.a.sa.get_timer() > 10.0
    pair.settle(check_traffic=True)
    pair.advance(30.0)
    pair.settle(check_traffic=True)

    [child] = pair.a.sa.child_sas
    assert child.established.rekeyed_spi is not None
    pair.assert_one_pair()
