"""RFC 5118 IPv6 torture cases: IPv6 references in Request-URIs, Via and
headers. The messages follow the RFC's examples (its §4.1-4.10)."""

import pytest

from sbc.sip import Request, SipParseError, SipUri, parse_message, validate_request


def register(
    uri: str,
    via: str = "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111",
    contact: str = '"Caller" <sip:caller@[2001:db8::1]>',
) -> bytes:
    return (
        f"REGISTER {uri} SIP/2.0\r\n"
        "To: sip:user@example.com\r\n"
        "From: sip:user@example.com;tag=81x2\r\n"
        f"Via: {via}\r\n"
        "Call-ID: rfc5118.9559905523997077@example.com\r\n"
        "Max-Forwards: 70\r\n"
        f"Contact: {contact}\r\n"
        "CSeq: 98176 REGISTER\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def valid(data: bytes) -> Request:
    request = parse_message(data)
    assert isinstance(request, Request)
    validate_request(request)
    return request


def invalid(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as caught:
        validate_request(parse_message(data))
    assert caught.value.status_code == 400
    assert caught.value.request is not None
    return caught.value


def test_rfc5118_4_1_valid_ipv6_reference():
    request = valid(register("sip:[2001:db8::10]"))

    uri = request.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == ("2001:db8::10", None)
    assert str(uri) == "sip:[2001:db8::10]"
    assert request.top_via.host == "2001:db8::9:1"
    assert request.top_via.sent_by == ("2001:db8::9:1", 5060)
    assert request.contact[0].uri.host == "2001:db8::1"


def test_rfc5118_4_2_unbracketed_ipv6_request_uri_rejected():
    error = invalid(register("sip:2001:db8::10"))

    assert "IPv6" in error.reason


def test_rfc5118_4_3_port_ambiguous_is_part_of_address():
    uri = valid(register("sip:[2001:db8::10:5070]")).request_uri

    assert (uri.host, uri.port) == ("2001:db8::10:5070", None)


def test_rfc5118_4_4_port_unambiguous():
    uri = valid(register("sip:[2001:db8::10]:5070")).request_uri

    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    assert str(uri) == "sip:[2001:db8::10]:5070"


@pytest.mark.parametrize(
    "received", ["[2001:db8::9:255]", "2001:db8::9:255"], ids=["delimited", "bare"]
)
def test_rfc5118_4_5_via_received_with_and_without_delimiters(received):
    via_text = f"SIP/2.0/UDP [2001:db8::9:1];received={received};branch=z9hG4bKas3"

    via = valid(register("sip:[2001:db8::10]", via=via_text)).top_via

    assert via.host == "2001:db8::9:1"
    assert via.received == "2001:db8::9:255"
    assert str(via) == via_text


def test_rfc5118_4_6_ipv6_in_sdp_body_is_opaque():
    sdp = b"v=0\r\no=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n"
    data = (
        register("sip:[2001:db8::10]").replace(
            b"Content-Length: 0", f"Content-Length: {len(sdp)}".encode()
        )
        + sdp
    )

    assert valid(data).body == sdp


def test_rfc5118_4_7_mixed_ip_versions_in_headers():
    data = register(
        "sip:[2001:db8::10]",
        via="SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111, "
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144",
        contact="<sip:caller@[2001:db8::9:1]:6050>, <sip:caller@192.0.2.1>",
    )

    request = valid(data)

    assert [(v.host, v.port) for v in request.via] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
    ]
    assert [c.uri.host for c in request.contact] == ["2001:db8::9:1", "192.0.2.1"]


def test_rfc5118_4_9_ipv4_mapped_ipv6():
    request = valid(
        register("sip:[::ffff:192.0.2.10]", contact="<sip:caller@[::ffff:192.0.2.1]>")
    )

    assert request.request_uri.host == "::ffff:192.0.2.10"
    assert request.contact[0].uri.host == "::ffff:192.0.2.1"


def test_rfc5118_4_10_correct_abnf_two_colons_accepted():
    uri = valid(register("sip:[2001:db8::192.0.2.1]")).request_uri

    assert uri.host == "2001:db8::192.0.2.1"


def test_rfc5118_4_10_buggy_abnf_three_colons_rejected():
    # Policy: RFC 5954 corrected the RFC 3261 ABNF that allowed ":::"; such
    # a reference is not an IPv6 address, so it gets 400.
    error = invalid(register("sip:[2001:db8:::192.0.2.1]"))

    assert "IPv6" in error.reason
