"""JSON log lines: one object per line, context as fields, secrets redacted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbc.log import (
    LOG_FORMAT_ENV,
    MessageLogger,
    setup_logging,
    with_context,
)

DIGEST_RESPONSE = "6629fae49393a05397450978507c4ef1"
SECRET_IN_URI = "hunter2-uri"

REGISTER = (
    "REGISTER sip:registrar.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    f"From: <sip:alice:{SECRET_IN_URI}@example.com>;tag=1\r\n"
    "To: <sip:alice@example.com>\r\nCall-ID: reg-1@192.0.2.1\r\nCSeq: 2 REGISTER\r\n"
    'Authorization: Digest username="alice", realm="example.com",\r\n'
    f' nonce="abc", uri="sip:registrar.example.com", response="{DIGEST_RESPONSE}"\r\n'
    "Content-Length: 0\r\n\r\n"
).encode()


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    setup_logging("DEBUG", tmp_path, log_format="json")
    yield tmp_path / "sbc.log"
    root = logging.getLogger("sbc")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = True
    root.setLevel(logging.NOTSET)


def _lines(path: Path) -> list[dict]:
    for handler in logging.getLogger("sbc").handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_line_carries_the_sip_context_as_fields(json_log):
    log = with_context(
        logging.getLogger("sbc.sip.core"),
        call_id="c1@x",
        branch="z9hG4bK1",
        peer="udp:192.0.2.1:5060",
    )
    log.info("answered %d", 480)

    [entry] = _lines(json_log)
    assert entry["level"] == "INFO" and entry["logger"] == "sbc.sip.core"
    assert entry["message"].endswith("answered 480")
    assert (entry["call_id"], entry["branch"], entry["peer"]) == (
        "c1@x",
        "z9hG4bK1",
        "udp:192.0.2.1:5060",
    )
    assert entry["time"].endswith("+00:00")


def test_json_sip_message_is_one_line_with_credentials_redacted(json_log):
    MessageLogger().received(REGISTER, ("192.0.2.1", 5060), "UDP")

    text = json_log.read_text()
    assert text.count("\n") == 1
    [entry] = _lines(json_log)
    assert entry["peer"] == "udp:192.0.2.1:5060"
    assert "Authorization: <redacted>" in entry["message"]
    assert DIGEST_RESPONSE not in text and SECRET_IN_URI not in text
    assert "REGISTER sip:registrar.example.com" in entry["message"]


def test_json_exception_and_odd_extra_stay_on_one_line(json_log):
    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        logging.getLogger("sbc.web").exception(
            "failed", extra={"spi": Opaque(), "count": 3}
        )

    [entry] = _lines(json_log)
    assert "ValueError: broken" in entry["exception"]
    assert entry["spi"] == "opaque-value" and entry["count"] == 3


def test_log_format_from_environment(tmp_path, monkeypatch, json_log):
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    setup_logging("INFO", tmp_path)
    logging.getLogger("sbc.cli").info("started")
    assert _lines(tmp_path / "sbc.log")[-1]["message"] == "started"

    monkeypatch.setenv(LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="text, json"):
        setup_logging("INFO", tmp_path)
