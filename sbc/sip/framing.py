"""Split a SIP byte stream (TCP, TLS) into whole messages (RFC 3261 §18.3).

Sans-IO: the transport feeds received bytes in and gets back complete
messages, each the header block plus exactly Content-Length body bytes,
ready for parse_message, and keepalive pings to answer (RFC 5626 §4.4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MessageTooLarge, SipParseError
from .message import header_key
from .parser import parse_content_length

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A double-CRLF ping was received; the transport answers one CRLF."""


class StreamFramer:
    """Frame messages on one stream connection.

    Once it has raised SipParseError (always with ``stream_unusable``) the
    framer stays failed: the connection must be closed.
    """

    def __init__(
        self, *, max_header_bytes: int = 16384, max_body_bytes: int = 65536
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buffer = bytearray()
        self._scan_from = 0
        self._header_end = -1
        self._frame_length = -1
        self._failure: SipParseError | None = None

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add received bytes; return the messages and pings now complete."""
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        try:
            return self._drain()
        except SipParseError as exc:
            exc.stream_unusable = True
            self._failure = exc
            raise

    @property
    def mid_message(self) -> bool:
        """True while part of a message is buffered (a keepalive does not count)."""
        buffer = self._buffer
        return bool(buffer) and not _PING.startswith(bytes(buffer[:4]))

    def _drain(self) -> list[bytes | KeepAlive]:
        output: list[bytes | KeepAlive] = []
        while True:
            if self._frame_length < 0:
                if not self._skip_keepalives(output):
                    return output
                if not self._find_header_end():
                    return output
            if len(self._buffer) < self._frame_length:
                return output
            output.append(bytes(self._buffer[: self._frame_length]))
            del self._buffer[: self._frame_length]
            self._frame_length = -1
            self._scan_from = 0

    def _skip_keepalives(self, output: list[bytes | KeepAlive]) -> bool:
        """Consume CRLFs between messages; False while undecided.

        RFC 5626 §4.4.1: a double CRLF is a ping, a single CRLF a pong. A
        lone CRLF at the end of the buffer may still become a ping.
        """
        buffer = self._buffer
        while buffer.startswith(_CRLF):
            if buffer.startswith(_PING):
                output.append(KeepAlive())
                del buffer[:4]
            elif len(buffer) < 4 and _PING.startswith(bytes(buffer)):
                return False
            else:
                del buffer[:2]
        return bool(buffer)

    def _find_header_end(self) -> bool:
        buffer = self._buffer
        end = buffer.find(_PING, self._scan_from)
        if end < 0:
            if len(buffer) > self.max_header_bytes:
                raise _too_large("header block exceeds the size limit")
            self._scan_from = max(0, len(buffer) - 3)
            return False
        if end > self.max_header_bytes:
            raise _too_large("header block exceeds the size limit")
        length = _stream_content_length(bytes(buffer[:end]))
        if length > self.max_body_bytes:
            raise _too_large("body exceeds the size limit")
        self._frame_length = end + 4 + length
        return True


def _too_large(what: str) -> SipParseError:
    return SipParseError(
        f"Message Too Large: {what}",
        status_code=MessageTooLarge.status_code,
        stream_unusable=True,
    )


def _stream_content_length(head: bytes) -> int:
    """Content-Length of a header block; it is mandatory on streams (§20.14)."""
    values: list[str] = []
    in_length = False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line[:1] in (" ", "\t"):
            # A folded Content-Length continues on this line (§7.3.1).
            if in_length:
                values[-1] = (values[-1] + " " + line.strip(" \t")).strip(" ")
            continue
        name, colon, value = line.partition(":")
        in_length = bool(colon) and header_key(name.rstrip(" \t")) == "content-length"
        if in_length:
            values.append(value.strip(" \t"))
    if not values:
        raise SipParseError("Bad Request: missing Content-Length on a stream")
    if any(value != values[0] for value in values):
        raise SipParseError("Bad Request: conflicting Content-Length values")
    return parse_content_length(values[0])
