"""The configuration model used without YAML, as the admin plane will."""

import ipaddress
import string

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.config import (
    DEFAULT_ALLOWED_HEADERS,
    Config,
    Trunk,
    dump_config,
    format_path,
    parse_config,
    reference_problems,
)

MINIMAL = {
    "listeners": [{"name": "lu", "transport": "udp", "address": "192.0.2.1"}],
    "trunks": [
        {
            "name": "carrier",
            "kind": "carrier",
            "listeners": ["lu"],
            "targets": [{"host": "carrier.example.com"}],
        }
    ],
}


def test_defaults_of_a_minimal_trunk():
    trunk = Config.model_validate(MINIMAL).trunks[0]

    assert trunk.failover_codes == [408, "5xx"]
    assert trunk.keepalive is None and trunk.registration is None
    assert trunk.limits.max_calls is None and trunk.limits.max_cps is None
    assert trunk.topology_hiding.allow_headers == list(DEFAULT_ALLOWED_HEADERS)
    assert trunk.inbound.allow == [] and trunk.inbound.digest is None
    target = trunk.targets[0]
    assert (target.port, target.transport, target.priority, target.weight) == (
        5060,
        "udp",
        1,
        1,
    )


def test_model_is_frozen():
    config = Config.model_validate(MINIMAL)

    with pytest.raises(pydantic.ValidationError):
        config.trunks[0].kind = "pbx"


def test_lookup_by_name():
    config = Config.model_validate(MINIMAL)

    assert config.trunk("carrier").kind == "carrier"
    assert config.listener("lu").port == 5060
    assert config.trunk("nope") is None and config.dial_plan("nope") is None


def test_reference_problems_without_yaml():
    data = {
        **MINIMAL,
        "dial_plans": [
            {
                "name": "p",
                "routes": [{"prefix": "+1", "candidates": [{"trunk": "ghost"}]}],
            }
        ],
    }

    found = reference_problems(Config.model_validate(data))

    assert [(format_path(p.path), p.message) for p in found] == [
        ("dial_plans[0].routes[0].candidates[0].trunk", "unknown trunk 'ghost'")
    ]


def test_ipv6_target_brackets_dropped_and_addresses_compressed():
    trunk = Trunk.model_validate(
        {
            "name": "v6",
            "kind": "peer-sbc",
            "listeners": ["l"],
            "targets": [{"host": "[2001:db8:0:0::10]"}],
            "inbound": {"allow": ["2001:db8::/32", "192.0.2.7"]},
        }
    )

    assert trunk.targets[0].host == "2001:db8::10"
    assert trunk.inbound.allow == [
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    ]


def test_json_schema_builds_for_the_admin_plane():
    schema = Config.model_json_schema()

    assert {"listeners", "trunks", "dial_plans"} <= set(schema["properties"])


def test_secret_mask_refused_through_the_model():
    mask = "*" * 10
    data = {**MINIMAL}
    data["trunks"] = [
        {**MINIMAL["trunks"][0], "outbound_auth": {"username": "u", "password": mask}}
    ]

    with pytest.raises(pydantic.ValidationError):
        Config.model_validate(data)


# Round trip: any valid configuration survives export and import.

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
secrets = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ",
    min_size=1,
    max_size=24,
).filter(lambda text: text != "**********")


@st.composite
def configs(draw):
    listener_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    listeners = [
        {"name": name, "transport": "udp", "address": f"127.0.0.{i + 1}", "port": 5060}
        for i, name in enumerate(listener_names)
    ]
    trunk_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    trunks = [
        draw(trunk_data(name, listener_names[i % len(listener_names)], i))
        for i, name in enumerate(trunk_names)
    ]
    routes = draw(
        st.lists(
            st.from_regex(r"\+?[0-9]{0,6}", fullmatch=True), unique=True, max_size=4
        )
    )
    plans = [
        {
            "name": "plan",
            "routes": [
                {
                    "prefix": prefix,
                    "candidates": [
                        {
                            "trunk": name,
                            "priority": draw(st.integers(0, 9)),
                            "weight": draw(st.integers(0, 100)),
                        }
                        for name in trunk_names
                    ],
                }
                for prefix in routes
            ],
        }
    ]
    return Config.model_validate(
        {"listeners": listeners, "trunks": trunks, "dial_plans": plans}
    )


@st.composite
def trunk_data(draw, name, listener, index):
    trunk = {
        "name": name,
        "kind": draw(st.sampled_from(["carrier", "peer-sbc", "pbx"])),
        "listeners": [listener],
        "targets": [
            {
                "host": f"192.0.2.{index + 1}",
                "port": draw(st.integers(1, 65535)),
                "priority": draw(st.integers(0, 65535)),
                "weight": draw(st.integers(0, 65535)),
            }
        ],
        "inbound": {"allow": [f"198.51.100.{index}/32"]},
        "dial_plan": "plan",
        "failover_codes": draw(
            st.lists(
                st.integers(300, 699) | st.sampled_from(["4xx", "5xx", "6xx"]),
                max_size=3,
            )
        ),
        "limits": {
            "max_calls": draw(st.none() | st.integers(1, 10**6)),
            "max_cps": draw(st.none() | st.floats(0.1, 1000)),
        },
    }
    if draw(st.booleans()):
        trunk["outbound_auth"] = {"username": "acct", "password": draw(secrets)}
    if draw(st.booleans()):
        trunk["inbound"]["digest"] = {
            "username": name,
            "password": draw(secrets),
            "realm": "sbc.example.com",
        }
    return trunk


@settings(max_examples=60, deadline=None)
@given(configs())
def test_export_with_secrets_round_trips(config):
    assert reference_problems(config) == []

    assert parse_config(dump_config(config, reveal_secrets=True)) == config
