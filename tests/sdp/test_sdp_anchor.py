"""Anchoring media at the SBC through offer/answer (RFC 3264)."""

from __future__ import annotations

import re

import pytest

from sbc.sdp import (
    AnswerMismatch,
    Leg,
    LegPolicy,
    NoCommonCodec,
    NotAcceptableHere,
    SdpSyntaxError,
    SessionDescription,
    UnusableCrypto,
    anchor_answer,
    anchor_offer,
)

from .peers import PortPool, answer_like_a_phone, lines_of, load, seeded

A_ADDRESS = "203.0.113.1"
B_ADDRESS = "2001:db8:5bc::1"
PHONE_A = "192.0.2.10"
PHONE_B = "2001:db8:99::7"


def legs(a_policy=None, b_policy=None):
    a = Leg(A_ADDRESS, 1001, a_policy or LegPolicy())
    b = Leg(B_ADDRESS, 2002, b_policy or LegPolicy())
    return a, b


def offer_to_b(body, a, b, pool=None):
    offer = SessionDescription.parse(body)
    return anchor_offer(
        offer,
        offerer=a,
        answerer=b,
        allocate_ports=pool or PortPool(),
        random_bytes=seeded(),
    )


def full_exchange(body, a, b, pool=None, **phone):
    sent, pending = offer_to_b(body, a, b, pool)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000, **phone)
    answered, plan = anchor_answer(
        SessionDescription.parse(answer), pending, random_bytes=seeded(9)
    )
    return sent, answered, plan


def test_offer_rewrites_origin_and_connection_to_b_leg_ipv6():
    a, b = legs()

    sent, _ = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)

    text = sent.to_bytes().decode()
    assert f"o=- 2002 0 IN IP6 {B_ADDRESS}\r\n" in text
    assert f"c=IN IP6 {B_ADDRESS}\r\n" in text
    assert "198.51.100.20" not in text and "[" not in text


def test_answer_rewrites_to_a_leg_ipv4_and_relay_port():
    a, b = legs()

    _, answered, plan = full_exchange(load("pbx_asterisk_offer.sdp"), a, b)

    text = answered.to_bytes().decode()
    assert f"o=- 1001 0 IN IP4 {A_ADDRESS}\r\n" in text
    assert f"c=IN IP4 {A_ADDRESS}\r\n" in text
    assert "m=audio 30000 RTP/AVP " in text
    assert PHONE_B not in text
    assert plan.streams[0].offerer.remote.address == "198.51.100.20"
    assert plan.streams[0].answerer.remote.address == PHONE_B


def test_offer_ports_come_from_the_relay():
    a, b = legs()
    pool = PortPool(base=40000)

    sent, _ = offer_to_b(load("phone_polycom_video_offer.sdp"), a, b, pool)

    assert [m.port for m in sent.media] == [40002, 40006]
    assert pool.calls == 2


def test_origin_version_increments_per_leg_on_new_offer():
    a, b = legs()
    pool = PortPool()
    body = load("pbx_asterisk_offer.sdp")
    first, _ = offer_to_b(body, a, b, pool)

    held, _ = offer_to_b(body.replace(b"a=sendrecv", b"a=sendonly"), a, b, pool)
    resumed, _ = offer_to_b(body, a, b, pool)

    versions = [s.origin.session_version for s in (first, held, resumed)]
    assert versions == [0, 1, 2]
    assert {s.origin.session_id for s in (first, held, resumed)} == {"2002"}
    assert a.version == 0


def test_origin_version_kept_for_unchanged_reoffer():
    a, b = legs()
    pool = PortPool()
    body = load("pbx_asterisk_offer.sdp")

    first, _ = offer_to_b(body, a, b, pool)
    refresh, _ = offer_to_b(body, a, b, pool)

    assert refresh.origin.session_version == first.origin.session_version


def test_offer_keeps_count_and_order_of_m_lines():
    a, b = legs()

    sent, answered, _ = full_exchange(load("gateway_audio_t38_offer.sdp"), a, b)

    assert [m.media for m in sent.media] == ["audio", "image"]
    assert [m.media for m in answered.media] == ["audio", "image"]
    assert answered.media[1].port == 0


def test_offer_strips_peer_transport_attributes():
    a, b = legs(LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))

    sent, _ = offer_to_b(load("webrtc_sdes_bundle_offer.sdp"), a, b)

    text = sent.to_bytes().decode()
    for gone in ("candidate", "ice-ufrag", "ice-pwd", "group:BUNDLE", "2001:db8:aaaa"):
        assert gone not in text
    assert "a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r\n" in text
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" in text


def test_allow_list_drops_codecs_and_their_attributes():
    trunk = LegPolicy(codecs=frozenset({"PCMA", "telephone-event"}))
    a, b = legs(b_policy=trunk)

    sent, _ = offer_to_b(
        load("pbx_freeswitch_srtp_offer.sdp").replace(b"SAVP", b"AVP"), a, b
    )

    section = sent.media[0]
    assert section.formats == ["8", "101"]
    assert "opus" not in sent.to_bytes().decode()
    assert list(section.attributes("fmtp")) == ["101 0-16"]


def test_allow_list_rejects_stream_with_only_dtmf_left():
    trunk = LegPolicy(codecs=frozenset({"PCMA", "telephone-event"}))
    a, b = legs(b_policy=trunk)

    sent, answered, plan = full_exchange(load("phone_polycom_video_offer.sdp"), a, b)

    assert [m.port for m in sent.media] == [30002, 0]
    assert sent.media[1].lines == []
    assert answered.media[1].port == 0
    assert plan.rejected == (1,)


def test_allow_list_leaving_nothing_raises_488():
    a, b = legs(b_policy=LegPolicy(codecs=frozenset({"AMR", "telephone-event"})))

    with pytest.raises(NoCommonCodec) as caught:
        offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)

    assert caught.value.status_code == 488


def test_rtp_to_srtp_leg_offers_every_suite_with_tags():
    suites = ("AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    a, b = legs(b_policy=LegPolicy(srtp_suites=suites))

    sent, _ = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)

    cryptos = [v.split(" ")[:2] for v in sent.media[0].attributes("crypto")]
    assert sent.media[0].proto == "RTP/SAVP"
    assert cryptos == [["1", suites[0]], ["2", suites[1]], ["3", suites[2]]]


def test_srtp_offer_answer_keys_reach_the_plan():
    srtp = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",), srtp_mki=True)
    a, b = legs(a_policy=srtp, b_policy=LegPolicy(srtp_suites=("AEAD_AES_128_GCM",)))

    sent, answered, plan = full_exchange(load("pbx_freeswitch_srtp_offer.sdp"), a, b)

    # The offer's first usable line is tag 2; the answer repeats its tag and suite.
    (value,) = answered.media[0].attributes("crypto")
    assert value.startswith("2 AES_CM_128_HMAC_SHA1_80 inline:")
    stream = plan.streams[0]
    assert stream.offerer.srtp.suite.name == "AES_CM_128_HMAC_SHA1_80"
    assert stream.offerer.srtp.receive[0].lifetime == 2**31
    assert stream.answerer.srtp.suite.name == "AEAD_AES_128_GCM"
    assert stream.answerer.srtp.receive[0].key == bytes(range(16))
    (offered,) = sent.media[0].attributes("crypto")
    assert stream.answerer.srtp.send.to_value() == offered.split(" ")[2]


def test_srtp_key_with_mki_skipped_unless_the_leg_takes_mki():
    suites = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    body = load("pbx_freeswitch_srtp_offer.sdp")

    _, without = offer_to_b(body, *legs(LegPolicy(srtp_suites=suites)))
    _, with_mki = offer_to_b(body, *legs(LegPolicy(srtp_suites=suites, srtp_mki=True)))

    assert without.streams[0].crypto.tag == 3
    assert with_mki.streams[0].crypto.tag == 2


def test_plan_lists_each_leg_payload_types_for_the_relay():
    a, b = legs()

    _, _, plan = full_exchange(
        load("carrier_ipv6_te96_offer.sdp"),
        a,
        b,
        own_numbers={"telephone-event/8000": "101"},
    )

    stream = plan.streams[0]
    assert stream.offerer.payload_types == {
        "PCMA/8000": 8,
        "PCMU/8000": 0,
        "telephone-event/8000": 96,
    }
    assert stream.answerer.payload_types == {
        "pcma/8000": 8,
        "pcmu/8000": 0,
        "telephone-event/8000": 101,
    }


def test_srtp_keys_kept_across_reoffer():
    srtp = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",))
    a, b = legs(b_policy=srtp)
    pool = PortPool()
    body = load("pbx_asterisk_offer.sdp")

    first, _ = offer_to_b(body, a, b, pool)
    second, _ = offer_to_b(body.replace(b"sendrecv", b"sendonly"), a, b, pool)

    assert list(first.media[0].attributes("crypto")) == list(
        second.media[0].attributes("crypto")
    )


def test_unusable_crypto_offer_raises_488():
    a, b = legs(a_policy=LegPolicy(srtp_suites=("AEAD_AES_128_GCM",)))

    with pytest.raises(UnusableCrypto) as caught:
        offer_to_b(load("pbx_freeswitch_srtp_offer.sdp"), a, b)

    assert caught.value.status_code == 488


def test_malformed_crypto_lines_skipped_for_a_good_one():
    body = load("pbx_freeswitch_srtp_offer.sdp").replace(
        b"a=crypto:1 AEAD_AES_256_GCM inline:6BiR",
        b"a=crypto:1 AEAD_AES_256_GCM inline:!BiR",
    )
    a, b = legs(
        a_policy=LegPolicy(srtp_suites=("AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_32"))
    )

    _, pending = offer_to_b(body, a, b)

    assert pending.streams[0].crypto.tag == 3


def test_plain_rtp_on_srtp_required_leg_raises_488():
    policy = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",), srtp_required=True)
    a, b = legs(a_policy=policy)

    with pytest.raises(UnusableCrypto):
        offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)


def test_dtls_only_webrtc_offer_raises_488():
    a, b = legs()

    with pytest.raises(NoCommonCodec):
        offer_to_b(load("webrtc_dtls_only_offer.sdp"), a, b)


def test_answer_crypto_tag_not_offered_is_a_mismatch():
    a, b = legs(b_policy=LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))
    sent, pending = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    answer = answer.replace(b"a=crypto:1 ", b"a=crypto:5 ")

    with pytest.raises(AnswerMismatch) as caught:
        anchor_answer(SessionDescription.parse(answer), pending, random_bytes=seeded())

    assert caught.value.status_code == 488


def test_answer_without_crypto_to_srtp_offer_is_a_mismatch():
    a, b = legs(b_policy=LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))
    sent, pending = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    answer = b"".join(
        line + b"\r\n"
        for line in answer.split(b"\r\n")
        if line and b"crypto" not in line
    )

    with pytest.raises(AnswerMismatch):
        anchor_answer(SessionDescription.parse(answer), pending, random_bytes=seeded())


def test_answer_with_other_m_line_count_is_a_mismatch():
    a, b = legs()
    sent, pending = offer_to_b(load("phone_polycom_video_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    cut = answer[: answer.index(b"m=video")]

    with pytest.raises(AnswerMismatch):
        anchor_answer(SessionDescription.parse(cut), pending, random_bytes=seeded())


def test_answer_with_no_offered_codec_is_a_mismatch():
    a, b = legs()
    sent, pending = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    answer = re.sub(rb"RTP/AVP [0-9 ]+", b"RTP/AVP 97", answer)
    answer = re.sub(rb"a=rtpmap:[^\r]*\r\n", b"", answer)
    assert b"m=audio 7000 RTP/AVP 97\r\n" in answer

    with pytest.raises(AnswerMismatch):
        anchor_answer(SessionDescription.parse(answer), pending, random_bytes=seeded())


def test_answer_order_follows_answerer_preference():
    a, b = legs()

    _, answered, plan = full_exchange(
        load("pbx_asterisk_offer.sdp"),
        a,
        b,
        supports=("pcma/8000", "telephone-event/8000"),
    )

    assert answered.media[0].formats == ["8", "101"]
    assert dict(plan.streams[0].to_answerer) == {8: 8, 101: 101}


def test_offer_leaves_the_input_unchanged():
    a, b = legs(LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))
    body = load("webrtc_sdes_bundle_offer.sdp")
    offer = SessionDescription.parse(body)

    anchor_offer(
        offer, offerer=a, answerer=b, allocate_ports=PortPool(), random_bytes=seeded()
    )

    assert offer.to_bytes() == body


def test_leg_rejects_bad_media_address():
    with pytest.raises(ValueError):
        Leg("[2001:db8::1]", 1)


def test_policy_rejects_unknown_suite():
    with pytest.raises(ValueError):
        LegPolicy(srtp_suites=("NULL_HMAC_SHA1_80",))


def test_every_line_of_rewritten_sdp_ends_in_crlf():
    a, b = legs(LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))

    sent, answered, _ = full_exchange(load("webrtc_sdes_bundle_offer.sdp"), a, b)

    for body in (sent.to_bytes(), answered.to_bytes()):
        assert body.endswith(b"\r\n")
        assert body.count(b"\n") == body.count(b"\r\n") == len(lines_of(body))


@pytest.mark.parametrize("formats", ["0 abc", "0 128", "0 0101", "0 -1"])
def test_rtp_formats_outside_payload_type_range_raise_400(formats):
    body = load("pbx_asterisk_offer.sdp").replace(b"0 8 9 3 101", formats.encode())
    a, b = legs()

    with pytest.raises(SdpSyntaxError) as caught:
        offer_to_b(body, a, b)

    assert caught.value.status_code == 400


def test_answer_format_outside_payload_type_range_raises_400():
    a, b = legs()
    sent, pending = offer_to_b(load("pbx_asterisk_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    answer = answer.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 0 8 101 x")

    with pytest.raises(SdpSyntaxError):
        anchor_answer(SessionDescription.parse(answer), pending, random_bytes=seeded())


def test_keys_never_in_repr_of_legs_pending_offers_or_plans():
    srtp = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",), srtp_mki=True)
    a, b = legs(srtp, srtp)
    sent, pending = offer_to_b(load("pbx_freeswitch_srtp_offer.sdp"), a, b)
    answer = answer_like_a_phone(sent.to_bytes(), address=PHONE_B, port=7000)
    answered, plan = anchor_answer(
        SessionDescription.parse(answer), pending, random_bytes=seeded()
    )
    keys = [
        value.split("inline:")[1].split("|")[0]
        for body in (
            load("pbx_freeswitch_srtp_offer.sdp"),
            sent.to_bytes(),
            answer,
            answered.to_bytes(),
        )
        for value in body.decode().split("\r\n")
        if "inline:" in value
    ]
    assert len(keys) >= 5

    text = " ".join(repr(thing) for thing in (a, b, pending, plan, sent, answered))

    assert "inline" not in text
    assert not any(key in text or key[:12] in text for key in keys)


def test_reoffer_removing_m_lines_raises_488():
    a, b = legs()
    pool = PortPool()
    body = load("phone_polycom_video_offer.sdp")
    full_exchange(body, a, b, pool)

    with pytest.raises(NotAcceptableHere) as caught:
        offer_to_b(body[: body.index(b"m=video")], a, b, pool)

    assert caught.value.status_code == 488


def test_reoffer_adding_an_m_line_is_anchored():
    a, b = legs()
    pool = PortPool()
    body = load("pbx_asterisk_offer.sdp")
    full_exchange(body, a, b, pool)

    sent, _ = offer_to_b(body + b"m=video 9000 RTP/AVP 31\r\n", a, b, pool)

    assert [m.port for m in sent.media] == [30002, 30006]


@pytest.mark.parametrize(
    "connection",
    [
        "IN IP4 media.example.com",
        "IN IP4 233.252.0.1/127",
        "IN IP6 ff0e::1",
        "IN IP6 fe80::1%4",
    ],
)
def test_offer_connection_relay_cannot_reach_raises_488(connection):
    body = load("pbx_asterisk_offer.sdp").replace(
        b"IN IP4 198.51.100.20\r\nt=", f"{connection}\r\nt=".encode()
    )
    a, b = legs()

    with pytest.raises(NotAcceptableHere) as caught:
        offer_to_b(body, a, b)

    assert caught.value.status_code == 488


@pytest.mark.parametrize("connection", ["IN IP4 2001:db8::1", "IN IP6 192.0.2.1"])
def test_offer_connection_of_wrong_family_raises_400(connection):
    body = load("pbx_asterisk_offer.sdp").replace(
        b"IN IP4 198.51.100.20\r\nt=", f"{connection}\r\nt=".encode()
    )
    a, b = legs()

    with pytest.raises(SdpSyntaxError):
        offer_to_b(body, a, b)


def test_offer_rtp_port_65535_needs_rtcp_attribute_or_mux():
    body = load("pbx_asterisk_offer.sdp").replace(b"14566", b"65535")
    a, b = legs()

    with pytest.raises(SdpSyntaxError):
        offer_to_b(body, a, b)
    _, pending = offer_to_b(body + b"a=rtcp-mux\r\n", a, b)

    assert pending.streams[0].remote.rtcp_port == 65535
