"""Port pairs: even RTP, odd RTCP, reused as late as possible."""

from __future__ import annotations

import pytest

from sbc.media.errors import PortsExhausted
from sbc.media.ports import PortAllocator


@pytest.mark.parametrize("low,high", [(20000, 20009), (20001, 20010), (30000, 30001)])
def test_ports_even_and_within_range(low: int, high: int) -> None:
    allocator = PortAllocator(low, high)
    ports = [allocator.take() for _ in range(allocator.available)]

    assert all(port % 2 == 0 and low <= port and port + 1 <= high for port in ports)
    assert len(set(ports)) == len(ports) == (high - low + 1 - (low & 1)) // 2


def test_ports_exhausted_raises_with_503() -> None:
    allocator = PortAllocator(20000, 20003)
    allocator.take(), allocator.take()

    with pytest.raises(PortsExhausted) as error:
        allocator.take()
    assert error.value.sip_status == 503


def test_released_port_reused_last() -> None:
    allocator = PortAllocator(20000, 20009)
    first = allocator.take()
    allocator.release(first)
    allocator.release(first)

    taken = [allocator.take() for _ in range(allocator.available)]
    assert taken[-1] == first and taken.count(first) == 1
