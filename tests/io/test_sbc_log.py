"""Redaction of credentials in logged SIP messages, and context prefixes."""

from __future__ import annotations

import logging

import pytest

from sbc.log import (
    MESSAGE_LOGGER,
    REDACTED,
    MessageLogger,
    redact_message,
    setup_logging,
    with_context,
)

SECRET = "s3cr3t-response-9f2c"

REGISTER = (
    "REGISTER sip:sbc.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKlog\r\n"
    "From: <sip:+15550101@sbc.example.com>;tag=1\r\n"
    "To: <sip:+15550101@sbc.example.com>\r\n"
    "Call-ID: log-1\r\n"
    "CSeq: 2 REGISTER\r\n"
    f'Authorization: Digest username="alice", realm="sbc", nonce="n1", response="{SECRET}"\r\n'
    f'proxy-authorization : Digest username="alice",\r\n  response="{SECRET}"\r\n'
    f"Authentication-Info: rspauth={SECRET}\r\n"
    f"X-Api-Key: {SECRET}\r\n"
    'WWW-Authenticate: Digest realm="sbc", nonce="n1"\r\n'
    "Content-Type: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_credential_headers_redacted():
    redacted = redact_message(REGISTER.encode()).decode()

    assert SECRET not in redacted
    assert redacted.count(REDACTED) == 5
    assert "Authorization: <redacted>\r\n" in redacted


def test_other_headers_kept_verbatim():
    redacted = redact_message(REGISTER.encode()).decode()

    for line in (
        "Call-ID: log-1",
        'WWW-Authenticate: Digest realm="sbc", nonce="n1"',
        "CSeq: 2 REGISTER",
    ):
        assert line in redacted


def test_folded_credential_continuation_redacted():
    redacted = redact_message(REGISTER.encode()).decode()

    assert "proxy-authorization : <redacted>\r\n <redacted>\r\n" in redacted


@pytest.mark.parametrize(
    "uri",
    [
        "sip:alice:" + SECRET + "@sbc.example.com",
        "sips:alice:" + SECRET + "@[2001:db8::1]:5061",
    ],
)
def test_password_in_uri_redacted(uri):
    data = f"OPTIONS {uri} SIP/2.0\r\nContact: <{uri}>\r\n\r\n".encode()

    redacted = redact_message(data).decode()

    assert SECRET not in redacted
    assert "alice:<redacted>@" in redacted


def test_uri_with_port_not_mistaken_for_password():
    data = b"OPTIONS sip:sbc.example.com:5060 SIP/2.0\r\nContact: <sip:192.0.2.1:5060>\r\n\r\n"

    assert redact_message(data) == data


def test_sdes_and_mikey_keys_in_sdp_redacted():
    body = (
        "v=0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SECRET}|2^20|1:32\r\n"
        f"a=key-mgmt:mikey {SECRET}\r\n"
        "a=sendrecv\r\n"
    )
    data = ("INVITE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\n" + body).encode()

    redacted = redact_message(data).decode()

    assert SECRET not in redacted
    assert "inline:<redacted>|2^20|1:32" in redacted
    assert "a=key-mgmt:mikey <redacted>" in redacted
    assert "a=sendrecv" in redacted


def test_bare_lf_message_redacted():
    data = REGISTER.replace("\r\n", "\n").encode()

    assert SECRET.encode() not in redact_message(data)


def test_message_logger_redacts_at_debug(caplog):
    logger = MessageLogger()

    with caplog.at_level(logging.DEBUG, logger=MESSAGE_LOGGER):
        logger.received(REGISTER.encode(), ("192.0.2.10", 5060), "UDP")

    assert "udp:192.0.2.10:5060" in caplog.text
    assert "Call-ID: log-1" in caplog.text
    assert SECRET not in caplog.text


def test_message_logger_silent_above_debug(caplog):
    logger = MessageLogger()

    with caplog.at_level(logging.INFO, logger=MESSAGE_LOGGER):
        logger.sent(REGISTER.encode(), ("2001:db8::1", 5060), "TCP")

    assert caplog.records == []


def test_context_adapter_prefixes_call_branch_and_peer(caplog):
    log = with_context(
        logging.getLogger("sbc.sip.core"),
        call_id="c1@x",
        branch="z9hG4bK1",
        peer="udp:192.0.2.1:5060",
    )

    with caplog.at_level(logging.INFO, logger="sbc.sip.core"):
        log.info("answered %d", 480)

    [record] = caplog.records
    assert (
        record.getMessage()
        == "[call_id=c1@x branch=z9hG4bK1 peer=udp:192.0.2.1:5060] answered 480"
    )
    assert record.call_id == "c1@x"


def test_setup_logging_writes_to_data_dir(tmp_path):
    setup_logging("INFO", tmp_path)
    try:
        logging.getLogger("sbc.sip.transport").info("hello from the test")
        for handler in logging.getLogger("sbc").handlers:
            handler.flush()

        assert "hello from the test" in (tmp_path / "sbc.log").read_text()
    finally:
        root = logging.getLogger("sbc")
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        root.propagate = True
        root.setLevel(logging.NOTSET)
