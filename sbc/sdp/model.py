"""The SDP model: a session description kept line by line (RFC 8866).

Every line is kept as a ``(type, value)`` pair in its original order, so
whatever the SBC does not touch is written back as it came (only the line
ends become CRLF). Typed views (`Origin`, `Connection`, the m= fields) are
parsed from those lines and written back into them when changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import NotAcceptableHere, SdpSyntaxError

Line = tuple[str, str]
"""One SDP line: its type letter and the text after ``=``."""

MAX_BODY_SIZE = 65_536
MAX_LINES = 4_096
MAX_MEDIA = 64

# RFC 8866 §5: the type letters defined for the session and media sections.
_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")
_ADDRESS_TYPES = frozenset(("IP4", "IP6"))
_DIRECTIONS = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))


@dataclass(slots=True)
class Origin:
    """The o= line (RFC 8866 §5.2)."""

    username: str
    session_id: str
    session_version: int
    net_type: str
    addr_type: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        fields = value.split(" ")
        if len(fields) != 6:
            raise SdpSyntaxError("o= line needs six fields")
        username, session_id, version, net_type, addr_type, address = fields
        if not session_id.isdigit() or not version.isdigit() or len(version) > 20:
            raise SdpSyntaxError("o= session id and version must be numbers")
        _check_address_type(net_type, addr_type, address)
        return cls(username, session_id, int(version), net_type, addr_type, address)

    def to_value(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """A c= line (RFC 8866 §5.7); ``address`` keeps any /ttl/count suffix."""

    net_type: str
    addr_type: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        fields = value.split(" ")
        if len(fields) != 3:
            raise SdpSyntaxError("c= line needs three fields")
        _check_address_type(*fields)
        return cls(*fields)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """The c= line naming a unicast address; IPv6 goes bare, without brackets."""
        return cls("IN", address_type(address), address)

    @property
    def is_hold(self) -> bool:
        """True for the RFC 2543 hold address (RFC 3264 §8.4)."""
        return self.address in ("0.0.0.0", "::")

    def to_value(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


def address_type(address: str) -> str:
    """The SDP addrtype of a literal address: IP6 when it has a colon."""
    return "IP6" if ":" in address else "IP4"


def _check_address_type(net_type: str, addr_type: str, address: str) -> None:
    # RFC 8866 §5.7: only "IN" with IP4/IP6 is defined; others are not served.
    if not net_type or not addr_type or not address:
        raise SdpSyntaxError("empty network or address field")
    if net_type != "IN" or addr_type not in _ADDRESS_TYPES:
        raise NotAcceptableHere(f"network type {net_type} {addr_type} not served")


class _Lines:
    """Attribute helpers shared by the session and media sections."""

    __slots__ = ()
    lines: list[Line]

    def attributes(self, name: str) -> Iterator[str]:
        """Values of every ``a=name`` or ``a=name:value`` line, in order."""
        prefix = name + ":"
        for kind, value in self.lines:
            if kind != "a":
                continue
            if value.startswith(prefix):
                yield value[len(prefix) :]
            elif value == name:
                yield ""

    def attribute(self, name: str) -> str | None:
        """The first value of attribute ``name``, or None when absent."""
        return next(self.attributes(name), None)

    def has_attribute(self, name: str) -> bool:
        return self.attribute(name) is not None

    def remove_attributes(self, *names: str) -> None:
        wanted = set(names)
        self.lines[:] = [
            line
            for line in self.lines
            if line[0] != "a" or _attribute_name(line[1]) not in wanted
        ]

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace the first ``a=name`` line in place (dropping others) or append."""
        text = name if value is None else f"{name}:{value}"
        lines, placed = [], False
        for line in self.lines:
            if line[0] == "a" and _attribute_name(line[1]) == name:
                if not placed:
                    lines.append(("a", text))
                    placed = True
                continue
            lines.append(line)
        if not placed:
            lines.append(("a", text))
        self.lines[:] = lines

    @property
    def direction(self) -> str | None:
        """The last direction attribute of this section (RFC 8866 §6.7)."""
        found = None
        for kind, value in self.lines:
            if kind == "a" and value in _DIRECTIONS:
                found = value
        return found

    @property
    def connection(self) -> Connection | None:
        for kind, value in self.lines:
            if kind == "c":
                return Connection.parse(value)
        return None

    def set_connection(self, connection: Connection) -> None:
        """Rewrite every c= line of this section (several only for layered media)."""
        value = connection.to_value()
        self.lines[:] = [(k, value if k == "c" else v) for k, v in self.lines]


def _attribute_name(value: str) -> str:
    colon = value.find(":")
    return value if colon < 0 else value[:colon]


@dataclass(slots=True, repr=False)
class MediaDescription(_Lines):
    """One media section: the m= fields and the lines under it, in order."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: list[str]
    lines: list[Line]

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        # RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
        fields = value.split(" ")
        if len(fields) < 4 or not all(fields):
            raise SdpSyntaxError("m= line needs media, port, proto and a format")
        media, port_text, proto, *formats = fields
        port_text, slash, count_text = port_text.partition("/")
        port = _parse_port(port_text)
        count = None
        if slash:
            count = _parse_port(count_text)
            if count == 0:
                raise SdpSyntaxError("m= port count must be positive")
        return cls(media, port, count, proto, formats, [])

    def m_line_value(self) -> str:
        port = (
            self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        )
        return f"{self.media} {port} {self.proto} {' '.join(self.formats)}"

    def __repr__(self) -> str:
        # Attribute lines may hold SDES keys: never show them.
        return f"MediaDescription({self.m_line_value()!r}, {len(self.lines)} lines)"


def _parse_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65_535:
        raise SdpSyntaxError("m= port is not a number from 0 to 65535")
    return int(text)


@dataclass(slots=True, repr=False)
class SessionDescription(_Lines):
    """A parsed SDP body: session-level lines and the media sections."""

    lines: list[Line]
    media: list[MediaDescription]

    @classmethod
    def parse(cls, body: bytes) -> SessionDescription:
        """Parse an SDP body; raises `SdpSyntaxError` (400) or `NotAcceptableHere`.

        LF-only line ends and a last line without its CRLF are accepted.
        """
        if len(body) > MAX_BODY_SIZE:
            raise SdpSyntaxError("SDP body too large")
        # surrogateescape keeps non-UTF-8 bytes in i= or s= lossless.
        text = body.decode("utf-8", "surrogateescape")
        raw_lines = text.split("\n")
        while raw_lines and raw_lines[-1] in ("", "\r"):
            raw_lines.pop()
        if len(raw_lines) > MAX_LINES:
            raise SdpSyntaxError("SDP body has too many lines")
        return _parse_lines(raw_lines)

    @property
    def origin(self) -> Origin:
        for kind, value in self.lines:
            if kind == "o":
                return Origin.parse(value)
        raise SdpSyntaxError("no o= line")

    def set_origin(self, origin: Origin) -> None:
        value = origin.to_value()
        self.lines = [(k, value if k == "o" else v) for k, v in self.lines]

    def set_session_connection(self, connection: Connection) -> None:
        """Write the session-level c= line, adding it in its RFC 8866 §5 place."""
        if any(kind == "c" for kind, _ in self.lines):
            self.set_connection(connection)
            return
        at = next(
            (i for i, (kind, _) in enumerate(self.lines) if kind in "btrzka"),
            len(self.lines),
        )
        self.lines.insert(at, ("c", connection.to_value()))

    def to_bytes(self) -> bytes:
        """Serialize with every line, the last included, ended by CRLF."""
        parts = [f"{kind}={value}\r\n" for kind, value in self.lines]
        for section in self.media:
            parts.append(f"m={section.m_line_value()}\r\n")
            parts.extend(f"{kind}={value}\r\n" for kind, value in section.lines)
        return "".join(parts).encode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"SessionDescription({len(self.lines)} lines, media={self.media!r})"


def _parse_lines(raw_lines: list[str]) -> SessionDescription:
    session: list[Line] = []
    media: list[MediaDescription] = []
    target = session
    for number, raw in enumerate(raw_lines, 1):
        kind, value = _split_line(raw, number)
        if kind == "m":
            if len(media) == MAX_MEDIA:
                raise SdpSyntaxError("too many m= lines")
            section = MediaDescription.parse_m_line(value)
            media.append(section)
            target = section.lines
            continue
        _check_type(kind, number, in_media=target is not session)
        target.append((kind, value))
    description = SessionDescription(session, media)
    _validate(description)
    return description


def _split_line(raw: str, number: int) -> Line:
    # RFC 8866 §5: <type>=<value>, type one lowercase letter, no spaces around '='.
    line = raw[:-1] if raw.endswith("\r") else raw
    if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
        raise SdpSyntaxError(f"line {number} is not <type>=<value>")
    if "\r" in line or "\0" in line:
        raise SdpSyntaxError(f"line {number} holds a CR or NUL")
    return line[0], line[2:]


def _check_type(kind: str, number: int, *, in_media: bool) -> None:
    allowed = _MEDIA_TYPES if in_media else _SESSION_TYPES
    if kind not in allowed:
        # RFC 8866 §5: a description with a type letter we do not know is refused.
        raise SdpSyntaxError(f"line {number}: type {kind}= not allowed here")


def _validate(description: SessionDescription) -> None:
    """Check the structure the rewriter relies on (RFC 8866 §5)."""
    lines = description.lines
    if not lines or lines[0] != ("v", "0"):
        raise SdpSyntaxError("first line must be v=0")
    if sum(1 for kind, _ in lines if kind == "o") != 1:
        raise SdpSyntaxError("exactly one o= line is required")
    Origin.parse(next(value for kind, value in lines if kind == "o"))
    session_connection = _check_connections(lines)
    for section in description.media:
        connection = _check_connections(section.lines)
        if section.port != 0 and connection is None and session_connection is None:
            raise SdpSyntaxError("an active m= line has no c= line")


def _check_connections(lines: list[Line]) -> Connection | None:
    """Parse every c= line of a section; return the first."""
    found = None
    for kind, value in lines:
        if kind == "c":
            connection = Connection.parse(value)
            found = found or connection
    return found
