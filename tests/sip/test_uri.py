"""SIP, SIPS, tel and other URIs (RFC 3261 §19.1, RFC 3966)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sip import AbsoluteUri, Params, SipParseError, SipUri, TelUri, parse_uri
from sbc.sip.uri import _COMMON_SIP_URI_RE, _parse_sip_uri, parse_sip_uri_general


def test_parse_sip_uri_all_parts():
    uri = parse_uri(
        "sips:alice:secret@Atlanta.example.com:5061;transport=TCP;lr?subject=x&priority=urgent"
    )

    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password) == ("sips", "alice", "secret")
    assert (uri.host, uri.port) == ("Atlanta.example.com", 5061)
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.headers == [("subject", "x"), ("priority", "urgent")]


def test_parse_sip_uri_without_user():
    uri = parse_uri("sip:192.0.2.4;maddr=239.255.255.1")

    assert (uri.user, uri.host, uri.maddr) == (None, "192.0.2.4", "239.255.255.1")


def test_parse_sip_uri_scheme_case_insensitive():
    assert parse_uri("SIP:bob@example.com").scheme == "sip"


def test_parse_sip_uri_unescapes_user():
    uri = parse_uri("sip:%61lice%20x@example.com")

    assert uri.user == "alice x"
    assert str(uri) == "sip:alice%20x@example.com"


def test_parse_sip_uri_user_with_semicolon_and_telephone_subscriber():
    uri = parse_uri(
        "sip:+1-212-555-1212;phone-context=example.com@gw.example.com;user=phone"
    )

    assert uri.user == "+1-212-555-1212;phone-context=example.com"
    assert uri.params.get("user") == "phone"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@exa mple.com",
        "sip:us er@example.com",
        "sip:user@example.com:port",
        "sip:user@example.com:",
        "sip:user@example.com:70000",
        "sip:user@example.com;=x",
        "sip:user@example.com;a b",
        "sip:user@example.com?noequals",
        "sip:user@ex<ample.com",
        "sip:user%zz@example.com",
        "sip:user@-",
        "tel:",
        "tel:abc xyz",
        "<sip:user@example.com>",
        ":nothing",
        "1abc:rest",
        "mailto:a b",
    ],
)
def test_parse_uri_rejects_malformed(text):
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)

    assert caught.value.status_code == 400


def test_parse_tel_uri():
    uri = parse_uri("tel:+1-201-555-0123;ext=1234")

    assert isinstance(uri, TelUri)
    assert uri.is_global
    assert uri.digits == "+12015550123"
    assert uri.params.get("ext") == "1234"
    assert str(uri) == "tel:+1-201-555-0123;ext=1234"


def test_parse_local_tel_uri():
    uri = parse_uri("tel:7042;phone-context=example.com")

    assert not uri.is_global
    assert uri.params.get("phone-context") == "example.com"


def test_tel_uri_equality_ignores_visual_separators():
    assert parse_uri("tel:+1-201-555-0123") == parse_uri("tel:+1.201.555.0123")
    assert parse_uri("tel:+1-201-555-0123") != parse_uri("tel:+1-201-555-0124")


def test_parse_absolute_uri_kept_verbatim():
    uri = parse_uri("urn:service:sos")

    assert uri == AbsoluteUri("urn", "urn:service:sos")
    assert str(uri) == "urn:service:sos"


# RFC 3261 §19.1.4 comparison rules, with the RFC's own examples.
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:[2001:db8::1]", "sip:[2001:DB8:0::1]"),
]
DIFFERENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:bob@example.com", "sips:bob@example.com"),
    ("sip:bob@example.com", "sip:bob@example.com;maddr=192.0.2.1"),
]


@pytest.mark.parametrize(("left", "right"), EQUIVALENT)
def test_sip_uri_equivalent_per_rfc3261(left, right):
    assert parse_uri(left) == parse_uri(right)


@pytest.mark.parametrize(("left", "right"), DIFFERENT)
def test_sip_uri_different_per_rfc3261(left, right):
    assert parse_uri(left) != parse_uri(right)


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.example.com",
        "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr",
        "sip:+15550100@sbc.example.com;user=phone?X-H=a",
        "tel:+1-201-555-0123;ext=9",
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ],
)
def test_uri_str_round_trip(text):
    assert str(parse_uri(text)) == text
    assert parse_uri(str(parse_uri(text))) == parse_uri(text)


def test_params_case_insensitive_and_ordered():
    params = Params([("Transport", "TCP"), ("lr", None)])

    assert params.get("transport") == "TCP"
    assert "LR" in params
    params.set("TRANSPORT", "udp")
    params.set("ttl", "5")
    assert list(params) == [("TRANSPORT", "udp"), ("lr", None), ("ttl", "5")]
    assert params.remove("lr") and not params.remove("lr")
    assert str(params) == ";TRANSPORT=udp;ttl=5"


URI_ALPHABET = "abcXYZ019+-_.!~*'()&=$,;?/:@%[]"


@settings(max_examples=250, deadline=None)
@given(
    st.sampled_from(["sip", "sips"]),
    st.one_of(
        st.text(URI_ALPHABET, min_size=1, max_size=30),
        st.from_regex(_COMMON_SIP_URI_RE, fullmatch=True),
    ),
)
def test_common_uri_shortcut_agrees_with_full_grammar(scheme, rest):
    def outcome(parse):
        try:
            uri = parse(scheme, rest)
        except SipParseError as exc:
            return ("error", exc.status_code)
        return (uri.scheme, uri.user, uri.password, uri.host, uri.port,
                list(uri.params), uri.headers)  # fmt: skip

    assert outcome(_parse_sip_uri) == outcome(parse_sip_uri_general)


@pytest.mark.parametrize(
    "rest",
    ["a@b", "+1555@sbc.example.com:5060;user=phone;lr", "host", "h.example.com.;x",
     "a@b:99999", "a@-b", "a@b;", "a@b;=x", "a@b..c"],
)  # fmt: skip
def test_common_uri_shortcut_agrees_on_examples(rest):
    def outcome(parse):
        try:
            uri = parse("sip", rest)
        except SipParseError:
            return "error"
        return (uri.user, uri.host, uri.port, list(uri.params))

    assert outcome(_parse_sip_uri) == outcome(parse_sip_uri_general)
