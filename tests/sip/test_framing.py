"""StreamFramer: messages framed by Content-Length on TCP/TLS, and the
RFC 5626 §4.4.1 CRLF keepalives."""

import pytest

from sbc.sip import KeepAlive, SipParseError, StreamFramer, parse_message

MESSAGE = (
    b"OPTIONS sip:sbc.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKf1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:a@example.com>;tag=1\r\n"
    b"To: <sip:sbc.example.com>\r\n"
    b"Call-ID: f1@192.0.2.10\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 11\r\n\r\n"
    b"hello\r\n\r\nxy"
)
EMPTY_BODY = (
    MESSAGE.replace(b"Content-Length: 11", b"l: 0").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
)


def feed_all(framer: StreamFramer, data: bytes, chunk: int) -> list:
    out = []
    for start in range(0, len(data), chunk):
        out.extend(framer.feed(data[start : start + chunk]))
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 100_000])
def test_framer_same_messages_for_any_chunking(chunk):
    stream = MESSAGE + b"\r\n\r\n" + EMPTY_BODY + MESSAGE

    out = feed_all(StreamFramer(), stream, chunk)

    assert out == [MESSAGE, KeepAlive(), EMPTY_BODY, MESSAGE]
    assert parse_message(out[0]).body == b"hello\r\n\r\nxy"


def test_framer_body_with_blank_lines_is_not_split():
    [frame] = StreamFramer().feed(MESSAGE)

    assert frame == MESSAGE


def test_framer_lone_crlf_pong_consumed_silently():
    framer = StreamFramer()

    assert framer.feed(b"\r\n") == []
    assert framer.feed(MESSAGE) == [MESSAGE]


def test_framer_ping_split_across_feeds():
    framer = StreamFramer()

    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"\n") == [KeepAlive()]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KeepAlive(), KeepAlive()]


def test_framer_waits_for_whole_body():
    framer = StreamFramer()
    head, _, body = MESSAGE.partition(b"\r\n\r\n")

    assert framer.feed(head + b"\r\n\r\n" + body[:5]) == []
    assert framer.feed(body[5:]) == [MESSAGE]


def test_framer_folded_content_length():
    data = MESSAGE.replace(b"Content-Length: 11", b"Content-Length:\r\n 11")

    assert StreamFramer().feed(data) == [data]


def test_framer_missing_content_length_closes():
    data = MESSAGE.replace(b"Content-Length: 11\r\n", b"")

    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(data)

    assert caught.value.stream_unusable
    assert "missing Content-Length" in caught.value.reason


@pytest.mark.parametrize("value", [b"-1", b"abc", b"", b"1" * 40])
def test_framer_bad_content_length_closes(value):
    data = MESSAGE.replace(b"Content-Length: 11", b"Content-Length: " + value)

    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(data)

    assert caught.value.stream_unusable


def test_framer_header_limit():
    framer = StreamFramer(max_header_bytes=200)

    with pytest.raises(SipParseError) as caught:
        framer.feed(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 300)

    assert caught.value.stream_unusable
    assert caught.value.status_code == 513


def test_framer_header_limit_without_terminator_never_buffers_unbounded():
    framer = StreamFramer(max_header_bytes=1000)

    with pytest.raises(SipParseError):
        for _ in range(100):
            framer.feed(b"X" * 100)


def test_framer_body_limit():
    data = MESSAGE.replace(b"Content-Length: 11", b"Content-Length: 70000")

    with pytest.raises(SipParseError) as caught:
        StreamFramer(max_body_bytes=65536).feed(data)

    assert caught.value.stream_unusable
    assert caught.value.status_code == 513


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b""], False),
        ([b"OPT"], True),
        ([b"\r\n"], False),
        ([b"\r\n\r"], False),
        ([b"\r\n\r\n"], False),
        ([b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nab"], True),
        ([b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\n", b"abc"], False),
        ([b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\nINV"], True),
    ],
)
def test_mid_message_reports_partial_message_only(chunks, expected):
    framer = StreamFramer()
    for chunk in chunks:
        framer.feed(chunk)

    assert framer.mid_message is expected
