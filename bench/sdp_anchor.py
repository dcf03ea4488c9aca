"""SDP throughput: parse, parse + anchor an offer, and a whole offer/answer.

Run as ``.venv/bin/python bench/sdp_anchor.py [--seconds S]``. Each figure is
the best of five timed rounds in CPU time of one core. "offer/answer" is what
one call setup costs the SBC: parse the A-leg offer, anchor it, serialize the
B-leg offer, parse the B-leg answer, anchor it and serialize the A-leg answer.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable

from sbc.sdp import (
    Leg,
    LegPolicy,
    RelayPorts,
    SessionDescription,
    StreamPorts,
    anchor_answer,
    anchor_offer,
)

# A typical PBX offer: four audio codecs, DTMF, ptime, direction.
OFFER = (
    b"v=0\r\n"
    b"o=root 1821440370 1821440370 IN IP4 198.51.100.20\r\n"
    b"s=Asterisk PBX\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 14566 RTP/AVP 0 8 9 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:150\r\n"
    b"a=sendrecv\r\n"
)

ANSWER = (
    b"v=0\r\n"
    b"o=carrier 99 1 IN IP4 192.0.2.9\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.9\r\n"
    b"t=0 0\r\n"
    b"m=audio 7000 RTP/AVP 8 100\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:100 telephone-event/8000\r\n"
    b"a=fmtp:100 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

PORTS = StreamPorts(RelayPorts(30000, 30001), RelayPorts(30002, 30003))
TRUNK = LegPolicy(codecs=frozenset({"PCMA", "PCMU", "G722", "telephone-event"}))
SRTP = LegPolicy(srtp_suites=("AES_CM_128_HMAC_SHA1_80",))


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Best calls per CPU second over five rounds of about ``seconds`` / 5."""
    batch = 200
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


def anchor(policy: LegPolicy) -> Callable[[], object]:
    def run() -> bytes:
        offer = SessionDescription.parse(OFFER)
        sent, _ = anchor_offer(
            offer,
            offerer=Leg("203.0.113.1", 1),
            answerer=Leg("198.51.100.1", 2, policy),
            allocate_ports=lambda index, media: PORTS,
            random_bytes=os.urandom,
        )
        return sent.to_bytes()

    return run


def offer_answer(policy: LegPolicy) -> Callable[[], object]:
    answer = ANSWER
    if policy.srtp_suites:
        key = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"A" * 40 + b"\r\n"
        answer = ANSWER.replace(b"RTP/AVP", b"RTP/SAVP") + key

    def run() -> bytes:
        sent, pending = anchor_offer(
            SessionDescription.parse(OFFER),
            offerer=Leg("203.0.113.1", 1),
            answerer=Leg("198.51.100.1", 2, policy),
            allocate_ports=lambda index, media: PORTS,
            random_bytes=os.urandom,
        )
        sent.to_bytes()
        answered, _ = anchor_answer(
            SessionDescription.parse(answer), pending, random_bytes=os.urandom
        )
        return answered.to_bytes()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    args = parser.parse_args()

    offer = SessionDescription.parse(OFFER)
    operations = {
        "parse": lambda: SessionDescription.parse(OFFER),
        "serialize": offer.to_bytes,
        "parse + anchor offer": anchor(TRUNK),
        "parse + anchor offer (SRTP leg)": anchor(SRTP),
        "offer/answer": offer_answer(TRUNK),
        "offer/answer (SRTP leg)": offer_answer(SRTP),
    }
    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(f"{'operation':<32} {'calls/s':>10} {'µs/call':>8}")
    for label, operation in operations.items():
        calls = rate(operation, args.seconds)
        print(f"{label:<32} {calls:>10,.0f} {1e6 / calls:>8.2f}")


if __name__ == "__main__":
    main()
