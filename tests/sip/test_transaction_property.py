"""Random interleavings of retransmissions, responses and timers (hypothesis).

Whatever the order, the layer never raises on input from the wire, every
transaction ends exactly once, and after 64*T1 plus the longest wait timer
the table is empty.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transaction_harness import UAC, UAS, request, response_to

from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TransactionTerminated,
)
from sbc.sip.message import Request, Response, make_response
from sbc.sip.parser import parse_message
from sbc.sip.requests import build_cancel
from sbc.sip.timers import TimerValues
from sbc.sip.transaction import ClientTransactionKey, State, TransactionLayer

TIMERS = TimerValues()
# After the last input, every transaction is gone once this much time passes:
# 64*T1 (B, F, H, J, L, M) plus the longest wait for retransmissions (D).
SETTLE = 64 * TIMERS.t1 + TIMERS.timer_d + 1

METHODS = ["INVITE", "OPTIONS", "BYE"]
STATUSES = [100, 180, 183, 200, 202, 302, 404, 486, 487, 500, 603]
TRANSPORTS = ["UDP", "TCP"]

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def drain(layer: TransactionLayer) -> list:
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    return events


def settle(layer: TransactionLayer, now: float) -> list:
    """Fire timers at their deadlines until none are left before now + SETTLE."""
    events, end = [], now + SETTLE
    for _ in range(10_000):
        deadline = layer.next_timer()
        if deadline is None or deadline > end:
            break
        layer.handle_timer(max(now, deadline))
        layer.datagrams_to_send()
        events += drain(layer)
    return events


# -- One client layer, random wire input -------------------------------------------

client_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("open"), st.sampled_from(METHODS), st.sampled_from(TRANSPORTS)
        ),
        st.tuples(st.just("respond"), st.integers(0, 7), st.sampled_from(STATUSES)),
        st.tuples(st.just("advance"), st.floats(0, 40)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.tuples(st.just("error"), st.sampled_from(TRANSPORTS)),
    ),
    max_size=40,
)


@PROPERTY_SETTINGS
@given(client_steps)
def test_client_interleavings_never_raise_and_table_empties(steps):
    layer, now = TransactionLayer(TIMERS), 0.0
    opened: list[tuple[Request, str]] = []
    keys, events = [], []

    for step in steps:
        if step[0] == "open":
            req = request(step[1], branch=f"z9hG4bKp{len(opened)}", transport=step[2])
            keys.append(layer.send_request(req, UAS, step[2], now))
            opened.append((req, step[2]))
        elif step[0] == "respond" and opened:
            req, transport = opened[step[1] % len(opened)]
            layer.receive_response(response_to(req, step[2]), UAS, transport, now)
        elif step[0] == "advance":
            now += step[1]
            layer.handle_timer(now)
        elif step[0] == "cancel" and opened:
            index = step[1] % len(opened)
            req, transport = opened[index]
            cancel_key = layer.cancel(keys[index], now)
            if cancel_key is not None and cancel_key not in keys:
                keys.append(cancel_key)
                opened.append((build_cancel(req), transport))
        elif step[0] == "error":
            layer.report_transport_error(UAS, step[1], now)
        layer.datagrams_to_send()
        events += drain(layer)

    # Let the peer answer whatever is still waiting, then let timers run out.
    for (req, transport), key in zip(opened, keys, strict=True):
        if layer.state(key) in (State.CALLING, State.TRYING, State.PROCEEDING):
            layer.receive_response(response_to(req, 487), UAS, transport, now)
    events += drain(layer) + settle(layer, now)

    assert len(layer) == 0 and layer.next_timer() is None
    assert not layer._heap  # stale timer entries are gone too
    ended = Counter(e.key for e in events if isinstance(e, TransactionTerminated))
    started = {key for key in keys if key.method != "CANCEL" or key in ended}
    assert set(ended) == started and set(ended.values()) <= {1}


# -- One server layer, random wire input and TU answers ------------------------------

server_steps = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 5), st.sampled_from(METHODS)),
        st.tuples(st.just("ack"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
        st.tuples(st.just("answer"), st.integers(0, 5), st.sampled_from(STATUSES)),
        st.tuples(st.just("advance"), st.floats(0, 40)),
        st.tuples(st.just("error"), st.sampled_from(TRANSPORTS)),
    ),
    max_size=40,
)


@PROPERTY_SETTINGS
@given(server_steps, st.sampled_from(TRANSPORTS))
def test_server_interleavings_never_raise_and_table_empties(steps, transport):
    layer, now = TransactionLayer(TIMERS), 0.0
    keys, opened, events = {}, Counter(), []

    def requested(index: int, method: str) -> Request:
        return request(method, branch=f"z9hG4bKs{index}", transport=transport)

    for step in steps:
        if step[0] == "request":
            layer.receive_request(requested(step[1], step[2]), UAC, transport, now)
        elif step[0] == "ack":
            ack = request(
                "ACK", branch=f"z9hG4bKs{step[1]}", to_tag="uas" if step[2] else "x"
            )
            layer.receive_request(ack, UAC, transport, now)
        elif step[0] == "cancel":
            cancel = build_cancel(requested(step[1], "INVITE"))
            layer.receive_request(cancel, UAC, transport, now)
        elif step[0] == "answer" and keys:
            key, req = list(keys.items())[step[1] % len(keys)]
            if _may_answer(layer.state(key), step[2], key.method):
                response = make_response(req, step[2], to_tag="uas")
                layer.send_response(response, now, key=key)
        elif step[0] == "advance":
            now += step[1]
            layer.handle_timer(now)
        elif step[0] == "error":
            layer.report_transport_error(UAC, step[1], now)
        layer.datagrams_to_send()
        for event in drain(layer):
            events.append(event)
            if isinstance(event, RequestReceived | CancelReceived):
                keys[event.key] = event.request
                opened[event.key] += 1  # again after a transport error

    # The TU answers whatever it left pending, then timers run out.
    for key, req in keys.items():
        if layer.state(key) in (State.TRYING, State.PROCEEDING):
            layer.send_response(make_response(req, 500, to_tag="uas"), now, key=key)
    events += drain(layer) + settle(layer, now)

    assert len(layer) == 0 and layer.next_timer() is None
    assert not layer._heap and not layer._cancellable  # no index left behind
    ended = Counter(e.key for e in events if isinstance(e, TransactionTerminated))
    assert ended == opened


def _may_answer(state: State | None, status: int, method: str) -> bool:
    if state in (State.TRYING, State.PROCEEDING):
        return True
    return state is State.ACCEPTED and 200 <= status < 300 and method == "INVITE"


# -- A client and a server across a lossy, duplicating, reordering network ----------


@dataclass
class Network:
    """Delivers each message 0, 1 or 2 times after random delays."""

    rng: random.Random
    loss: float
    queue: list = field(default_factory=list)
    sequence: int = 0

    def carry(self, now: float, data: bytes, to_server: bool) -> None:
        copies = 0 if self.rng.random() < self.loss else 1 + (self.rng.random() < 0.2)
        for _ in range(copies):
            self.sequence += 1
            at = now + self.rng.uniform(0.0, 2.0)
            heapq.heappush(self.queue, (at, self.sequence, data, to_server))


@dataclass
class Ends:
    """The two transaction layers and the little TU logic a 2xx needs."""

    rng: random.Random
    client: TransactionLayer = field(default_factory=lambda: TransactionLayer(TIMERS))
    server: TransactionLayer = field(default_factory=lambda: TransactionLayer(TIMERS))
    answers: dict = field(default_factory=dict)  # server key -> (due, request)
    give_up: dict = field(default_factory=dict)  # INVITE client key -> CANCEL time
    # Call-ID -> [2xx, server key, next resend, interval, last resend time]
    two_xx: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)  # branch -> the UAS's final status
    received: dict = field(default_factory=dict)  # client key -> final statuses
    opened: Counter = field(default_factory=Counter)
    ended: Counter = field(default_factory=Counter)

    def deadlines(self) -> list[float]:
        due = [self.client.next_timer(), self.server.next_timer()]
        due += [answer[0] for answer in self.answers.values()]
        due += [state[2] for state in self.two_xx.values()]
        due += list(self.give_up.values())
        return [t for t in due if t is not None]


@PROPERTY_SETTINGS
@given(
    st.randoms(use_true_random=False),
    st.lists(
        st.tuples(st.sampled_from(METHODS), st.floats(0, 5)), min_size=1, max_size=6
    ),
    st.sampled_from([0.0, 0.3, 0.7]),
)
def test_lossy_network_every_transaction_ends_once(rng, calls, loss):
    net, ends, now = Network(rng, loss), Ends(rng), 0.0
    starts = sorted((at, index, method) for index, (method, at) in enumerate(calls))

    for _ in range(20_000):
        while starts and starts[0][0] <= now:
            _, index, method = starts.pop(0)
            req = request(method, branch=f"z9hG4bKn{index}", call_id=f"n{index}")
            key = ends.client.send_request(req, UAS, "UDP", now)
            ends.opened[key] += 1
            if method == "INVITE":
                ends.give_up[key] = now + 60.0  # the UAC gives up on ringing
        _run_tus(ends, net, now)

        deadlines = ends.deadlines()
        deadlines += [net.queue[0][0]] if net.queue else []
        deadlines += [starts[0][0]] if starts else []
        if not deadlines:
            break
        now = max(now, min(deadlines))
        while net.queue and net.queue[0][0] <= now:
            _, _, data, to_server = heapq.heappop(net.queue)
            if to_server:
                ends.server.receive_request(parse_message(data), UAC, "UDP", now)
            else:
                ends.client.receive_response(parse_message(data), UAS, "UDP", now)
        ends.client.handle_timer(now)
        ends.server.handle_timer(now)
    else:
        raise AssertionError("simulation did not settle")

    assert len(ends.client) == 0 and len(ends.server) == 0
    cancels = Counter({key: n for key, n in ends.ended.items() if _client_cancel(key)})
    assert ends.ended - cancels == ends.opened  # each ended exactly once
    assert set(cancels.values()) <= {1}
    for key, statuses in ends.received.items():
        if key.method == "CANCEL":
            continue
        chosen = ends.chosen[key.branch]
        assert set(statuses) <= {chosen, 487}
        assert len(statuses) == 1 or (key.method == "INVITE" and chosen < 300)
    if loss == 0.0:
        clients = {key for key in ends.opened if isinstance(key, ClientTransactionKey)}
        assert clients <= set(ends.received)  # nothing lost: all answered


def _client_cancel(key) -> bool:
    return isinstance(key, ClientTransactionKey) and key.method == "CANCEL"


def _run_tus(ends: Ends, net: Network, now: float) -> None:
    """Run both TUs until idle, moving what the layers send onto the network."""
    for _ in range(100):
        busy = _server_tu(ends, now) + _client_tu(ends, now)
        for transmission in ends.client.datagrams_to_send():
            net.carry(now, transmission.data, to_server=True)
        for transmission in ends.server.datagrams_to_send():
            net.carry(now, transmission.data, to_server=False)
        if not busy:
            return
    raise AssertionError("the TUs never went idle")


def _client_tu(ends: Ends, now: float) -> int:
    handled = 0
    for key, due in list(ends.give_up.items()):
        if due <= now:
            del ends.give_up[key]
            ends.client.cancel(key, now)
    while (event := ends.client.next_event()) is not None:
        handled += 1
        if isinstance(event, TransactionTerminated):
            ends.ended[event.key] += 1
            ends.give_up.pop(event.key, None)
        elif isinstance(event, ResponseReceived) and event.response.status >= 200:
            ends.received.setdefault(event.key, []).append(event.response.status)
            if event.key.method == "INVITE" and event.response.status < 300:
                _ack_2xx(ends, event.response)
        elif isinstance(event, StrayResponseReceived) and event.response.status < 300:
            _ack_2xx(ends, event.response)  # a 2xx retransmission after Timer M
    return handled


def _ack_2xx(ends: Ends, ok: Response) -> None:
    # The UAC core's ACK for a 2xx, with a branch of its own (§13.2.2.4).
    ack = request(
        "ACK", branch=f"{ok.top_via.branch}ack", call_id=ok.call_id, to_tag=ok.to_tag
    )
    ends.client.send_stateless(ack, UAS, "UDP")


def _server_tu(ends: Ends, now: float) -> int:
    handled = 0
    while (event := ends.server.next_event()) is not None:
        handled += 1
        if isinstance(event, RequestReceived):
            # A late INVITE retransmission can open a second transaction
            # after Timer L: the TU gives it the same answer.
            finals = [200, 486, 603] if event.key.method == "INVITE" else [200, 404]
            ends.chosen.setdefault(event.key.branch, ends.rng.choice(finals))
            ends.opened[event.key] += 1
            ends.answers[event.key] = (now + ends.rng.uniform(0, 3), event.request)
        elif isinstance(event, CancelReceived):
            _answer_cancel(ends, event, now)
        elif isinstance(event, AckReceived):
            ends.two_xx.pop(event.request.call_id, None)
        elif isinstance(event, TransactionTerminated):
            ends.ended[event.key] += 1
            ends.answers.pop(event.key, None)
    return handled + _server_answers(ends, now)


def _answer_cancel(ends: Ends, event: CancelReceived, now: float) -> None:
    # RFC 3261 §9.2: 481 when nothing matched, else 200, and 487 to a pending
    # INVITE.
    ends.opened[event.key] += 1
    status = 200 if event.cancelled_key is not None else 481
    ends.server.send_response(make_response(event.request, status), now, key=event.key)
    invite = ends.answers.pop(event.cancelled_key, None)
    if event.pending and invite is not None:
        terminated = make_response(invite[1], 487, to_tag="uas487")
        ends.server.send_response(terminated, now, key=event.cancelled_key)


def _server_answers(ends: Ends, now: float) -> int:
    sent = 0
    for key, (due, req) in list(ends.answers.items()):
        if due <= now:
            del ends.answers[key]
            status = ends.chosen[key.branch]
            response = make_response(req, status, to_tag=f"uas{key.branch}")
            ends.server.send_response(response, now, key=key)
            sent += 1
            if status < 300 and key.method == "INVITE":
                resend = now + TIMERS.t1
                end = now + 64 * TIMERS.t1
                ends.two_xx[req.call_id] = [response, key, resend, TIMERS.t1, end]

    # The UAS core resends its 2xx until the ACK: T1 doubling to T2, for
    # 64*T1 (RFC 3261 §13.3.1.4).
    for call_id, (response, key, due, gap, end) in list(ends.two_xx.items()):
        if due > now:
            continue
        if due > end:
            del ends.two_xx[call_id]
            continue
        ends.server.send_response(response, now, key=key)
        sent += 1
        gap = min(2 * gap, TIMERS.t2)
        ends.two_xx[call_id] = [response, key, now + gap, gap, end]
    return sent
