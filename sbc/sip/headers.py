"""Typed SIP header values and their grammar (RFC 3261 §7.3 and §25.1).

Each ``parse_*`` function takes one raw header value (already unfolded) and
returns a typed value or raises SipParseError (400) naming the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

from .errors import SipParseError
from .uri import (
    COMMON_SIP_URI,
    HOSTNAME,
    AbsoluteUri,
    Params,
    SipUri,
    TelUri,
    Uri,
    check_ipv6,
    common_sip_uri,
    parse_uri,
    plain_param_items,
    plain_param_value,
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SENT_PROTOCOL_RE = re.compile(
    r"([^\s/]+)[ \t]*/[ \t]*([^\s/]+)[ \t]*/[ \t]*([^\s/;]+)"
)
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]"
# An empty word after the "@" has always been tolerated.
_CALL_ID_RE = re.compile(f"{_WORD}+(?:@{_WORD}*)?")
# The methods of RFC 3261 and its extensions: tokens, so a look-up spares
# the token regex on the per-message path.
STANDARD_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE"}
    | {"INFO", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"}
)
# RFC 3261 §25.1: generic-param = token [ EQUAL gen-value ], with gen-value
# = token / host / quoted-string. Unquoted values are read tolerantly as any
# run without whitespace, quotes or delimiters.
_PARAM_ITEM = (
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`\'~]+)"
    r'(?:[ \t]*=[ \t]*([^\s";,<>]+|"(?:[^"\\]|\\.)*"))?'
)
_PARAMS_RE = re.compile(f"(?:{_PARAM_ITEM})*[ \t]*", re.DOTALL)
_PARAM_ITEM_RE = re.compile(_PARAM_ITEM, re.DOTALL)
# RFC 3261 §25.1: quoted-string with quoted-pair escapes.
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_URI_DELIMITERS_RE = re.compile(r"[ \t<>]")
# The common Via shape (no LWS, no IPv6, unquoted token values), matched in
# one step; a subset of the full grammar with the same result
# (tests/sip/test_headers.py checks both agree). Here and below, ++ and *+
# are possessive quantifiers (see HOSTNAME in uri.py for why).
_COMMON_VIA_RE = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]++) "
    f"({HOSTNAME})"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~]++)?)*+)"
)
# The common name-addr shape: an optional quoted (no escapes) or one-token
# display name, a plain SIP URI in <> and unquoted token parameters; a subset
# of the full grammar with the same result (tests/sip/test_headers.py).
_COMMON_NAME_ADDR_RE = re.compile(
    r'(?:"([^"\\]*+)" ?|([A-Za-z0-9\-.!%*_+`\'~]++) ?)?'
    f"<(sips?):{COMMON_SIP_URI}>"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~]++)?)*+)"
)
# The groups of _COMMON_NAME_ADDR_RE: display name quoted or as a token,
# then scheme, user, host, port and parameters of the URI, then the header
# parameters.
NameAddrParts = tuple[
    str | None, str | None, str, str | None, str, str | None, str, str
]
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_DEFAULT_PORTS = {"TLS": 5061, "WSS": 443, "WS": 80}
_MAX_DELTA_SECONDS = 2**32 - 1


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_method(text: str) -> bool:
    """RFC 3261 §25.1: Method = token; the standard ones are looked up."""
    return text in STANDARD_METHODS or _TOKEN_RE.fullmatch(text) is not None


def is_call_id(text: str) -> bool:
    """RFC 3261 §25.1: callid = word [ "@" word ]."""
    return _CALL_ID_RE.fullmatch(text) is not None


def unquote_string(text: str) -> str:
    """Remove the quotes and backslash escapes of an RFC 3261 quoted-string."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quoted_end(text: str, start: int, header: str) -> int:
    """Index just past the quoted-string opening at ``start``."""
    match = _QUOTED_RE.match(text, start)
    if match is None:
        raise SipParseError(f"Bad Request: unterminated quoted string in {header}")
    return match.end()


def split_list(value: str, header: str) -> list[str]:
    """Split a list header at commas outside quotes and ``<>`` (RFC 3261 §7.3.1).

    Empty elements are dropped, as a tolerant reader of ``a,,b``.
    """
    if '"' not in value and "<" not in value:
        return [item for item in (part.strip() for part in value.split(",")) if item]
    items: list[str] = []
    start = index = 0
    length = len(value)
    while index < length:
        char = value[index]
        if char == '"':
            index = _quoted_end(value, index, header)
            continue
        if char == "<":
            close = value.find(">", index)
            if close < 0:
                raise SipParseError(f"Bad Request: unbalanced '<' in {header}")
            index = close + 1
            continue
        if char == ",":
            items.append(value[start:index].strip())
            start = index + 1
        index += 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def parse_params(text: str, header: str) -> Params:
    """Parse ``;name[=value]`` pairs, with LWS allowed around ``;`` and ``=``.

    ``text`` starts at the first ``;``. Quoted values keep their quotes.
    """
    return Params.adopt(_parse_param_items(text, header))


def _parse_param_items(text: str, header: str) -> list[tuple[str, str, str | None]]:
    """(lower-cased name, name, value) of each parameter, as parse_params."""
    if not _PARAMS_RE.fullmatch(text):
        raise SipParseError(f"Bad Request: malformed parameter in {header}")
    return [
        (name.lower(), name, value or None)
        for name, value in _PARAM_ITEM_RE.findall(text)
    ]


@dataclass(slots=True, frozen=True)
class Via:
    """One Via value (RFC 3261 §20.42); ``host`` holds IPv6 without brackets."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received address, brackets removed (RFC 5118 §4.5 allows both)."""
        value = self.params.get("received")
        if value is not None and value.startswith("["):
            return value[1:-1]
        return value

    @property
    def rport(self) -> int | None:
        """The port a server filled into rport (RFC 3581 §4), else None."""
        value = self.params.get("rport")
        return None if value is None else int(value)

    @property
    def asks_rport(self) -> bool:
        """Whether rport is present without a value: the client asks the
        server to answer to the source port (RFC 3581 §3)."""
        return "rport" in self.params and self.params.get("rport") is None

    @property
    def sent_by(self) -> tuple[str, int]:
        """Host and port, the port defaulted for the transport (§18.2.2)."""
        port = self.port
        if port is None:
            port = _DEFAULT_PORTS.get(self.transport, 5060)
        return self.host, port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {host}{port}{self.params}"


def parse_via(value: str) -> list[Via]:
    return [parse_via_value(item) for item in split_list(value, "Via")]


def parse_via_value(text: str) -> Via:
    """Parse one via-parm: sent-protocol LWS sent-by *( SEMI via-params )."""
    match = _COMMON_VIA_RE.fullmatch(text)
    if match is None:
        return parse_via_general(text)
    transport, host, port_text, param_text = match.groups()
    # The regex admits at most five digits.
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError("Bad Request: malformed Via port")
    items = plain_param_items(param_text)
    _check_via_params(items)
    return Via(transport.upper(), host, port, Params.adopt(items))


def parse_via_general(text: str) -> Via:
    """Parse one via-parm by the full grammar (LWS, IPv6, quoted values)."""
    if text.startswith("SIP/2.0/"):
        space = _first_whitespace(text, 8)
        name, version = "SIP", "2.0"
        transport = text[8:space]
    else:
        match = _SENT_PROTOCOL_RE.match(text)
        if match is None:
            raise SipParseError("Bad Request: malformed Via sent-protocol")
        name, version, transport = match.groups()
        space = match.end()
    if not _TOKEN_RE.fullmatch(transport) or space >= len(text):
        raise SipParseError("Bad Request: malformed Via sent-protocol")
    if text[space] not in " \t":
        raise SipParseError("Bad Request: malformed Via sent-protocol")
    return _parse_via_sent_by(text[space:], f"{name}/{version}", transport.upper())


def _first_whitespace(text: str, start: int) -> int:
    space = text.find(" ", start)
    tab = text.find("\t", start)
    if space < 0:
        return len(text) if tab < 0 else tab
    return space if tab < 0 else min(space, tab)


def _parse_via_sent_by(text: str, protocol: str, transport: str) -> Via:
    sent_by, semi, param_text = text.partition(";")
    sent_by = sent_by.strip(" \t")
    if sent_by.startswith("["):
        close = sent_by.find("]")
        if close < 0:
            raise SipParseError("Bad Request: unterminated IPv6 reference in Via")
        host, port_text = sent_by[1:close], sent_by[close + 1 :]
        check_ipv6(host, "Via")
        if port_text and not port_text.startswith(":"):
            raise SipParseError("Bad Request: junk after IPv6 reference in Via")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(port_text) or sent_by.endswith(":")
    else:
        # RFC 3261 §25.1: COLON = SWS ":" SWS, so LWS may surround it.
        host, colon, port_text = sent_by.partition(":")
        host = host.rstrip(" \t")
        if ":" in port_text:
            raise SipParseError("Bad Request: IPv6 address without brackets in Via")
        if not host or not _HOST_CHARS_RE.fullmatch(host):
            raise SipParseError("Bad Request: malformed Via sent-by host")
        has_port = bool(colon)
    port = _parse_via_port(port_text.strip(" \t")) if has_port else None
    items = _parse_param_items(semi + param_text, "Via") if semi else []
    _check_via_params(items)
    return Via(transport, host, port, Params.adopt(items), protocol)


_HOST_CHARS_RE = re.compile(HOSTNAME)


def _parse_via_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise SipParseError("Bad Request: malformed Via port")
    return int(text)


def _check_via_params(items: list[tuple[str, str, str | None]]) -> None:
    for lname, _, value in items:
        if lname == "branch" and not value:
            raise SipParseError("Bad Request: empty Via branch")
        if lname == "rport" and value is not None:
            _parse_via_port(value)
        elif lname == "received" and value is not None:
            _check_received(value)


def _check_received(value: str) -> None:
    # RFC 5118 §4.5: received may hold an IPv6 address with or without
    # brackets.
    if value.startswith("["):
        if not value.endswith("]"):
            raise SipParseError("Bad Request: malformed Via received")
        check_ipv6(value[1:-1], "Via received")
    elif ":" in value:
        check_ipv6(value, "Via received")


@dataclass(slots=True, frozen=True)
class CSeq:
    """RFC 3261 §20.16: a sequence number below 2**31 and a method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not is_method(parts[1]):
        raise SipParseError("Bad Request: malformed CSeq")
    number_text, method = parts
    if not number_text.isdigit() or not number_text.isascii():
        raise SipParseError("Bad Request: malformed CSeq number")
    # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31. The
    # length is checked first so that no huge number is converted.
    if len(number_text.lstrip("0")) > 10:
        raise SipParseError("Bad Request: CSeq number exceeds 2**31-1")
    number = int(number_text)
    if number > 2**31 - 1:
        raise SipParseError("Bad Request: CSeq number exceeds 2**31-1")
    return CSeq(number, method)


@dataclass(slots=True, frozen=True)
class NameAddr:
    """A name-addr or addr-spec with its header parameters (RFC 3261 §20.10).

    For an addr-spec such as ``sip:a@b;tag=1`` the parameters belong to the
    header, not to the URI. ``is_star`` marks the ``*`` Contact of REGISTER.
    """

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=Params)
    is_star: bool = False

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact expires parameter, clamped to 2**32-1."""
        value = self.params.get("expires")
        if value is None:
            return None
        return parse_delta_seconds(value, "Contact expires")

    @property
    def q(self) -> float | None:
        """The Contact q-value, 0 to 1 with up to three decimals (§25.1)."""
        value = self.params.get("q")
        if value is None:
            return None
        if not _QVALUE_RE.fullmatch(value):
            raise SipParseError("Bad Request: malformed Contact q-value")
        return float(value)

    def __str__(self) -> str:
        if self.is_star:
            return "*"
        name = (
            "" if self.display_name is None else f"{quote_string(self.display_name)} "
        )
        return f"{name}<{self.uri}>{self.params}"


STAR = NameAddr(AbsoluteUri("*", "*"), is_star=True)


def parse_name_addr(text: str, header: str) -> NameAddr:
    """Parse ``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)``."""
    text = text.strip(" \t")
    parts = common_name_addr_parts(text)
    if parts is None:
        return parse_name_addr_general(text, header)
    return name_addr_from_parts(parts)


def common_name_addr_parts(text: str) -> NameAddrParts | None:
    """The groups of a stripped name-addr of the common shape, else None.

    The full grammar accepts any value that has parts, and
    name_addr_from_parts builds what it would build; None leaves the value
    to parse_name_addr_general.
    """
    match = _COMMON_NAME_ADDR_RE.fullmatch(text)
    if match is None:
        return None
    # Typing knows groups() only as a tuple of any length.
    parts = cast(NameAddrParts, match.groups())
    # The regex admits five digits: a larger port is left to the full
    # grammar, which names the error.
    port_text = parts[5]
    if port_text and int(port_text) > 65535:
        return None
    return parts


def name_addr_from_parts(parts: NameAddrParts) -> NameAddr:
    quoted, token, scheme, user, host, port_text, uri_params, param_text = parts
    port = int(port_text) if port_text else None
    uri = common_sip_uri(scheme, user, host, port, uri_params)
    display_name = quoted if quoted is not None else token
    return NameAddr(uri, display_name, Params.adopt(plain_param_items(param_text)))


def tag_from_parts(parts: NameAddrParts) -> str | None:
    """What ``name_addr_from_parts(parts).tag`` gives, building nothing."""
    return plain_param_value(parts[7], "tag")


def parse_name_addr_general(text: str, header: str) -> NameAddr:
    """Parse a stripped name-addr or addr-spec by the full grammar."""
    if text.startswith('"'):
        end = _quoted_end(text, 0, header)
        display_name: str | None = unquote_string(text[:end])
        rest = text[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError(f"Bad Request: malformed {header}: '<' expected")
        return _parse_bracketed(rest, display_name, header)
    less = text.find("<")
    if less >= 0:
        display_name = " ".join(text[:less].split()) or None
        if display_name is not None and not all(
            _TOKEN_RE.fullmatch(word) for word in display_name.split(" ")
        ):
            raise SipParseError(f"Bad Request: malformed {header} display name")
        return _parse_bracketed(text[less:], display_name, header)
    # RFC 3261 §20.10: in an addr-spec the first ';' starts header parameters.
    uri_text, semi, param_text = text.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise SipParseError(
            f"Bad Request: URI with '?' or ',' not enclosed in <> in {header}"
        )
    uri = _parse_header_uri(uri_text, header)
    params = parse_params(semi + param_text, header) if semi else Params()
    return NameAddr(uri, None, params)


def _parse_bracketed(text: str, display_name: str | None, header: str) -> NameAddr:
    close = text.find(">")
    if close < 0:
        raise SipParseError(f"Bad Request: unbalanced '<' in {header}")
    uri = _parse_header_uri(text[1:close], header)
    rest = text[close + 1 :].strip(" \t")
    if rest and not rest.startswith(";"):
        raise SipParseError(f"Bad Request: junk after URI in {header}")
    params = parse_params(rest, header) if rest else Params()
    return NameAddr(uri, display_name, params)


def _parse_header_uri(text: str, header: str) -> Uri:
    if not text or _URI_DELIMITERS_RE.search(text):
        raise SipParseError(f"Bad Request: malformed URI in {header}")
    try:
        return parse_uri(text)
    except SipParseError as exc:
        raise SipParseError(f"{exc.reason} ({header})") from None


def parse_name_addr_list(value: str, header: str) -> list[NameAddr]:
    return [parse_name_addr(item, header) for item in split_list(value, header)]


def parse_contact(value: str) -> list[NameAddr]:
    """Contact values; a lone ``*`` gives STAR (RFC 3261 §10.2.2)."""
    if value.strip(" \t") == "*":
        return [STAR]
    return parse_name_addr_list(value, "Contact")


@dataclass(slots=True, frozen=True)
class MediaType:
    """A Content-Type value; type and subtype are lower-cased (§20.15)."""

    type: str
    subtype: str
    params: Params = field(default_factory=Params)

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{self.params}"


def parse_media_type(value: str) -> MediaType:
    mime, semi, param_text = value.partition(";")
    kind, slash, subtype = mime.partition("/")
    kind, subtype = kind.strip(" \t"), subtype.strip(" \t")
    if not slash or not _TOKEN_RE.fullmatch(kind) or not _TOKEN_RE.fullmatch(subtype):
        raise SipParseError("Bad Request: malformed Content-Type")
    params = parse_params(semi + param_text, "Content-Type") if semi else Params()
    return MediaType(kind.lower(), subtype.lower(), params)


def parse_option_tags(value: str, header: str) -> list[str]:
    tags = split_list(value, header)
    for tag in tags:
        if not _TOKEN_RE.fullmatch(tag):
            raise SipParseError(f"Bad Request: malformed option tag in {header}")
    return tags


def parse_delta_seconds(value: str, header: str) -> int:
    """Parse delta-seconds; values above 2**32-1 are clamped to it.

    RFC 3261 §20.19 bounds Expires to 2**32-1; RFC 4475 §3.1.2.4 lets an
    element treat an out-of-range expiry as a default, and clamping keeps
    the request usable while the registrar applies its own maximum.
    """
    text = value.strip(" \t")
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"Bad Request: malformed {header}")
    if len(text.lstrip("0")) > 10:
        return _MAX_DELTA_SECONDS
    return min(int(text), _MAX_DELTA_SECONDS)


def parse_bounded_int(value: str, header: str, maximum: int) -> int:
    """Parse a non-negative decimal that must not exceed ``maximum``."""
    text = value.strip(" \t")
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"Bad Request: malformed {header}")
    if len(text.lstrip("0")) > len(str(maximum)):
        raise SipParseError(f"Bad Request: {header} exceeds {maximum}")
    number = int(text)
    if number > maximum:
        raise SipParseError(f"Bad Request: {header} exceeds {maximum}")
    return number


@dataclass(slots=True, frozen=True)
class RAck:
    """RFC 3262 §7.2: the RSeq and CSeq of the reliable response acknowledged."""

    rseq: int
    cseq_number: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq_number} {self.method}"


def parse_rack(value: str) -> RAck:
    parts = value.split()
    if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[2]):
        raise SipParseError("Bad Request: malformed RAck")
    rseq = parse_bounded_int(parts[0], "RAck", 2**32 - 1)
    cseq_number = parse_bounded_int(parts[1], "RAck CSeq", 2**31 - 1)
    return RAck(rseq, cseq_number, parts[2])


@dataclass(slots=True, frozen=True)
class SessionExpires:
    """RFC 4028 §4: the session interval and who refreshes it."""

    delta: int
    params: Params = field(default_factory=Params)

    @property
    def refresher(self) -> str | None:
        value = self.params.get("refresher")
        return value.lower() if value else None

    def __str__(self) -> str:
        return f"{self.delta}{self.params}"


def parse_session_expires(value: str) -> SessionExpires:
    delta_text, semi, param_text = value.partition(";")
    delta = parse_delta_seconds(delta_text, "Session-Expires")
    params = parse_params(semi + param_text, "Session-Expires") if semi else Params()
    refresher = params.get("refresher")
    if refresher is not None and refresher.lower() not in ("uac", "uas"):
        raise SipParseError("Bad Request: Session-Expires refresher must be uac or uas")
    return SessionExpires(delta, params)


@dataclass(slots=True, frozen=True)
class Credentials:
    """An Authorization or Proxy-Authorization value (RFC 3261 §20.7).

    ``params`` maps lower-cased names to unquoted values; ``token`` holds
    the bare credentials of a non-parameter scheme.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token: str | None = None

    def __getitem__(self, name: str) -> str:
        return self.params[name]

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def __repr__(self) -> str:
        # The response digest and nonce count are secrets-adjacent: keep
        # them out of logs that print the object.
        names = ", ".join(sorted(self.params))
        return f"Credentials(scheme={self.scheme!r}, params=[{names}])"


@dataclass(slots=True, frozen=True)
class Challenge:
    """A WWW-Authenticate or Proxy-Authenticate value (RFC 3261 §20.44)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token: str | None = None

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    @property
    def qop_options(self) -> list[str]:
        qop = self.params.get("qop", "")
        return [option.strip() for option in qop.split(",") if option.strip()]

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").lower() == "true"


def _parse_auth(value: str, header: str) -> tuple[str, dict[str, str], str | None]:
    text = value.strip(" \t")
    scheme, _, rest = text.partition(" ")
    if not _TOKEN_RE.fullmatch(scheme):
        raise SipParseError(f"Bad Request: malformed {header} scheme")
    rest = rest.strip(" \t")
    if rest and "=" not in rest.split(",", 1)[0]:
        return scheme, {}, rest
    params: dict[str, str] = {}
    for item in _split_auth_params(rest, header):
        name, eq, param = item.partition("=")
        name, param = name.strip(" \t").lower(), param.strip(" \t")
        if not eq or not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"Bad Request: malformed {header} parameter")
        if param.startswith('"'):
            if len(param) < 2 or _quoted_end(param, 0, header) != len(param):
                raise SipParseError(f"Bad Request: malformed {header} parameter")
            param = unquote_string(param)
        params[name] = param
    return scheme, params, None


def _split_auth_params(text: str, header: str) -> list[str]:
    if '"' not in text:
        return [item for item in (part.strip() for part in text.split(",")) if item]
    items: list[str] = []
    start = index = 0
    while index < len(text):
        if text[index] == '"':
            index = _quoted_end(text, index, header)
            continue
        if text[index] == ",":
            items.append(text[start:index].strip())
            start = index + 1
        index += 1
    items.append(text[start:].strip())
    return [item for item in items if item]


def parse_credentials(value: str, header: str = "Authorization") -> Credentials:
    scheme, params, token = _parse_auth(value, header)
    return Credentials(scheme, params, token)


def parse_challenge(value: str, header: str = "WWW-Authenticate") -> Challenge:
    scheme, params, token = _parse_auth(value, header)
    return Challenge(scheme, params, token)


__all__ = [
    "STAR",
    "AbsoluteUri",
    "CSeq",
    "Challenge",
    "Credentials",
    "MediaType",
    "NameAddr",
    "Params",
    "RAck",
    "SessionExpires",
    "SipUri",
    "TelUri",
    "Via",
    "parse_bounded_int",
    "parse_challenge",
    "parse_contact",
    "parse_credentials",
    "parse_cseq",
    "parse_delta_seconds",
    "parse_media_type",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_option_tags",
    "parse_params",
    "parse_rack",
    "parse_session_expires",
    "parse_via",
    "split_list",
]
