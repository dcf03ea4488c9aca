"""RFC 4475 torture messages, with their exact bytes from the RFC's archive.

Each test is named after the RFC section and file; valid messages are checked
against the values the RFC text gives, invalid ones get the handling the RFC
describes (400 with the partial request, discard for responses, or tolerant
acceptance where the RFC allows it).
"""

from pathlib import Path

import pytest

from sbc.sip import (
    AbsoluteUri,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)

DATA = Path(__file__).parent / "data" / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request_of(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    validate_request(message)
    return message


def response_of(name: str) -> Response:
    message = parse_message(load(name))
    assert isinstance(message, Response)
    validate_response(message)
    return message


def rejected(name: str) -> SipParseError:
    """Parse and validate; return the error the message must cause."""
    with pytest.raises(SipParseError) as caught:
        message = parse_message(load(name))
        if isinstance(message, Request):
            validate_request(message)
        else:
            validate_response(message)
    return caught.value


def assert_answerable_400(error: SipParseError, call_id: str) -> None:
    assert error.status_code == 400
    assert not error.is_response
    assert error.request is not None
    answer = make_response(error.request, error.status_code, error.reason)
    assert answer.call_id == call_id
    assert parse_message(answer.to_bytes()).status == 400


def test_rfc4475_archive_complete():
    assert len(list(DATA.glob("*.dat"))) == 49


# §3.1.1 Valid messages


def test_rfc4475_3_1_1_1_wsinv():
    request = request_of("wsinv")

    uri = request.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host) == ("vivekg", "chair-dnrc.example.com")
    assert "unknownparam" in uri.params and uri.params.get("unknownparam") is None
    assert request.to_tag == "1918181833n"
    assert request.from_.display_name == 'J Rosenberg \\"'
    assert request.from_tag == "98asjd8"
    assert request.max_forwards == 68
    assert request.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (request.cseq.number, request.cseq.method) == (9, "INVITE")
    vias = request.via
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert request.headers.get("Subject") == ""
    assert (
        request.headers.get("NewFangledHeader")
        == "newfangled value continued newfangled value"
    )
    assert request.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert request.headers.values("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    route = request.route[0].uri
    assert isinstance(route, SipUri) and route.lr
    assert route.params.get("unknownwith") == "value"
    contact = request.contact[0]
    assert contact.display_name == 'Quoted string ""'
    assert contact.params.get("newparam") == "newvalue"
    assert "secondparam" in contact.params
    assert contact.q == 0.33
    assert len(request.body) == 150


def test_rfc4475_3_1_1_2_intmeth():
    request = request_of("intmeth")

    assert request.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = request.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert request.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert request.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert request.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert request.from_.params.get("fromParam''~+*_!.-%") == '"работающий"'
    assert request.from_tag == "_token~1'+`*%!-."
    assert request.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert request.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert request.max_forwards == 255


def test_rfc4475_3_1_1_3_esc01():
    request = request_of("esc01")

    assert request.request_uri.user == "sips:user@example.com"
    assert request.to.uri.user == "user"
    assert request.from_.uri.user == "I have spaces"
    contact = request.contact[0].uri
    assert isinstance(contact, SipUri)
    assert contact.user == "caller"
    assert [name for name, _ in contact.params] == ["%6C%72", "n%61me"]
    assert request.content_type.mime_type == "application/sdp"


def test_rfc4475_3_1_1_4_escnull():
    request = request_of("escnull")

    assert request.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in request.contact] == ["\x00", "\x00\x00"]
    assert request.body == b""


def test_rfc4475_3_1_1_5_esc02_escapes_are_not_names():
    request = request_of("esc02")

    # %-escapes are literal in the method and header names: an unknown
    # method, and C%6Fntact is not Contact.
    assert request.method == "RE%47IST%45R"
    assert [c.uri.host for c in request.contact] == [
        "host1.example.com",
        "host3.example.com",
    ]
    assert request.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert request.to.display_name == "%Z%45"
    assert request.top_via.branch == "z9hG4bK209%fzsnel234"


def test_rfc4475_3_1_1_6_lwsdisp():
    request = request_of("lwsdisp")

    assert request.from_.display_name == "caller"
    assert request.from_tag == "323"


def test_rfc4475_3_1_1_7_longreq():
    request = request_of("longreq")

    vias = request.via
    assert len(vias) == 34
    assert [v.host for v in vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    assert vias[-1].received == "192.0.2.5"
    assert vias[-1].branch.startswith("verylonglong")
    assert request.to.uri.port == 6000
    assert request.to.display_name.startswith("I have a user name of extreme")
    assert request.from_tag.startswith("12982982")
    assert request.cseq.number == 3882340
    assert len(request.body) == 150


def test_rfc4475_3_1_1_8_dblreq_second_request_ignored():
    request = request_of("dblreq")

    assert request.method == "REGISTER"
    assert request.body == b""
    assert request.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_rfc4475_3_1_1_9_semiuri():
    request = request_of("semiuri")

    uri = request.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, len(uri.params)) == (
        "user;par=u@example.net",
        "example.com",
        0,
    )
    assert request.headers.values("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_rfc4475_3_1_1_10_transports():
    request = request_of("transports")

    assert [v.transport for v in request.via] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]
    assert request.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_rfc4475_3_1_1_11_mpart01():
    request = request_of("mpart01")

    assert len(request.body) == 553
    content_type = request.content_type
    assert content_type.mime_type == "multipart/mixed"
    assert content_type.params.get("boundary") == "7a9cbec02ceef655"
    assert request.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert request.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_rfc4475_3_1_1_12_unreason():
    response = response_of("unreason")

    assert response.status == 200
    assert response.reason.startswith("= 2**3 * 5**2 но сто")
    assert len(response.body) == 154


def test_rfc4475_3_1_1_13_noreason():
    response = response_of("noreason")

    assert (response.status, response.reason) == (100, "")
    assert response.to_tag == "902jndnke3"


# §3.1.2 Invalid messages


def test_rfc4475_3_1_2_1_badinv01_extra_separators():
    error = rejected("badinv01")

    assert_answerable_400(error, "badinv01.0ha0isndaksdjasdf3234nas")
    assert "Via" in error.reason


def test_rfc4475_3_1_2_2_clerr_content_length_too_large():
    error = rejected("clerr")

    assert_answerable_400(error, "clerr.0ha0isndaksdjweiafasdk3")
    assert "Content-Length" in error.reason


def test_rfc4475_3_1_2_3_ncl_negative_content_length():
    error = rejected("ncl")

    assert_answerable_400(error, "ncl.0ha0isndaksdj2193423r542w35")
    assert "negative Content-Length" in error.reason


def test_rfc4475_3_1_2_4_scalar02_overlarge_request_scalars():
    error = rejected("scalar02")

    assert_answerable_400(error, "scalar02.23o0pd9vanlq3wnrlnewofjas9ui32")
    assert "CSeq" in error.reason


def test_rfc4475_3_1_2_4_scalar02_other_scalars_handled():
    request = parse_message(load("scalar02"))

    # Expiry values over 2**32-1 are clamped; Max-Forwards over 255 is 400.
    assert request.expires == 2**32 - 1
    assert request.contact[0].expires == 2**32 - 1
    with pytest.raises(SipParseError, match="Max-Forwards"):
        request.max_forwards  # noqa: B018


def test_rfc4475_3_1_2_5_scalarlg_response_discarded():
    error = rejected("scalarlg")

    assert error.is_response
    assert error.request is None


def test_rfc4475_3_1_2_6_quotbal_unterminated_quote():
    error = rejected("quotbal")

    assert_answerable_400(error, "quotbal.aksdj")
    assert "quoted string" in error.reason


def test_rfc4475_3_1_2_7_ltgtruri_bracketed_request_uri():
    error = rejected("ltgtruri")

    assert_answerable_400(error, "ltgtruri.1@192.0.2.5")
    assert "Request-URI" in error.reason


def test_rfc4475_3_1_2_8_lwsruri_whitespace_in_request_uri():
    error = rejected("lwsruri")

    assert_answerable_400(error, "lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423")
    assert "request line" in error.reason


def test_rfc4475_3_1_2_9_lwsstart_extra_spaces_tolerated():
    request = request_of("lwsstart")

    assert (request.method, request.uri) == ("INVITE", "sip:user@example.com")
    # Forwarded copies must not keep the extra spaces (RFC 4475 §3.1.2.9).
    assert request.to_bytes().startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")


def test_rfc4475_3_1_2_10_trws_trailing_spaces_tolerated():
    request = request_of("trws")

    assert request.version == "SIP/2.0"
    assert request.to_bytes().startswith(
        b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n"
    )


def test_rfc4475_3_1_2_11_escruri_headers_in_request_uri():
    error = rejected("escruri")

    assert_answerable_400(error, "escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5")


def test_rfc4475_3_1_2_12_baddate_tolerated():
    # Date is not used by the SBC, so a non-GMT zone is not an error.
    request = request_of("baddate")

    assert request.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_rfc4475_3_1_2_13_regbadct_unbracketed_uri_with_headers():
    request = request_of("regbadct")

    with pytest.raises(SipParseError) as caught:
        request.contact  # noqa: B018
    assert caught.value.status_code == 400
    assert "<>" in caught.value.reason


def test_rfc4475_3_1_2_14_badaspec_spaces_in_addr_spec():
    error = rejected("badaspec")

    assert_answerable_400(error, "badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3")
    assert "To" in error.reason


def test_rfc4475_3_1_2_15_baddn_non_token_display_name():
    error = rejected("baddn")

    assert_answerable_400(error, "baddn.31415@c.example.com")
    assert "display name" in error.reason


def test_rfc4475_3_1_2_16_badvers_version_not_supported():
    error = rejected("badvers")

    assert error.status_code == 505
    assert error.request is not None
    assert make_response(error.request, 505).call_id == "badvers.31417@c.example.com"


def test_rfc4475_3_1_2_17_mismatch01_cseq_method():
    error = rejected("mismatch01")

    assert_answerable_400(error, "mismatch01.dj0234sxdfl3")
    assert "CSeq method" in error.reason


def test_rfc4475_3_1_2_18_mismatch02_unknown_method_cseq_mismatch():
    error = rejected("mismatch02")

    assert_answerable_400(error, "mismatch02.dj0234sxdfl3")


def test_rfc4475_3_1_2_19_bigcode_response_discarded():
    error = rejected("bigcode")

    assert error.is_response
    assert "status code" in error.reason


# §3.2 Transaction layer semantics


def test_rfc4475_3_2_1_badbranch_bare_magic_cookie():
    request = request_of("badbranch")

    assert request.top_via.branch == "z9hG4bK"


# §3.3 Application layer semantics


def test_rfc4475_3_3_1_insuf_missing_headers():
    error = rejected("insuf")

    assert error.status_code == 400
    assert "missing" in error.reason
    # Without From, To and Call-ID no usable response can be built.
    assert error.request is None


def test_rfc4475_3_3_2_unkscm_unknown_scheme_kept_for_416():
    request = request_of("unkscm")

    uri = request.request_uri
    assert isinstance(uri, AbsoluteUri)
    assert uri.scheme == "nobodyknowsthisscheme"
    assert str(uri) == "nobodyKnowsThisScheme:totallyopaquecontent"


def test_rfc4475_3_3_3_novelsc_atypical_scheme_kept_for_416():
    uri = request_of("novelsc").request_uri

    assert isinstance(uri, AbsoluteUri)
    assert uri.scheme == "soap.beep"


def test_rfc4475_3_3_4_unksm2_unknown_schemes_in_headers():
    request = request_of("unksm2")

    assert str(request.to.uri) == "isbn:2983792873"
    assert request.from_.uri.scheme == "http"
    assert request.from_tag == "3234233"
    assert str(request.contact[0].uri) == "name:John_Smith"


def test_rfc4475_3_3_5_bext01_option_tags_for_420():
    request = request_of("bext01")

    assert request.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert request.proxy_require == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_rfc4475_3_3_6_invut_unknown_content_type_for_415():
    request = request_of("invut")

    assert request.content_type.mime_type == "application/unknownformat"
    assert len(request.body) == 40


def test_rfc4475_3_3_7_regaut01_unknown_authorization_scheme():
    request = request_of("regaut01")

    credentials = request.authorization[0]
    assert credentials.scheme == "NoOneKnowsThisScheme"
    assert credentials.get("opaque-data") == "here"


def test_rfc4475_3_3_8_multi01_repeated_single_value_headers():
    error = rejected("multi01")

    assert error.status_code == 400
    assert "more than one" in error.reason


def test_rfc4475_3_3_9_mcl01_conflicting_content_length_udp():
    error = rejected("mcl01")

    assert error.status_code == 400
    assert error.stream_unusable
    assert error.request is not None


def test_rfc4475_3_3_9_mcl01_conflicting_content_length_stream():
    framer = StreamFramer()

    with pytest.raises(SipParseError) as caught:
        framer.feed(load("mcl01"))

    assert caught.value.stream_unusable


def test_rfc4475_3_3_10_bcast_parses_for_transport_checks():
    response = response_of("bcast")

    assert [v.host for v in response.via] == ["192.0.2.198", "255.255.255.255"]


def test_rfc4475_3_3_11_zeromf_max_forwards_zero():
    assert request_of("zeromf").max_forwards == 0


def test_rfc4475_3_3_12_cparam01_param_belongs_to_header():
    contact = request_of("cparam01").contact[0]

    assert "unknownparam" in contact.params
    assert len(contact.uri.params) == 0


def test_rfc4475_3_3_13_cparam02_param_belongs_to_uri():
    contact = request_of("cparam02").contact[0]

    assert len(contact.params) == 0
    assert "unknownparam" in contact.uri.params


def test_rfc4475_3_3_14_regescrt_escaped_uri_header():
    contact = request_of("regescrt").contact[0]

    assert contact.uri.headers == [("Route", "%3Csip:sip.example.com%3E")]


def test_rfc4475_3_3_15_sdp01_accept():
    request = request_of("sdp01")

    assert request.headers.values("Accept") == ["text/nobodyKnowsThis"]


# §3.4 Backward compatibility


def test_rfc4475_3_4_1_inv2543_rfc2543_syntax():
    request = request_of("inv2543")

    assert request.top_via.branch is None
    assert request.max_forwards is None
    assert request.from_tag is None
    assert request.from_.uri.params.get("user") == "phone"
    # No Content-Length over UDP: the body is the rest of the datagram.
    assert request.body.startswith(b"v=0\r\n")
    assert request.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    "badbranch",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
]


@pytest.mark.parametrize("name", VALID)
def test_rfc4475_valid_message_round_trips(name):
    message = parse_message(load(name))

    again = parse_message(message.to_bytes())

    assert again == message
    assert again.to_bytes() == message.to_bytes()


@pytest.mark.parametrize("name", VALID)
def test_rfc4475_valid_message_frames_on_stream(name):
    data = load(name)
    framer = StreamFramer()

    frames = framer.feed(data)

    assert len(frames) == 1
    assert parse_message(frames[0]) == parse_message(data)
