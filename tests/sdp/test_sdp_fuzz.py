"""Arbitrary input either parses or raises an SdpError, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sdp import (
    Leg,
    LegPolicy,
    SdpError,
    SessionDescription,
    anchor_answer,
    anchor_offer,
)

from .peers import DATA, PortPool, answer_like_a_phone, seeded

CORPUS = [path.read_bytes() for path in sorted(DATA.glob("*.sdp"))]
SRTP = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"))
FRAGMENTS = [
    b"m=audio 0 RTP/AVP 0",
    b"m=video 5000 RTP/SAVPF 96",
    b"m=audio 5000 RTP/AVP 0 abc 300",
    b"m=audio 65535 RTP/AVP 0 8",
    b"c=IN IP6 ::",
    b"c=IN IP4 0.0.0.0",
    b"a=rtcp:",
    b"a=rtcp:1 IN IP4",
    b"a=rtpmap:96",
    b"a=rtpmap:96 x/",
    b"a=rtpmap:101 telephone-event/8000/0",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
    b"a=crypto:99999 AEAD_AES_256_GCM inline:AAAA|2^99|0:0",
    b"a=rtcp-mux",
    b"a=sendonly",
    b"o=x 1 1 IN IP4 1.2.3.4",
    b"v=0",
    b"\xff\xfe",
    b"",
]


def mutate(body: bytes, data: st.DataObject) -> bytes:
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    for _ in range(data.draw(st.integers(1, 4))):
        choice = data.draw(st.integers(0, 3))
        at = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if choice == 0 and lines:
            del lines[at]
        elif choice == 1:
            lines.insert(at, data.draw(st.sampled_from(FRAGMENTS)))
        elif choice == 2 and lines:
            line = bytearray(lines[at])
            if line:
                line[data.draw(st.integers(0, len(line) - 1))] = data.draw(
                    st.integers(0, 255)
                )
            lines[at] = bytes(line)
        elif lines:
            lines.insert(at, lines[at])
    return b"\r\n".join(lines)


def check(body: bytes) -> None:
    """The fuzz invariant, from parse through offer and answer."""
    try:
        offer = SessionDescription.parse(body)
    except SdpError:
        return
    assert SessionDescription.parse(offer.to_bytes()).to_bytes() == offer.to_bytes()
    a, b = Leg("192.0.2.1", 1, SRTP), Leg("2001:db8::1", 2, SRTP)
    try:
        sent, pending = anchor_offer(
            offer,
            offerer=a,
            answerer=b,
            allocate_ports=PortPool(),
            random_bytes=seeded(),
        )
    except SdpError:
        return
    sent_body = sent.to_bytes()
    assert SessionDescription.parse(sent_body).to_bytes() == sent_body
    answer = answer_like_a_phone(
        sent_body,
        address="192.0.2.9",
        port=7000,
        supports=("pcma/8000", "opus/48000/2"),
    )
    try:
        answered, _ = anchor_answer(
            SessionDescription.parse(answer), pending, random_bytes=seeded()
        )
    except SdpError:
        return
    assert (
        SessionDescription.parse(answered.to_bytes()).to_bytes() == answered.to_bytes()
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_sdp_error(body):
    check(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_valid_header_parse_or_raise_sdp_error(tail):
    check(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        + tail
    )


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_corpus_parse_or_raise_sdp_error(body, data):
    check(mutate(body, data))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_answers_raise_only_sdp_error(body, data):
    a, b = Leg("192.0.2.1", 1, SRTP), Leg("2001:db8::1", 2, SRTP)
    try:
        sent, pending = anchor_offer(
            SessionDescription.parse(body),
            offerer=a,
            answerer=b,
            allocate_ports=PortPool(),
            random_bytes=seeded(),
        )
    except SdpError:
        return
    answer = answer_like_a_phone(sent.to_bytes(), address="192.0.2.9", port=7000)

    try:
        anchor_answer(
            SessionDescription.parse(mutate(answer, data)),
            pending,
            random_bytes=seeded(),
        )
    except SdpError:
        pass
