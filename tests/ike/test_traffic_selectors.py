"""Traffic selector narrowing (RFC 7296 §2.9, case C27)."""

from ipaddress import IPv4Address, IPv6Address

from ipsec.ike.payloads import TrafficSelector
from ipsec.ike.traffic_selectors import contains, intersect, narrow, within


def v4(start, end, protocol=0, ports=(0, 65535)):
    return TrafficSelector(IPv4Address(start), IPv4Address(end), protocol, *ports)


ANY = v4("0.0.0.0", "255.255.255.255")


def test_intersection_of_ranges_ports_and_protocols():
    a = v4("192.0.2.0", "192.0.2.127", 17, (5000, 6000))
    b = v4("192.0.2.100", "192.0.2.200", 0, (5060, 65535))

    assert intersect(a, b) == v4("192.0.2.100", "192.0.2.127", 17, (5060, 6000))


def test_disjoint_selectors_do_not_intersect():
    assert (
        intersect(v4("192.0.2.0", "192.0.2.9"), v4("192.0.2.10", "192.0.2.20")) is None
    )
    assert (
        intersect(v4("192.0.2.0", "192.0.2.9", 6), v4("192.0.2.0", "192.0.2.9", 17))
        is None
    )
    assert (
        intersect(
            v4("192.0.2.0", "192.0.2.9", ports=(1, 2)),
            v4("192.0.2.0", "192.0.2.9", ports=(3, 4)),
        )
        is None
    )
    v6 = TrafficSelector(IPv6Address("::"), IPv6Address("::ffff"))
    assert intersect(ANY, v6) is None


def test_c27_narrowing_keeps_every_overlap():
    policy = (v4("192.0.2.1", "192.0.2.1"), v4("192.0.2.50", "192.0.2.250"))

    assert narrow((ANY,), policy) == policy
    assert narrow((v4("192.0.2.200", "192.0.2.255"),), policy) == (
        v4("192.0.2.200", "192.0.2.250"),
    )
    assert narrow((v4("198.51.100.0", "198.51.100.255"),), policy) == ()


def test_c27_answer_wider_than_proposal_detected():
    proposed = (v4("192.0.2.0", "192.0.2.255", 17),)

    assert within((v4("192.0.2.50", "192.0.2.250", 17),), proposed)
    assert not within((v4("192.0.2.50", "192.0.3.250", 17),), proposed)
    assert not within(
        (v4("192.0.2.50", "192.0.2.250", 0),), proposed
    )  # any protocol is wider
    assert contains(ANY, v4("192.0.2.1", "192.0.2.1", 6, (5060, 5060)))
