"""Parse whole SIP messages (RFC 3261 §7 and §25) and validate requests.

The header block is split with str methods and values are kept raw; typed
values are parsed later, on demand, by the message accessors. Non-UTF-8
bytes are kept as surrogate escapes so that they serialize unchanged.
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .headers import is_call_id, is_method
from .message import COMPACT_FORMS, Headers, Request, Response
from .uri import SipUri

_FieldList = list[tuple[str, str, str]]

# Header names already checked against the token grammar, mapped to their
# look-up keys. Bounded so that a flood of invented names cannot grow it.
_KNOWN_NAMES: dict[str, str] = {}
_KNOWN_NAMES_LIMIT = 4096
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_STRAY_LINE_BREAK = "Bad Request: bare CR or LF inside the header block"
_SINGLE_VALUED = frozenset(
    {"from", "to", "call-id", "cseq", "max-forwards", "content-type", "expires"}
)


def parse_message(data: bytes) -> Request | Response:
    """Parse one whole message: a UDP datagram or one frame from the framer.

    The body is framed by Content-Length (RFC 3261 §18.3): when it is
    missing the rest of ``data`` is the body, a larger value is an error,
    and bytes after the body are discarded. Raises SipParseError only.
    """
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    if data.startswith((b"\r", b"\n")):
        data = data.lstrip(b"\r\n")
    head_end = data.find(b"\r\n\r\n")
    if head_end >= 0:
        lines = data[:head_end].decode("utf-8", "surrogateescape").split("\r\n")
        body_start = head_end + 4
    else:
        lines, body_start = _split_tolerant(data)
    if not lines[0]:
        raise SipParseError("Bad Request: empty message")
    # RFC 3261 §7.3.1, §25.1: CR and LF come only as line ends. A lone one
    # kept in a value would reach the other leg, where a peer splitting on
    # bare LF reads a header the sender smuggled in. The split took the line
    # ends away, so any CR or LF left is a bare one; searching the joined
    # lines finds it in a third of the time counting would take.
    joined = "".join(lines)
    stray = "\r" in joined or "\n" in joined
    error = _STRAY_LINE_BREAK if stray else None
    if lines[0].startswith("SIP/"):
        return _parse_response(lines, data, body_start, error)
    return _parse_request(lines, data, body_start, error)


def _split_tolerant(data: bytes) -> tuple[list[str], int]:
    """Split a header block ended by bare LFs, or by nothing at all."""
    head_end = data.find(b"\n\n")
    if head_end >= 0:
        text = data[:head_end].decode("utf-8", "surrogateescape")
        return [line.rstrip("\r") for line in text.split("\n")], head_end + 2
    text = data.decode("utf-8", "surrogateescape").rstrip("\r\n")
    if "\r\n" in text:
        return text.split("\r\n"), len(data)
    return [line.rstrip("\r") for line in text.split("\n")], len(data)


def _parse_request(
    lines: list[str], data: bytes, body_start: int, error: str | None
) -> Request:
    headers, field_error = _parse_fields(lines)
    error = error or field_error
    request = Request("", "", headers)
    try:
        _read_request_line(lines[0], request)
        if error is not None:
            raise SipParseError(error)
        request.body = _frame_body(headers, data, body_start)
    except SipParseError as exc:
        exc.request = _answerable(request)
        raise
    return request


def _read_request_line(line: str, request: Request) -> None:
    """Fill method, Request-URI and version, as far as they are readable.

    RFC 3261 §25.1: Method SP Request-URI SP SIP-Version. Extra spaces
    between the elements are tolerated (RFC 4475 §3.1.2.9 and §3.1.2.10
    allow either choice); whitespace inside the URI is not (§3.1.2.8).
    """
    method, _, rest = line.partition(" ")
    if not is_method(method):
        raise SipParseError("Bad Request: malformed method")
    request.method = method
    uri, _, version = rest.strip(" ").rpartition(" ")
    request.uri = uri = uri.rstrip(" ")
    request.version = version
    # A bare CR or LF must not reach the 505 that echoes the version.
    if not uri or " " in uri or "\t" in line or "\r" in line or "\n" in line:
        raise SipParseError("Bad Request: malformed request line")
    if version != "SIP/2.0":
        _check_version(version)


def _check_version(version: str) -> None:
    name, slash, number = version.partition("/")
    if not slash or name.upper() != "SIP":
        raise SipParseError("Bad Request: malformed SIP version")
    if number != "2.0":
        raise SipParseError(f"Version Not Supported: {version}", status_code=505)


def _parse_response(
    lines: list[str], data: bytes, body_start: int, error: str | None
) -> Response:
    try:
        status, reason, version = _parse_status_line(lines[0])
        headers, field_error = _parse_fields(lines)
        error = error or field_error
        if error is not None:
            raise SipParseError(error)
        body = _frame_body(headers, data, body_start)
    except SipParseError as exc:
        exc.is_response = True
        raise
    return Response(status, reason, headers, body, version)


def _parse_status_line(line: str) -> tuple[int, str, str]:
    # RFC 3261 §7.2: SIP-Version SP Status-Code SP Reason-Phrase; a missing
    # reason phrase is tolerated.
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0":
        _check_version(version)
    # RFC 3261 §7.2: a three-digit code whose first digit is the class 1-6.
    if (
        len(code) != 3
        or not code.isdigit()
        or not code.isascii()
        or code[0] not in "123456"
    ):
        raise SipParseError("Bad Request: malformed status code")
    return int(code), reason, version


def _parse_fields(lines: list[str]) -> tuple[Headers, str | None]:
    """The header fields, unfolded; and the first error.

    A bad line is skipped so that the rest of the request can still be used
    to answer with 400.
    """
    fields: _FieldList = []
    # The first value of each header, for Headers' look-ups: recorded here
    # it costs less than a pass of its own, and serves the Content-Length
    # and repeated-header checks at once.
    first_values: dict[str, str] | None = {}
    error = None
    known = _KNOWN_NAMES
    for line in lines[1:]:
        # The common line: a name seen before, a colon, a value. Known names
        # are tokens, so a continuation line never takes this path.
        name, colon, value = line.partition(":")
        key = known.get(name)
        if key is not None and colon:
            value = value.strip(" \t")
            fields.append((key, name, value))
            if first_values is not None:
                first_values.setdefault(key, value)
            continue
        # A fold, a new name or a bad line: rare, and a fold may change a
        # value already recorded, so Headers indexes the finished fields.
        first_values = None
        problem = _add_unusual_line(line, fields)
        error = error or problem
    return Headers._from_parsed(fields, first_values), error


def _add_unusual_line(line: str, fields: _FieldList) -> str | None:
    """Add a continuation line or a field with a new name; or name the fault."""
    if line[:1] in (" ", "\t"):
        # RFC 3261 §7.3.1: a line starting with whitespace continues the
        # previous field; the fold counts as one SP.
        if not fields:
            return "Bad Request: continuation line before any header"
        key, name, value = fields[-1]
        continued = line.strip(" \t")
        fields[-1] = (key, name, f"{value} {continued}" if value else continued)
        return None
    name, colon, value = line.partition(":")
    name = name.rstrip(" \t")
    new_key = _header_name_key(name)
    if new_key is None or not colon:
        return f"Bad Request: malformed header line {line[:40]!r}"
    fields.append((new_key, name, value.strip(" \t")))
    return None


def _header_name_key(name: str) -> str | None:
    if not _HEADER_NAME_RE.fullmatch(name):
        return None
    lname = name.lower()
    key = COMPACT_FORMS.get(lname, lname)
    if len(_KNOWN_NAMES) < _KNOWN_NAMES_LIMIT:
        _KNOWN_NAMES[name] = key
    return key


def _frame_body(headers: Headers, data: bytes, body_start: int) -> bytes:
    """The body as framed by Content-Length (RFC 3261 §18.3, §20.14)."""
    length_text = headers.first("content-length")
    if length_text is None:
        return data[body_start:]
    if headers._has_repeated_names():
        lengths = headers.get_all("content-length")
        if lengths.count(length_text) != len(lengths):
            raise SipParseError(
                "Bad Request: conflicting Content-Length values",
                stream_unusable=True,
            )
    length = parse_content_length(length_text)
    available = len(data) - body_start
    if length > available:
        raise SipParseError("Bad Request: Content-Length exceeds body")
    return data[body_start : body_start + length]


def parse_content_length(text: str) -> int:
    """A Content-Length value: decimal digits only, so no sign (§20.14)."""
    if not text.isdigit() or not text.isascii():
        if text.startswith("-") and text[1:].isdigit():
            raise SipParseError("Bad Request: negative Content-Length")
        raise SipParseError("Bad Request: malformed Content-Length")
    if len(text) > 10:
        raise SipParseError("Bad Request: Content-Length too large")
    return int(text)


def _answerable(request: Request) -> Request | None:
    """The partial request if a 400 can be built from it, else None.

    make_response copies the raw header values, so their presence is enough;
    a top Via that does not parse leaves routing to the source address.
    """
    headers = request.headers
    if not request.method or not all(key in headers for key in _MANDATORY):
        return None
    # The 400 copies these values: one with a bare CR or LF cannot be sent.
    for key in _MANDATORY:
        if any("\r" in value or "\n" in value for value in headers.get_all(key)):
            return None
    return request


def validate_request(request: Request) -> None:
    """Check what a UAS needs before the transaction layer sees a request.

    Checks the top Via (it parses; a branch, when present, is not empty;
    the other Via values are parsed when read),
    From, To, Call-ID, CSeq (number below 2**31 and method matching the
    request line, RFC 3261 §8.1.1.5), Max-Forwards (0-255), that no
    single-valued header is repeated, and the Request-URI (no URI headers,
    §19.1.5), raising SipParseError (400) naming the header.
    """
    try:
        _check_single_valued(request.headers)
        request.top_via  # noqa: B018 - parsing is the check
        request.from_tag  # noqa: B018 - reading it checks the whole From
        request.to_tag  # noqa: B018
        if not is_call_id(request.call_id):
            raise SipParseError("Bad Request: malformed Call-ID")
        if request.cseq.method != request.method:
            raise SipParseError("Bad Request: CSeq method does not match request line")
        request.max_forwards  # noqa: B018
        _check_request_uri(request)
    except SipParseError as exc:
        exc.request = _answerable(request)
        raise


def _check_single_valued(headers: Headers) -> None:
    # RFC 3261 §7.3.1: only list headers may appear more than once.
    if not headers._has_repeated_names():
        return
    seen = set()
    for key, name, _ in headers._fields:
        if key in _SINGLE_VALUED:
            if key in seen:
                raise SipParseError(f"Bad Request: more than one {name} header")
            seen.add(key)


def _check_request_uri(request: Request) -> None:
    uri = request.request_uri
    # RFC 3261 §19.1.5: header components are not allowed in a Request-URI.
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("Bad Request: Request-URI carries URI headers")


def validate_response(response: Response) -> None:
    """Check Via, From, To, Call-ID and CSeq of a response.

    A failing response is discarded by the caller (is_response is set).
    """
    try:
        response.top_via  # noqa: B018 - parsing is the check
        response.from_tag  # noqa: B018 - reading it checks the whole From
        response.to_tag  # noqa: B018
        response.cseq  # noqa: B018
        if not is_call_id(response.call_id):
            raise SipParseError("Bad Request: malformed Call-ID")
    except SipParseError as exc:
        exc.is_response = True
        raise
