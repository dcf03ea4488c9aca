"""Real-world SDP shapes through the rewriter, checked with aiortc's parser.

aiortc's SDP parser is an independent implementation: the offers and answers
the SBC writes must read the same through it (ports, hosts, payload types,
RTCP port, rtcp-mux, direction).
"""

from __future__ import annotations

import pytest
from aiortc import sdp as aiortc_sdp

from sbc.sdp import (
    Leg,
    LegPolicy,
    NoCommonCodec,
    SessionDescription,
    anchor_answer,
    anchor_offer,
)

from .peers import PortPool, answer_like_a_phone, load, seeded

SUITES = ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM")
PHONE = ("pcma/8000", "pcmu/8000", "g722/8000", "opus/48000/2", "telephone-event/8000")

# file -> (active streams after the answer, rejected m= indexes)
EXPECTED = {
    "pbx_asterisk_offer.sdp": (1, ()),
    "pbx_freeswitch_srtp_offer.sdp": (1, ()),
    "carrier_lf_no_final_eol_offer.sdp": (1, ()),
    "carrier_ipv6_te96_offer.sdp": (1, ()),
    "phone_polycom_video_offer.sdp": (1, (1,)),
    "webrtc_sdes_bundle_offer.sdp": (1, ()),
    "gateway_audio_t38_offer.sdp": (1, (1,)),
}

# aiortc's parser asserts on m= lines that are not RTP (T.38 over udptl).
AIORTC_CANNOT_READ = {"gateway_audio_t38_offer.sdp"}


def run(name, b_policy):
    a = Leg("203.0.113.1", 1, LegPolicy(srtp_suites=SUITES))
    b = Leg("2001:db8::1", 2, b_policy)
    sent, pending = anchor_offer(
        SessionDescription.parse(load(name)),
        offerer=a,
        answerer=b,
        allocate_ports=PortPool(),
        random_bytes=seeded(),
    )
    answer = answer_like_a_phone(
        sent.to_bytes(), address="192.0.2.9", port=7000, supports=PHONE, mux=True
    )
    answered, plan = anchor_answer(
        SessionDescription.parse(answer), pending, random_bytes=seeded()
    )
    return sent, answered, plan


def oracle(description: SessionDescription):
    return aiortc_sdp.SessionDescription.parse(description.to_bytes().decode())


def assert_oracle_agrees(ours: SessionDescription, address: str) -> None:
    theirs = oracle(ours)
    assert theirs.host in (address, None)
    assert len(theirs.media) == len(ours.media)
    for mine, other in zip(ours.media, theirs.media, strict=True):
        assert (other.kind, other.port, other.profile) == (
            mine.media,
            mine.port,
            mine.proto,
        )
        if mine.port == 0:
            continue
        assert [str(f) for f in other.fmt] == mine.formats
        mapped = {v.split(" ")[0] for v in mine.attributes("rtpmap")}
        listed = [str(c.payloadType) for c in other.rtp.codecs]
        assert listed == [pt for pt in mine.formats if pt in mapped]
        rtcp = mine.attribute("rtcp")
        assert other.rtcp_port == (int(rtcp) if rtcp else None)
        assert other.direction == mine.direction
        assert other.rtcp_mux == mine.has_attribute("rtcp-mux")


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("srtp", [False, True], ids=["rtp_trunk", "srtp_trunk"])
def test_corpus_offer_anchors_and_oracle_agrees(name, srtp):
    policy = LegPolicy(srtp_suites=SUITES if srtp else ())

    sent, answered, plan = run(name, policy)

    active, rejected = EXPECTED[name]
    assert (len(plan.streams), plan.rejected) == (active, rejected)
    if name not in AIORTC_CANNOT_READ:
        assert_oracle_agrees(sent, "2001:db8::1")
        assert_oracle_agrees(answered, "203.0.113.1")
    expected_proto = "RTP/SAVP" if srtp else "RTP/AVP"
    assert sent.media[0].proto.startswith(expected_proto)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_rewrite_hides_every_peer_address(name):
    original = SessionDescription.parse(load(name))
    peer_addresses = {original.origin.address}
    for section in [original, *original.media]:
        for kind, value in section.lines:
            if kind == "c":
                peer_addresses.add(value.split(" ")[2])
    peer_addresses -= {"0.0.0.0", "127.0.0.1"}

    sent, answered, _ = run(name, LegPolicy())

    for text in (sent.to_bytes().decode(), answered.to_bytes().decode()):
        assert not any(address in text for address in peer_addresses)
        assert "192.0.2.9" not in text


def test_corpus_dtls_only_webrtc_offer_is_refused_with_488():
    with pytest.raises(NoCommonCodec) as caught:
        run("webrtc_dtls_only_offer.sdp", LegPolicy())

    assert caught.value.status_code == 488
