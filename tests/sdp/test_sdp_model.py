"""Parsing and serializing SDP (RFC 8866)."""

from __future__ import annotations

import pytest

from sbc.sdp import (
    Connection,
    NotAcceptableHere,
    SdpError,
    SdpSyntaxError,
    SessionDescription,
    codec_table,
)

from .peers import DATA, load

BASIC = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"a=x-vendor-first:1\r\n"
    b"m=audio 49170 RTP/AVP 0 8 18 3 101\r\n"
    b"a=zz-unknown:keep me\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=aa-unknown\r\n"
    b"a=ptime:20\r\n"
)


def test_round_trip_crlf_is_byte_identical():
    assert SessionDescription.parse(BASIC).to_bytes() == BASIC


@pytest.mark.parametrize("path", sorted(DATA.glob("*.sdp")), ids=lambda p: p.name)
def test_round_trip_corpus_keeps_every_line(path):
    body = path.read_bytes()
    expected = body.replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n")

    assert SessionDescription.parse(body).to_bytes() == expected + b"\r\n"


def test_parse_lf_only_and_missing_last_eol_accepted():
    body = load("carrier_lf_no_final_eol_offer.sdp")
    assert b"\r" not in body and not body.endswith(b"\n")

    sdp = SessionDescription.parse(body)
    out = sdp.to_bytes()

    assert out.endswith(b"a=maxptime:20\r\n")
    assert out.count(b"\r\n") == out.count(b"\n") == len(body.split(b"\n"))


def test_unknown_attributes_keep_their_order():
    sdp = SessionDescription.parse(BASIC)

    values = [value for kind, value in sdp.media[0].lines if kind == "a"]

    assert values == [
        "zz-unknown:keep me",
        "rtpmap:101 telephone-event/8000",
        "aa-unknown",
        "ptime:20",
    ]
    assert sdp.attribute("x-vendor-first") == "1"


def test_static_payload_types_filled_without_rtpmap():
    table = codec_table(SessionDescription.parse(BASIC).media[0])

    assert {pt: (c.name, c.clock_rate) for pt, c in table.items()} == {
        "0": ("PCMU", 8000),
        "8": ("PCMA", 8000),
        "18": ("G729", 8000),
        "3": ("GSM", 8000),
        "101": ("telephone-event", 8000),
    }


def test_static_payload_type_g722_and_l16_stereo():
    body = BASIC.replace(b"0 8 18 3 101", b"9 10")

    table = codec_table(SessionDescription.parse(body).media[0])

    assert table["9"].key == ("g722", 8000, 1)
    assert table["10"].key == ("l16", 44100, 2)


def test_dynamic_payload_type_without_rtpmap_is_unknown():
    body = BASIC.replace(b"0 8 18 3 101", b"96 0")

    assert list(codec_table(SessionDescription.parse(body).media[0])) == ["0"]


def test_origin_and_connection_parsed_ipv6():
    body = load("carrier_ipv6_te96_offer.sdp")

    sdp = SessionDescription.parse(body)

    assert sdp.origin.address == "2001:db8:c0::10"
    assert sdp.origin.session_version == 1
    assert sdp.connection == Connection("IN", "IP6", "2001:db8:c0::10")


def test_connection_for_address_ipv6_has_no_brackets():
    assert Connection.for_address("2001:db8::5").to_value() == "IN IP6 2001:db8::5"
    assert Connection.for_address("192.0.2.5").to_value() == "IN IP4 192.0.2.5"


def test_session_connection_inserted_before_time_line():
    body = load("webrtc_sdes_bundle_offer.sdp")
    sdp = SessionDescription.parse(body)

    sdp.set_session_connection(Connection.for_address("192.0.2.1"))

    kinds = [kind for kind, _ in sdp.lines]
    assert kinds[:5] == ["v", "o", "s", "c", "t"]


def test_port_count_kept():
    body = BASIC.replace(b"m=audio 49170 RTP", b"m=audio 49170/2 RTP")

    sdp = SessionDescription.parse(body)

    assert (sdp.media[0].port, sdp.media[0].port_count) == (49170, 2)
    assert sdp.to_bytes() == body


MALFORMED = {
    "not_v_first": BASIC.replace(b"v=0\r\n", b""),
    "version_1": BASIC.replace(b"v=0", b"v=1"),
    "no_origin": BASIC.replace(
        b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n", b""
    ),
    "two_origins": BASIC.replace(b"s=-\r\n", b"o=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"),
    "origin_five_fields": BASIC.replace(b"o=alice 2890844526 ", b"o=alice "),
    "origin_version_word": BASIC.replace(b"2890844526 IN", b"x IN"),
    "space_before_equals": BASIC.replace(b"s=-", b"s =-"),
    "uppercase_type": BASIC.replace(b"s=-", b"S=-"),
    "unknown_type": BASIC.replace(b"s=-", b"s=-\r\ny=what"),
    "session_type_in_media": BASIC.replace(b"a=ptime:20", b"t=0 0"),
    "blank_line_inside": BASIC.replace(b"s=-\r\n", b"s=-\r\n\r\n"),
    "nul_byte": BASIC.replace(b"s=-", b"s=-\0"),
    "stray_cr": BASIC.replace(b"s=-", b"s=a\rb"),
    "m_port_word": BASIC.replace(b"49170", b"port"),
    "m_port_too_big": BASIC.replace(b"49170", b"65536"),
    "m_no_format": BASIC.replace(b"RTP/AVP 0 8 18 3 101", b"RTP/AVP"),
    "m_double_space": BASIC.replace(b"RTP/AVP 0", b"RTP/AVP  0"),
    "m_zero_ports": BASIC.replace(b"49170", b"49170/0"),
    "c_two_fields": BASIC.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4"),
    "c_empty_address": BASIC.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 "),
    "no_connection_for_active_stream": BASIC.replace(b"c=IN IP4 192.0.2.10\r\n", b""),
    "too_large": BASIC + b"a=" + b"x" * 70_000 + b"\r\n",
    "empty": b"",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_malformed_raises_400(body):
    with pytest.raises(SdpSyntaxError) as caught:
        SessionDescription.parse(body)

    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "old,new",
    [
        (b"c=IN IP4 192.0.2.10", b"c=ATM NSAP 47.0091"),
        (b"IN IP4 192.0.2.10\r\ns", b"IN IPX 1\r\ns"),
    ],
)
def test_parse_unserved_network_type_raises_488(old, new):
    with pytest.raises(NotAcceptableHere) as caught:
        SessionDescription.parse(BASIC.replace(old, new))

    assert caught.value.status_code == 488


def test_parse_port_zero_stream_needs_no_connection():
    body = BASIC.replace(b"c=IN IP4 192.0.2.10\r\n", b"").replace(b"49170", b"0")

    assert SessionDescription.parse(body).media[0].port == 0


def test_parse_non_utf8_kept_lossless():
    body = BASIC.replace(b"s=-", b"s=Caf\xe9 \xff")

    assert SessionDescription.parse(body).to_bytes() == body


def test_every_error_is_an_sdp_error():
    assert issubclass(SdpSyntaxError, SdpError)
    assert issubclass(NotAcceptableHere, SdpError)


def test_repr_hides_attribute_lines():
    body = load("pbx_freeswitch_srtp_offer.sdp")

    text = repr(SessionDescription.parse(body))

    assert "inline" not in text and "crypto" not in text


def test_set_attribute_replaces_first_in_place_and_drops_duplicates():
    section = SessionDescription.parse(BASIC + b"a=ptime:30\r\n").media[0]

    section.set_attribute("ptime", "40")

    values = [value for _, value in section.lines]
    assert values == [
        "zz-unknown:keep me",
        "rtpmap:101 telephone-event/8000",
        "aa-unknown",
        "ptime:40",
    ]


def test_set_attribute_appends_flag_when_absent():
    section = SessionDescription.parse(BASIC).media[0]

    section.set_attribute("rtcp-mux")

    assert section.lines[-1] == ("a", "rtcp-mux")
    assert section.has_attribute("rtcp-mux")


def test_remove_attributes_matches_whole_names_only():
    section = SessionDescription.parse(BASIC).media[0]

    section.remove_attributes("rtpmap", "aa")

    assert [value for _, value in section.lines] == [
        "zz-unknown:keep me",
        "aa-unknown",
        "ptime:20",
    ]


def test_direction_last_attribute_wins_and_session_level_separate():
    body = (
        BASIC.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
        + b"a=inactive\r\na=recvonly\r\n"
    )

    sdp = SessionDescription.parse(body)

    assert sdp.direction == "sendonly"
    assert sdp.media[0].direction == "recvonly"


def test_set_origin_changes_only_the_o_line():
    sdp = SessionDescription.parse(BASIC)
    origin = sdp.origin
    origin.session_version += 1

    sdp.set_origin(origin)

    assert sdp.to_bytes() == BASIC.replace(b"2890844526 IN", b"2890844527 IN")
