"""Two IKE_SA engines in memory: IKE_SA_INIT + IKE_AUTH with a PSK, C23, C27."""

import hashlib
import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.ike.config import Identity, IkeSaConfig
from ipsec.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.events import (
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaEstablished,
    IkeSaFailed,
    InitialContactReceived,
)
from ipsec.ike.ike_sa import IkeSa, IkeSaState
from ipsec.ike.keymat import PresharedKey
from ipsec.ike.message import (
    IkeMessage,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)
from ipsec.ike.payloads import (
    IdrPayload,
    NotifyPayload,
    Proposal,
    TrafficSelector,
    Transform,
    TsrPayload,
)

INITIATOR_ID = Identity(IdType.ID_FQDN, b"sbc.example.com")
RESPONDER_ID = Identity(IdType.ID_FQDN, b"trunk.example.com")
ANY_V4 = TrafficSelector(IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255"))
ANY_V6 = TrafficSelector(IPv6Address("::"), IPv6Address("ffff:" * 7 + "ffff"))


def ike_proposal(
    number=1, groups=(DhGroup.CURVE25519,), encr=(EncrId.ENCR_AES_GCM_16, 256)
):
    transforms = [Transform(TransformType.ENCR, *encr)]
    if encr[0] == EncrId.ENCR_AES_CBC:
        transforms.append(
            Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128)
        )
    transforms.append(Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256))
    transforms += [Transform(TransformType.DH, g) for g in groups]
    return Proposal(number, ProtocolId.IKE, tuple(transforms))


def esp_proposal(number=1, encr=(EncrId.ENCR_AES_GCM_16, 128)):
    transforms = [Transform(TransformType.ENCR, *encr)]
    if encr[0] == EncrId.ENCR_AES_CBC:
        transforms.append(
            Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128)
        )
    transforms += [
        Transform(TransformType.ESN, EsnId.ESN),
        Transform(TransformType.ESN, EsnId.NO_ESN),
    ]
    return Proposal(number, ProtocolId.ESP, tuple(transforms))


def make_config(local, remote, **changes):
    config = IkeSaConfig(
        local_id=local,
        remote_id=remote,
        psk=PresharedKey(b"shared secret of the trunk"),
        ike_proposals=(ike_proposal(),),
        esp_proposals=(esp_proposal(),),
        local_traffic_selectors=(ANY_V4,),
        remote_traffic_selectors=(ANY_V4,),
    )
    return replace(config, **changes)


def seeded(seed):
    generator = random.Random(seed)
    return generator.randbytes


def make_pair(initiator_changes=None, responder_changes=None, seed=1):
    initiator = IkeSa(
        make_config(INITIATOR_ID, RESPONDER_ID, **(initiator_changes or {})),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(seed),
    )
    responder = IkeSa(
        make_config(RESPONDER_ID, INITIATOR_ID, **(responder_changes or {})),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(seed + 1000),
    )
    return initiator, responder


def exchange_all(initiator, responder, now=0.0, log=None):
    """Move datagrams both ways until both are quiet; bounded in rounds."""
    for _ in range(20):
        to_responder = initiator.datagrams_to_send()
        to_initiator = responder.datagrams_to_send()
        if not to_responder and not to_initiator:
            return
        for data in to_responder:
            if log is not None:
                log.append(("i->r", data))
            responder.receive_datagram(data, now)
        for data in to_initiator:
            if log is not None:
                log.append(("r->i", data))
            initiator.receive_datagram(data, now)
    raise AssertionError("engines never went quiet")


def drain(sa):
    events = []
    while (event := sa.next_event()) is not None:
        events.append(event)
    return events


def establish(**kwargs):
    initiator, responder = make_pair(**kwargs)
    initiator.initiate(0.0)
    exchange_all(initiator, responder)
    return initiator, responder


# ---------------------------------------------------------------------------
# The handshake


def test_psk_handshake_establishes_both_sides():
    log = []
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)

    i_events, r_events = drain(initiator), drain(responder)
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert [type(e) for e in i_events] == [IkeSaEstablished, ChildSaEstablished]
    assert [type(e) for e in r_events] == [
        IkeSaEstablished,
        ChildSaEstablished,
        InitialContactReceived,
    ]
    assert [direction for direction, _ in log] == ["i->r", "r->i", "i->r", "r->i"]
    assert i_events[0].remote_id == RESPONDER_ID.as_idr()
    assert r_events[0].remote_id == INITIATOR_ID.as_idi()
    assert (i_events[0].spi_i, i_events[0].spi_r) == (
        r_events[0].spi_i,
        r_events[0].spi_r,
    )


def test_child_sa_spis_and_keys_pair_up():
    initiator, responder = establish()

    i_child = drain(initiator)[1]
    r_child = drain(responder)[1]

    assert i_child.inbound_spi == r_child.outbound_spi
    assert i_child.outbound_spi == r_child.inbound_spi
    assert i_child.outbound_keys == r_child.inbound_keys
    assert i_child.inbound_keys == r_child.outbound_keys
    assert i_child.outbound_keys != i_child.inbound_keys
    assert len(i_child.outbound_keys[0]) == 20  # AES-GCM-128 key + salt
    assert i_child.esn and r_child.esn
    assert int.from_bytes(i_child.inbound_spi) >= 256


def test_messages_are_what_the_rfc_lists():
    log = []
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)

    messages = [decode_message(data) for _, data in log]

    assert [m.exchange_type for m in messages] == [34, 34, 35, 35]
    assert [m.message_id for m in messages] == [0, 0, 1, 1]
    assert [(m.is_initiator, m.is_response) for m in messages] == [
        (True, False),
        (False, True),
        (True, False),
        (False, True),
    ]
    # SA, KE, Nonce, N(IKEV2_FRAGMENTATION_SUPPORTED)
    assert [p.payload_type for p in messages[0].payloads] == [33, 34, 40, 41]
    assert [p.payload_type for p in messages[2].payloads] == [46]


def test_handshake_is_deterministic_for_given_randomness():
    first, second = [], []
    for log in (first, second):
        initiator, responder = make_pair(seed=5)
        initiator.initiate(0.0)
        exchange_all(initiator, responder, log=log)

    assert first == second


def test_cbc_and_modp_suite_establishes():
    changes = {
        "ike_proposals": (
            ike_proposal(groups=(DhGroup.MODP_2048,), encr=(EncrId.ENCR_AES_CBC, 128)),
        ),
        "esp_proposals": (esp_proposal(encr=(EncrId.ENCR_AES_CBC, 256)),),
    }

    initiator, responder = establish(
        initiator_changes=changes, responder_changes=changes
    )

    child = drain(initiator)[1]
    assert initiator.state is IkeSaState.ESTABLISHED
    assert (
        child.integ is not None
        and child.integ.integ_id == IntegId.AUTH_HMAC_SHA2_256_128
    )
    assert len(child.outbound_keys[0]) == 32 and len(child.outbound_keys[1]) == 32


def test_responder_prefers_its_own_proposal_order():
    initiator_side = {
        "ike_proposals": (
            ike_proposal(1, encr=(EncrId.ENCR_AES_CBC, 128)),
            ike_proposal(2),
        )
    }
    responder_side = {
        "ike_proposals": (
            ike_proposal(1),
            ike_proposal(2, encr=(EncrId.ENCR_AES_CBC, 128)),
        )
    }

    initiator, _ = establish(
        initiator_changes=initiator_side, responder_changes=responder_side
    )

    assert drain(initiator)[0].encr.encr_id == EncrId.ENCR_AES_GCM_16


# ---------------------------------------------------------------------------
# Authentication failures


def test_wrong_psk_fails_with_authentication_failed():
    initiator, responder = establish(responder_changes={"psk": PresharedKey(b"other")})

    assert responder.state is initiator.state is IkeSaState.FAILED
    assert drain(responder) == [
        IkeSaFailed(NotifyType.AUTHENTICATION_FAILED, "PSK AUTH data does not match")
    ]
    assert drain(initiator) == [
        IkeSaFailed(NotifyType.AUTHENTICATION_FAILED, "peer refused the exchange")
    ]


def test_unknown_identity_fails_with_authentication_failed():
    stranger = Identity(IdType.ID_FQDN, b"stranger.example.com")
    initiator, responder = establish(initiator_changes={"local_id": stranger})

    [event] = drain(responder)
    assert event.notify_type == NotifyType.AUTHENTICATION_FAILED
    assert initiator.state is IkeSaState.FAILED


def test_responder_refuses_request_for_another_identity():
    initiator, responder = establish(
        initiator_changes={"remote_id": Identity(IdType.ID_FQDN, b"someone.else")}
    )

    assert drain(responder)[0] == IkeSaFailed(
        NotifyType.AUTHENTICATION_FAILED, "initiator asked for another identity of ours"
    )
    assert initiator.state is IkeSaState.FAILED


def test_initiator_refuses_responder_with_unexpected_identity():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    initiator.receive_datagram(responder.datagrams_to_send()[0], 0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    [answer] = responder.datagrams_to_send()

    # Re-seal the responder's answer naming another identity.
    keys = responder._context
    inner = decrypt_message(answer, decode_message(answer), keys.cipher_r)
    other = IdrPayload(IdType.ID_FQDN, b"impostor.example.com")
    forged = replace(
        inner,
        payloads=tuple(
            other if isinstance(p, IdrPayload) else p for p in inner.payloads
        ),
    )
    initiator.receive_datagram(
        protect_message(forged, keys.cipher_r, seeded(9))[0], 0.0
    )

    assert initiator.state is IkeSaState.FAILED
    assert drain(initiator) == [
        IkeSaFailed(
            NotifyType.AUTHENTICATION_FAILED, "peer identity is not the configured one"
        )
    ]


def test_no_proposal_chosen_fails_the_ike_sa():
    initiator, responder = establish(
        responder_changes={
            "ike_proposals": (ike_proposal(encr=(EncrId.ENCR_AES_CBC, 256)),)
        }
    )

    assert drain(initiator) == [
        IkeSaFailed(NotifyType.NO_PROPOSAL_CHOSEN, "IKE_SA_INIT refused")
    ]
    assert drain(responder)[0].notify_type == NotifyType.NO_PROPOSAL_CHOSEN


# ---------------------------------------------------------------------------
# C23: INVALID_KE_PAYLOAD


def test_c23_responder_asks_for_its_group_and_initiator_retries():
    log = []
    initiator, responder = make_pair(
        initiator_changes={
            "ike_proposals": (
                ike_proposal(groups=(DhGroup.MODP_2048, DhGroup.ECP_256)),
            )
        },
        responder_changes={"ike_proposals": (ike_proposal(groups=(DhGroup.ECP_256,)),)},
    )
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)

    first_request, refusal, retry = (decode_message(d) for _, d in log[:3])
    notify = refusal.payloads[0]
    assert first_request.payloads[1].dh_group == DhGroup.MODP_2048
    assert (notify.notify_type, notify.notification_data) == (
        NotifyType.INVALID_KE_PAYLOAD,
        b"\x00\x13",
    )
    assert refusal.spi_r == bytes(8)
    assert (retry.message_id, retry.payloads[1].dh_group) == (0, DhGroup.ECP_256)
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert drain(initiator)[0].dh_group == DhGroup.ECP_256


def test_c23_group_not_proposed_is_not_retried():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    request = decode_message(initiator.datagrams_to_send()[0])
    refusal = IkeMessage(
        ExchangeType.IKE_SA_INIT,
        0,
        request.spi_i,
        is_initiator=False,
        is_response=True,
        payloads=(
            NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, (DhGroup.ECP_384).to_bytes(2)),
        ),
    )

    initiator.receive_datagram(encode_message(refusal), 0.1)

    assert initiator.state is IkeSaState.FAILED
    assert initiator.datagrams_to_send() == []
    assert drain(initiator)[0].notify_type == NotifyType.INVALID_KE_PAYLOAD


def test_c23_retries_are_bounded():
    # A responder that keeps asking for the other group of the proposal.
    groups = (DhGroup.CURVE25519, DhGroup.ECP_256)
    initiator, _ = make_pair(
        initiator_changes={"ike_proposals": (ike_proposal(groups=groups),)}
    )
    initiator.initiate(0.0)
    requests = 0
    for _ in range(10):
        sent = initiator.datagrams_to_send()
        if not sent:
            break
        requests += 1
        request = decode_message(sent[0])
        other = groups[1] if request.payloads[1].dh_group == groups[0] else groups[0]
        refusal = IkeMessage(
            ExchangeType.IKE_SA_INIT,
            0,
            request.spi_i,
            is_initiator=False,
            is_response=True,
            payloads=(
                NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, int(other).to_bytes(2)),
            ),
        )
        initiator.receive_datagram(encode_message(refusal), 0.0)

    assert requests == 1 + initiator._context.config.max_invalid_ke_retries
    assert initiator.state is IkeSaState.FAILED


def test_c23_responder_keeps_no_state_after_invalid_ke():
    initiator, responder = make_pair(
        initiator_changes={
            "ike_proposals": (
                ike_proposal(groups=(DhGroup.MODP_2048, DhGroup.ECP_256)),
            )
        },
        responder_changes={"ike_proposals": (ike_proposal(groups=(DhGroup.ECP_256,)),)},
    )
    initiator.initiate(0.0)

    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)

    assert responder.state is IkeSaState.IDLE
    assert drain(responder) == []


# ---------------------------------------------------------------------------
# Retransmission and the message-ID window


def test_retransmitted_ike_sa_init_gets_cached_response():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    request = initiator.datagrams_to_send()[0]

    responder.receive_datagram(request, 0.0)
    first = responder.datagrams_to_send()
    responder.receive_datagram(request, 1.0)
    again = responder.datagrams_to_send()

    assert first == again and len(first) == 1
    assert responder.state is IkeSaState.IKE_SA_INIT_DONE
    assert drain(responder) == []


def test_lost_ike_auth_response_recovered_by_retransmission():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    initiator.receive_datagram(responder.datagrams_to_send()[0], 0.0)
    auth_request = initiator.datagrams_to_send()
    responder.receive_datagram(auth_request[0], 0.0)
    lost = responder.datagrams_to_send()

    deadline = initiator.get_timer()
    initiator.handle_timer(deadline - 0.001)
    assert initiator.datagrams_to_send() == []
    initiator.handle_timer(deadline)
    retransmitted = initiator.datagrams_to_send()
    responder.receive_datagram(retransmitted[0], deadline)
    replayed = responder.datagrams_to_send()
    initiator.receive_datagram(replayed[0], deadline)

    assert retransmitted == auth_request and replayed == lost
    assert deadline == pytest.approx(4.0)
    assert initiator.state is IkeSaState.ESTABLISHED
    assert [type(e) for e in drain(responder)] == [
        IkeSaEstablished,
        ChildSaEstablished,
        InitialContactReceived,
    ]
    assert initiator.get_timer() is None


def test_retransmissions_back_off_then_give_up():
    initiator, _ = make_pair()
    initiator.initiate(0.0)
    first = initiator.datagrams_to_send()
    deadlines = []

    for _ in range(10):
        deadline = initiator.get_timer()
        if deadline is None:
            break
        deadlines.append(deadline)
        initiator.handle_timer(deadline)
        sent = initiator.datagrams_to_send()
        assert sent in ([], first)

    expected, now = [], 0.0
    for tries in range(6):
        now += 4.0 * 1.8**tries
        expected.append(now)
    assert deadlines == pytest.approx(expected)
    assert initiator.state is IkeSaState.FAILED
    assert drain(initiator) == [IkeSaFailed(None, "no response to IKE_SA_INIT")]


def test_request_outside_window_dropped():
    initiator, responder = establish()
    drain(responder)
    stale = IkeMessage(ExchangeType.INFORMATIONAL, 7, initiator.spi_i, initiator.spi_r)
    [data] = protect_message(stale, initiator._context.cipher_out, seeded(3))

    responder.receive_datagram(data, 1.0)

    assert responder.datagrams_to_send() == []
    assert responder.drops["request outside the window"] == 1


def test_informational_liveness_check_answered():
    initiator, responder = establish()
    request = IkeMessage(
        ExchangeType.INFORMATIONAL, 2, initiator.spi_i, initiator.spi_r
    )
    [data] = protect_message(request, initiator._context.cipher_out, seeded(3))

    responder.receive_datagram(data, 5.0)
    [answer] = responder.datagrams_to_send()

    response = decrypt_message(
        answer, decode_message(answer), initiator._context.cipher_in
    )
    assert (response.message_id, response.is_response, response.payloads) == (
        2,
        True,
        (),
    )


def test_tampered_ike_auth_dropped_then_retransmission_succeeds():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    initiator.receive_datagram(responder.datagrams_to_send()[0], 0.0)
    tampered = bytearray(initiator.datagrams_to_send()[0])
    tampered[-5] ^= 0x40

    responder.receive_datagram(bytes(tampered), 0.0)
    assert responder.datagrams_to_send() == []
    assert responder.state is IkeSaState.IKE_SA_INIT_DONE
    initiator.handle_timer(initiator.get_timer())
    exchange_all(initiator, responder, now=4.0)

    assert responder.drops["integrity check failed"] == 1
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 27, bytes(range(200))])
def test_garbage_counted_and_ignored(garbage):
    initiator, responder = establish()
    drain(responder)

    responder.receive_datagram(garbage, 1.0)

    assert responder.datagrams_to_send() == [] and drain(responder) == []
    assert sum(responder.drops.values()) == 1
    assert responder.state is IkeSaState.ESTABLISHED


def test_response_with_wrong_message_id_dropped():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    response = bytearray(responder.datagrams_to_send()[0])
    response[20:24] = (5).to_bytes(4)

    initiator.receive_datagram(bytes(response), 0.0)

    assert initiator.state is IkeSaState.IKE_SA_INIT_SENT
    assert initiator.drops["response to no outstanding request"] == 1


# ---------------------------------------------------------------------------
# C27: traffic selectors


def child_event(sa):
    return next(
        e for e in drain(sa) if isinstance(e, (ChildSaEstablished, ChildSaFailed))
    )


def test_c27_responder_narrows_ipv6_any_to_hosts():
    host_1 = TrafficSelector(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::1"))
    host_2 = TrafficSelector(IPv6Address("2001:db8::2"), IPv6Address("2001:db8::2"))
    initiator, responder = establish(
        initiator_changes={
            "local_traffic_selectors": (ANY_V6,),
            "remote_traffic_selectors": (ANY_V6,),
        },
        responder_changes={
            "local_traffic_selectors": (host_2,),
            "remote_traffic_selectors": (host_1,),
        },
    )

    i_child, r_child = child_event(initiator), child_event(responder)

    assert (i_child.local_traffic_selectors, i_child.remote_traffic_selectors) == (
        (host_1,),
        (host_2,),
    )
    assert (r_child.local_traffic_selectors, r_child.remote_traffic_selectors) == (
        (host_2,),
        (host_1,),
    )


def test_c27_range_selector_accepted():
    sip_range = TrafficSelector(
        IPv4Address("192.0.2.50"), IPv4Address("192.0.2.250"), 17, 5060, 5061
    )
    initiator, _ = establish(
        responder_changes={"local_traffic_selectors": (sip_range,)}
    )

    assert child_event(initiator).remote_traffic_selectors == (sip_range,)


def test_c27_no_overlap_refuses_only_the_child_sa():
    elsewhere = TrafficSelector(
        IPv4Address("198.51.100.0"), IPv4Address("198.51.100.255")
    )
    initiator, responder = establish(
        initiator_changes={"remote_traffic_selectors": (elsewhere,)},
        responder_changes={
            "local_traffic_selectors": (
                TrafficSelector(IPv4Address("192.0.2.1"), IPv4Address("192.0.2.1")),
            )
        },
    )

    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    assert child_event(initiator) == ChildSaFailed(
        NotifyType.TS_UNACCEPTABLE, "refused by the peer"
    )
    assert child_event(responder).notify_type == NotifyType.TS_UNACCEPTABLE


def test_c27_wider_answer_refused_by_initiator():
    narrow_remote = TrafficSelector(
        IPv4Address("192.0.2.0"), IPv4Address("192.0.2.255")
    )
    initiator, responder = make_pair(
        initiator_changes={"remote_traffic_selectors": (narrow_remote,)}
    )
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    initiator.receive_datagram(responder.datagrams_to_send()[0], 0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    [answer] = responder.datagrams_to_send()

    # Re-seal the responder's answer with TSr widened to everything.
    keys = responder._context
    inner = decrypt_message(answer, decode_message(answer), keys.cipher_r)
    widened = replace(
        inner,
        payloads=tuple(
            TsrPayload((ANY_V4,)) if isinstance(p, TsrPayload) else p
            for p in inner.payloads
        ),
    )
    [forged] = protect_message(widened, keys.cipher_r, seeded(9))
    initiator.receive_datagram(forged, 0.0)

    assert initiator.state is IkeSaState.ESTABLISHED
    assert child_event(initiator).notify_type == NotifyType.TS_UNACCEPTABLE


def test_events_never_show_keys():
    initiator, _ = establish()

    child = drain(initiator)[1]

    text = repr(child) + str(child)
    for key in (*child.outbound_keys, *child.inbound_keys):
        if key:
            assert key.hex() not in text and repr(key) not in text


# ---------------------------------------------------------------------------
# Fuzzing the engine: mutated datagrams never raise out of receive_datagram


def handshake_datagrams():
    log = []
    initiator, responder = make_pair(seed=11)
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)
    return [data for _, data in log]


HANDSHAKE = handshake_datagrams()


def engines_before(step):
    """A fresh pair replayed up to `step` datagrams into the handshake."""
    initiator, responder = make_pair(seed=11)
    initiator.initiate(0.0)
    initiator.datagrams_to_send()
    for index, data in enumerate(HANDSHAKE[:step]):
        target = responder if index % 2 == 0 else initiator
        target.receive_datagram(data, 0.0)
        target.datagrams_to_send()
    return initiator, responder


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(HANDSHAKE) - 1),
    st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4
    ),
    st.booleans(),
)
def test_mutated_handshake_datagram_never_escapes(step, edits, cut):
    initiator, responder = engines_before(step)
    data = bytearray(HANDSHAKE[step])
    for position, value in edits:
        data[position % len(data)] = value
    if cut:
        del data[edits[0][0] % len(data) :]
    target = responder if step % 2 == 0 else initiator

    target.receive_datagram(bytes(data), 0.0)
    target.datagrams_to_send()
    drain(target)


def test_malformed_ike_sa_init_response_ignored_while_waiting():
    initiator, responder = make_pair()
    initiator.initiate(0.0)
    responder.receive_datagram(initiator.datagrams_to_send()[0], 0.0)
    [genuine] = responder.datagrams_to_send()
    forged = bytearray(genuine)
    forged[28 + 4 + 4] = 9  # a proposal with an unknown protocol: INVALID_SYNTAX

    initiator.receive_datagram(bytes(forged), 0.0)
    assert initiator.state is IkeSaState.IKE_SA_INIT_SENT
    initiator.receive_datagram(genuine, 0.0)
    exchange_all(initiator, responder)

    assert initiator.state is IkeSaState.ESTABLISHED
    assert sum(initiator.drops.values()) == 1


def test_create_child_sa_without_payloads_refused_with_invalid_syntax():
    initiator, responder = establish()
    request = IkeMessage(
        ExchangeType.CREATE_CHILD_SA, 2, initiator.spi_i, initiator.spi_r
    )
    [data] = protect_message(request, initiator._context.cipher_out, seeded(3))

    responder.receive_datagram(data, 5.0)
    [answer] = responder.datagrams_to_send()

    response = decrypt_message(
        answer, decode_message(answer), initiator._context.cipher_in
    )
    assert response.payloads == (NotifyPayload(NotifyType.INVALID_SYNTAX),)
    assert responder.state is IkeSaState.ESTABLISHED


# ---------------------------------------------------------------------------
# NAT detection (RFC 7296 §2.23)


def nat_pair(initiator_sees, responder_sees):
    """initiator_sees: (its own source, the responder); responder_sees likewise."""
    initiator = IkeSa(
        make_config(INITIATOR_ID, RESPONDER_ID),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(1),
        local_endpoint=initiator_sees[0],
        remote_endpoint=initiator_sees[1],
    )
    responder = IkeSa(
        make_config(RESPONDER_ID, INITIATOR_ID),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(2),
        local_endpoint=responder_sees[0],
        remote_endpoint=responder_sees[1],
    )
    log = []
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)
    return drain(initiator)[0], drain(responder)[0], log


INITIATOR_AT = (IPv4Address("192.0.2.10"), 500)
RESPONDER_AT = (IPv4Address("192.0.2.20"), 500)


def test_nat_detection_notifies_hash_spis_and_endpoints():
    _, _, log = nat_pair((INITIATOR_AT, RESPONDER_AT), (RESPONDER_AT, INITIATOR_AT))
    request = decode_message(log[0][1])
    response = decode_message(log[1][1])

    def expected(spi_r, endpoint):
        address, port = endpoint
        data = request.spi_i + spi_r + address.packed + port.to_bytes(2)
        return hashlib.sha1(data).digest()

    assert request.notify(
        NotifyType.NAT_DETECTION_SOURCE_IP
    ).notification_data == expected(bytes(8), INITIATOR_AT)
    assert request.notify(
        NotifyType.NAT_DETECTION_DESTINATION_IP
    ).notification_data == expected(bytes(8), RESPONDER_AT)
    assert response.notify(
        NotifyType.NAT_DETECTION_SOURCE_IP
    ).notification_data == expected(response.spi_r, RESPONDER_AT)


def test_no_nat_detected_between_direct_peers():
    i_event, r_event, _ = nat_pair(
        (INITIATOR_AT, RESPONDER_AT), (RESPONDER_AT, INITIATOR_AT)
    )

    assert (i_event.local_behind_nat, i_event.remote_behind_nat) == (False, False)
    assert (r_event.local_behind_nat, r_event.remote_behind_nat) == (False, False)


def test_nat_in_front_of_initiator_detected_by_both():
    private = (IPv4Address("10.0.0.2"), 500)
    translated = (IPv4Address("198.51.100.7"), 4500)

    i_event, r_event, _ = nat_pair((private, RESPONDER_AT), (RESPONDER_AT, translated))

    assert (i_event.local_behind_nat, i_event.remote_behind_nat) == (True, False)
    assert (r_event.local_behind_nat, r_event.remote_behind_nat) == (False, True)
