"""parse_message, validate_request/validate_response, make_response, to_bytes."""

import pytest

from sbc.sip import (
    Request,
    Response,
    SipParseError,
    SipUri,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from sbc.sip.headers import parse_via_value

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def invite(body: bytes = SDP, extra: str = "") -> bytes:
    head = (
        "INVITE sip:+15550100@sbc.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport\r\n"
        "Via: SIP/2.0/TCP edge.example.com;branch=z9hG4bKinv0\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:+15550101@example.com>;tag=f1\r\n'
        "To: <sip:+15550100@sbc.example.com>\r\n"
        "Call-ID: inv1@192.0.2.10\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:+15550101@192.0.2.10:5060>\r\n"
        "Content-Type: application/sdp\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_parse_request_typed_values():
    request = parse_message(invite())

    assert isinstance(request, Request)
    assert (request.method, request.uri, request.version) == (
        "INVITE",
        "sip:+15550100@sbc.example.com",
        "SIP/2.0",
    )
    assert [via.branch for via in request.via] == ["z9hG4bKinv1", "z9hG4bKinv0"]
    assert request.top_via.sent_by == ("192.0.2.10", 5060)
    assert request.top_via.asks_rport
    assert request.top_via.rport is None
    assert request.via[1].transport == "TCP"
    assert (request.cseq.number, request.cseq.method) == (1, "INVITE")
    assert request.from_.display_name == "Alice"
    assert (request.from_tag, request.to_tag) == ("f1", None)
    assert request.max_forwards == 70
    assert request.content_type is not None
    assert request.content_type.mime_type == "application/sdp"
    assert request.body == SDP
    uri = request.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.port) == ("+15550100", "sbc.example.com", None)


def test_validate_request_accepts_good_invite():
    validate_request(parse_message(invite()))


def test_parse_response_typed_values():
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        b"Call-ID: r1\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n"
    )

    response = parse_message(data)

    assert isinstance(response, Response)
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.to_tag == "2"
    validate_response(response)


def test_make_response_copies_dialog_headers_and_adds_to_tag():
    request = parse_message(invite(extra="Timestamp: 54\r\n"))
    assert isinstance(request, Request)

    response = make_response(request, 200, to_tag="t9")
    trying = make_response(request, 100)

    assert response.reason == "OK"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.to_tag == "t9"
    assert response.from_tag == "f1"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert "Timestamp" not in response.headers
    assert trying.headers.get("Timestamp") == "54"


def test_to_bytes_round_trip_request():
    request = parse_message(invite())

    again = parse_message(request.to_bytes())

    assert again == request
    assert again.to_bytes() == request.to_bytes()


def test_to_bytes_sets_content_length_from_body():
    request = parse_message(invite())
    request.body = b"x" * 7

    data = request.to_bytes()

    assert b"\r\nContent-Length: 7\r\n\r\nxxxxxxx" in data
    assert data.count(b"Content-Length") == 1


@pytest.mark.parametrize(
    ("replace", "by", "fragment"),
    [
        (b"CSeq: 1 INVITE", b"CSeq: 1 BYE", "CSeq method"),
        (b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE", "CSeq number"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", "Max-Forwards"),
        (b"Call-ID: inv1@192.0.2.10", b"Call-ID: a b", "Call-ID"),
        (b"To: <sip:+15550100@sbc.example.com>", b"To: <sip:+1 5@x>", "To"),
    ],
)
def test_validate_request_rejects_bad_mandatory_header(replace, by, fragment):
    request = parse_message(invite().replace(replace, by))

    with pytest.raises(SipParseError) as caught:
        validate_request(request)

    assert caught.value.status_code == 400
    assert fragment in caught.value.reason


def test_parse_error_keeps_partial_request_for_400():
    data = invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n")

    with pytest.raises(SipParseError) as caught:
        parse_message(data)

    partial = caught.value.request
    assert partial is not None
    answer = make_response(partial, caught.value.status_code, caught.value.reason)
    assert answer.cseq.number == 1
    assert answer.status == 400


@pytest.mark.parametrize(
    "status", [b"099", b"700", b"99", b"1000", b"2x0", b"\xd9\xa2\xd9\xa0\xd9\xa0"]
)
def test_parse_response_bad_status_code_discarded(status):
    data = (
        b"SIP/2.0 " + status + b" X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )

    with pytest.raises(SipParseError) as caught:
        parse_message(data)

    assert caught.value.is_response


def test_non_utf8_header_bytes_kept_opaque_and_serialized_unchanged():
    data = invite().replace(b'"Alice"', b'"Al\xe9\xff ice"')

    request = parse_message(data)
    validate_request(request)

    assert request.to_bytes() == data
    assert request.from_.display_name.startswith("Al")
    assert (
        request.from_.display_name.encode("utf-8", "surrogateescape")
        == b"Al\xe9\xff ice"
    )


def test_utf8_display_name_decoded():
    request = parse_message(invite().replace(b'"Alice"', '"Zoë Ñ"'.encode()))

    assert request.from_.display_name == "Zoë Ñ"


def test_non_utf8_in_uri_is_400():
    request = parse_message(
        invite().replace(b"sip:+15550100@sbc", b"sip:+1555\xff@sbc", 1)
    )

    with pytest.raises(SipParseError) as caught:
        validate_request(request)

    assert caught.value.status_code == 400


def test_leading_crlf_before_start_line_ignored():
    request = parse_message(b"\r\n\r\n" + invite())

    assert request.method == "INVITE"


def test_headers_cache_dropped_on_change():
    request = parse_message(invite())
    assert request.max_forwards == 70

    request.headers.set("Max-Forwards", "69")

    assert request.max_forwards == 69


def _typed_views(message: Request) -> tuple[object, ...]:
    return (
        message.top_via,
        message.via,
        message.from_,
        message.from_tag,
        message.to,
        message.to_tag,
        message.cseq,
        message.contact,
        message.max_forwards,
        message.call_id,
        [message.headers.get(name) for name, _ in message.headers],
        "Via" in message.headers,
        "Subject" in message.headers,
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.add("Via", "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKadded"),
        lambda h: h.prepend("Via", "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKtop"),
        lambda h: h.set("Via", "SIP/2.0/TCP 192.0.2.98;branch=z9hG4bKset"),
        lambda h: h.remove("Via"),
        lambda h: h.replace_first("via", "SIP/2.0/UDP 192.0.2.97;branch=z9hG4bKr"),
        lambda h: h.set("From", "<sip:other@example.com>;tag=new"),
        lambda h: h.set("t", "<sip:b@example.com>;tag=totag"),
        lambda h: h.replace_first("to", "<sip:b@example.com>;tag=t2"),
        lambda h: h.set("CSeq", "9 INVITE"),
        lambda h: h.prepend("Contact", "<sip:first@192.0.2.1>"),
        lambda h: h.remove("Contact"),
        lambda h: h.add("Subject", "hello"),
        lambda h: h.set("Max-Forwards", "12"),
    ],
)
def test_typed_values_after_a_change_match_a_fresh_parse(change):
    # Reading every typed value first fills the caches; a change must drop
    # exactly what it makes stale (the fresh parse is the oracle).
    request = parse_message(invite())
    assert isinstance(request, Request)
    _typed_views(request)

    change(request.headers)

    fresh = parse_message(request.to_bytes())
    assert isinstance(fresh, Request)
    if "Via" not in fresh.headers:
        with pytest.raises(SipParseError):
            request.top_via  # noqa: B018
        return
    assert _typed_views(request) == _typed_views(fresh)


def test_replace_top_via_keeps_the_other_values():
    request = parse_message(invite())
    assert isinstance(request, Request)
    others = request.via[1:]
    stamped = parse_via_value(
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport=5062;received=192.0.2.77"
    )

    request.replace_top_via(stamped)

    assert request.top_via is stamped
    assert request.via == [stamped, *others]
    fresh = parse_message(request.to_bytes())
    assert fresh.via == [stamped, *others]


@pytest.mark.parametrize("line_break", ["\r", "\n"])
@pytest.mark.parametrize(
    "header",
    [
        "Subject: a{}Injected: b\r\n",
        "X-Note: {}\r\n",
        "Contact: <sip:+15550101@192.0.2.10>{};expires=60\r\n",
    ],
)
def test_bare_line_break_in_header_value_answered_400(line_break, header):
    # RFC 3261 §7.3.1 and §25.1: inside a header block CR and LF only come
    # as a CRLF pair. A lone one would be passed on, and a peer that splits
    # on bare LF would read a header the sender smuggled in.
    data = invite(extra=header.format(line_break))

    with pytest.raises(SipParseError) as raised:
        parse_message(data)

    assert raised.value.status_code == 400
    assert "CR or LF" in raised.value.reason
    assert raised.value.request is not None  # the 400 can be built


@pytest.mark.parametrize("line_break", ["\r", "\n"])
def test_bare_line_break_in_mandatory_header_not_answered(line_break):
    # The 400 would copy the broken Via back out: drop it instead.
    data = invite().replace(b"branch=z9hG4bKinv1", f"{line_break};x".encode())

    with pytest.raises(SipParseError) as raised:
        parse_message(data)

    assert raised.value.request is None


def test_bare_line_break_in_lf_only_message_answered_400():
    data = invite(extra="Subject: a\rb\r\n").replace(b"\r\n", b"\n")

    with pytest.raises(SipParseError) as raised:
        parse_message(data)

    assert "CR or LF" in raised.value.reason


@pytest.mark.parametrize("line_break", ["\r", "\n"])
def test_bare_line_break_in_request_line_answered_400_not_echoed(line_break):
    # The 505 for an unknown version names it: a line break in it would
    # split the SBC's own status line.
    data = invite().replace(b"SIP/2.0\r\n", f"SIP/2.{line_break}0\r\n".encode(), 1)

    with pytest.raises(SipParseError) as raised:
        parse_message(data)

    assert raised.value.status_code == 400
    assert "\r" not in raised.value.reason and "\n" not in raised.value.reason
    response = make_response(raised.value.request, 400, raised.value.reason)
    assert parse_message(response.to_bytes()).status == 400
