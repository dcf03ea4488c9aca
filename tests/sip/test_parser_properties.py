"""Property tests: serialization round trips, no exception but SipParseError
for any input, and stream framing independent of how bytes are split."""

import random
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.sip import (
    Headers,
    KeepAlive,
    Request,
    SipParseError,
    StreamFramer,
    parse_message,
    validate_request,
    validate_response,
)
from sbc.sip.headers import parse_name_addr_general
from sbc.sip.message import header_key

RFC4475 = sorted((Path(__file__).parent / "data" / "rfc4475").glob("*.dat"))
CORPUS = [path.read_bytes() for path in RFC4475]

# Every typed accessor; each may raise SipParseError and nothing else.
ACCESSORS = [
    "via", "top_via", "call_id", "cseq", "from_", "to", "from_tag", "to_tag",
    "max_forwards", "expires", "min_expires", "contact", "route", "record_route",
    "content_type", "require", "supported", "proxy_require", "unsupported", "rseq",
    "rack", "session_expires", "min_se", "authorization", "proxy_authorization",
    "www_authenticate", "proxy_authenticate",
]  # fmt: skip

TOKEN = st.text(
    string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12
)
# Header values: printable text (some non-ASCII) with no line breaks and no
# leading or trailing whitespace, since parsing strips those.
VALUE_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n\x85\u2028\u2029"
)
VALUE = st.text(VALUE_CHARS, max_size=40).map(lambda text: text.strip(" \t"))


def exercise(message) -> None:
    """Touch every accessor and validation, allowing only SipParseError."""
    for name in ACCESSORS:
        try:
            value = getattr(message, name)
            str(value)
        except SipParseError:
            pass
    try:
        if isinstance(message, Request):
            message.request_uri  # noqa: B018
            validate_request(message)
        else:
            validate_response(message)
    except SipParseError:
        pass
    parse_message(message.to_bytes())


@st.composite
def messages(draw) -> bytes:
    """Valid-looking messages with random headers, folds and compact names."""
    if draw(st.booleans()):
        start = f"{draw(TOKEN)} sip:{draw(TOKEN)}@example.com SIP/2.0"
    else:
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {draw(VALUE)}"
    names = st.sampled_from(
        ["Via", "v", "To", "t", "Subject", "s", "X-A", "x-b", draw(TOKEN)]
    )
    lines = [start]
    for _ in range(draw(st.integers(0, 8))):
        name, value = draw(names), draw(VALUE)
        separator = draw(st.sampled_from([": ", ":", " : ", ":\r\n ", ":\t"]))
        if " " in value and draw(st.booleans()):
            value = value.replace(" ", "\r\n\t", 1)
        lines.append(f"{name}{separator}{value}")
    body = draw(st.binary(max_size=60))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@settings(max_examples=400, deadline=None)
@given(messages())
def test_round_trip_reparses_equal_and_is_stable(data):
    try:
        message = parse_message(data)
    except SipParseError:
        return

    once = message.to_bytes()
    again = parse_message(once)

    assert again == message
    assert again.to_bytes() == once


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sip_parse_error(data):
    try:
        message = parse_message(data)
    except SipParseError:
        return
    exercise(message)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=200).map(lambda tail: b"INVITE sip:a@b SIP/2.0\r\nVia: " + tail),
)
def test_arbitrary_header_bytes_raise_only_sip_parse_error(data):
    try:
        message = parse_message(data)
    except SipParseError:
        return
    exercise(message)


MUTATION_BYTES = b' \t\r\n:;,<>"\\@[]%=?/0123456789-+aZ\x00\xff'


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.randoms(use_true_random=False), st.integers(1, 6))
def test_mutated_valid_messages_raise_only_sip_parse_error(data, rng, count):
    mutated = mutate(bytearray(data), rng, count)

    try:
        message = parse_message(bytes(mutated))
    except SipParseError:
        return
    exercise(message)


def mutate(data: bytearray, rng: random.Random, count: int) -> bytearray:
    for _ in range(count):
        position = rng.randrange(len(data) + 1)
        action = rng.randrange(4)
        if action == 0 and position < len(data):
            data[position] = rng.choice(MUTATION_BYTES)
        elif action == 1:
            data[position:position] = bytes([rng.choice(MUTATION_BYTES)])
        elif action == 2:
            del data[position : position + rng.randrange(1, 8)]
        else:
            data = data[:position]
    return data


def serialized(data: bytes) -> bytes | None:
    """The frame a stream carries for a message (Content-Length always set)."""
    try:
        return parse_message(data).to_bytes()
    except SipParseError:
        return None


FRAMES = [frame for frame in map(serialized, CORPUS) if frame is not None]
PING = b"\r\n\r\n"


@st.composite
def streams(draw):
    """A stream of whole messages and pings, plus what the framer must yield."""
    items = draw(st.lists(st.sampled_from([*FRAMES, PING]), max_size=8))
    expected = [KeepAlive() if item == PING else item for item in items]
    return b"".join(items), expected


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_framer_output_independent_of_split(stream_and_expected, cuts):
    stream, expected = stream_and_expected
    framer = StreamFramer()
    out = []
    position = 0
    for size in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        if position >= len(stream):
            break
        out.extend(framer.feed(stream[position : position + size]))
        position += size

    assert out == expected


@settings(max_examples=100, deadline=None)
@given(streams())
def test_framer_one_byte_at_a_time(stream_and_expected):
    stream, expected = stream_and_expected
    framer = StreamFramer()

    out = [
        item
        for index in range(len(stream))
        for item in framer.feed(stream[index : index + 1])
    ]

    assert out == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_framer_arbitrary_bytes_raise_only_sip_parse_error(data, chunk):
    framer = StreamFramer(max_header_bytes=256, max_body_bytes=256)
    try:
        for start in range(0, len(data), chunk):
            for frame in framer.feed(data[start : start + chunk]):
                if isinstance(frame, bytes):
                    try:
                        parse_message(frame)
                    except SipParseError:
                        pass
    except SipParseError as exc:
        assert exc.stream_unusable


def scanned_first(headers: Headers, name: str) -> str | None:
    """The first value of a header, read by a plain scan of the fields."""
    key = header_key(name)
    return next((value for field, value in headers if header_key(field) == key), None)


NAMES = ["Via", "v", "To", "t", "Subject", "Content-Length", "l", "X-A", "x-a"]
CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["add", "prepend", "set", "remove"]),
        st.sampled_from(NAMES),
        st.sampled_from(["1", "2", "3"]),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(messages(), CHANGES)
def test_header_lookups_agree_with_a_scan_after_parse_and_changes(data, changes):
    try:
        headers = parse_message(data).headers
    except SipParseError:
        return

    for step in [None, *changes]:
        if step is not None:
            action, name, value = step
            if action == "remove":
                headers.remove(name)
            else:
                getattr(headers, action)(name, value)
        keys = [header_key(field) for field, _ in headers]
        for name in NAMES:
            assert headers.get(name) == scanned_first(headers, name)
            assert (name in headers) == (scanned_first(headers, name) is not None)
        assert headers._has_repeated_names() == (len(set(keys)) < len(keys))


NAME_ADDRS = st.sampled_from(
    ['"Alice" <sip:+15550101@example.com>;tag=9fx', "<sip:b@c;lr>;TAG=y;tag=z",
     "sip:a@b;tag=1", "Bob <sip:b@c:99999>;tag=2", "<sip:b@c>;tag", "<sip:b@c>",
     "tok1 tok2 <sips:u:pw@h>;tag=3", '"A\\"B" <sip:a@b>', "<sip:a b>", "<tel:+1>"]
)  # fmt: skip
READS = st.permutations(["from_", "to", "from_tag", "to_tag", "validate"])


@settings(max_examples=200, deadline=None)
@given(NAME_ADDRS, NAME_ADDRS, READS)
def test_from_and_to_reads_agree_in_any_order(from_value, to_value, reads):
    data = (
        "BYE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        f"From: {from_value}\r\nTo: {to_value}\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n"
    ).encode()

    def read_all(order):
        message = parse_message(data)
        seen = {}
        for name in order:
            try:
                if name == "validate":
                    validate_request(message)
                    seen[name] = "ok"
                else:
                    value = getattr(message, name)
                    seen[name] = value if isinstance(value, str | None) else str(value)
            except SipParseError as exc:
                seen[name] = ("error", exc.reason)
        return seen

    expected = {}
    for name, value, header in (("from", from_value, "From"), ("to", to_value, "To")):
        try:
            parsed = parse_name_addr_general(value, header)
            expected[name + "_"] = str(parsed)
            expected[name + "_tag"] = parsed.tag
        except SipParseError as exc:
            expected[name + "_"] = expected[name + "_tag"] = ("error", exc.reason)
    expected["to"] = expected.pop("to_")

    seen = read_all(reads)
    assert read_all(sorted(reads)) == seen
    assert {name: seen[name] for name in expected} == expected
