"""Number normalization both ways, header manipulation, topology hiding."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.config import Config, HeaderRule, NumberRule
from sbc.rules import (
    HeaderRewriter,
    NumberRewriter,
    TrunkRules,
    allowed_header_keys,
    copy_allowed_headers,
    number_from_uri,
)
from sbc.sip import Headers, parse_message, parse_uri

# A UK carrier: national numbers 0 + 10 digits, international 00 + digits.
UK_INBOUND = [
    NumberRule(match=r"00([1-9]\d{6,14})", replace=r"+\1"),
    NumberRule(match=r"0([1-9]\d{9})", replace=r"+44\1"),
]
UK_OUTBOUND = [
    NumberRule(match=r"\+44(?P<national>[1-9]\d{9})", replace=r"0\g<national>"),
    NumberRule(match=r"\+([1-9]\d{6,14})", replace=r"00\1"),
]


@pytest.mark.parametrize(
    ("received", "e164"),
    [
        ("02071234567", "+442071234567"),
        ("0033123456789", "+33123456789"),  # first rule wins, not "+44033..."
        ("+15550100", "+15550100"),  # no rule matches: unchanged
        ("2071234567", "2071234567"),
        ("020712345678", "020712345678"),  # whole-number match only
        ("", ""),
    ],
)
def test_inbound_to_e164(received, e164):
    assert NumberRewriter(UK_INBOUND).apply(received) == e164


@pytest.mark.parametrize(
    ("e164", "sent"),
    [
        ("+442071234567", "02071234567"),
        ("+15550100123", "0015550100123"),
        ("sip-user", "sip-user"),
    ],
)
def test_outbound_from_e164(e164, sent):
    assert NumberRewriter(UK_OUTBOUND).apply(e164) == sent


@given(st.from_regex(r"0[1-9][0-9]{9}", fullmatch=True))
def test_national_number_round_trips(national):
    e164 = NumberRewriter(UK_INBOUND).apply(national)

    assert e164 == "+44" + national[1:]
    assert NumberRewriter(UK_OUTBOUND).apply(e164) == national


@given(st.text(max_size=20))
def test_first_match_wins_against_oracle(number):
    rules = UK_INBOUND + [NumberRule(match=r".*", replace="fallback")]

    result = NumberRewriter(rules).apply(number)

    # Oracle: the documented policy spelled out with the stdlib.
    for rule in rules:
        if re.fullmatch(rule.match, number):
            assert result == re.sub(rule.match, rule.replace, number, count=1)
            break
    else:
        assert result == number  # ".*" does not match a line break


def test_number_rewriter_without_rules_is_identity():
    assert NumberRewriter([]).apply("+15550100") == "+15550100"


# Header manipulation


def headers_of(*fields):
    return Headers(list(fields))


def rules(*items):
    return HeaderRewriter([HeaderRule(**item) for item in items])


def test_header_add_appends_even_when_present():
    headers = headers_of(("X-Tag", "one"))

    rules({"action": "add", "name": "X-Tag", "value": "two"}).apply(headers)

    assert headers.get_all("x-tag") == ["one", "two"]


def test_header_remove_every_field_compact_form_too():
    headers = headers_of(("Subject", "a"), ("Via", "SIP/2.0/UDP h"), ("s", "b"))

    rules({"action": "remove", "name": "Subject"}).apply(headers)

    assert list(headers) == [("Via", "SIP/2.0/UDP h")]


def test_header_remove_with_match_keeps_others_in_order():
    headers = headers_of(
        ("P-Asserted-Identity", "<sip:+15550100@pbx.example.com>"),
        ("Allow", "INVITE"),
        ("P-Asserted-Identity", "<tel:+15550100>"),
        ("P-Asserted-Identity", "<sip:+15550101@pbx.example.com>"),
    )

    rules(
        {"action": "remove", "name": "P-Asserted-Identity", "match": r"^<tel:"}
    ).apply(headers)

    assert headers.get_all("P-Asserted-Identity") == [
        "<sip:+15550100@pbx.example.com>",
        "<sip:+15550101@pbx.example.com>",
    ]


def test_header_replace_whole_value_collapses_fields():
    headers = headers_of(("User-Agent", "PBX 1.0"), ("user-agent", "again"))

    rules({"action": "replace", "name": "User-Agent", "value": "SBC"}).apply(headers)

    assert headers.get_all("User-Agent") == ["SBC"]


def test_header_replace_absent_creates_nothing():
    headers = headers_of(("Allow", "INVITE"))

    rules({"action": "replace", "name": "User-Agent", "value": "SBC"}).apply(headers)

    assert list(headers) == [("Allow", "INVITE")]


def test_header_replace_with_match_substitutes_in_each_value():
    headers = headers_of(
        ("P-Asserted-Identity", "<sip:+15550100@pbx.internal.example>"),
        ("P-Asserted-Identity", "<sip:+15550101@pbx.internal.example>"),
    )

    rules(
        {
            "action": "replace",
            "name": "P-Asserted-Identity",
            "match": r"@pbx\.internal\.example",
            "value": "@sbc.example.com",
        }
    ).apply(headers)

    assert headers.get_all("P-Asserted-Identity") == [
        "<sip:+15550100@sbc.example.com>",
        "<sip:+15550101@sbc.example.com>",
    ]


def test_header_replace_with_groups():
    headers = headers_of(("X-Account", "acct=1234;zone=eu"))

    rules(
        {
            "action": "replace",
            "name": "X-Account",
            "match": r"acct=(\d+)",
            "value": r"acct=ext-\1",
        }
    ).apply(headers)

    assert headers.get("X-Account") == "acct=ext-1234;zone=eu"


def test_header_rules_run_in_order():
    headers = headers_of()

    rules(
        {"action": "add", "name": "X-A", "value": "1"},
        {"action": "remove", "name": "X-A"},
        {"action": "add", "name": "X-A", "value": "2"},
        {"action": "replace", "name": "X-A", "value": "3"},
    ).apply(headers)

    assert headers.get_all("X-A") == ["3"]


INVITE = (
    b"INVITE sip:+15550100@sbc.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKrules1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+15550101@pbx.example.com>;tag=f1\r\n"
    b"To: <sip:+15550100@sbc.example.com>\r\n"
    b"Call-ID: rules-1@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+15550101@192.0.2.10>\r\n"
    b"User-Agent: PBX 1.0\r\n"
    b"X-Internal-Route: rack7\r\n"
    b"s: hello\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_rewritten_request_still_parses():
    request = parse_message(INVITE)
    rules(
        {"action": "remove", "name": "X-Internal-Route"},
        {"action": "replace", "name": "User-Agent", "value": "SBC"},
        {"action": "add", "name": "X-Trunk", "value": "carrier"},
    ).apply(request.headers)

    again = parse_message(request.to_bytes())

    assert again.headers.get("User-Agent") == "SBC"
    assert again.headers.get("X-Trunk") == "carrier"
    assert "X-Internal-Route" not in again.headers
    assert again.call_id == "rules-1@192.0.2.10"


def test_topology_hiding_copies_only_allowed():
    source = parse_message(INVITE).headers
    target = Headers()

    copied = copy_allowed_headers(
        source, target, allowed_header_keys(["Subject", "User-Agent"])
    )

    assert copied == 2
    assert list(target) == [("User-Agent", "PBX 1.0"), ("s", "hello")]


def test_topology_hiding_default_list_drops_internal_headers():
    config = Config.model_validate(
        {
            "listeners": [{"name": "l", "transport": "udp", "address": "127.0.0.1"}],
            "trunks": [
                {
                    "name": "carrier",
                    "kind": "carrier",
                    "listeners": ["l"],
                    "targets": [{"host": "192.0.2.1"}],
                    "numbers": {"inbound": [{"match": "0(\\d+)", "replace": "+44\\1"}]},
                    "headers": {
                        "egress": [{"action": "add", "name": "X-T", "value": "1"}]
                    },
                }
            ],
        }
    )
    trunk_rules = TrunkRules.from_trunk(config.trunks[0])
    target = Headers()

    copy_allowed_headers(
        parse_message(INVITE).headers, target, trunk_rules.allowed_headers
    )

    names = {name.lower() for name, _ in target}
    assert names == {"user-agent", "s"}
    assert trunk_rules.inbound_numbers.apply("02071234567") == "+442071234567"
    assert (
        len(trunk_rules.egress_headers) == 1 and len(trunk_rules.ingress_headers) == 0
    )


@pytest.mark.parametrize(
    ("uri", "number"),
    [
        ("tel:+1-555-010-0123", "+15550100123"),
        ("tel:7042;phone-context=example.com", "7042"),
        (
            "sip:+1-212-555-1212;phone-context=x@gw.example.com;user=phone",
            "+12125551212",
        ),
        ("sip:+15550100@sbc.example.com", "+15550100"),
        ("sip:alice@example.com", "alice"),
        ("sip:sbc.example.com", None),
        ("mailto:a@example.com", None),
    ],
)
def test_number_from_uri(uri, number):
    assert number_from_uri(parse_uri(uri)) == number


TEMPLATE_PIECES = st.sampled_from(
    ["+", "00", "44", "x", r"\1", r"\2", r"\g<1>", r"\g<rest>", r"\g<0>", "\\\\"]
)


def join_template(pieces):
    """Join, spelling \\N as \\g<N> before a digit (\\10 is group 10)."""
    text = ""
    for index, piece in enumerate(pieces):
        after = pieces[index + 1] if index + 1 < len(pieces) else ""
        if re.fullmatch(r"\\[1-9]", piece) and after[:1].isdigit():
            piece = rf"\g<{piece[1]}>"
        text += piece
    return text


@given(
    pieces=st.lists(TEMPLATE_PIECES, max_size=6),
    number=st.from_regex(r"[0-9]{1,8}", fullmatch=True),
)
def test_template_expansion_matches_re_expand(pieces, number):
    pattern = r"(\d)(\d)?(?P<rest>\d*)"
    template = join_template(pieces)

    result = NumberRewriter([NumberRule(match=pattern, replace=template)]).apply(number)

    # Oracle: the stdlib's own template expansion.
    assert result == re.fullmatch(pattern, number).expand(template)


@pytest.mark.parametrize("template", [r"\0", r"\n", r"\g<>", "\\"])
def test_ambiguous_template_escapes_refused(template):
    with pytest.raises(ValueError, match="replacement"):
        NumberRule(match=r"(\d+)", replace=template)
