"""A port, priority or weight given as true/false is refused, not read as 1/0.

Pydantic reads a boolean as an integer in lax mode, so `"port": true` over
the API (or `port: yes` in YAML) became port 1; each is a precise problem
now, and real numbers still pass.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sbc.config import ConfigError
from sbc.config.ipsec import IpsecNode, MeshPeer
from sbc.config.loader import parse_config
from sbc.config.model import Listener, Target


@pytest.mark.parametrize("flag", [True, False])
def test_listener_and_target_ports_refuse_booleans(flag: bool) -> None:
    with pytest.raises(ValidationError) as listener:
        Listener.model_validate(
            {"name": "lan", "transport": "udp", "address": "127.0.0.1", "port": flag}
        )
    with pytest.raises(ValidationError) as target:
        Target.model_validate({"host": "192.0.2.1", "port": 5060, "weight": flag})

    for caught, field in ((listener, "port"), (target, "weight")):
        [error] = caught.value.errors()
        assert error["loc"] == (field,) and error["type"] == "int_type"
        assert error["msg"] == "must be a number, not true/false"


def test_ipsec_ports_refuse_booleans_and_numbers_still_pass() -> None:
    base = {"node": "a", "address": "192.0.2.1", "identity": "a.example"}
    with pytest.raises(ValidationError):
        IpsecNode.model_validate({**base, "ike_port": True})
    peer = {"name": "b", "address": "192.0.2.2", "identity": "b", "profile": "p"}
    with pytest.raises(ValidationError):
        MeshPeer.model_validate({**peer, "sip_port": True})

    assert IpsecNode.model_validate({**base, "ike_port": 1500}).ike_port == 1500
    assert MeshPeer.model_validate({**peer, "sip_port": 5062}).sip_port == 5062


def test_yaml_port_yes_is_a_problem_on_its_line() -> None:
    text = (
        "version: 1\n"
        "listeners:\n"
        "  - name: lan\n"
        "    transport: udp\n"
        "    address: 127.0.0.1\n"
        "    port: yes\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="c.yaml")

    assert "c.yaml:6: listeners[0].port: must be a number, not true/false" in str(
        caught.value
    )
