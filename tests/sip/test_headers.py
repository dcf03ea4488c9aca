"""Typed header values (RFC 3261 §20, §25) and the Headers container."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sip import Headers, SipParseError, SipUri
from sbc.sip.headers import (
    _COMMON_NAME_ADDR_RE,
    _COMMON_VIA_RE,
    STANDARD_METHODS,
    common_name_addr_parts,
    is_call_id,
    is_method,
    is_token,
    name_addr_from_parts,
    parse_challenge,
    parse_contact,
    parse_credentials,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_name_addr_general,
    parse_rack,
    parse_session_expires,
    parse_via,
    parse_via_general,
    parse_via_value,
    split_list,
    tag_from_parts,
)


def test_headers_lookup_case_insensitive_and_compact():
    headers = Headers(
        [
            ("v", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("VIA", "SIP/2.0/UDP b"),
            ("i", "x@y"),
            ("X-Custom", "1"),
        ]
    )

    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b"]
    assert headers.get("Call-ID") == "x@y"
    assert "x-custom" in headers and "Subject" not in headers
    assert headers.get("Subject") is None


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
        ("a", "Accept-Contact"),
        ("j", "Reject-Contact"),
        ("d", "Request-Disposition"),
        ("y", "Identity"),
        ("n", "Identity-Info"),
    ],
)
def test_headers_compact_forms(compact, full):
    headers = Headers([(compact.upper(), "value")])

    assert headers.get(full) == "value"
    assert headers.get(full.upper()) == "value"


def test_headers_mutation_order():
    headers = Headers(
        [("Via", "SIP/2.0/UDP b"), ("To", "<sip:t@x>"), ("Via", "SIP/2.0/UDP c")]
    )

    headers.prepend("Via", "SIP/2.0/UDP a")
    headers.prepend("Record-Route", "<sip:sbc;lr>")
    headers.add("Contact", "<sip:c@x>")
    headers.set("To", "<sip:t2@x>")

    assert list(headers) == [
        ("Record-Route", "<sip:sbc;lr>"),
        ("Via", "SIP/2.0/UDP a"),
        ("Via", "SIP/2.0/UDP b"),
        ("To", "<sip:t2@x>"),
        ("Via", "SIP/2.0/UDP c"),
        ("Contact", "<sip:c@x>"),
    ]
    assert headers.remove("via") == 3
    assert headers.remove("via") == 0
    copy = headers.copy()
    copy.add("X", "1")
    assert "X" not in headers


def test_headers_reject_line_breaks_in_values():
    headers = Headers()

    with pytest.raises(ValueError):
        headers.add("Subject", "a\r\nVia: injected")


def test_headers_values_splits_only_list_headers():
    headers = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@x;a=b,c>, <sip:k@y>'),
            ("Route", "<sip:a;lr>,<sip:b;lr>"),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("X-Unknown", "a, b"),
            ("WWW-Authenticate", 'Digest realm="x", qop="auth,auth-int", nonce="n"'),
            ("Allow", "INVITE, ACK ,BYE"),
        ]
    )

    assert headers.values("Contact") == ['"Doe, John" <sip:j@x;a=b,c>', "<sip:k@y>"]
    assert headers.values("Route") == ["<sip:a;lr>", "<sip:b;lr>"]
    assert headers.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.values("X-Unknown") == ["a, b"]
    assert len(headers.values("WWW-Authenticate")) == 1
    assert headers.values("Allow") == ["INVITE", "ACK", "BYE"]


def test_split_list_quotes_with_escapes():
    assert split_list(r'"a\",b" <sip:x>, <sip:y>', "Contact") == [
        r'"a\",b" <sip:x>',
        "<sip:y>",
    ]


def test_parse_via_full():
    [via] = parse_via(
        "SIP/2.0/udp pc33.example.com:5066;branch=z9hG4bK776;received=192.0.2.1;rport=4000;maddr=x"
    )

    assert (via.transport, via.host, via.port) == ("UDP", "pc33.example.com", 5066)
    assert (via.branch, via.received, via.rport) == ("z9hG4bK776", "192.0.2.1", 4000)
    assert via.params.get("maddr") == "x"


def test_parse_via_lws_everywhere():
    [via] = parse_via(
        "SIP / 2.0 / TCP   host.example.com : 5070 ;  branch = z9hG4bK1 ; rport"
    )

    assert (via.transport, via.host, via.port, via.branch, via.asks_rport) == (
        "TCP",
        "host.example.com",
        5070,
        "z9hG4bK1",
        True,
    )


def test_parse_via_sent_by_defaults():
    vias = parse_via(
        "SIP/2.0/TLS a.example.com, SIP/2.0/UDP b.example.com, SIP/2.0/WSS c"
    )

    assert [via.sent_by for via in vias] == [
        ("a.example.com", 5061),
        ("b.example.com", 5060),
        ("c", 443),
    ]


def test_parse_via_quoted_param_with_comma():
    vias = parse_via('SIP/2.0/UDP a;x="1,2";branch=z9hG4bK1, SIP/2.0/UDP b')

    assert [v.host for v in vias] == ["a", "b"]
    assert vias[0].params.get("x") == '"1,2"'


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDPhost",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;rport=abc",
        "SIP/2.0/UDP host;rport=70000",
        "SIP/2.0/UDP host:abc",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP ho st",
        "SIP/2.0/UDP host;;branch=z9hG4bK1",
        "SIP/2.0/UDP host;branch=a b",
        'SIP/2.0/UDP host;x="unterminated',
    ],
)
def test_parse_via_rejects_malformed(text):
    with pytest.raises(SipParseError):
        parse_via(text)


def test_parse_cseq():
    cseq = parse_cseq("  0042   INVITE ")

    assert (cseq.number, cseq.method) == (42, "INVITE")
    assert str(cseq) == "42 INVITE"


@pytest.mark.parametrize(
    "text",
    [
        "INVITE",
        "1",
        "-1 INVITE",
        "1 INV ITE",
        "x INVITE",
        "2147483648 INVITE",
        "１ INVITE",
        "1 INV@ITE",
    ],
)
def test_parse_cseq_rejects(text):
    with pytest.raises(SipParseError, match="CSeq"):
        parse_cseq(text)


def test_parse_name_addr_forms():
    quoted = parse_name_addr(
        '"Bob \\"B\\" Smith" <sip:bob@biloxi.example.com>;tag=a6c85cf', "To"
    )
    tokens = parse_name_addr("Bob  Smith <sip:bob@biloxi.example.com>", "To")
    addr_spec = parse_name_addr("sip:bob@biloxi.example.com;tag=1;user=phone", "From")

    assert (quoted.display_name, quoted.tag) == ('Bob "B" Smith', "a6c85cf")
    assert tokens.display_name == "Bob Smith"
    # RFC 3261 §20.10: in an addr-spec the parameters are header parameters.
    assert addr_spec.tag == "1"
    assert addr_spec.params.get("user") == "phone"
    assert isinstance(addr_spec.uri, SipUri) and len(addr_spec.uri.params) == 0


def test_name_addr_str_round_trip():
    value = parse_name_addr('"A \\"B\\"" <sip:a@example.com;lr>;tag=x;q=0.5', "Contact")

    assert str(value) == '"A \\"B\\"" <sip:a@example.com;lr>;tag=x;q=0.5'
    assert parse_name_addr(str(value), "Contact") == value


@pytest.mark.parametrize(
    "text",
    [
        "<sip:a@example.com",
        '"unterminated <sip:a@example.com>',
        "<sip:a@example.com> junk",
        "Bad, Name <sip:a@example.com>",
        "<>",
        "sip:a@example.com?x=y",
        "< sip:a@example.com >",
    ],
)
def test_parse_name_addr_rejects(text):
    with pytest.raises(SipParseError):
        parse_name_addr(text, "From")


def test_parse_contact_star_and_list():
    assert parse_contact(" * ")[0].is_star
    contacts = parse_contact("<sip:a@x>;expires=60;q=0.7, sip:b@y;expires=0")

    assert [(c.expires, c.q) for c in contacts] == [(60, 0.7), (0, None)]


def test_parse_contact_bad_q():
    [contact] = parse_contact("<sip:a@x>;q=1.5")

    with pytest.raises(SipParseError):
        contact.q  # noqa: B018


def test_parse_media_type():
    media = parse_media_type('Multipart/Mixed ; boundary="a;b" ; charset=utf-8')

    assert media.mime_type == "multipart/mixed"
    assert media.params.get("boundary") == '"a;b"'


@pytest.mark.parametrize("text", ["application", "application/", "/sdp", "a b/sdp"])
def test_parse_media_type_rejects(text):
    with pytest.raises(SipParseError):
        parse_media_type(text)


def test_parse_rack_and_session_expires():
    rack = parse_rack("776656 1 INVITE")
    expires = parse_session_expires("1800;Refresher=UAC")

    assert (rack.rseq, rack.cseq_number, rack.method) == (776656, 1, "INVITE")
    assert (expires.delta, expires.refresher) == (1800, "uac")
    with pytest.raises(SipParseError):
        parse_session_expires("1800;refresher=proxy")


def test_parse_digest_credentials():
    credentials = parse_credentials(
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b", '
        'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c"'
    )

    assert credentials.scheme == "Digest"
    assert credentials["username"] == "bob"
    assert credentials.get("uri") == "sip:bob@biloxi.com"
    assert credentials.get("nc") == "00000001"
    # The response digest never appears in the repr that logs would print.
    assert "6629fae4" not in repr(credentials)


def test_parse_challenge():
    challenge = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=TRUE, algorithm=MD5'
    )

    assert challenge.get("realm") == "atlanta.com"
    assert challenge.qop_options == ["auth", "auth-int"]
    assert challenge.stale
    assert challenge.get("opaque") == ""


@pytest.mark.parametrize(
    "text", ['Digest realm="x', "Digest =x", 'Digest realm="x", c', "Dig@st a=b"]
)
def test_parse_auth_rejects(text):
    with pytest.raises(SipParseError):
        parse_challenge(text)


@settings(max_examples=250, deadline=None)
@given(
    st.one_of(
        st.from_regex(_COMMON_VIA_RE, fullmatch=True),
        st.text("SIP/2.0UDPTCPudp abc019.:;=[]-_%!", max_size=40),
    )
)
def test_common_via_shortcut_agrees_with_full_grammar(text):
    def outcome(parse):
        try:
            via = parse(text)
        except SipParseError as exc:
            return ("error", exc.status_code)
        return (via.protocol, via.transport, via.host, via.port, list(via.params))

    assert outcome(parse_via_value) == outcome(parse_via_general)


@settings(max_examples=250, deadline=None)
@given(
    st.one_of(
        st.from_regex(_COMMON_NAME_ADDR_RE, fullmatch=True),
        st.text('"\\<>sip:@ab;=tag,x1 .', max_size=40),
    )
)
def test_common_name_addr_shortcut_agrees_with_full_grammar(text):
    def outcome(parse):
        try:
            value = parse(text.strip(" \t"), "To")
        except SipParseError as exc:
            return ("error", exc.status_code)
        uri = value.uri
        return (value.display_name, list(value.params), str(uri),
                getattr(uri, "user", None), getattr(uri, "port", None))  # fmt: skip

    assert outcome(parse_name_addr) == outcome(parse_name_addr_general)


# Parameters whose names the fast paths treat specially, in the spellings and
# with the values that matter: flags, empty values, case variants.
SPECIAL_PARAMS = st.sampled_from(
    [";tag=a1", ";TAG=b2", ";Tag", ";tag=", ";x=1", ";lr", ";branch=z9hG4bK1",
     ";BRANCH", ";branch=", ";rport", ";rport=5060", ";rport=99999", ";rport=x",
     ";received=192.0.2.1", ";received=2001:db8::1", ";received=[2001:db8::1]",
     ";received=[x]", ";maddr=h"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(_COMMON_VIA_RE, fullmatch=True),
    st.lists(SPECIAL_PARAMS, max_size=4),
)
def test_common_via_shortcut_agrees_with_full_grammar_on_checked_params(text, params):
    text += "".join(params)

    def outcome(parse):
        try:
            via = parse(text)
        except SipParseError as exc:
            return ("error", exc.reason)
        return (via.transport, via.host, via.port, list(via.params))

    assert outcome(parse_via_value) == outcome(parse_via_general)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.from_regex(_COMMON_NAME_ADDR_RE, fullmatch=True),
        st.text('"\\<>sip:@ab;=tagT,x1 .9', max_size=40),
    ),
    st.lists(SPECIAL_PARAMS, max_size=3),
)
def test_common_name_addr_tag_agrees_with_full_grammar(text, params):
    text = text.strip(" \t") + "".join(params)
    parts = common_name_addr_parts(text)
    try:
        expected = parse_name_addr_general(text, "To")
    except SipParseError:
        # The shortcut only takes values the full grammar accepts.
        assert parts is None
        return

    if parts is not None:
        assert tag_from_parts(parts) == expected.tag
        built = name_addr_from_parts(parts)
        assert (built.display_name, list(built.params), str(built.uri)) == (
            expected.display_name, list(expected.params), str(expected.uri)
        )  # fmt: skip


def reference_is_call_id(text: str) -> bool:
    """RFC 3261 §25.1 callid = word [ "@" word ], read part by part; an empty
    word after the "@" is tolerated, as the parser always has."""
    word = set(string.ascii_letters + string.digits + "-.!%*_+`'~()<>:\\\"/[]?{}")
    local, _, host = text.partition("@")
    return bool(local) and set(local) <= word and set(host) <= word


@settings(max_examples=400, deadline=None)
@given(st.text(string.ascii_letters + '09@.-:<>"[]{}()\\/ \t;,=é', max_size=20))
def test_call_id_check_agrees_with_word_grammar(text):
    assert is_call_id(text) == reference_is_call_id(text)


@pytest.mark.parametrize("text", ["a@", "a@b", "a", "@b", "a@b@c", "", "a b"])
def test_call_id_check_agrees_with_word_grammar_on_examples(text):
    assert is_call_id(text) == reference_is_call_id(text)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.sampled_from(sorted(STANDARD_METHODS)),
        st.text(string.ascii_letters + "-.!%*_+`'~ @é", max_size=10),
    )
)
def test_method_check_agrees_with_token_grammar(text):
    assert is_method(text) == is_token(text)
