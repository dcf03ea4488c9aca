"""Number normalization and header manipulation, compiled once per trunk.

Number rules (policy, see docs/configuration.md): the rules of a list are
tried in order and the first whose pattern matches the *whole* number
rewrites it; later rules are not applied to the result. A number no rule
matches passes unchanged. Inbound rules take what a trunk sends to E.164;
outbound rules take E.164 to what a trunk expects.

Header rules run in order on a :class:`~sbc.sip.message.Headers` object:
``add`` appends a field; ``remove`` drops every field of the name (or, with
``match``, those whose value the pattern finds); ``replace`` sets the value
of a header that is present (or, with ``match``, substitutes inside each
value) and never creates one. Headers the B2BUA owns are refused by the
model, so no rule can break dialog or transaction state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sbc.config.model import HeaderRule, NumberRule, Trunk
from sbc.config.types import parse_template
from sbc.sip.message import Headers, header_key
from sbc.sip.uri import SipUri, TelUri, Uri

# RFC 3966 §5.1.1 visual separators.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
_PHONE_USER_RE = re.compile(r"\+?[0-9*#\-.()]*[0-9][0-9*#\-.()]*")


class NumberRewriter:
    """One ordered list of number rules; the first whole match wins."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Sequence[NumberRule]) -> None:
        compiled = [re.compile(rule.match) for rule in rules]
        self._rules = tuple(
            (pattern, parse_template(pattern, rule.replace))
            for pattern, rule in zip(compiled, rules, strict=True)
        )

    def apply(self, number: str) -> str:
        for pattern, parts in self._rules:
            match = pattern.fullmatch(number)
            if match is not None:
                # The template is split once, at construction: expanding is
                # a join (an unmatched group expands to "", as in re).
                return "".join(
                    part if isinstance(part, str) else match.group(part) or ""
                    for part in parts
                )
        return number

    def __len__(self) -> int:
        return len(self._rules)


@dataclass(frozen=True, slots=True)
class _CompiledHeaderRule:
    action: str
    name: str
    value: str | None
    match: re.Pattern[str] | None


class HeaderRewriter:
    """One ordered list of header rules, applied in place."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Sequence[HeaderRule]) -> None:
        self._rules = tuple(
            _CompiledHeaderRule(
                rule.action,
                rule.name,
                rule.value,
                None if rule.match is None else re.compile(rule.match),
            )
            for rule in rules
        )

    def apply(self, headers: Headers) -> None:
        for rule in self._rules:
            if rule.action == "add":
                headers.add(rule.name, rule.value or "")
            elif rule.action == "remove":
                _remove(headers, rule)
            else:
                _replace(headers, rule)

    def __len__(self) -> int:
        return len(self._rules)


def _remove(headers: Headers, rule: _CompiledHeaderRule) -> None:
    if rule.match is None:
        headers.remove(rule.name)
        return
    pattern = rule.match
    values = headers.get_all(rule.name)
    kept = [value for value in values if pattern.search(value) is None]
    if len(kept) != len(values):
        _rewrite_all(headers, rule.name, kept)


def _replace(headers: Headers, rule: _CompiledHeaderRule) -> None:
    template = rule.value or ""
    if rule.match is None:
        # Sets one field in place of all of that name; absent stays absent.
        if rule.name in headers:
            headers.set(rule.name, template)
        return
    pattern = rule.match
    values = headers.get_all(rule.name)
    rewritten = [pattern.sub(template, value) for value in values]
    if rewritten != values:
        _rewrite_all(headers, rule.name, rewritten)


def _rewrite_all(headers: Headers, name: str, values: list[str]) -> None:
    """Give the header ``name`` exactly ``values``, the first one in place.

    Fields of one name keep their relative order, the only order that
    matters for them (RFC 3261 §7.3.1).
    """
    if not values:
        headers.remove(name)
        return
    first_name = next(
        field for field, _ in headers if header_key(field) == header_key(name)
    )
    headers.set(first_name, values[0])
    for value in values[1:]:
        headers.add(first_name, value)


def allowed_header_keys(names: Iterable[str]) -> frozenset[str]:
    """Look-up keys of an allow-list (lower case, compact forms expanded)."""
    return frozenset(header_key(name) for name in names)


def copy_allowed_headers(
    source: Headers, target: Headers, allowed: frozenset[str]
) -> int:
    """Append to ``target`` the fields of ``source`` whose name is in
    ``allowed`` (keys from :func:`allowed_header_keys`); returns how many.

    This is topology hiding: the B2BUA builds every other header of the
    outgoing message itself, so nothing else of the far side crosses.
    """
    copied = 0
    for name, value in source:
        if header_key(name) in allowed:
            target.add(name, value)
            copied += 1
    return copied


def number_from_uri(uri: Uri) -> str | None:
    """The number a Request-URI or To URI addresses, without visual
    separators, or None when the URI has none.

    tel URIs give their number (RFC 3966); SIP URIs their user part before
    any ``;`` parameter (RFC 3261 §19.1.1 telephone-subscriber), with
    separators removed when it looks like a phone number.
    """
    if isinstance(uri, TelUri):
        return uri.number.translate(_VISUAL_SEPARATORS)
    if not isinstance(uri, SipUri) or not uri.user:
        return None
    user = uri.user.partition(";")[0]
    if _PHONE_USER_RE.fullmatch(user):
        return user.translate(_VISUAL_SEPARATORS)
    return user


@dataclass(frozen=True, slots=True)
class TrunkRules:
    """Every rewrite of one trunk, compiled: built once per configuration."""

    inbound_numbers: NumberRewriter
    outbound_numbers: NumberRewriter
    ingress_headers: HeaderRewriter
    egress_headers: HeaderRewriter
    allowed_headers: frozenset[str]

    @classmethod
    def from_trunk(cls, trunk: Trunk) -> TrunkRules:
        return cls(
            NumberRewriter(trunk.numbers.inbound),
            NumberRewriter(trunk.numbers.outbound),
            HeaderRewriter(trunk.headers.ingress),
            HeaderRewriter(trunk.headers.egress),
            allowed_header_keys(trunk.topology_hiding.allow_headers),
        )
