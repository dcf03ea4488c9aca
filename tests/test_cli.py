"""The ``sbc`` console script, run as a subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from interop.sbc_process import SbcProcess

import sbc
from sbc.cli import COMMANDS

SBC = Path(sys.executable).with_name("sbc")


def sbc_run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SBC), *arguments], capture_output=True, text=True, timeout=30, check=False
    )


def options_over_udp(address: tuple[str, int]) -> bytes:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address[0], 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        sock.sendto(
            (
                "OPTIONS sip:sbc.example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bKcli\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:cli@example.com>;tag=1\r\n"
                "To: <sip:sbc.example.com>\r\nCall-ID: cli-1\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            address,
        )
        return sock.recv(65535)


def test_help_lists_every_command():
    result = sbc_run("--help")

    assert result.returncode == 0
    for command in COMMANDS:
        assert command.name in result.stdout
        assert command.help in result.stdout


def test_serve_help_documents_every_option():
    result = sbc_run("serve", "--help")

    assert result.returncode == 0
    for option in (
        "--listen",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--idle-timeout",
        "--no-route-delay",
        "--data-dir",
        "--log-level",
        "--no-answer-timeout",
        "--admin-listen",
        "--db",
        "--node-name",
        "--reconcile-interval",
    ):
        assert option in result.stdout


def test_version_prints_package_version():
    result = sbc_run("version")

    assert result.returncode == 0
    assert result.stdout == f"sbc {sbc.__version__}\n"


def test_no_command_prints_usage_and_fails():
    result = sbc_run()

    assert result.returncode == 2
    assert "usage: sbc" in result.stderr


@pytest.mark.parametrize(
    "listen",
    [
        "udp:localhost:5060",
        "sctp:127.0.0.1:5060",
        "udp:::1:5060",
        "tcp:127.0.0.1:99999",
    ],
)
def test_serve_rejects_bad_listen_value(listen, tmp_path):
    result = sbc_run("serve", "--data-dir", str(tmp_path), "--listen", listen)

    assert result.returncode == 2
    assert "--listen" in result.stderr


def test_serve_tls_listener_without_certificate_fails(tmp_path):
    result = sbc_run(
        "serve", "--data-dir", str(tmp_path), "--listen", "tls:127.0.0.1:0"
    )

    assert result.returncode == 2
    assert "--tls-cert" in result.stderr


def test_serve_port_in_use_exits_with_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]

        result = sbc_run(
            "serve", "--data-dir", str(tmp_path), "--listen", f"udp:127.0.0.1:{port}"
        )

    assert result.returncode == 1
    assert "cannot listen" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_then_stops_cleanly_on_signal(tmp_path, signum):
    data_dir = tmp_path / "data"
    listen = [
        "--listen",
        "udp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
        "--listen",
        "udp:[::1]:0",
    ]
    with SbcProcess(data_dir, *listen) as process:
        reply_v4 = options_over_udp(process.address("UDP"))
        reply_v6 = options_over_udp(process.address("UDP", ipv6=True))

        returncode = process.stop(signum)

    assert reply_v4.startswith(b"SIP/2.0 200 OK\r\n")
    assert reply_v6.startswith(b"SIP/2.0 200 OK\r\n")
    assert returncode == 0
    assert [spec.transport for spec in process.listening] == ["UDP", "TCP", "UDP"]
    assert "stopped" in process.log_text()
    assert process.counters("sip")["requests"] == 2


def test_serve_default_data_dir_is_created_in_working_directory(tmp_path):
    process = subprocess.Popen(
        [str(SBC), "serve", "--listen", "udp:127.0.0.1:0", "--admin-listen", "off"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for _ in range(50):
            if "serving" in process.stderr.readline():
                break
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    assert returncode == 0
    assert (tmp_path / "data" / "sbc.log").is_file()


EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "single-node.yaml"


def test_config_check_accepts_the_shipped_example():
    result = sbc_run("config", "check", str(EXAMPLE))

    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("ok")


def test_config_check_names_file_line_and_field_of_each_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - name: a\n    transport: udpx\n    port: 5060\n")

    result = sbc_run("config", "check", str(bad))

    assert result.returncode == 1
    assert f"{bad}:3: listeners[0].transport:" in result.stdout
    assert f"{bad}:2: listeners[0].address: required field missing" in result.stdout


def test_serve_refuses_to_start_with_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: 7\n")

    result = sbc_run("serve", "--config", str(bad), "--data-dir", str(tmp_path))

    assert result.returncode == 2
    assert str(bad) in result.stderr


def test_db_upgrade_then_user_add_generates_a_password_shown_once(tmp_path):
    upgraded = sbc_run("db", "upgrade", "--data-dir", str(tmp_path))
    added = sbc_run(
        "user", "add", "ops", "--role", "operator", "--data-dir", str(tmp_path)
    )
    again = sbc_run("user", "add", "ops", "--data-dir", str(tmp_path))

    assert upgraded.returncode == 0 and "up to date" in upgraded.stdout
    assert added.returncode == 0
    password = added.stdout.split("password (shown once): ")[1].strip()
    assert len(password) >= 12
    assert again.returncode == 1 and "already exists" in again.stderr
    assert password not in again.stdout + again.stderr


def test_user_add_reads_the_password_from_stdin_and_refuses_a_short_one(tmp_path):
    short = subprocess.run(
        [
            str(SBC),
            "user",
            "add",
            "eve",
            "--password-stdin",
            "--data-dir",
            str(tmp_path),
        ],
        input="short\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert short.returncode == 1
    assert "12 characters" in short.stderr
    assert "short" not in short.stdout


def test_config_apply_then_export_round_trips_the_example(tmp_path):
    first = sbc_run("config", "apply", str(EXAMPLE), "--data-dir", str(tmp_path))
    second = sbc_run("config", "apply", str(EXAMPLE), "--data-dir", str(tmp_path))
    exported = sbc_run(
        "config", "export", "--reveal-secrets", "--data-dir", str(tmp_path)
    )
    copy = tmp_path / "exported.yaml"
    copy.write_text(exported.stdout)

    assert first.returncode == 0 and "created=7" in first.stdout
    assert second.returncode == 0 and "unchanged=7" in second.stdout
    assert sbc_run("config", "check", str(copy)).returncode == 0


def test_config_apply_refuses_a_bad_file_and_changes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: 7\n")

    result = sbc_run("config", "apply", str(bad), "--data-dir", str(tmp_path))
    exported = sbc_run("config", "export", "--data-dir", str(tmp_path))

    assert result.returncode == 1
    assert str(bad) in result.stdout
    assert "trunks" not in exported.stdout or "name:" not in exported.stdout


def test_database_commands_report_an_unusable_database_in_one_line(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    refused = sbc_run(
        "db", "upgrade", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x"
    )
    blocked = sbc_run("config", "export", "--data-dir", str(not_a_dir))

    assert refused.returncode == 1 and blocked.returncode == 1
    assert "database unusable" in refused.stderr
    assert "Traceback" not in refused.stderr + blocked.stderr
