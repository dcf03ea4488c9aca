"""SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25.1, RFC 3966, RFC 5118)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import SipParseError

# RFC 3261 §25.1: the characters each URI part may hold unescaped.
_USER_CHARS = "-_.!~*'()&=+$,;?/"
_PASSWORD_CHARS = "-_.!~*'()&=+$,"
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# Host names are matched tolerantly (labels of letters, digits, '-' and
# '_'), IPv4 addresses fall under the same pattern.
#
# The quantifiers ++ and *+ in this and the common-shape patterns are
# possessive: each such run is followed by a character its class excludes,
# so giving characters back could never produce a match, and not keeping
# the means to do so makes matching about a quarter faster.
HOSTNAME = r"[A-Za-z0-9_][A-Za-z0-9_\-]*+(?:\.[A-Za-z0-9_][A-Za-z0-9_\-]*+)*+\.?"
_HOSTNAME_RE = re.compile(HOSTNAME)
# The common shape user@host:port;params with nothing escaped, matched in one
# step; it accepts a subset of what the general path below accepts, and
# gives the same result (tests/sip/test_uri.py checks both agree).
COMMON_SIP_URI = (
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,]++)@)?"
    f"({HOSTNAME})"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()]++(?:=[A-Za-z0-9\-_.!~*'()]++)?)*+)"
)
_COMMON_SIP_URI_RE = re.compile(COMMON_SIP_URI)
_HOST_PORT_END_RE = re.compile(r"[;?]")
_TEL_NUMBER_RE = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()]+")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
# RFC 3261 §19.1.4: these URI parameters must match when either URI has them
# (transport because a default value never matches an absent one).
_MUST_MATCH_PARAMS = ("user", "ttl", "method", "maddr", "transport")


class Params:
    """Ordered ``;name=value`` parameters; names compare case-insensitively.

    A parameter present without ``=`` (a flag such as ``lr``) has value None.
    Values are kept as received (still quoted or %-escaped).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str | None]] = ()) -> None:
        self._items: list[tuple[str, str, str | None]] = [
            (name.lower(), name, value) for name, value in items
        ]

    @classmethod
    def adopt(cls, items: list[tuple[str, str, str | None]]) -> Params:
        """Take (lower-cased name, name, value) triples built by a parser."""
        # Spelled with the class name: mypyc compiles no other way to skip
        # __init__ (docs/sip.md, Performance).
        params = Params.__new__(Params)
        params._items = items
        return params

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, _, value in self._items:
            if key == lname:
                return value
        return default

    def set(self, name: str, value: str | None) -> None:
        """Replace the parameter in place, or append it."""
        lname = name.lower()
        for index, (key, _, _) in enumerate(self._items):
            if key == lname:
                self._items[index] = (lname, name, value)
                return
        self._items.append((lname, name, value))

    def remove(self, name: str) -> bool:
        lname = name.lower()
        kept = [item for item in self._items if item[0] != lname]
        removed = len(kept) != len(self._items)
        self._items = kept
        return removed

    def copy(self) -> Params:
        return Params((name, value) for _, name, value in self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        for key, _, _ in self._items:
            if key == lname:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return ((name, value) for _, name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        mine = [(key, value) for key, _, value in self._items]
        return mine == [(key, value) for key, _, value in other._items]

    def __str__(self) -> str:
        return "".join(
            f";{name}" if value is None else f";{name}={value}"
            for _, name, value in self._items
        )

    def __repr__(self) -> str:
        return f"Params({list(self)!r})"


@dataclass(slots=True, eq=False)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1).

    ``user`` and ``password`` hold the unescaped text; ``host`` holds an IPv6
    address without its brackets. Equality follows RFC 3261 §19.1.4.
    """

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=Params)
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def host_port(self) -> str:
        """The host (bracketed when IPv6) with its port if one is given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = quote(self.user, safe=_USER_CHARS, errors="surrogateescape")
            if self.password is not None:
                password = quote(
                    self.password, safe=_PASSWORD_CHARS, errors="surrogateescape"
                )
                userinfo = f"{userinfo}:{password}"
            userinfo += "@"
        headers = "&".join(f"{name}={value}" for name, value in self.headers)
        text = f"{self.scheme}:{userinfo}{self.host_port}{self.params}"
        return f"{text}?{headers}" if headers else text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.user == other.user
            and self.password == other.password
            and _host_key(self.host) == _host_key(other.host)
            and self.port == other.port
            and _params_match(self.params, other.params)
            and _uri_headers_key(self.headers) == _uri_headers_key(other.headers)
        )


@dataclass(slots=True, eq=False)
class TelUri:
    """A ``tel:`` URI (RFC 3966); ``number`` keeps its visual separators."""

    number: str
    params: Params = field(default_factory=Params)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators, as compared (RFC 3966 §4)."""
        return self.number.translate(_VISUAL_SEPARATORS).upper()

    def __str__(self) -> str:
        return f"tel:{self.number}{self.params}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelUri):
            return NotImplemented
        return self.digits == other.digits and _params_key(self.params) == (
            _params_key(other.params)
        )


@dataclass(slots=True, frozen=True)
class AbsoluteUri:
    """Any other URI, kept verbatim (RFC 3261 §19.1: absoluteURI)."""

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise SipParseError (400) naming the fault."""
    scheme, colon, rest = text.partition(":")
    lscheme = scheme.lower()
    if lscheme == "sip" or lscheme == "sips":
        return _parse_sip_uri(lscheme, rest)
    if not colon or not rest or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"Bad Request: malformed URI {text!r}")
    if lscheme == "tel":
        return _parse_tel_uri(rest)
    if any(char in rest for char in ' \t<>"'):
        raise SipParseError(f"Bad Request: malformed URI {text!r}")
    return AbsoluteUri(lscheme, text)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    match = _COMMON_SIP_URI_RE.fullmatch(rest)
    if match is None:
        return parse_sip_uri_general(scheme, rest)
    user, host, port_text, param_text = match.groups()
    port = int(port_text) if port_text else None
    # The regex admits five digits: a larger port is left to the full
    # grammar, which names the error.
    if port is not None and port > 65535:
        return parse_sip_uri_general(scheme, rest)
    return common_sip_uri(scheme, user, host, port, param_text)


def common_sip_uri(
    scheme: str, user: str | None, host: str, port: int | None, param_text: str
) -> SipUri:
    """Build a SipUri from the groups of COMMON_SIP_URI, the port checked."""
    params = Params.adopt(plain_param_items(param_text))
    return SipUri(scheme, host, user, None, port, params, [])


def plain_param_items(text: str) -> list[tuple[str, str, str | None]]:
    """(lower-cased name, name, value) of ``;name[=value]`` text that a
    common-shape regex matched.

    Such text has no LWS, quotes or escapes, so splitting at ``;`` and the
    first ``=`` reads it exactly as the full grammar does.
    """
    items: list[tuple[str, str, str | None]] = []
    if text:
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            items.append((name.lower(), name, value if eq else None))
    return items


def plain_param_value(text: str, lname: str) -> str | None:
    """What ``Params.get(lname)`` gives for the params of plain_param_items."""
    if text:
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            if name.lower() == lname:
                return value if eq else None
    return None


def parse_sip_uri_general(scheme: str, rest: str) -> SipUri:
    """Parse the part of a SIP URI after ``scheme:`` by the full grammar."""
    # RFC 3261 §25.1: userinfo ends at the first '@'; neither URI parameters
    # nor URI headers may hold an unescaped '@'.
    at = rest.find("@")
    user = password = None
    if at >= 0:
        user, password = _parse_userinfo(rest[:at])
        rest = rest[at + 1 :]
    host, port, tail = _split_host_port(rest, "URI")
    if tail:
        params, headers = _parse_uri_tail(tail)
        return SipUri(scheme, host, user, password, port, params, headers)
    return SipUri(scheme, host, user, password, port, Params.adopt([]), [])


def _parse_userinfo(userinfo: str) -> tuple[str, str | None]:
    user, colon, password = userinfo.partition(":")
    if not _USER_RE.fullmatch(user):
        raise SipParseError(f"Bad Request: malformed URI user {user!r}")
    if colon and not _PASSWORD_RE.fullmatch(password):
        raise SipParseError("Bad Request: malformed URI password")
    return _unescape(user), _unescape(password) if colon else None


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _split_host_port(text: str, where: str) -> tuple[str, int | None, str]:
    """Split ``host[:port]`` from what follows it (``;`` or ``?`` onwards)."""
    match = _HOST_PORT_END_RE.search(text)
    end = len(text) if match is None else match.start()
    host_port, tail = text[:end], text[end:]
    if host_port.startswith("["):
        host, port_text = _split_ipv6_reference(host_port, where)
    else:
        host, _, port_text = host_port.partition(":")
        if ":" in port_text:
            # RFC 5118 §4.10: an IPv6 address must be bracketed.
            raise SipParseError(
                f"Bad Request: IPv6 address without brackets in {where}"
            )
        if not _HOSTNAME_RE.fullmatch(host):
            raise SipParseError(f"Bad Request: malformed host {host!r} in {where}")
        if not port_text and host_port.endswith(":"):
            raise SipParseError(f"Bad Request: empty port in {where}")
    port = _parse_port(port_text, where) if port_text else None
    return host, port, tail


def _split_ipv6_reference(host_port: str, where: str) -> tuple[str, str]:
    close = host_port.find("]")
    if close < 0:
        raise SipParseError(f"Bad Request: unterminated IPv6 reference in {where}")
    host = host_port[1:close]
    check_ipv6(host, where)
    after = host_port[close + 1 :]
    if after and not after.startswith(":"):
        raise SipParseError(f"Bad Request: junk after IPv6 reference in {where}")
    if after == ":":
        raise SipParseError(f"Bad Request: empty port in {where}")
    return host, after[1:]


def check_ipv6(host: str, where: str) -> None:
    """Raise SipParseError unless ``host`` is a plain IPv6 address.

    Zone identifiers (``fe80::1%4``) have no place in SIP (RFC 5118 §4.2
    grammar, RFC 3261 §25.1 IPv6address) and are rejected.
    """
    if "%" in host:
        raise SipParseError(f"Bad Request: IPv6 zone identifier in {where}")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise SipParseError(
            f"Bad Request: malformed IPv6 address {host!r} in {where}"
        ) from None


def _parse_port(text: str, where: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise SipParseError(f"Bad Request: malformed port in {where}")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"Bad Request: port out of range in {where}")
    return port


def _parse_uri_tail(tail: str) -> tuple[Params, list[tuple[str, str]]]:
    param_text, question, header_text = tail.partition("?")
    items: list[tuple[str, str, str | None]] = []
    for part in param_text.split(";")[1:]:
        name, eq, value = part.partition("=")
        if not _PARAM_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value)):
            raise SipParseError(f"Bad Request: malformed URI parameter {part!r}")
        items.append((name.lower(), name, value if eq else None))
    headers: list[tuple[str, str]] = []
    if question:
        for part in header_text.split("&"):
            name, eq, value = part.partition("=")
            if not eq or not _PARAM_RE.fullmatch(name):
                raise SipParseError(f"Bad Request: malformed URI header {part!r}")
            if not _HEADER_RE.fullmatch(value):
                raise SipParseError(f"Bad Request: malformed URI header {part!r}")
            headers.append((name, value))
    return Params.adopt(items), headers


def _parse_tel_uri(rest: str) -> TelUri:
    number, _, param_text = rest.partition(";")
    if not _TEL_NUMBER_RE.fullmatch(number):
        raise SipParseError(f"Bad Request: malformed tel URI number {number!r}")
    items: list[tuple[str, str | None]] = []
    if param_text:
        for part in param_text.split(";"):
            name, eq, value = part.partition("=")
            if not _PARAM_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value)):
                raise SipParseError(
                    f"Bad Request: malformed tel URI parameter {part!r}"
                )
            items.append((name, value if eq else None))
    return TelUri(number, Params(items))


def _host_key(host: str) -> str:
    if ":" in host:
        return ipaddress.IPv6Address(host).compressed
    return host.lower()


def _params_key(params: Params) -> dict[str, str | None]:
    return {
        name.lower(): None if value is None else _unescape(value).lower()
        for name, value in params
    }


def _params_match(mine: Params, theirs: Params) -> bool:
    """RFC 3261 §19.1.4: parameters in both URIs must agree, and user, ttl,
    method, maddr and transport must be in both or neither."""
    left, right = _params_key(mine), _params_key(theirs)
    for name in _MUST_MATCH_PARAMS:
        if (name in left) != (name in right):
            return False
    return all(right[name] == value for name, value in left.items() if name in right)


def _uri_headers_key(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): _unescape(value) for name, value in headers}
