"""Field cases C01, C03, C04 (and the parsing part of C06) from
/work/shared/conformance/CASES.md, plus the kind of fault each stands for."""

import pytest

from sbc.sip import (
    Request,
    SipParseError,
    SipUri,
    StreamFramer,
    make_response,
    parse_message,
    validate_request,
)

SDP_TWO_M_LINES = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n"
)


def c01_invite(body: bytes = SDP_TWO_M_LINES) -> bytes:
    head = (
        "INVITE sip:+15550100@sbc.example.com;xparam SIP/2.0\r\n"
        "to :\r\n <sip:+15550100@sbc.example.com> ;  tag  = t1\r\n"
        'FROM : "A \\"B\\"" <sip:+15550101@example.com>\r\n  ; tag = f1\r\n'
        "mAx-FoRwArDs: 0070\r\n"
        "i: c01@192.0.2.10\r\n"
        "cSeQ: 0007\r\n  INVITE\r\n"
        "Via  : SIP  /  2.0\r\n / UDP 192.0.2.10;branch=z9hG4bKc01a\r\n"
        "v: SIP/2.0/TCP edge.example.com;branch=z9hG4bKc01b ,\r\n"
        " SIP / 2.0 / UDP 192.0.2.11 ; branch=\r\n z9hG4bKc01c\r\n"
        "s :\r\n"
        "X-Weird: ;;,,;;,;\r\n"
        "X-Folded: part one\r\n part two\r\n"
        "m: <sip:+15550101@192.0.2.10> ; q = 0.5 ; flag\r\n"
        "c: application/sdp\r\n"
        f"l: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def parsed_request(data: bytes) -> Request:
    request = parse_message(data)
    assert isinstance(request, Request)
    validate_request(request)
    return request


# C01: an ugly but valid INVITE


def test_c01_ugly_valid_invite_values():
    request = parsed_request(c01_invite())

    assert [(v.transport, v.host, v.branch) for v in request.via] == [
        ("UDP", "192.0.2.10", "z9hG4bKc01a"),
        ("TCP", "edge.example.com", "z9hG4bKc01b"),
        ("UDP", "192.0.2.11", "z9hG4bKc01c"),
    ]
    assert request.max_forwards == 70
    assert (request.cseq.number, request.cseq.method) == (7, "INVITE")
    assert request.headers.get("Subject") == ""
    assert request.headers.get("X-Weird") == ";;,,;;,;"
    assert request.headers.get("X-Folded") == "part one part two"
    assert request.from_.display_name == 'A "B"'
    assert (request.from_tag, request.to_tag) == ("f1", "t1")
    contact = request.contact[0]
    assert contact.params.get("q") == "0.5"
    assert "flag" in contact.params and contact.params.get("flag") is None
    assert request.body == SDP_TWO_M_LINES
    assert request.body.count(b"\r\nm=") == 2


def test_c01_b_leg_copy_is_unfolded_and_normal():
    request = parsed_request(c01_invite())

    data = request.to_bytes()

    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(not line.startswith((b" ", b"\t")) for line in head.split(b"\r\n"))
    assert parse_message(data) == request


@pytest.mark.parametrize(
    ("original", "folded"),
    [
        ("i: c01@192.0.2.10", "i:\r\n c01@192.0.2.10"),
        ("i: c01@192.0.2.10", "i:\r\n\t\r\n   c01@192.0.2.10"),
        ("z9hG4bKc01a", "z9hG4bKc01a\r\n\t;rport"),
        ("<sip:+15550101@192.0.2.10> ;", "<sip:+15550101@192.0.2.10>\r\n\t;"),
        ("c: application/sdp", "c: application/sdp\r\n  ;charset=utf-8"),
    ],
    ids=[
        "after-colon",
        "several-blank-folds",
        "before-via-param",
        "before-contact-param",
        "before-media-param",
    ],
)
def test_c01_folding_positions(original, folded):
    data = c01_invite().replace(original.encode(), folded.encode())

    request = parsed_request(data)

    assert request.call_id == "c01@192.0.2.10"
    assert request.top_via.branch == "z9hG4bKc01a"
    assert request.contact[0].params.get("q") == "0.5"
    assert request.content_type.mime_type == "application/sdp"


@pytest.mark.parametrize(
    ("original", "folded"),
    [
        ("i: c01@192.0.2.10", "i: c01@\r\n 192.0.2.10"),
        ("i: c01@192.0.2.10", "i\r\n : c01@192.0.2.10"),
        ("INVITE sip:", "INVITE\r\n sip:"),
    ],
    ids=["inside-call-id", "between-name-and-colon", "inside-request-line"],
)
def test_c01_folding_where_lws_is_not_allowed_is_400(original, folded):
    data = c01_invite().replace(original.encode(), folded.encode())

    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(data))

    assert caught.value.status_code == 400


def test_c01_folded_cseq_number_and_method():
    data = c01_invite().replace(b"cSeQ: 0007\r\n  INVITE", b"CSeq:\r\n 7\r\n\tINVITE")

    assert parsed_request(data).cseq.number == 7


def test_c01_bare_lf_line_ends_tolerated():
    data = c01_invite().replace(b"\r\n", b"\n")
    body = SDP_TWO_M_LINES.replace(b"\r\n", b"\n")
    data = data.replace(
        f"l: {len(SDP_TWO_M_LINES)}".encode(), f"l: {len(body)}".encode()
    )

    request = parsed_request(data)

    assert request.top_via.branch == "z9hG4bKc01a"
    assert request.body == body


# C03: Content-Length and scalar anomalies


def c03_invite(content_length: str, body_length: int = 150) -> bytes:
    return (
        "INVITE sip:+15550100@sbc.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKc03\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550101@example.com>;tag=c03\r\n"
        "To: <sip:+15550100@sbc.example.com>\r\n"
        "Call-ID: c03@192.0.2.10\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode() + b"v" * body_length


def test_c03_content_length_too_large():
    with pytest.raises(SipParseError) as caught:
        parse_message(c03_invite("9999"))

    error = caught.value
    assert error.status_code == 400
    assert "Content-Length exceeds body" in error.reason
    assert make_response(error.request, 400).call_id == "c03@192.0.2.10"


def test_c03_content_length_smaller_discards_rest_of_datagram():
    request = parsed_request(c03_invite("10"))

    assert request.body == b"v" * 10


@pytest.mark.parametrize("value", ["-999", "-0", "+5", "1e3", "0x10", "", "12 3"])
def test_c03_content_length_negative_or_malformed(value):
    with pytest.raises(SipParseError) as caught:
        parse_message(c03_invite(value))

    assert caught.value.status_code == 400
    assert caught.value.request is not None


def test_c03_content_length_huge_number_rejected_without_overflow():
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(c03_invite("9" * 5000))


def c03_options_two_lengths() -> bytes:
    return (
        b"OPTIONS sip:sbc.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKc03c\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:+15550101@example.com>;tag=c03c\r\n"
        b"To: <sip:sbc.example.com>\r\n"
        b"Call-ID: c03c@192.0.2.10\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"content-length: 37\r\n\r\n" + b"x" * 37
    )


def test_c03_two_content_lengths_udp_is_400():
    with pytest.raises(SipParseError) as caught:
        parse_message(c03_options_two_lengths())

    assert caught.value.status_code == 400
    assert caught.value.request is not None


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_c03_two_content_lengths_tcp_stream_unusable(chunk):
    framer = StreamFramer()
    data = c03_options_two_lengths()

    with pytest.raises(SipParseError) as caught:
        for start in range(0, len(data), chunk):
            framer.feed(data[start : start + chunk])

    assert caught.value.stream_unusable
    # The framer stays failed: nothing more is framed on this connection.
    with pytest.raises(SipParseError):
        framer.feed(b"\r\n\r\n")


def test_c03_compact_and_long_content_length_conflict():
    data = c03_options_two_lengths().replace(b"content-length: 37", b"l: 37")

    with pytest.raises(SipParseError, match="conflicting"):
        StreamFramer().feed(data)


def c03_register(
    cseq: str = "1",
    max_forwards: str = "70",
    expires: str = "3600",
    contact_expires: str = "3600",
) -> bytes:
    return (
        "REGISTER sip:sbc.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKc03d\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        "From: <sip:+15550101@sbc.example.com>;tag=c03d\r\n"
        "To: <sip:+15550101@sbc.example.com>\r\n"
        "Call-ID: c03d@192.0.2.10\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Expires: {expires}\r\n"
        f"Contact: <sip:+15550101@192.0.2.10>;expires={contact_expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_c03_cseq_overflow_is_400():
    data = c03_register(
        cseq="36893488147419103232",
        max_forwards="300",
        expires="1111111111111111111111",
        contact_expires=str(2**100),
    )

    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(data))

    assert caught.value.status_code == 400
    assert "CSeq" in caught.value.reason
    assert make_response(caught.value.request, 400).status == 400


@pytest.mark.parametrize(
    ("cseq", "ok"),
    [
        ("2147483647", True),
        ("2147483648", False),
        ("4294967296", False),
        ("0" * 30 + "5", True),
        ("9" * 5000, False),
    ],
)
def test_c03_cseq_boundary(cseq, ok):
    request = parse_message(c03_register(cseq=cseq))

    if ok:
        validate_request(request)
    else:
        with pytest.raises(SipParseError, match="CSeq"):
            validate_request(request)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0", True),
        ("255", True),
        ("256", False),
        ("300", False),
        ("9" * 5000, False),
        ("-1", False),
    ],
)
def test_c03_max_forwards_range(value, ok):
    request = parse_message(c03_register(max_forwards=value))

    if ok:
        validate_request(request)
        assert request.max_forwards == int(value)
    else:
        with pytest.raises(SipParseError, match="Max-Forwards"):
            validate_request(request)


@pytest.mark.parametrize(
    "value", ["4294967296", "1111111111111111111111", str(2**100), "9" * 5000]
)
def test_c03_huge_expires_clamped(value):
    request = parsed_request(c03_register(expires=value, contact_expires=value))

    assert request.expires == 2**32 - 1
    assert request.contact[0].expires == 2**32 - 1


@pytest.mark.parametrize(
    ("header", "accessor"),
    [
        ("RSeq: 4294967296", "rseq"),
        ("RAck: 4294967296 1 INVITE", "rack"),
        ("RAck: 1 2147483648 INVITE", "rack"),
        ("Min-SE: 99999999999999999999999", "min_se"),
        ("Session-Expires: 99999999999999999999;refresher=uac", "session_expires"),
    ],
)
def test_c03_other_numeric_headers_overflow_handled(header, accessor):
    data = c03_register().replace(
        b"Content-Length", header.encode() + b"\r\nContent-Length"
    )
    request = parse_message(data)

    if accessor in ("min_se", "session_expires"):
        value = getattr(request, accessor)
        delta = value if isinstance(value, int) else value.delta
        assert delta == 2**32 - 1
    else:
        with pytest.raises(SipParseError) as caught:
            getattr(request, accessor)
        assert caught.value.status_code == 400


def test_c03_malformed_response_discarded():
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKc03r\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        b"Call-ID: c03r\r\nCSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\nv=0\r\n"
    )

    with pytest.raises(SipParseError) as caught:
        parse_message(data)

    assert caught.value.is_response
    assert caught.value.request is None


# C04: IPv6 in URIs and Via


def c04_register(
    uri: str, via: str = "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKc04"
) -> bytes:
    return (
        f"REGISTER {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550101@sbc.example.com>;tag=c04\r\n"
        "To: <sip:+15550101@sbc.example.com>\r\n"
        "Call-ID: c04@192.0.2.10\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_c04_a_unbracketed_ipv6_request_uri():
    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(c04_register("sip:2001:db8::10")))

    assert caught.value.status_code == 400
    assert caught.value.request is not None


def test_c04_b_bracketed_address_has_no_port():
    uri = parsed_request(c04_register("sip:[2001:db8::10:5070]")).request_uri

    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == ("2001:db8::10:5070", None)


def test_c04_c_port_after_brackets():
    uri = parsed_request(c04_register("sip:[2001:db8::10]:5070")).request_uri

    assert (uri.host, uri.port) == ("2001:db8::10", 5070)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKc04d",
        "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKc04d",
    ],
)
def test_c04_d_via_received_forms(via):
    top = parsed_request(c04_register("sip:sbc.example.com", via)).top_via

    assert (top.host, top.received, top.branch) == (
        "2001:db8::9:1",
        "2001:db8::9:255",
        "z9hG4bKc04d",
    )


@pytest.mark.parametrize(
    ("via", "host", "port"),
    [
        (
            "SIP/2.0/TCP [2001:db8:1:2:3:4:5:6];branch=z9hG4bKc04e",
            "2001:db8:1:2:3:4:5:6",
            5060,
        ),
        (
            "SIP/2.0/TCP [2001:db8:0:5::192];branch=z9hG4bKc04f",
            "2001:db8:0:5::192",
            5060,
        ),
        (
            "SIP/2.0/TLS [2001:db8:ab56::8]:12345;received=2001:db8:ab56::8;rport=12345;"
            "branch=z9hG4bKc04g",
            "2001:db8:ab56::8",
            12345,
        ),
        ("SIP/2.0/TLS [2001:db8::8]", "2001:db8::8", 5061),
        ("SIP/2.0/UDP [::1]:5070;rport;branch=z9hG4bKc04", "::1", 5070),
    ],
    ids=[
        "e-full",
        "f-no-last-colon-split",
        "g-port-received-rport",
        "tls-default",
        "loopback",
    ],
)
def test_c04_e_f_g_valid_ipv6_via(via, host, port):
    top = parsed_request(c04_register("sip:sbc.example.com", via)).top_via

    assert top.sent_by == (host, port)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP [fe80::1%4];branch=z9hG4bKc04h",
        "SIP/2.0/UDP [fe80::1%25eth0];branch=z9hG4bKc04h",
        "SIP/2.0/UDP 2001:db8::9:1;branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8::9:1;branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8:::192.0.2.1];branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8::g];branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8::1]x;branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8::1]:99999;branch=z9hG4bKc04h",
        "SIP/2.0/UDP [2001:db8::1];received=[fe80::1%4];branch=z9hG4bKc04h",
    ],
    ids=[
        "h-zone",
        "zone-name",
        "unbracketed",
        "unterminated",
        "three-colons",
        "bad-hex",
        "junk-after",
        "port-range",
        "zone-in-received",
    ],
)
def test_c04_h_invalid_ipv6_via_is_400(via):
    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(c04_register("sip:sbc.example.com", via)))

    assert caught.value.status_code == 400
    assert caught.value.request is not None


@pytest.mark.parametrize(
    "uri",
    [
        "sip:[fe80::1%4]",
        "sip:user@[2001:db8::1",
        "sip:[2001:db8:::192.0.2.1]",
        "sip:user@2001:db8::1:5060",
        "sips:[2001:db8::1]:",
        "sip:[2001:db8::1]:65536",
    ],
)
def test_c04_other_ipv6_uri_forms_rejected(uri):
    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(c04_register(uri)))

    assert caught.value.status_code == 400


def test_c04_ipv6_in_contact_and_route():
    data = c04_register("sip:sbc.example.com").replace(
        b"Content-Length",
        b"Contact: <sip:+15550101@[2001:db8::9:1]:5070;transport=tcp>\r\n"
        b"Route: <sip:[2001:db8::1];lr>\r\nContent-Length",
    )

    request = parsed_request(data)

    contact = request.contact[0].uri
    assert (contact.host, contact.port, contact.transport) == (
        "2001:db8::9:1",
        5070,
        "tcp",
    )
    assert request.route[0].uri.lr


# C06 (parsing part): large UDP datagrams are accepted


@pytest.mark.parametrize("size", [9_000, 65_000])
def test_c06_large_datagram_parses(size):
    padding = "x" * (size - 400)
    data = c04_register("sip:sbc.example.com").replace(
        b"Content-Length", f"X-Padding: {padding}\r\nContent-Length".encode()
    )

    request = parsed_request(data)

    assert len(request.headers.get("X-Padding")) == size - 400
    assert len(request.to_bytes()) == len(data)
