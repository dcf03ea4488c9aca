"""The functions behind ``sbc db upgrade``, ``user add``, ``config apply/export``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sbc.config import ConfigError, load_config
from web import cli_commands
from web.services import users
from web.services.errors import Conflict
from web.services.users import Role

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "single-node.yaml"

SECRET_CONFIG = """
listeners:
  - {name: edge, transport: udp, address: 127.0.0.1, port: 5060}
trunks:
  - name: carrier
    kind: carrier
    listeners: [edge]
    targets: [{host: 192.0.2.1}]
    outbound_auth: {username: acct, password: apply-secret-991}
"""


def test_db_upgrade_reports_url_without_password(tmp_path, database_url):
    shown = cli_commands.db_upgrade(tmp_path, database_url)
    assert shown.split("?")[0] in database_url


def test_config_apply_example_round_trips(tmp_path, database_url):
    counts = cli_commands.config_apply(tmp_path, EXAMPLE, database_url)
    expected = load_config(EXAMPLE)
    total = len(expected.listeners) + len(expected.trunks) + len(expected.dial_plans)
    assert counts == {"created": total, "updated": 0, "deleted": 0, "unchanged": 0}
    exported = cli_commands.config_export(tmp_path, url=database_url)
    source = tmp_path / "exported.yaml"
    source.write_text(exported)
    assert load_config(source) == expected
    again = cli_commands.config_apply(tmp_path, EXAMPLE, database_url)
    assert again["unchanged"] == total and again["created"] == 0


def test_config_apply_deletes_and_updates(tmp_path, database_url):
    cli_commands.config_apply(tmp_path, EXAMPLE, database_url)
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(SECRET_CONFIG)
    counts = cli_commands.config_apply(tmp_path, smaller, database_url)
    example = load_config(EXAMPLE)
    before = len(example.listeners) + len(example.trunks) + len(example.dial_plans)
    # "carrier" exists in the example and changes; "edge" is new; the rest go.
    assert counts == {
        "created": 1,
        "updated": 1,
        "deleted": before - 1,
        "unchanged": 0,
    }
    exported = yaml.safe_load(cli_commands.config_export(tmp_path, url=database_url))
    assert [item["name"] for item in exported["trunks"]] == ["carrier"]
    assert [item["name"] for item in exported["listeners"]] == ["edge"]


def test_config_export_secrets_only_when_asked(tmp_path, database_url):
    file = tmp_path / "secret.yaml"
    file.write_text(SECRET_CONFIG)
    cli_commands.config_apply(tmp_path, file, database_url)
    masked = cli_commands.config_export(tmp_path, url=database_url)
    assert "apply-secret-991" not in masked
    revealed = cli_commands.config_export(
        tmp_path, reveal_secrets=True, url=database_url
    )
    assert "apply-secret-991" in revealed


def test_config_apply_invalid_file_changes_nothing(tmp_path, database_url):
    cli_commands.config_apply(tmp_path, EXAMPLE, database_url)
    before = cli_commands.config_export(tmp_path, url=database_url)
    broken = tmp_path / "broken.yaml"
    broken.write_text(SECRET_CONFIG.replace("listeners: [edge]", "listeners: [nope]"))
    with pytest.raises(ConfigError, match="unknown listener"):
        cli_commands.config_apply(tmp_path, broken, database_url)
    assert cli_commands.config_export(tmp_path, url=database_url) == before


def test_user_add_generated_password_logs_in(tmp_path, database_url):
    password = cli_commands.user_add(tmp_path, "root", Role.ADMIN, url=database_url)
    assert password is not None and len(password) >= users.MIN_PASSWORD_LENGTH
    state = cli_commands.open_admin(tmp_path, database_url)
    with state.sessions() as session:
        assert users.authenticate(session, "root", password) is not None
        assert users.authenticate(session, "root", password + "x") is None
    with pytest.raises(Conflict):
        cli_commands.user_add(
            tmp_path, "root", Role.VIEWER, "long-enough-pw", database_url
        )


def test_bootstrap_admin_only_when_no_user(tmp_path, database_url):
    state = cli_commands.open_admin(tmp_path, database_url)
    password = cli_commands.bootstrap_admin(state)
    assert password is not None
    with state.sessions() as session:
        user = users.authenticate(session, "admin", password)
        assert user is not None and user.role == "admin"
    assert cli_commands.bootstrap_admin(state) is None


def test_config_apply_makes_ipsec_objects_follow_the_file(tmp_path, database_url):
    from datetime import UTC, datetime

    from web.services import config

    state = cli_commands.open_admin(tmp_path, database_url)
    profile = {
        "name": "mesh",
        "ike_proposals": [{"encryption": "aes256gcm16"}],
        "esp_proposals": [{"encryption": "aes256gcm16"}],
        "auth": "psk",
        "psk": "a-mesh-psk-value",
    }
    with state.sessions.begin() as session:
        config.create_object(
            session,
            state.box,
            actor="test",
            kind="ipsec_profile",
            data=profile,
            now=datetime.now(UTC),
        )
    counts = cli_commands.config_apply(tmp_path, EXAMPLE, database_url)
    # The example file has no IPsec profile: the stored one goes, audited.
    assert counts["deleted"] == 1
    with state.sessions() as session:
        assert config.list_objects(session, "ipsec_profile") == []
