"""B2BUA cost per call: INVITE, 180, 200, ACK and BYE through the engine.

Run as ``.venv/bin/python bench/b2bua_calls.py [--calls N]``. The caller and
callee are the in-memory phones of tests/b2bua (real transaction layers,
serialized bytes). The figure that matters is the SBC's share: what
`sbc.io.endpoint` does with each datagram it receives (parse, validate,
stamp the top Via), its transaction layer and the call engine, measured as
CPU time of this thread (``time.thread_time``) around the SBC node only,
best of several rounds. CPU time, not wall time: other load on a shared
machine then changes the figure much less.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "b2bua"))

from b2bua_harness import SBC, Lab, SbcNode, Wire  # noqa: E402

from sbc.cdr import CallRecord  # noqa: E402
from sbc.io.routing import stamp_request  # noqa: E402
from sbc.sip.message import Request  # noqa: E402
from sbc.sip.parser import parse_message, validate_request, validate_response  # noqa: E402


class TimedLab(Lab):
    """A lab that adds up the CPU time spent delivering to and firing the SBC."""

    sbc_seconds = 0.0

    def deliver(self, wire: Wire, transport: str) -> None:
        if wire.destination != SBC:
            super().deliver(wire, transport)
            return
        started = time.thread_time()
        self._receive_at_sbc(wire, transport)
        self.sbc_seconds += time.thread_time() - started

    def _receive_at_sbc(self, wire: Wire, transport: str) -> None:
        # What SipEndpoint._process does with a datagram, minus the socket.
        layer = self.sbc.layer
        message = parse_message(wire.data)
        if isinstance(message, Request):
            validate_request(message)
            stamp_request(message, wire.source)
            layer.receive_request(message, wire.source, transport, self.now)
        else:
            validate_response(message)
            layer.receive_response(message, wire.source, transport, self.now)
        self.sbc.after_input(self.now)


class _Discard:
    def write(self, record: CallRecord) -> None:
        return None


def one_round(calls: int) -> tuple[float, float]:
    lab = TimedLab()
    assert isinstance(lab.sbc, SbcNode)
    lab.sbc.write = _Discard().write  # type: ignore[method-assign]
    answered = []

    def on_request(event: object) -> None:
        request = event.request  # type: ignore[attr-defined]
        if request.method == "INVITE":
            lab.callee.respond(event, 180, tag=request.call_id[:8])  # type: ignore[arg-type]
            lab.callee.respond(event, 200, tag=request.call_id[:8])  # type: ignore[arg-type]
        else:
            lab.callee.respond(event, 200)  # type: ignore[arg-type]

    lab.callee.on_request = on_request
    started = time.thread_time()
    for _ in range(calls):
        call = lab.caller.invite()
        lab.run()
        answered.append(call)
    for call in answered:
        lab.caller.send_in_dialog(next(iter(call.dialogs.values())), "BYE")
    lab.run()
    total = time.thread_time() - started
    if lab.engine.active_calls:
        raise SystemExit("calls left behind")
    return total / calls, lab.sbc_seconds / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    results = [one_round(args.calls) for _ in range(args.rounds)]
    best_total = min(total for total, _ in results)
    best_sbc = min(sbc for _, sbc in results)
    print(f"python {platform.python_version()} on {platform.machine()}")
    print(f"calls per round: {args.calls}, rounds: {args.rounds}")
    print(f"whole lab per call:   {best_total * 1e6:8.0f} us")
    print(f"SBC share per call:   {best_sbc * 1e6:8.0f} us")
    print(f"SBC calls per second: {1 / best_sbc:8.0f} (one core, signalling only)")


if __name__ == "__main__":
    main()
