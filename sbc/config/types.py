"""Field types of the configuration model, each with one precise error.

Every type here validates in one function and raises one
``PydanticCustomError`` whose message is ready for an operator, so a bad
value yields one line naming the fault (never a list of union branches).
Messages never echo the value: it may be a password.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
)
from pydantic_core import PydanticCustomError

from sbc.sip.headers import is_token
from sbc.sip.message import header_key

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REVEAL_SECRETS = "reveal_secrets"
"""Serialization context key: ``{REVEAL_SECRETS: True}`` writes secrets."""

REDACTED = "**********"
"""What a secret serializes to without the reveal context."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# RFC 1123 §2.1 host names: labels of letters, digits and inner hyphens.
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PREFIX_RE = re.compile(r"\+?[0-9*#]*")
_FAILOVER_CLASS_RE = re.compile(r"[3-6]xx")
# Backslash escapes allowed in a replacement template: a group by number
# or by name, or a literal backslash (re.Match.expand semantics).
_TEMPLATE_ESCAPE_RE = re.compile(r"\\(?:([1-9]\d*)|g<([^>]*)>|(\\))")


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _require_str(value: Any) -> str:
    # YAML reads 1234, 0044 or yes as numbers and booleans: say so, since
    # the fix (quotes) is not obvious from "not a string".
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        kind = "true/false value" if isinstance(value, bool) else "number"
        raise _fail("quote_needed", f"YAML read this as a {kind}; write it in quotes")
    raise _fail("string_type", "must be a text value")


def _refuse_bool(value: Any) -> Any:
    # Pydantic reads JSON true/false as 1/0 for an int field; a port or a
    # count given as a boolean is a mistake, not port 1.
    if isinstance(value, bool):
        raise _fail("int_type", "must be a number, not true/false")
    return value


NOT_BOOL = BeforeValidator(_refuse_bool)
"""Put in an integer field's ``Annotated``: refuses true/false."""


def _check_name(value: Any) -> str:
    text = _require_str(value)
    if not _NAME_RE.fullmatch(text):
        raise _fail(
            "name",
            "a name is 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return text


Name = Annotated[str, BeforeValidator(_check_name)]
"""A stable object key: also the primary key the admin plane stores."""


def _check_transport(value: Any) -> str:
    text = _require_str(value).lower()
    if text not in ("udp", "tcp", "tls"):
        raise _fail("transport", "transport must be udp, tcp or tls")
    return text


Transport = Annotated[str, BeforeValidator(_check_transport)]


def parse_ip_address(value: Any) -> IPAddress:
    """An IPv4 or IPv6 literal; brackets around IPv6 are tolerated."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address: IPAddress = value
    else:
        text = _require_str(value).strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise _fail("ip_address", "not an IPv4 or IPv6 address") from None
    # RFC 5118 §4.10 policy shared with the parser: no zone identifiers.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise _fail("ip_address", "scoped IPv6 addresses (with %zone) are not served")
    return address


IPAddressField = Annotated[
    IPAddress,
    BeforeValidator(parse_ip_address),
    PlainSerializer(str, return_type=str, when_used="json"),
]


def _parse_network(value: Any) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    text = _require_str(value).strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        # The stdlib message names the fault ("has host bits set").
        raise _fail("ip_network", f"not an IP network: {exc}") from None
    if isinstance(network, ipaddress.IPv6Network) and "%" in text:
        raise _fail("ip_network", "scoped IPv6 networks are not served")
    return network


IPNetworkField = Annotated[
    IPNetwork,
    BeforeValidator(_parse_network),
    PlainSerializer(str, return_type=str, when_used="json"),
]


def _check_host(value: Any) -> str:
    """An IP literal (IPv6 without brackets) or a DNS name."""
    text = _require_str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text or text.replace(".", "").isdigit():
        return str(parse_ip_address(text))
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise _fail("host", "not an IP address or a DNS host name")
    return text


Host = Annotated[str, BeforeValidator(_check_host)]


def _check_prefix(value: Any) -> str:
    text = _require_str(value)
    if not _PREFIX_RE.fullmatch(text):
        raise _fail(
            "prefix", "a prefix is an optional '+' then digits, '*' or '#' (or empty)"
        )
    return text


Prefix = Annotated[str, BeforeValidator(_check_prefix)]


def _check_failover_code(value: Any) -> int | str:
    """A final status 300-699 (kept as an int) or a class such as ``5xx``."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = _require_str(value).strip().lower()
    if _FAILOVER_CLASS_RE.fullmatch(text):
        return text
    if text.isdigit() and 300 <= int(text) <= 699:
        return int(text)
    raise _fail(
        "failover_code", "a failover code is a status 300-699 or a class like 5xx"
    )


FailoverCode = Annotated[int | str, BeforeValidator(_check_failover_code)]


def _check_regex(value: Any) -> str:
    text = _require_str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _fail("regex", f"not a valid regular expression: {exc}") from None
    return text


Regex = Annotated[str, BeforeValidator(_check_regex)]


TemplatePart = str | int
"""A literal piece of a replacement template, or a group number."""


def parse_template(pattern: re.Pattern[str], template: str) -> tuple[TemplatePart, ...]:
    """Split a replacement template into literals and group numbers.

    Only ``\\N`` (N from 1), ``\\g<N>``, ``\\g<name>`` and ``\\\\``
    escapes are allowed: numbers and header values need no others, and
    refusing the rest (``\\0`` is NUL to ``re``, ``\\n`` a line break)
    keeps a typo from changing meaning. Raises ValueError.
    """
    parts: list[TemplatePart] = []
    position = 0
    while (backslash := template.find("\\", position)) >= 0:
        escape = _TEMPLATE_ESCAPE_RE.match(template, backslash)
        if escape is None:
            raise ValueError(
                "replacement escapes are \\1, \\g<1>, \\g<name> or \\\\ only"
            )
        number, name, _ = escape.groups()
        literal = template[position:backslash]
        if number is None and name is None:
            literal += "\\"
        parts.append(literal)
        if number is not None or name is not None:
            parts.append(_group_number(pattern, number or name or ""))
        position = escape.end()
    parts.append(template[position:])
    return tuple(part for part in parts if part != "")


def check_template(pattern: str, template: str) -> None:
    """Raise ValueError unless ``template`` is a valid template for
    ``pattern`` (see :func:`parse_template`)."""
    parse_template(re.compile(pattern), template)


def _group_number(compiled: re.Pattern[str], group: str) -> int:
    if group.isdigit():
        if int(group) > compiled.groups:
            raise ValueError(
                f"replacement names group {group}; the pattern has {compiled.groups}"
            )
        return int(group)
    if group not in compiled.groupindex:
        raise ValueError(f"replacement names group {group!r} the pattern lacks")
    return compiled.groupindex[group]


def _check_token_name(value: Any) -> str:
    text = _require_str(value).strip()
    if not is_token(text):
        raise _fail("header_name", "a header name is a SIP token (RFC 3261 §25.1)")
    return text


HeaderName = Annotated[str, BeforeValidator(_check_token_name)]


def _check_header_value(value: Any) -> str:
    text = _require_str(value)
    if "\r" in text or "\n" in text:
        raise _fail("header_value", "a header value cannot hold a line break")
    return text


HeaderValue = Annotated[str, BeforeValidator(_check_header_value)]


def _check_text(value: Any) -> str:
    text = _require_str(value)
    if not text or text != text.strip() or not text.isprintable():
        raise _fail("text", "must be non-empty printable text without outer whitespace")
    return text


Text = Annotated[str, BeforeValidator(_check_text)]


def _check_secret(value: Any) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    text = _require_str(value)
    if not text:
        raise _fail("secret", "must not be empty")
    if text == REDACTED:
        # An export without secrets writes the mask; loading it back would
        # silently set the password to ten asterisks.
        raise _fail(
            "secret",
            "this is the redaction mask of an export without secrets; "
            "put the real value",
        )
    return SecretStr(text)


def _serialize_secret(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context
    if isinstance(context, dict) and context.get(REVEAL_SECRETS) is True:
        return value.get_secret_value()
    return REDACTED


Secret = Annotated[
    SecretStr,
    BeforeValidator(_check_secret),
    PlainSerializer(_serialize_secret, return_type=str, when_used="always"),
]
"""A password: masked in repr, str and every dump unless revealed."""


def canonical_header(name: str) -> str:
    """The look-up key of a header name (lower case, compact form expanded)."""
    return header_key(name)


def _unique_ci(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        key = header_key(value)
        if key in seen:
            raise _fail("duplicate", "a header is listed twice")
        seen.add(key)
    return values


HeaderNameList = Annotated[list[HeaderName], AfterValidator(_unique_ci)]
