"""Field cases C16, C19, C20 and C22 (shared/conformance/CASES.md) and their kinds."""

from __future__ import annotations

import pytest

from sbc.sdp import (
    Leg,
    LegPolicy,
    SdpSyntaxError,
    SessionDescription,
    anchor_answer,
    anchor_offer,
)

from .peers import PortPool, answer_like_a_phone, load, seeded

A_ADDRESS = "203.0.113.1"
B_ADDRESS = "198.51.100.1"
PHONE_B = "192.0.2.200"


def offer_body(
    *media: str, connection: str = "IN IP4 192.0.2.10", tail=b"\r\n"
) -> bytes:
    head = f"v=0\r\no=a 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc={connection}\r\nt=0 0\r\n"
    return (head + "\r\n".join(media)).encode() + tail


class Call:
    """Both legs of one call, as the B2BUA holds them across re-INVITEs."""

    def __init__(self, a_policy=None, b_policy=None):
        self.a = Leg(A_ADDRESS, 11, a_policy or LegPolicy())
        self.b = Leg(B_ADDRESS, 22, b_policy or LegPolicy())
        self.pool = PortPool()

    def offer(self, body):
        return anchor_offer(
            SessionDescription.parse(body),
            offerer=self.a,
            answerer=self.b,
            allocate_ports=self.pool,
            random_bytes=seeded(),
        )

    def exchange(self, body, answer_edit=lambda answer: answer, **phone):
        sent, pending = self.offer(body)
        answer = answer_like_a_phone(
            sent.to_bytes(), address=PHONE_B, port=7000, **phone
        )
        answered, plan = anchor_answer(
            SessionDescription.parse(answer_edit(answer)),
            pending,
            random_bytes=seeded(),
        )
        return sent, answered, plan


def m_lines(description: SessionDescription) -> list[str]:
    return [
        line
        for line in description.to_bytes().decode().split("\r\n")
        if line[:2] == "m="
    ]


# C16: rejected m-lines (RFC 3264 §5.1, §6).


def test_c16_port_zero_video_without_rtpmap_passes_through():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "m=video 0 RTP/AVP 96",
    )

    sent, answered, plan = Call().exchange(body)

    assert m_lines(sent)[1] == "m=video 0 RTP/AVP 96"
    assert sent.media[1].lines == []
    assert m_lines(answered)[1] == "m=video 0 RTP/AVP 96"
    assert answered.media[1].lines == []
    assert plan.rejected == (1,)


def test_c16_audio_plus_port_zero_video_255_keeps_count_and_order():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "m=video 0 RTP/AVP 255",
    )

    sent, answered, plan = Call().exchange(body)

    assert m_lines(sent) == ["m=audio 30002 RTP/AVP 8 101", "m=video 0 RTP/AVP 255"]
    assert m_lines(answered) == ["m=audio 30000 RTP/AVP 8 101", "m=video 0 RTP/AVP 255"]
    assert [s.index for s in plan.streams] == [0]


def test_c16_offer_with_every_stream_at_port_zero_passes():
    body = offer_body("m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 31")

    sent, answered, plan = Call().exchange(body)

    assert m_lines(sent) == ["m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 31"]
    assert m_lines(answered) == ["m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 31"]
    assert plan.streams == () and plan.rejected == (0, 1)


def test_c16_no_codec_in_common_rejected_with_port_zero():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8",
        "m=video 43714 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "a=fmtp:96 profile-level-id=42e01f",
    )
    call = Call(b_policy=LegPolicy(codecs=frozenset({"PCMA", "VP8"})))

    sent, answered, plan = call.exchange(body)

    assert m_lines(sent)[1] == "m=video 0 RTP/AVP 96"
    assert sent.media[1].lines == []
    assert m_lines(answered)[1] == "m=video 0 RTP/AVP 96"
    assert plan.rejected == (1,)


def test_c16_answerer_rejecting_a_stream_reaches_the_offerer():
    body = load("phone_polycom_video_offer.sdp")

    sent, answered, plan = Call().exchange(body)

    # The phone supports no video codec, so it answers the video at port 0.
    assert sent.media[1].port != 0
    assert m_lines(answered)[1] == "m=video 0 RTP/AVP 109 34"
    assert answered.media[1].lines == []
    assert plan.rejected == (1,)


def test_c16_port_zero_stream_hides_offerer_address_and_keys():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8",
        "m=audio 0 RTP/SAVP 0",
        "c=IN IP4 192.0.2.10",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
    )

    sent, _ = Call().offer(body)

    text = sent.to_bytes().decode()
    assert "192.0.2.10" not in text and "inline" not in text
    assert m_lines(sent)[1] == "m=audio 0 RTP/SAVP 0"


# C19: hold and resume (RFC 3264 §6.1, §8.4).

AUDIO = ("m=audio 43712 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000")


def test_c19_sendonly_last_line_without_crlf_answered_recvonly():
    call = Call()
    call.exchange(offer_body(*AUDIO, "a=sendrecv"))
    held = offer_body(*AUDIO, "a=sendonly", tail=b"")
    assert held.endswith(b"a=sendonly")

    sent, answered, plan = call.exchange(held)

    assert sent.media[0].direction == "sendonly"
    assert answered.media[0].direction == "recvonly"
    assert answered.connection.address == A_ADDRESS
    assert plan.streams[0].direction == "sendonly"
    assert plan.streams[0].offerer.remote is not None


def test_c19_hold_with_zero_address_becomes_sendonly_toward_b():
    call = Call()
    body = offer_body(*AUDIO, "a=sendrecv", connection="IN IP4 0.0.0.0")

    sent, answered, plan = call.exchange(body)

    assert sent.connection.address == B_ADDRESS
    assert sent.media[0].direction == "sendonly"
    assert answered.connection.address == A_ADDRESS
    assert answered.media[0].direction == "recvonly"
    stream = plan.streams[0]
    assert stream.offerer.remote is None
    assert stream.direction == "sendonly"


def test_c19_resume_with_unchanged_connection_flows_again():
    call = Call()
    first_sent, _, _ = call.exchange(offer_body(*AUDIO, "a=sendrecv"))
    call.exchange(offer_body(*AUDIO, "a=sendonly", tail=b""))

    sent, answered, plan = call.exchange(offer_body(*AUDIO, "a=sendrecv"))

    assert answered.media[0].direction == "sendrecv"
    stream = plan.streams[0]
    assert stream.direction == "sendrecv"
    assert stream.offerer.remote.address == "192.0.2.10"
    assert stream.answerer.remote.address == PHONE_B
    assert sent.media[0].port == first_sent.media[0].port
    assert sent.origin.session_version == first_sent.origin.session_version + 2


@pytest.mark.parametrize(
    "offered,answered_as",
    [
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
        ("sendrecv", "sendrecv"),
    ],
)
def test_c19_session_level_direction_answered_per_rfc3264(offered, answered_as):
    body = offer_body(*AUDIO).replace(
        b"t=0 0\r\n", f"t=0 0\r\na={offered}\r\n".encode()
    )

    _, answered, _ = Call().exchange(body)

    assert answered.media[0].direction == answered_as


def test_c19_answerer_ignoring_hold_is_narrowed():
    body = offer_body(*AUDIO, "a=sendonly")

    def answer_sendrecv(answer: bytes) -> bytes:
        return answer.replace(b"a=recvonly", b"a=sendrecv")

    _, answered, plan = Call().exchange(body, answer_edit=answer_sendrecv)

    assert answered.media[0].direction == "recvonly"
    assert plan.streams[0].direction == "sendonly"


def test_c19_ipv6_unspecified_address_is_hold():
    body = offer_body(*AUDIO, connection="IN IP6 ::")

    sent, _, plan = Call().exchange(body)

    assert sent.media[0].direction == "sendonly"
    assert plan.streams[0].offerer.remote is None


# C20: telephone-event (RFC 4733, RFC 3264 §6.1).


def test_c20_events_on_102_mapped_to_answerer_number():
    body = offer_body(
        "m=audio 43712 RTP/AVP 0 102",
        "a=rtpmap:102 telephone-event/8000",
        "a=fmtp:102 0-15",
    )

    sent, answered, plan = Call().exchange(
        body, own_numbers={"telephone-event/8000": "101"}
    )

    assert sent.media[0].formats == ["0", "102"]
    assert answered.media[0].formats == ["0", "102"]
    assert "a=rtpmap:102 telephone-event/8000" in answered.to_bytes().decode()
    stream = plan.streams[0]
    assert stream.to_answerer == {0: 0, 102: 101}
    assert stream.to_offerer[102] == 102
    assert stream.to_offerer[101] == 102


def test_c20_events_on_96_answered_with_96():
    body = load("carrier_ipv6_te96_offer.sdp")

    _, answered, plan = Call().exchange(body)

    assert answered.media[0].formats == ["8", "0", "96"]
    assert plan.streams[0].to_answerer[96] == 96


def test_c20_answer_picks_8000_hz_events_from_two_rates():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8 103 101",
        "a=rtpmap:103 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
    )

    sent, answered, plan = Call().exchange(body)

    assert sent.media[0].formats == ["8", "103", "101"]
    assert answered.media[0].formats == ["8", "101"]
    assert "telephone-event/48000" not in answered.to_bytes().decode()
    assert plan.streams[0].to_answerer == {8: 8, 101: 101}


def test_c20_answerer_renumbering_events_is_mapped_back():
    body = offer_body(
        "m=audio 43712 RTP/AVP 8 103 101",
        "a=rtpmap:103 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
    )

    _, answered, plan = Call().exchange(
        body, own_numbers={"telephone-event/8000": "100"}
    )

    assert answered.media[0].formats == ["8", "101"]
    assert plan.streams[0].to_answerer == {8: 8, 101: 100}
    assert plan.streams[0].to_offerer == {8: 8, 101: 101, 100: 101}


def test_c20_renumbered_opus_and_fmtp_follow_the_offerer_numbers():
    body = offer_body(
        "m=audio 43712 RTP/AVP 111 101",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=rtpmap:101 telephone-event/48000",
    )

    def fmtp_from_phone(answer: bytes) -> bytes:
        return answer.replace(
            b"a=rtpmap:107 opus/48000/2",
            b"a=rtpmap:107 opus/48000/2\r\na=fmtp:107 stereo=0",
        )

    _, answered, plan = Call().exchange(
        body,
        answer_edit=fmtp_from_phone,
        supports=("opus/48000/2", "telephone-event/48000"),
        own_numbers={"opus/48000/2": "107", "telephone-event/48000": "110"},
    )

    text = answered.to_bytes().decode()
    assert "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 stereo=0\r\n" in text
    assert "107" not in text and "110" not in text
    assert plan.streams[0].to_answerer == {111: 107, 101: 110}


# C22: WebRTC-style attributes (RFC 5761 §5.1.1).

MUXED = (*AUDIO, "a=rtcp-mux")


def test_c22_rtcp_mux_offered_but_not_answered_means_no_mux():
    sent, answered, plan = Call().exchange(offer_body(*MUXED), mux=False)

    assert sent.media[0].has_attribute("rtcp-mux")
    assert sent.media[0].attribute("rtcp") == "30003"
    stream = plan.streams[0]
    assert not stream.answerer.rtcp_mux
    assert stream.answerer.remote.rtcp_port == stream.answerer.remote.rtp_port + 1
    # The A-leg offered mux and the SBC accepts it there: each leg agrees on its own.
    assert stream.offerer.rtcp_mux and answered.media[0].has_attribute("rtcp-mux")


def test_c22_rtcp_mux_used_when_both_agree():
    _, _, plan = Call().exchange(offer_body(*MUXED), mux=True)

    answerer = plan.streams[0].answerer
    assert answerer.rtcp_mux
    assert answerer.remote.rtcp_port == answerer.remote.rtp_port


def test_c22_offer_toward_plain_sip_leg_has_no_mux():
    call = Call(b_policy=LegPolicy(rtcp_mux=False))

    sent, answered, plan = call.exchange(offer_body(*MUXED), mux=True)

    assert not sent.media[0].has_attribute("rtcp-mux")
    assert not plan.streams[0].answerer.rtcp_mux


def test_c22_offer_without_mux_is_not_answered_with_mux():
    _, answered, plan = Call().exchange(offer_body(*AUDIO), mux=True)

    assert not answered.media[0].has_attribute("rtcp-mux")
    assert not plan.streams[0].offerer.rtcp_mux


def test_c22_non_adjacent_relay_rtcp_port_is_announced():
    call = Call()
    call.pool = PortPool(mux_gap=100)

    sent, answered, _ = call.exchange(offer_body(*AUDIO))

    assert sent.media[0].attribute("rtcp") == "30102"
    assert answered.media[0].attribute("rtcp") == "30100"


def test_c22_ipv6_candidate_parsed_and_not_forwarded():
    body = load("webrtc_sdes_bundle_offer.sdp")
    call = Call(a_policy=LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))

    sent, answered, plan = call.exchange(
        body, mux=True, supports=("opus/48000/2", "telephone-event/8000")
    )

    assert "candidate" not in (sent.to_bytes() + answered.to_bytes()).decode()
    stream = plan.streams[0]
    assert stream.offerer.remote.address == "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"
    assert stream.offerer.remote.rtcp_port == 53959
    assert stream.to_answerer == {111: 111, 126: 126}


def test_c22_ssrc_and_sendrecv_each_on_own_crlf_line():
    body = load("webrtc_sdes_bundle_offer.sdp").replace(b"\r\n", b"\n")
    call = Call(a_policy=LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",)))

    sent, _ = call.offer(body)

    text = sent.to_bytes()
    assert b"\r\na=sendrecv\r\n" in text
    assert (
        b"\r\na=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r\na=ssrc:3735928559 msid:stream0 track0\r\n"
        in text
    )
    assert text.count(b"\n") == text.count(b"\r\n")


def test_c22_rtcp_attribute_with_address_is_used():
    body = offer_body(*AUDIO, "a=rtcp:50001 IN IP4 192.0.2.11")

    _, _, plan = Call().exchange(body)

    remote = plan.streams[0].offerer.remote
    assert (remote.rtcp_address, remote.rtcp_port) == ("192.0.2.11", 50001)


@pytest.mark.parametrize("value", ["port", "70000", "5000 IN IP4", "5000 IN IP4 a b"])
def test_c22_malformed_rtcp_attribute_raises_400(value):
    body = offer_body(*AUDIO, f"a=rtcp:{value}")

    with pytest.raises(SdpSyntaxError):
        Call().offer(body)


def test_c19_answerer_holding_with_zero_address_is_not_sent_to():
    def hold_in_answer(answer: bytes) -> bytes:
        return answer.replace(f"c=IN IP4 {PHONE_B}".encode(), b"c=IN IP4 0.0.0.0")

    _, answered, plan = Call().exchange(offer_body(*AUDIO), answer_edit=hold_in_answer)

    assert answered.connection.address == A_ADDRESS
    assert answered.media[0].direction == "sendonly"
    assert plan.streams[0].answerer.remote is None
    assert plan.streams[0].direction == "recvonly"


def test_c16_port_zero_stream_drops_its_rtcp_address():
    body = offer_body(
        *AUDIO, "m=video 0 RTP/AVP 31", "a=rtcp:9001 IN IP4 192.0.2.10", "a=label:2"
    )

    sent, _ = Call().offer(body)

    assert sent.media[1].lines == [("a", "label:2")]
