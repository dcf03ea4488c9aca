"""Secrets (digest passwords) never show in repr, str, dumps, errors or logs."""

import logging

import pytest
import yaml

from sbc.config import (
    REDACTED,
    REVEAL_SECRETS,
    ConfigError,
    dump_config,
    parse_config,
)

INBOUND_PASSWORD = "in-Pw-7f3e1c"
OUTBOUND_PASSWORD = "out-Pw-a94d22"

TEXT = f"""\
listeners:
  - {{name: lu, transport: udp, address: 127.0.0.1, port: 5060}}
trunks:
  - name: carrier
    kind: carrier
    listeners: [lu]
    targets: [{{host: 192.0.2.1}}]
    inbound:
      digest: {{username: peer, password: "{INBOUND_PASSWORD}", realm: sbc.example.com}}
    outbound_auth:
      username: acct
      password: '{OUTBOUND_PASSWORD}'
      realm: carrier.example.com
"""

SECRETS = (INBOUND_PASSWORD, OUTBOUND_PASSWORD)


@pytest.fixture(scope="module")
def config():
    return parse_config(TEXT)


def assert_no_secret(text):
    for secret in SECRETS:
        assert secret not in text


def test_secrets_loaded_and_usable(config):
    trunk = config.trunks[0]

    assert trunk.inbound.digest.password.get_secret_value() == INBOUND_PASSWORD
    assert trunk.outbound_auth.password.get_secret_value() == OUTBOUND_PASSWORD


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda c: repr(c.trunks[0]), lambda c: str(c.trunks[0].inbound)],
    ids=["repr", "str", "trunk_repr", "inbound_str"],
)
def test_secrets_hidden_in_repr_and_str(config, render):
    assert_no_secret(render(config))


def test_secrets_hidden_in_model_dump_json(config):
    text = config.model_dump_json()

    assert_no_secret(text)
    assert REDACTED in text


def test_secrets_hidden_in_model_dump_python(config):
    assert_no_secret(repr(config.model_dump()))
    assert_no_secret(repr(config.model_dump(mode="json")))


def test_secrets_revealed_only_with_context(config):
    dumped = config.model_dump(mode="json", context={REVEAL_SECRETS: True})

    assert dumped["trunks"][0]["outbound_auth"]["password"] == OUTBOUND_PASSWORD
    assert_no_secret(repr(config.model_dump(mode="json", context={REVEAL_SECRETS: 1})))


def test_dump_config_without_reveal_cannot_be_loaded_back(config):
    text = dump_config(config)

    assert_no_secret(text)
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert {p.path for p in caught.value.problems} == {
        "trunks[0].inbound.digest.password",
        "trunks[0].outbound_auth.password",
    }


def test_dump_config_with_reveal_round_trips(config):
    text = dump_config(config, reveal_secrets=True)

    assert parse_config(text) == config
    assert yaml.safe_load(text)["trunks"][0]["inbound"]["digest"]["password"] == (
        INBOUND_PASSWORD
    )


def test_secrets_hidden_in_logs(config, caplog):
    logger = logging.getLogger("sbc.config.test")

    with caplog.at_level(logging.DEBUG, logger="sbc.config.test"):
        logger.debug("loaded %s", config)
        logger.debug("trunk %r", config.trunks[0])

    assert caplog.records
    assert_no_secret(caplog.text)


def test_secret_not_echoed_by_yaml_syntax_error():
    # The library's own message quotes the bad line; ours must not.
    text = TEXT.replace(
        f"password: '{OUTBOUND_PASSWORD}'", f"password: '{OUTBOUND_PASSWORD}"
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(text)

    assert_no_secret(str(caught.value))
    assert caught.value.problems[0].line is not None


def test_secret_not_echoed_by_validation_error():
    text = TEXT.replace(f"'{OUTBOUND_PASSWORD}'", "[904211, 17]").replace(
        "realm: sbc.example.com", "realm: ''"
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(text)

    message = str(caught.value)
    assert "904211" not in message
    assert INBOUND_PASSWORD not in message
    assert "trunks[0].outbound_auth.password" in message
