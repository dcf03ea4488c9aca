"""IKE_SA rekeying (RFC 7296 §1.3.2, §2.18): new SPIs and keys from the old SK_d,
CHILD_SAs moved, the old IKE_SA deleted; C23(d); timers and lost messages."""

import hmac
from dataclasses import replace

import pytest

from ipsec.ike.constants import DhGroup, ExchangeType, NotifyType
from ipsec.ike.events import (
    ChildSaDeleted,
    IkeSaCreatedByRekey,
    IkeSaDeleted,
    IkeSaDeleteReason,
    IkeSaRekeyed,
    IkeSaRekeyFailed,
)
from ipsec.ike.ike_sa import IkeSaState
from ipsec.ike.keymat import compute_rekeyed_skeyseed
from ipsec.ike.message import decode_message, decrypt_message
from ipsec.ike.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload

from .rekey_harness import Pair
from .test_ike_sa import ike_proposal


def opened(engine, data):
    return decrypt_message(data, decode_message(data), engine._context.cipher_in)


def reconfigure(engine, **changes):
    engine._context.config = replace(engine._context.config, **changes)


@pytest.mark.parametrize("rekeyer", ["a", "b"], ids=["by-initiator", "by-responder"])
def test_ike_sa_rekey_moves_the_child_sas_to_the_new_ike_sa(rekeyer):
    pair = Pair()
    side = getattr(pair, rekeyer)
    peer = pair.other(side)
    old_side, old_peer = side.sa, peer.sa
    [child] = side.sa.child_sas

    side.sa.rekey_ike_sa(1.0)
    pair.collect()
    request = opened(old_peer, pair.wire[peer.name][0])
    pair.settle(check_traffic=True)

    assert request.exchange_type == ExchangeType.CREATE_CHILD_SA
    assert [p.spi for p in request.first(SaPayload).proposals] == [side.sa.spi_i]
    for who, old in ((side, old_side), (peer, old_peer)):
        assert old.state is IkeSaState.DELETED
        assert who.sa is not old and who.sa.state is IkeSaState.ESTABLISHED
        assert who.of_type(IkeSaRekeyed) == [
            IkeSaRekeyed(old.spi_i, old.spi_r, who.sa.spi_i, who.sa.spi_r)
        ]
        assert [e.reason for e in who.of_type(IkeSaDeleted)] == [
            IkeSaDeleteReason.REKEYED
        ]
        assert who.of_type(ChildSaDeleted) == []
        assert who.sa.child_sas and old.child_sas == ()
    assert (side.sa.spi_i, side.sa.spi_r) == (peer.sa.spi_i, peer.sa.spi_r)
    assert side.sa.spi_i not in (old_side.spi_i, old_side.spi_r)
    # The rekeyer is the original initiator of the new IKE_SA (§2.18).
    assert side.sa._context.is_original_initiator
    assert not peer.sa._context.is_original_initiator
    assert pair.assert_one_pair()[0].inbound_spi in (
        child.inbound_spi,
        child.outbound_spi,
    )


def test_rekeyed_skeyseed_follows_rfc_7296_section_2_18():
    pair = Pair()
    old = pair.a.sa
    _, old_keys = old.export_keys()

    pair.a.sa.rekey_ike_sa(1.0)
    pair.collect()
    request = opened(pair.b.sa, pair.wire["b"][0])
    pair.deliver(pair.b)
    response = opened(pair.a.sa, pair.wire["a"][0])
    pair.settle()

    # Independent: SKEYSEED = HMAC-SHA-256(SK_d, g^ir | Ni | Nr), and SK_d of
    # the new SA is the first prf+ block T1 = prf(SKEYSEED, Ni|Nr|SPIi|SPIr|1).
    context = pair.a.sa._context
    nonce_i = request.first(NoncePayload).nonce
    nonce_r = response.first(NoncePayload).nonce
    assert (context.nonce_i, context.nonce_r) == (nonce_i, nonce_r)
    suite, new_keys = pair.a.sa.export_keys()
    shared = _shared_secret_from(pair, request, response)
    skeyseed = hmac.digest(old_keys.sk_d, shared + nonce_i + nonce_r, "sha256")
    seed = nonce_i + nonce_r + context.spi_i + context.spi_r
    t1 = hmac.digest(skeyseed, seed + b"\x01", "sha256")
    assert new_keys.sk_d == t1
    assert skeyseed == compute_rekeyed_skeyseed(
        suite.prf, old_keys.sk_d, shared, nonce_i, nonce_r
    )
    assert pair.b.sa.export_keys()[1] == new_keys


def _shared_secret_from(pair, request, response):
    """Recompute g^ir with the X25519 private key the initiator drew."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    ours = request.first(KePayload).key_exchange_data
    for drawn in pair.a.random.drawn:
        if len(drawn) != 32:
            continue
        candidate = X25519PrivateKey.from_private_bytes(drawn)
        public = candidate.public_key().public_bytes_raw()
        if public == ours:
            peer = X25519PublicKey.from_public_bytes(
                response.first(KePayload).key_exchange_data
            )
            return candidate.exchange(peer)
    raise AssertionError("the initiator's key is not among its draws")


def test_child_sa_rekey_after_ike_sa_rekey_uses_the_new_ike_sa():
    pair = Pair()
    pair.a.sa.rekey_ike_sa(1.0)
    pair.settle(check_traffic=True)
    [child] = pair.b.sa.child_sas

    pair.b.sa.rekey_child_sa(child.inbound_spi, 2.0)
    pair.settle(check_traffic=True)

    new_a, new_b = pair.assert_one_pair()
    assert new_b.established.rekeyed_spi == child.inbound_spi
    assert pair.b.sa._next_request_id == 2  # rekey + Delete, from zero again


def test_c23_ike_sa_rekey_retries_with_the_group_the_responder_wants():
    groups = (DhGroup.CURVE25519, DhGroup.ECP_256)
    pair = Pair({"ike_proposals": (ike_proposal(groups=groups),)})
    reconfigure(pair.b.sa, ike_proposals=(ike_proposal(groups=(DhGroup.ECP_256,)),))

    pair.a.sa.rekey_ike_sa(1.0)
    pair.collect()
    pair.deliver(pair.b)
    refusal = opened(pair.a.sa, pair.wire["a"][0])
    pair.settle(check_traffic=True)

    assert refusal.all(NotifyPayload) == [
        NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13")
    ]
    assert pair.a.sa.export_keys()[0] is not None
    assert pair.a.sa._context.suite.dh_group == DhGroup.ECP_256
    assert len(pair.a.of_type(IkeSaRekeyed)) == 1
    pair.assert_one_pair()


def test_ike_sa_rekey_refused_keeps_the_ike_sa():
    pair = Pair()
    old = pair.a.sa
    reconfigure(pair.b.sa, ike_proposals=(ike_proposal(groups=(DhGroup.MODP_3072,)),))

    pair.a.sa.rekey_ike_sa(1.0)
    pair.settle(check_traffic=True)

    [failure] = pair.a.of_type(IkeSaRekeyFailed)
    assert failure.notify_type == NotifyType.NO_PROPOSAL_CHOSEN
    assert pair.a.sa is old and old.state is IkeSaState.ESTABLISHED
    [child] = old.child_sas
    old.rekey_child_sa(child.inbound_spi, 2.0)  # CHILD_SA work resumes
    pair.settle(check_traffic=True)
    pair.assert_one_pair()


def test_ike_sa_soft_lifetime_starts_the_rekey():
    pair = Pair({"ike_rekey_time": 1000.0, "rand_time": 100.0})
    old = pair.a.sa

    deadline = old.get_timer()
    assert 900.0 < deadline <= 1000.0
    pair.advance(deadline)
    pair.settle(check_traffic=True)

    assert old.state is IkeSaState.DELETED
    assert pair.a.sa is not old
    assert 900.0 + deadline < pair.a.sa.get_timer() <= 1000.0 + deadline


def test_lost_ike_sa_rekey_response_is_replayed_not_recreated():
    pair = Pair()
    pair.a.sa.rekey_ike_sa(1.0)
    pair.collect()

    pair.deliver(pair.b)
    pair.drop(pair.a)
    pair.advance(pair.a.sa.get_timer())
    pair.settle(check_traffic=True)

    assert len(pair.b.of_type(IkeSaCreatedByRekey)) == 1
    assert len(pair.a.of_type(IkeSaCreatedByRekey)) == 1
    pair.assert_one_pair()


def test_child_sa_work_is_refused_during_an_ike_sa_rekey():
    pair = Pair()
    [child] = pair.a.sa.child_sas
    pair.a.sa.rekey_ike_sa(1.0)

    with pytest.raises(RuntimeError):
        pair.a.sa.rekey_child_sa(child.inbound_spi, 1.0)
    with pytest.raises(RuntimeError):
        pair.a.sa.rekey_ike_sa(1.0)
