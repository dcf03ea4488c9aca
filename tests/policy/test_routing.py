"""Inbound classification and outbound candidate selection (sans-IO)."""

import ipaddress
import itertools
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.config import Config
from sbc.routing import (
    CallRouter,
    DigestChallengeNeeded,
    InboundMatch,
    NoRouteFound,
    NoTrunkAvailable,
    SourceForbidden,
    TargetKey,
    failover_statuses,
    weighted_order,
)

LISTENERS = [
    {"name": "edge", "transport": "udp", "address": "192.0.2.1", "port": 5060},
    {"name": "edge6", "transport": "udp", "address": "2001:db8::1", "port": 5060},
    {"name": "core", "transport": "udp", "address": "10.0.0.1", "port": 5060},
]


def trunk(name, *, listeners=("edge",), allow=(), digest=None, targets=None, **extra):
    data = {
        "name": name,
        "kind": "carrier",
        "listeners": list(listeners),
        "targets": targets or [{"host": f"{name}.example.com"}],
        "inbound": {"allow": list(allow)},
        **extra,
    }
    if digest:
        data["inbound"]["digest"] = digest
    return data


def router(trunks, plans=()):
    config = Config.model_validate(
        {"listeners": LISTENERS, "trunks": trunks, "dial_plans": list(plans)}
    )
    return CallRouter(config)


def plan(name, routes):
    return {
        "name": name,
        "routes": [
            {"prefix": prefix, "candidates": candidates}
            for prefix, candidates in routes.items()
        ],
    }


# Inbound classification


@pytest.fixture(scope="module")
def classifier():
    return router(
        [
            trunk("wide", allow=["192.0.2.0/24"]),
            trunk("narrow", allow=["192.0.2.128/25"]),
            trunk("v6", listeners=["edge6"], allow=["2001:db8:5::/48"]),
            trunk("pbx", listeners=["core"], allow=["192.0.2.0/24"]),
            trunk(
                "secured",
                allow=["198.51.100.7"],
                digest={"username": "s", "password": "pw-s", "realm": "edge.example"},
            ),
            trunk(
                "roaming",
                listeners=["edge6"],
                digest={"username": "r1", "password": "pw-r1", "realm": "sbc.example"},
            ),
            trunk(
                "roaming2",
                listeners=["edge6"],
                digest={"username": "r2", "password": "pw-r2", "realm": "sbc.example"},
            ),
        ]
    )


@pytest.mark.parametrize(
    ("listener", "source", "expected"),
    [
        ("edge", "192.0.2.5", "wide"),
        ("edge", "192.0.2.200", "narrow"),  # the /25 is more specific
        ("core", "192.0.2.200", "pbx"),  # same source, other listener
        ("edge6", "2001:db8:5::99", "v6"),
        ("edge", ipaddress.ip_address("192.0.2.128"), "narrow"),
    ],
)
def test_classify_source_acl_most_specific(classifier, listener, source, expected):
    match = classifier.classify(listener, source)

    assert match == InboundMatch(expected, authenticate=False, realm=None)


def test_classify_ipv4_mapped_source(classifier):
    match = classifier.classify("edge", "::ffff:192.0.2.9")

    assert match.trunk == "wide"


@pytest.mark.parametrize(
    ("listener", "source"),
    [
        ("edge", "203.0.113.9"),  # nobody's
        ("core", "198.51.100.7"),  # "secured" is not on this listener
        ("edge", "2001:db8:5::1"),  # v6 trunk is on edge6 only
        ("nowhere", "192.0.2.5"),  # unknown listener
    ],
)
def test_classify_unknown_source_forbidden(classifier, listener, source):
    with pytest.raises(SourceForbidden) as caught:
        classifier.classify(listener, source)

    assert caught.value.status_code == 403
    assert caught.value.reason == "Forbidden"


def test_classify_acl_with_digest_needs_authentication(classifier):
    match = classifier.classify("edge", "198.51.100.7")

    assert match == InboundMatch("secured", authenticate=True, realm="edge.example")


def test_classify_digest_only_without_credentials_challenges(classifier):
    assert classifier.classify("edge6", "2001:db8:9::1") == DigestChallengeNeeded(
        "sbc.example"
    )


def test_classify_digest_only_username_names_trunk(classifier):
    match = classifier.classify("edge6", "2001:db8:9::1", username="r2")

    assert match == InboundMatch("roaming2", authenticate=True, realm="sbc.example")


def test_classify_digest_only_unknown_username_forbidden(classifier):
    with pytest.raises(SourceForbidden) as caught:
        classifier.classify("edge6", "2001:db8:9::1", username="mallory")

    assert caught.value.cause == "unknown digest username"


# Dial plan: longest prefix

PREFIXES = ["", "+1", "+1555", "+15550100", "+44", "+4420"]


@pytest.fixture(scope="module")
def prefix_router():
    names = {prefix: f"t{index}" for index, prefix in enumerate(PREFIXES)}
    trunks = [trunk("src", allow=["192.0.2.0/24"], dial_plan="p")] + [
        trunk(name) for name in names.values()
    ]
    routes = {prefix: [{"trunk": name}] for prefix, name in names.items()}
    return router(trunks, [plan("p", routes)]), names


@pytest.mark.parametrize(
    ("number", "prefix"),
    [
        ("+15550100123", "+15550100"),
        ("+15550199", "+1555"),
        ("+12125550100", "+1"),
        ("+442071234567", "+4420"),
        ("+4413", "+44"),
        ("+33123", ""),
        ("", ""),
    ],
)
def test_route_longest_prefix(prefix_router, number, prefix):
    routing, names = prefix_router

    result = routing.route("src", number, random.Random(1))

    assert (result.prefix, result.current.trunk) == (prefix, names[prefix])


def test_route_no_match_is_404():
    routing = router(
        [trunk("src", dial_plan="p"), trunk("uk")],
        [plan("p", {"+44": [{"trunk": "uk"}]})],
    )

    with pytest.raises(NoRouteFound) as caught:
        routing.route("src", "+15550100", random.Random(1))

    assert caught.value.status_code == 404


def test_route_trunk_without_dial_plan_is_404():
    routing = router([trunk("src"), trunk("dst")])

    with pytest.raises(NoRouteFound):
        routing.route("src", "+15550100", random.Random(1))


@given(
    prefixes=st.lists(st.from_regex(r"\+?[0-9]{0,5}", fullmatch=True), unique=True),
    number=st.from_regex(r"\+?[0-9]{0,8}", fullmatch=True),
)
def test_route_prefix_matches_brute_force(prefixes, number):
    routes = {prefix: [{"trunk": "dst"}] for prefix in prefixes}
    routing = router([trunk("src", dial_plan="p"), trunk("dst")], [plan("p", routes)])
    matching = [prefix for prefix in prefixes if number.startswith(prefix)]

    if not matching:
        with pytest.raises(NoRouteFound):
            routing.route("src", number, random.Random(0))
    else:
        chosen = routing.route("src", number, random.Random(0)).prefix
        assert chosen == max(matching, key=len)


# Priorities and weights


def test_route_priority_orders_candidates():
    candidates = [
        {"trunk": "backup", "priority": 2},
        {"trunk": "last", "priority": 9},
        {"trunk": "main", "priority": 1},
    ]
    routing = router(
        [trunk("src", dial_plan="p"), trunk("main"), trunk("backup"), trunk("last")],
        [plan("p", {"": candidates})],
    )

    for seed in range(20):
        result = routing.route("src", "+1", random.Random(seed))
        assert [c.trunk for c in result.remaining] == ["main", "backup", "last"]


def test_route_targets_ordered_by_priority_within_trunk():
    targets = [
        {"host": "192.0.2.30", "priority": 3},
        {"host": "192.0.2.10", "priority": 1},
        {"host": "192.0.2.20", "priority": 2},
    ]
    routing = router(
        [trunk("src", dial_plan="p"), trunk("dst", targets=targets)],
        [plan("p", {"": [{"trunk": "dst"}]})],
    )

    result = routing.route("src", "+1", random.Random(3))

    assert [c.target.host for c in result.remaining] == [
        "192.0.2.10",
        "192.0.2.20",
        "192.0.2.30",
    ]


WEIGHTS = {"a": 1, "b": 2, "c": 7}


def permutation_probability(order, weights):
    """RFC 2782 §3 selection: each pick proportional to weight among the rest."""
    probability, left = 1.0, sum(weights[item] for item in order)
    for item in order:
        probability *= weights[item] / left
        left -= weights[item]
    return probability


def chi_square(observed, expected):
    return sum((observed[key] - expected[key]) ** 2 / expected[key] for key in expected)


def test_route_weights_distribution_of_orders():
    candidates = [{"trunk": name, "weight": w} for name, w in WEIGHTS.items()]
    routing = router(
        [trunk("src", dial_plan="p")] + [trunk(name) for name in WEIGHTS],
        [plan("p", {"": candidates})],
    )
    rng = random.Random(20240501)
    draws = 30000

    orders = Counter(
        tuple(c.trunk for c in routing.route("src", "+1", rng).remaining)
        for _ in range(draws)
    )

    expected = {
        order: draws * permutation_probability(order, WEIGHTS)
        for order in itertools.permutations(WEIGHTS)
    }
    assert set(orders) == set(expected)
    # 5 degrees of freedom: 20.5 is the 0.1 % critical value.
    assert chi_square(orders, expected) < 20.5


def test_weighted_order_first_pick_proportional():
    rng = random.Random(7)
    draws = 20000

    firsts = Counter(
        weighted_order(list(WEIGHTS), list(WEIGHTS.values()), rng)[0]
        for _ in range(draws)
    )

    total = sum(WEIGHTS.values())
    expected = {name: draws * weight / total for name, weight in WEIGHTS.items()}
    # 2 degrees of freedom: 13.8 is the 0.1 % critical value.
    assert chi_square(firsts, expected) < 13.8


def test_weighted_order_zero_weight_last_in_given_order():
    for seed in range(50):
        order = weighted_order(
            ["z1", "a", "z2", "b"], [0, 5, 0, 1], random.Random(seed)
        )
        assert order[2:] == ["z1", "z2"]
        assert set(order[:2]) == {"a", "b"}


@given(
    weights=st.lists(st.integers(0, 1000), max_size=8),
    seed=st.integers(0, 2**32),
)
def test_weighted_order_is_a_permutation(weights, seed):
    items = list(range(len(weights)))

    order = weighted_order(items, weights, random.Random(seed))

    assert sorted(order) == items


class EdgeRandom:
    """Draws at the extremes: 0.0 and the largest float below 1."""

    def __init__(self, values):
        self._values = iter(values)

    def random(self):
        return next(self._values)


def test_weighted_order_extreme_draws():
    top = 1 - 2**-53

    assert weighted_order("abc", [1, 1, 1], EdgeRandom([0.0, 0.0, 0.0])) == list("abc")
    assert weighted_order("abc", [1, 1, 1], EdgeRandom([top, top, top])) == list("cba")


# Down trunks and targets

DOWN_TRUNKS = [trunk("src", dial_plan="p")] + [
    trunk(name, targets=[{"host": "192.0.2.1"}, {"host": "192.0.2.2", "priority": 2}])
    for name in ("one", "two", "three")
]
DOWN_PLAN = plan(
    "p",
    {
        "": [
            {"trunk": "one"},
            {"trunk": "two", "priority": 2},
            {"trunk": "three", "priority": 3},
        ]
    },
)


def test_route_down_trunks_skipped():
    routing = router(DOWN_TRUNKS, [DOWN_PLAN])

    result = routing.route("src", "+1", random.Random(0), down_trunks={"one", "three"})

    assert [(c.trunk, c.target.host) for c in result.remaining] == [
        ("two", "192.0.2.1"),
        ("two", "192.0.2.2"),
    ]


def test_route_down_targets_skipped():
    routing = router(DOWN_TRUNKS, [DOWN_PLAN])
    down = {TargetKey("one", "192.0.2.1", 5060, "udp")}

    result = routing.route("src", "+1", random.Random(0), down_targets=down)

    assert result.current.key == TargetKey("one", "192.0.2.2", 5060, "udp")


def test_route_all_down_is_480():
    routing = router(DOWN_TRUNKS, [DOWN_PLAN])

    with pytest.raises(NoTrunkAvailable) as caught:
        routing.route(
            "src", "+1", random.Random(0), down_trunks={"one", "two", "three"}
        )

    assert caught.value.status_code == 480


# Failover


@pytest.fixture
def failover_plan():
    trunks = [
        trunk("src", dial_plan="p"),
        trunk(
            "a", targets=[{"host": "192.0.2.1"}, {"host": "192.0.2.2", "priority": 2}]
        ),
        trunk("b", failover_codes=[486, "4xx"]),
        trunk("c"),
    ]
    candidates = [
        {"trunk": "a", "priority": 1},
        {"trunk": "b", "priority": 2},
        {"trunk": "c", "priority": 3},
    ]
    return router(trunks, [plan("p", {"": candidates})]).route(
        "src", "+1", random.Random(0)
    )


def test_failover_order_on_timeout_and_default_codes(failover_plan):
    steps = [failover_plan.current]

    steps.append(failover_plan.fail_over(None))  # timeout: next target of a
    steps.append(failover_plan.fail_over(503))  # 5xx: next trunk
    steps.append(failover_plan.fail_over(404))  # b fails over on 4xx

    assert [(c.trunk, c.target.host) for c in steps] == [
        ("a", "192.0.2.1"),
        ("a", "192.0.2.2"),
        ("b", "b.example.com"),
        ("c", "c.example.com"),
    ]


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 599])
def test_failover_default_codes_move_on(failover_plan, status):
    assert failover_plan.fail_over(status).target.host == "192.0.2.2"


@pytest.mark.parametrize("status", [403, 404, 486, 487, 600, 603, 302])
def test_failover_other_codes_relayed(failover_plan, status):
    assert failover_plan.fail_over(status) is None
    assert failover_plan.current.target.host == "192.0.2.1"  # unchanged


def test_failover_codes_are_those_of_the_answering_trunk(failover_plan):
    failover_plan.fail_over(None)
    failover_plan.fail_over(None)  # now at b, which fails over on 486

    assert failover_plan.fail_over(486).trunk == "c"
    assert failover_plan.fail_over(486) is None  # c keeps the defaults


def test_failover_exhausted_is_480(failover_plan):
    for _ in range(3):
        failover_plan.fail_over(None)

    with pytest.raises(NoTrunkAvailable) as caught:
        failover_plan.fail_over(503)

    assert caught.value.status_code == 480
    assert failover_plan.current.trunk == "c"


def test_failover_statuses_expand_classes():
    assert failover_statuses([408, "5xx"]) == frozenset({408, *range(500, 600)})
    assert failover_statuses([]) == frozenset()
