"""Traffic selector narrowing (RFC 7296 §2.9), case C27.

A selector is an address range, a port range and an IP protocol (0 for
any). Narrowing keeps the non-empty intersections of what the peer proposed
with what policy allows; the initiator then checks that the answer is no
wider than its proposal.
"""

from __future__ import annotations

from collections.abc import Iterable

from .payloads import TrafficSelector


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    """The selector both allow, or None when they do not overlap."""
    if a.ts_type != b.ts_type:
        return None
    if a.ip_protocol and b.ip_protocol and a.ip_protocol != b.ip_protocol:
        return None
    start_address = max(int(a.start_address), int(b.start_address))
    end_address = min(int(a.end_address), int(b.end_address))
    start_port = max(a.start_port, b.start_port)
    end_port = min(a.end_port, b.end_port)
    if start_address > end_address or start_port > end_port:
        return None
    address = type(a.start_address)
    return TrafficSelector(
        address(start_address),
        address(end_address),
        a.ip_protocol or b.ip_protocol,
        start_port,
        end_port,
    )


def narrow(
    proposed: Iterable[TrafficSelector], allowed: Iterable[TrafficSelector]
) -> tuple[TrafficSelector, ...]:
    """Every non-empty intersection, in the proposer's order, without repeats."""
    allowed = tuple(allowed)
    result: dict[TrafficSelector, None] = {}
    for selector in proposed:
        for policy in allowed:
            overlap = intersect(selector, policy)
            if overlap is not None:
                result[overlap] = None
    return tuple(result)


def contains(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    return intersect(outer, inner) == inner


def within(
    answered: Iterable[TrafficSelector], proposed: Iterable[TrafficSelector]
) -> bool:
    """True when each answered selector lies inside one proposed selector."""
    proposed = tuple(proposed)
    return all(any(contains(p, a) for p in proposed) for a in answered)
