"""SIP parser throughput: parse, + validate, + typed reads, serialize, frame.

Run as ``.venv/bin/python bench/sip_parse.py [--seconds S]``. Each figure is
the best of several timed rounds in CPU time of one core, printed as a table.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from collections.abc import Callable

from sbc.sip import (
    Request,
    StreamFramer,
    parse_message,
    validate_request,
    validate_response,
)

SDP = (
    b"v=0\r\n"
    b"o=- 3849283744 3849283744 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15550100@sbc.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9a8e1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:+15550101@example.com>;tag=9fxced76sl\r\n'
    b"To: <sip:+15550100@sbc.example.com;user=phone>\r\n"
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+15550101@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: 100rel, timer\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: bench-ua/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

OK_WITH_SDP = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9a8e1;rport=5060;"
    b"received=192.0.2.10\r\n"
    b'From: "Alice" <sip:+15550101@example.com>;tag=9fxced76sl\r\n'
    b"To: <sip:+15550100@sbc.example.com;user=phone>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+15550100@192.0.2.20:5060>\r\n"
    b"Require: timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

OK_NO_BODY = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9a8e2;rport=5060\r\n"
    b"From: <sip:+15550101@example.com>;tag=9fxced76sl\r\n"
    b"To: <sip:+15550100@sbc.example.com>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 314160 BYE\r\n"
    b"Content-Length: 0\r\n\r\n"
)

MESSAGES = {
    "INVITE + SDP": INVITE,
    "200 OK + SDP": OK_WITH_SDP,
    "200 OK (BYE)": OK_NO_BODY,
}


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Best calls per CPU second over five rounds of about ``seconds`` / 5.

    CPU time of this process, not wall time, so that other load on a shared
    machine does not lower the figure.
    """
    batch = 1000
    best = 0.0
    gc.collect()
    for _ in range(5):
        calls = 0
        start = time.process_time()
        deadline = time.perf_counter() + seconds / 5
        while time.perf_counter() < deadline:
            for _ in range(batch):
                operation()
            calls += batch
        best = max(best, calls / (time.process_time() - start))
    return best


def parse_and_validate(data: bytes) -> Callable[[], object]:
    def run() -> None:
        message = parse_message(data)
        if isinstance(message, Request):
            validate_request(message)
        else:
            validate_response(message)

    return run


def parse_validate_read(data: bytes) -> Callable[[], object]:
    """Parse, validate, then read the typed values a B2BUA reads for a call.

    validate builds From and To only as far as their tags; this figure
    includes building them in full, so that no cost hides behind laziness.
    """

    def run() -> None:
        message = parse_message(data)
        if isinstance(message, Request):
            validate_request(message)
            message.request_uri  # noqa: B018 - reading is the work measured
        else:
            validate_response(message)
        message.top_via.branch  # noqa: B018
        message.from_.uri  # noqa: B018
        message.to.uri  # noqa: B018
        message.cseq.number  # noqa: B018

    return run


def frame(data: bytes) -> Callable[[], object]:
    framer = StreamFramer()
    return lambda: framer.feed(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    args = parser.parse_args()

    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(
        f"{'message':<14} {'bytes':>5}  {'operation':<17} {'calls/s':>10} {'µs/call':>8}"
    )
    for name, data in MESSAGES.items():
        message = parse_message(data)
        operations = {
            "parse": lambda data=data: parse_message(data),
            "parse + validate": parse_and_validate(data),
            "+ typed reads": parse_validate_read(data),
            "serialize": message.to_bytes,
            "frame (stream)": frame(data),
        }
        for label, operation in operations.items():
            calls = rate(operation, args.seconds)
            print(
                f"{name:<14} {len(data):>5}  {label:<17} {calls:>10,.0f} {1e6 / calls:>8.2f}"
            )


if __name__ == "__main__":
    main()
