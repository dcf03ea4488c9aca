"""Logging for the appliance: one logger per layer, context on every line.

Every layer logs through the standard library under a fixed name
(``sbc.sip.transport``, ``sbc.sip.transaction``, ``sbc.sip.core`` ...), so an
operator can raise or lower one layer at a time. Lines about one message or
call carry its Call-ID, Via branch and peer address through
:class:`SipContextAdapter`. SIP messages are only ever logged through
:class:`MessageLogger`, which redacts credentials before formatting.

Lines are text by default; ``SBC_LOG_FORMAT=json`` (or ``setup_logging``'s
``log_format="json"``) writes one JSON object per line instead, with the
context fields as keys of their own (:class:`JsonFormatter`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRANSPORT_LOGGER = "sbc.sip.transport"
TRANSACTION_LOGGER = "sbc.sip.transaction"
CORE_LOGGER = "sbc.sip.core"
MESSAGE_LOGGER = "sbc.sip.message"
CLI_LOGGER = "sbc.cli"

LOG_FILE_NAME = "sbc.log"
REDACTED = "<redacted>"
LOG_FORMAT_ENV = "SBC_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

_LINE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Header fields whose whole value is a credential (RFC 3261 §20.7, §20.28)
# or derived from one (RFC 2617 §3.2.3 rspauth); compared in lower case.
_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "authentication-info",
        "proxy-authentication-info",
    }
)
# Extension headers that vendors use for tokens and keys.
_CREDENTIAL_NAME = re.compile(r"token|secret|passw|api-?key|credential", re.I)
# A password in SIP URI userinfo (RFC 3261 §19.1.1 deprecates it, peers
# still send it): keep the user, hide what follows the colon.
_URI_PASSWORD = re.compile(rb"(sips?:[^:@\s;>,]+):[^@\s;>,]+@", re.I)
# SDES keys (RFC 4568 §9.1 "inline:") and MIKEY blobs (RFC 4567) in SDP.
_SDP_INLINE_KEY = re.compile(rb"(inline:)[^|\s]+", re.I)
_SDP_KEY_MGMT = re.compile(rb"^(a=key-mgmt:\S+ ).*$", re.I | re.M)


class SipContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with the SIP context it was made with.

    The context (``call_id``, ``branch``, ``peer``; any subset) is also
    passed on in ``extra`` so structured handlers can read it as fields.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        context = self.extra or {}
        prefix = " ".join(f"{k}={v}" for k, v in context.items() if v is not None)
        extra = dict(kwargs.get("extra") or {})
        extra.update(context)
        kwargs["extra"] = extra
        return (f"[{prefix}] {msg}" if prefix else msg), kwargs


def with_context(
    logger: logging.Logger,
    *,
    call_id: str | None = None,
    branch: str | None = None,
    peer: str | None = None,
) -> SipContextAdapter:
    """A view of ``logger`` whose lines name the call, transaction and peer."""
    context: Mapping[str, object] = {
        "call_id": call_id,
        "branch": branch,
        "peer": peer,
    }
    return SipContextAdapter(logger, context)


def format_peer(address: tuple[str, int], transport: str) -> str:
    """``udp:192.0.2.1:5060`` or ``tcp:[2001:db8::1]:5060``."""
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"{transport.lower()}:{host}:{port}"


def redact_message(data: bytes) -> bytes:
    """A copy of a SIP message safe to log: credentials replaced.

    Works on raw bytes, so it also redacts messages that failed to parse.
    Folded continuation lines of a credential header are redacted too.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    lines = head.splitlines(keepends=True)
    redacting = False
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if redacting:
                lines[index] = b" " + REDACTED.encode() + _line_end(line)
            continue
        name, colon, _ = line.partition(b":")
        redacting = bool(colon) and _is_credential_header(name)
        if redacting:
            lines[index] = name + b": " + REDACTED.encode() + _line_end(line)
    redacted_head = _URI_PASSWORD.sub(
        rb"\1:" + REDACTED.encode() + b"@", b"".join(lines)
    )
    return redacted_head + separator + _redact_sdp(body)


def _is_credential_header(raw_name: bytes) -> bool:
    name = raw_name.strip().decode("latin-1").lower()
    return name in _CREDENTIAL_HEADERS or bool(_CREDENTIAL_NAME.search(name))


def _line_end(line: bytes) -> bytes:
    return line[len(line.rstrip(b"\r\n")) :]


def _redact_sdp(body: bytes) -> bytes:
    body = _SDP_INLINE_KEY.sub(rb"\1" + REDACTED.encode(), body)
    return _SDP_KEY_MGMT.sub(rb"\1" + REDACTED.encode(), body)


class MessageLogger:
    """Logs whole SIP messages at DEBUG, redacted, with direction and peer.

    Redaction costs a copy of the message, so it is done only when DEBUG is
    enabled for the ``sbc.sip.message`` logger.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(MESSAGE_LOGGER)

    def received(self, data: bytes, peer: tuple[str, int], transport: str) -> None:
        self._log("<-", data, peer, transport)

    def sent(self, data: bytes, peer: tuple[str, int], transport: str) -> None:
        self._log("->", data, peer, transport)

    def _log(
        self, direction: str, data: bytes, peer: tuple[str, int], transport: str
    ) -> None:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return
        text = redact_message(data).decode("utf-8", "backslashreplace")
        self._logger.debug(
            "%s %s %d bytes\n%s",
            direction,
            format_peer(peer, transport),
            len(data),
            text,
            extra={"peer": format_peer(peer, transport)},
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context.

    The context is every ``extra`` field of the record (``call_id``,
    ``branch``, ``peer`` from :class:`SipContextAdapter`, or any other a
    layer passes). Messages are formatted as in text mode, so what was
    redacted there (credentials in SIP messages) is redacted here too.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


# The attributes every LogRecord has; the rest came in through ``extra``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def setup_logging(
    level: str | int, data_dir: Path | None = None, log_format: str | None = None
) -> None:
    """Send every ``sbc.*`` logger to stderr and, with a data dir, to a file.

    ``log_format`` is ``text`` or ``json``; None reads SBC_LOG_FORMAT (text
    when unset). Raises ValueError for another format. Called once by the
    CLI; libraries and tests leave handlers alone.
    """
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger("sbc")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter() if chosen == "json" else logging.Formatter(_LINE_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if data_dir is not None:
        handlers.append(logging.FileHandler(data_dir / LOG_FILE_NAME, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.propagate = False
