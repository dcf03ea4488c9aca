"""The SIP message model: ordered raw headers with lazy, cached typed views."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .errors import SipParseError
from .headers import (
    Challenge,
    Credentials,
    CSeq,
    MediaType,
    NameAddr,
    NameAddrParts,
    RAck,
    SessionExpires,
    Via,
    common_name_addr_parts,
    name_addr_from_parts,
    parse_bounded_int,
    parse_challenge,
    parse_contact,
    parse_credentials,
    parse_cseq,
    parse_delta_seconds,
    parse_media_type,
    parse_name_addr_general,
    parse_name_addr_list,
    parse_option_tags,
    parse_rack,
    parse_session_expires,
    parse_via,
    parse_via_value,
    split_list,
    tag_from_parts,
)
from .uri import AbsoluteUri, Params, SipUri, TelUri, Uri, parse_uri

T = TypeVar("T")

__all__ = [
    "COMPACT_FORMS",
    "AbsoluteUri",
    "CSeq",
    "Challenge",
    "Credentials",
    "Headers",
    "MediaType",
    "NameAddr",
    "Params",
    "RAck",
    "Request",
    "Response",
    "SessionExpires",
    "SipUri",
    "TelUri",
    "Uri",
    "Via",
    "header_key",
    "make_response",
    "reason_phrase",
]

# RFC 3261 §7.3.3 and the registries of later RFCs: compact form -> name.
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1); only
# these are split by Headers.values(). Unknown headers are never split.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-associated-uri",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)


def header_key(name: str) -> str:
    """The look-up key of a header name: lower case, compact form expanded."""
    key = _KEYS.get(name)
    if key is None:
        lname = name.lower()
        key = COMPACT_FORMS.get(lname, lname)
        if len(_KEYS) < _KEYS_LIMIT:
            _KEYS[name] = key
    return key


# The keys of names already seen: a B2BUA adds and reads the same few dozen
# names on every message. Bounded, so that invented names cannot grow it.
_KEYS: dict[str, str] = {}
_KEYS_LIMIT = 4096


class Headers:
    """Header fields in the order received, values raw (unfolded) text.

    Name look-ups are case-insensitive and know the compact forms. Typed
    values parsed from the fields, and an index of the first value of each
    header, are cached here; a change to a header drops what was read from
    that header only and keeps the index in step.
    """

    __slots__ = ("_fields", "_first_values", "_parsed")

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str, str]] = []
        self._first_values: dict[str, str] | None = None
        self._parsed: dict[str, Any] = {}
        for name, value in fields or ():
            self.add(name, value)

    @classmethod
    def _from_parsed(
        cls,
        fields: list[tuple[str, str, str]],
        first_values: dict[str, str] | None = None,
    ) -> Headers:
        """Adopt (key, name, value) triples built by the parser, and the
        first value of each key when the parser recorded them."""
        # Spelled with the class name: mypyc compiles no other way to skip
        # __init__ (docs/sip.md, Performance).
        headers = Headers.__new__(Headers)
        headers._fields = fields
        headers._first_values = first_values
        headers._parsed = {}
        return headers

    def _changed(self, key: str) -> None:
        # Only what was read from this header is stale: a B2BUA edits a few
        # headers of messages whose others it has read already.
        parsed = self._parsed
        if parsed:
            parsed.pop(key, None)
            derived = _DERIVED_VALUES.get(key)
            if derived is not None:
                for cached in derived:
                    parsed.pop(cached, None)

    def _index(self) -> dict[str, str]:
        """The first value of each key, built on first use.

        One pass over the fields serves every later look-up of a message,
        which is read far more often than it is changed.
        """
        index = self._first_values
        if index is None:
            # Reversed, so that the first field of a key is the one kept.
            index = {key: value for key, _, value in reversed(self._fields)}
            self._first_values = index
        return index

    def _has_repeated_names(self) -> bool:
        """Whether some header occurs in more than one field."""
        index = self._first_values
        if index is None:
            index = self._index()
        return len(index) < len(self._fields)

    def get(self, name: str) -> str | None:
        return self.first(header_key(name))

    def first(self, key: str) -> str | None:
        """The first value for an already canonical key (see header_key)."""
        index = self._first_values
        if index is None:
            index = self._index()
        return index.get(key)

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [value for field_key, _, value in self._fields if field_key == key]

    def values(self, name: str) -> list[str]:
        """Every element of the named header, split where its grammar allows."""
        key = header_key(name)
        raw = self.get_all(key)
        if key not in LIST_HEADERS:
            return raw
        return [item for value in raw for item in split_list(value, name)]

    def add(self, name: str, value: str) -> None:
        key = header_key(name)
        self._fields.append((key, name, _checked(name, value)))
        self._changed(key)
        if self._first_values is not None:
            self._first_values.setdefault(key, value)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of that name, or at the top."""
        key = header_key(name)
        index = next(
            (i for i, (field_key, _, _) in enumerate(self._fields) if field_key == key),
            0,
        )
        self._fields.insert(index, (key, name, _checked(name, value)))
        self._changed(key)
        if self._first_values is not None:
            self._first_values[key] = value

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, at the first one's place."""
        key = header_key(name)
        field = (key, name, _checked(name, value))
        index = next(
            (i for i, (field_key, _, _) in enumerate(self._fields) if field_key == key),
            None,
        )
        self.remove(name)
        if index is None:
            self._fields.append(field)
        else:
            self._fields.insert(index, field)
        if self._first_values is not None:
            self._first_values[key] = value

    def replace_first(self, key: str, value: str) -> None:
        """Give the first field of ``key`` (a canonical key) a new value, in place."""
        fields = self._fields
        index = next(i for i, field in enumerate(fields) if field[0] == key)
        name = fields[index][1]
        fields[index] = (key, name, _checked(name, value))
        self._changed(key)
        if self._first_values is not None:
            self._first_values[key] = value

    def remove(self, name: str) -> int:
        key = header_key(name)
        kept = [field for field in self._fields if field[0] != key]
        removed = len(self._fields) - len(kept)
        self._fields = kept
        self._changed(key)
        if self._first_values is not None:
            self._first_values.pop(key, None)
        return removed

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._fields))

    def forget_typed(self) -> None:
        """Drop the typed values read so far; a later read parses again.

        For a message kept long after its last reading (a finished call's
        INVITE waits out 64*T1): the raw fields are all it needs meanwhile,
        and the garbage collector need not walk its parsed values.
        """
        self._parsed.clear()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return header_key(name) in self._index()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine = [(key, value) for key, _, value in self._fields]
        return mine == [(key, value) for key, _, value in other._fields]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


# Cache entries of From and To checked by the full grammar (see _Message).
_CHECKED_KEYS = {"from": "\0checked-from", "to": "\0checked-to"}
# Cache entries read from a header besides its own typed value (see
# _Message): dropped with it when the header changes.
_DERIVED_VALUES = {
    "via": ("\0top-via",),
    "from": ("\0checked-from", "\0tag-from"),
    "to": ("\0checked-to", "\0tag-to"),
}


def _checked(name: str, value: str) -> str:
    # A CR or LF in a value set by code would split the header on the wire.
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        raise ValueError(f"line break in header {name!r}")
    return value


class _Message:
    """Typed header accessors shared by Request and Response.

    Each accessor parses its header on first use, caches the result in the
    Headers object and raises SipParseError (400) when the header is bad.
    """

    __slots__ = ()
    headers: Headers
    body: bytes

    def _typed(self, key: str, parse: Callable[[str], T]) -> T | None:
        parsed = self.headers._parsed
        if key in parsed:
            cached: T | None = parsed[key]
            return cached
        value = self.headers.first(key)
        try:
            result = None if value is None else parse(value)
        except SipParseError as exc:
            raise self._error(exc.reason) from None
        parsed[key] = result
        return result

    def _typed_all(self, key: str, parse: Callable[[str], list[T]]) -> list[T]:
        parsed = self.headers._parsed
        if key in parsed:
            return cast(list[T], parsed[key])
        result = [
            item
            for value in self.headers.get_all(key)
            for item in self._parse(parse, value)
        ]
        parsed[key] = result
        return result

    def _parse(self, parse: Callable[[str], T], value: str) -> T:
        try:
            return parse(value)
        except SipParseError as exc:
            raise self._error(exc.reason) from None

    def _error(self, reason: str) -> SipParseError:
        if isinstance(self, Response):
            return SipParseError(reason, is_response=True)
        return SipParseError(reason)

    def _required(self, key: str, display: str) -> str:
        value = self.headers.first(key)
        if value is None:
            raise self._error(f"Bad Request: missing {display} header")
        return value

    @property
    def via(self) -> list[Via]:
        return self._typed_all("via", parse_via)

    @property
    def top_via(self) -> Via:
        """The first Via value, parsed without parsing the others."""
        parsed = self.headers._parsed
        top: Via | None = parsed.get("\0top-via")
        if top is not None:
            return top
        value = self.headers.first("via")
        if value is None:
            raise self._error("Bad Request: missing Via header")
        first = value.partition(",")[0].strip(" \t") if '"' not in value else ""
        if not first:
            items = self._parse(_split_via, value)
            if not items:
                raise self._error("Bad Request: empty Via header")
            first = items[0]
        try:
            top = parse_via_value(first)
        except SipParseError as exc:
            raise self._error(exc.reason) from None
        parsed["\0top-via"] = top
        return top

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the first Via value, which the others
        follow with their raw text and order unchanged (RFC 3261 §18.2.1)."""
        row = self._required("via", "Via")
        rest = self._parse(_split_via, row)[1:] if "," in row else []
        self.headers.replace_first("via", ", ".join([str(via), *rest]))
        # The typed value is the one the new text was made from.
        self.headers._parsed["\0top-via"] = via

    @property
    def call_id(self) -> str:
        return self._required("call-id", "Call-ID")

    @property
    def cseq(self) -> CSeq:
        cseq = self._typed("cseq", parse_cseq)
        if cseq is None:
            raise self._error("Bad Request: missing CSeq header")
        return cseq

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to", "To")

    @property
    def from_tag(self) -> str | None:
        return self._tag("from", "From", "\0tag-from")

    @property
    def to_tag(self) -> str | None:
        return self._tag("to", "To", "\0tag-to")

    def _name_addr(self, key: str, display: str) -> NameAddr:
        checked = self._checked_name_addr(key, display)
        if isinstance(checked, NameAddr):
            return checked
        name_addr = name_addr_from_parts(checked)
        self.headers._parsed[_CHECKED_KEYS[key]] = name_addr
        return name_addr

    def _tag(self, key: str, display: str, tag_key: str) -> str | None:
        parsed = self.headers._parsed
        if tag_key in parsed:
            cached: str | None = parsed[tag_key]
            return cached
        checked = self._checked_name_addr(key, display)
        if isinstance(checked, NameAddr):
            tag = checked.tag
        else:
            tag = tag_from_parts(checked)
        parsed[tag_key] = tag
        return tag

    def _checked_name_addr(self, key: str, display: str) -> NameAddr | NameAddrParts:
        """From or To, checked by the full grammar and cached.

        A value of the common shape is kept as its regex groups, from which
        the tag is read and the NameAddr built only when asked for: most
        readers of From and To want only the tag.
        """
        parsed = self.headers._parsed
        checked_key = _CHECKED_KEYS[key]
        checked: NameAddr | NameAddrParts | None = parsed.get(checked_key)
        if checked is not None:
            return checked
        text = self._required(key, display).strip(" \t")
        checked = common_name_addr_parts(text)
        if checked is None:
            try:
                checked = parse_name_addr_general(text, display)
            except SipParseError as exc:
                raise self._error(exc.reason) from None
        parsed[checked_key] = checked
        return checked

    @property
    def max_forwards(self) -> int | None:
        return self._typed("max-forwards", _parse_max_forwards)

    @property
    def expires(self) -> int | None:
        """The Expires header, values over 2**32-1 clamped to it."""
        return self._typed("expires", _parse_expires)

    @property
    def min_expires(self) -> int | None:
        return self._typed("min-expires", _parse_min_expires)

    @property
    def contact(self) -> list[NameAddr]:
        return self._typed_all("contact", parse_contact)

    @property
    def route(self) -> list[NameAddr]:
        return self._typed_all("route", _parse_route)

    @property
    def record_route(self) -> list[NameAddr]:
        return self._typed_all("record-route", _parse_record_route)

    @property
    def content_type(self) -> MediaType | None:
        return self._typed("content-type", parse_media_type)

    @property
    def require(self) -> list[str]:
        return self._typed_all("require", _parse_require)

    @property
    def supported(self) -> list[str]:
        return self._typed_all("supported", _parse_supported)

    @property
    def proxy_require(self) -> list[str]:
        return self._typed_all("proxy-require", _parse_proxy_require)

    @property
    def unsupported(self) -> list[str]:
        return self._typed_all("unsupported", _parse_unsupported)

    @property
    def rseq(self) -> int | None:
        return self._typed("rseq", _parse_rseq)

    @property
    def rack(self) -> RAck | None:
        return self._typed("rack", parse_rack)

    @property
    def session_expires(self) -> SessionExpires | None:
        return self._typed("session-expires", parse_session_expires)

    @property
    def min_se(self) -> int | None:
        return self._typed("min-se", _parse_min_se)

    @property
    def authorization(self) -> list[Credentials]:
        return self._typed_all("authorization", _parse_authorization)

    @property
    def proxy_authorization(self) -> list[Credentials]:
        return self._typed_all("proxy-authorization", _parse_proxy_authorization)

    @property
    def www_authenticate(self) -> list[Challenge]:
        return self._typed_all("www-authenticate", _parse_www_authenticate)

    @property
    def proxy_authenticate(self) -> list[Challenge]:
        return self._typed_all("proxy-authenticate", _parse_proxy_authenticate)

    def _serialize(self, start_line: str) -> bytes:
        """Start line, headers as held, Content-Length set from the body."""
        body = self.body
        lines = [start_line]
        length_written = False
        for key, name, value in self.headers._fields:
            if key == "content-length":
                if length_written:
                    continue
                value = str(len(body))
                length_written = True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


def _split_via(value: str) -> list[str]:
    return split_list(value, "Via")


def _parse_max_forwards(value: str) -> int:
    # RFC 3261 §20.22: Max-Forwards is an integer in the range 0-255.
    return parse_bounded_int(value, "Max-Forwards", 255)


def _parse_expires(value: str) -> int:
    return parse_delta_seconds(value, "Expires")


def _parse_min_expires(value: str) -> int:
    return parse_delta_seconds(value, "Min-Expires")


def _parse_min_se(value: str) -> int:
    return parse_delta_seconds(value.partition(";")[0], "Min-SE")


def _parse_rseq(value: str) -> int:
    # RFC 3262 §7.1: 1 to 2**32-1.
    return parse_bounded_int(value, "RSeq", 2**32 - 1)


def _parse_route(value: str) -> list[NameAddr]:
    return parse_name_addr_list(value, "Route")


def _parse_record_route(value: str) -> list[NameAddr]:
    return parse_name_addr_list(value, "Record-Route")


def _parse_require(value: str) -> list[str]:
    return parse_option_tags(value, "Require")


def _parse_supported(value: str) -> list[str]:
    return parse_option_tags(value, "Supported")


def _parse_proxy_require(value: str) -> list[str]:
    return parse_option_tags(value, "Proxy-Require")


def _parse_unsupported(value: str) -> list[str]:
    return parse_option_tags(value, "Unsupported")


def _parse_authorization(value: str) -> list[Credentials]:
    return [parse_credentials(value, "Authorization")]


def _parse_proxy_authorization(value: str) -> list[Credentials]:
    return [parse_credentials(value, "Proxy-Authorization")]


def _parse_www_authenticate(value: str) -> list[Challenge]:
    return [parse_challenge(value, "WWW-Authenticate")]


def _parse_proxy_authenticate(value: str) -> list[Challenge]:
    return [parse_challenge(value, "Proxy-Authenticate")]


@dataclass(slots=True)
class Request(_Message):
    """A SIP request; ``uri`` is the raw Request-URI text."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    @property
    def request_uri(self) -> Uri:
        """The Request-URI, parsed on first use (400 when malformed)."""
        cached: tuple[str, Uri] | None = self.headers._parsed.get("\0request-uri")
        if cached is not None and cached[0] == self.uri:
            return cached[1]
        try:
            parsed = parse_uri(self.uri)
        except SipParseError as exc:
            raise SipParseError(f"{exc.reason} (Request-URI)") from None
        self.headers._parsed["\0request-uri"] = (self.uri, parsed)
        return parsed

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")


@dataclass(slots=True)
class Response(_Message):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")


# RFC 3261 §21 and the extensions this SBC speaks.
REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
}


def reason_phrase(status: int) -> str:
    """The standard phrase for ``status``, or that of its class."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
) -> Response:
    """Build a response per RFC 3261 §8.2.6: copy Via (all, in order), From,
    To (adding ``to_tag`` when it has none), Call-ID, CSeq, and Timestamp for
    a 100."""
    headers = request.headers
    source = headers._fields
    fields = [("via", "Via", value) for key, _, value in source if key == "via"]
    add_tag = to_tag is not None and request.to_tag is None
    for key, name in _COPIED_HEADERS:
        copied = headers.first(key)
        if copied is not None:
            if add_tag and key == "to":
                copied = f"{copied};tag={to_tag}"
            fields.append((key, name, copied))
    if status == 100:
        fields.extend(field for field in source if field[0] == "timestamp")
    return Response(
        status, reason or reason_phrase(status), Headers._from_parsed(fields)
    )


_COPIED_HEADERS = (
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
