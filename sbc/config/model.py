"""The configuration model: listeners, trunks and dial plans.

One typed model serves the YAML file today and the admin plane tomorrow.
Every top-level object has a stable ``name`` that is its key; objects refer
to each other by name only, and nothing here holds run-time state (whether a
trunk is up, how many calls it carries): that lives in the engines that read
this model. Models are frozen: a change is a new model, validated whole.

Checks that need more than one field of one object (a trunk naming an
unknown listener, two listeners on one socket) live in
:mod:`sbc.config.references`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sbc.sip.errors import SipParseError
from sbc.sip.message import header_key
from sbc.sip.uri import SipUri, parse_uri

from .ipsec import IdentityType, IpsecNode, IpsecProfile, MeshPeer, check_identity
from .types import (
    NOT_BOOL,
    FailoverCode,
    HeaderName,
    HeaderNameList,
    HeaderValue,
    Host,
    IPAddressField,
    IPNetworkField,
    Name,
    Prefix,
    Regex,
    Secret,
    Text,
    Transport,
    check_template,
)

Port = Annotated[int, NOT_BOOL, Field(ge=0, le=65535)]
TargetPort = Annotated[int, NOT_BOOL, Field(ge=1, le=65535)]
Priority = Annotated[int, NOT_BOOL, Field(ge=0, le=65535)]
Weight = Annotated[int, NOT_BOOL, Field(ge=0, le=65535)]

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
"""RFC 3261 §19.1.2 default ports by transport."""

DEFAULT_FAILOVER_CODES: tuple[int | str, ...] = (408, "5xx")
"""Final responses after which the next candidate is tried (a timeout or a
transport error always fails over)."""

DEFAULT_ALLOWED_HEADERS = (
    "Accept",
    "Accept-Language",
    "Allow",
    "Allow-Events",
    "Content-Disposition",
    "Content-Language",
    "Date",
    "Event",
    "Organization",
    "P-Asserted-Identity",
    "Priority",
    "Privacy",
    "Reason",
    "Subject",
    "Supported",
    "User-Agent",
)
"""Headers that cross the SBC when a trunk sets no allow-list of its own.

Everything else (Via, Record-Route, Contact, Route, Call-ID, tags, Server,
Warning, P-Charging-Vector ...) is rebuilt by the B2BUA or dropped, so the
far side learns nothing of the near side's topology.
"""

PROTECTED_HEADERS = frozenset(
    header_key(name)
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Route",
        "Record-Route",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "RSeq",
        "RAck",
    )
)
"""Headers the B2BUA owns: rules may not touch them (dialog and transaction
state, framing and authentication depend on their exact values)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


SrtpSuiteName = Literal[
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
]
"""The SDES suites the media relay implements (RFC 4568, RFC 7714)."""
_DEFAULT_SRTP_SUITE: SrtpSuiteName = "AES_CM_128_HMAC_SHA1_80"


class Srtp(_Model):
    """SRTP (SDES, RFC 4568) on one leg of anchored calls."""

    mode: Literal["none", "optional", "mandatory"] = "none"
    """none: plain RTP only; optional: SRTP offered and accepted, plain RTP
    offers accepted too; mandatory: a plain RTP offer gets 488."""
    suites: list[SrtpSuiteName] = Field(
        default_factory=lambda: [_DEFAULT_SRTP_SUITE], min_length=1
    )
    """Suites accepted and offered (in this order) when mode is not none."""


class Listener(_Model):
    """A local SIP socket."""

    name: Name
    """Key of the listener; trunks refer to it by this name."""
    transport: Transport
    """``udp``, ``tcp`` or ``tls``."""
    address: IPAddressField
    """The local IPv4 or IPv6 address to bind (no wildcard restriction)."""
    port: Port = 0
    """Port to bind; omitted means 5060 (5061 for tls). 0 asks the kernel."""
    tls_cert: Path | None = None
    """PEM certificate chain (tls only; relative to the configuration file)."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (tls only)."""
    media_address: IPAddressField | None = None
    """Address for RTP relayed for calls on this listener; None: ``address``."""
    srtp: Srtp = Field(default_factory=Srtp)
    """SRTP on the A-leg of calls arriving on this listener (media anchoring)."""
    ipsec: bool = False
    """Carried inside IPsec: not a kernel socket but a binding in the IPsec
    data plane's datagram channel (udp only), reached only through the SAs
    of the trunks that use it. ``address`` is then the address inside the
    SA: the SBC's trunk address in transport mode, its inner address in
    tunnel mode."""

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: object) -> object:
        # Done before validation so the stored model always holds the port
        # actually bound: export and the admin plane see the real value.
        if isinstance(data, dict) and data.get("port") is None:
            transport = str(data.get("transport", "")).lower()
            if transport in DEFAULT_PORTS:
                return {**data, "port": DEFAULT_PORTS[transport]}
        return data

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        has_files = self.tls_cert is not None or self.tls_key is not None
        if self.transport == "tls" and (self.tls_cert is None or self.tls_key is None):
            raise PydanticCustomError(
                "tls_files", "a tls listener needs tls_cert and tls_key"
            )
        if self.transport != "tls" and has_files:
            raise PydanticCustomError(
                "tls_files", "tls_cert and tls_key belong to tls listeners only"
            )
        return self

    @model_validator(mode="after")
    def _ipsec_udp(self) -> Self:
        # The data plane's channel carries UDP only: SIP over it has UDP's
        # framing and retransmissions.
        if self.ipsec and self.transport != "udp":
            raise PydanticCustomError(
                "ipsec_transport", "an ipsec listener carries udp only"
            )
        return self


class Target(_Model):
    """One signalling destination of a trunk."""

    host: Host
    """IPv4/IPv6 literal (IPv6 without brackets) or DNS name."""
    port: TargetPort = 5060
    """Destination port."""
    transport: Transport = "udp"
    """``udp``, ``tcp`` or ``tls``; a listener of that transport must be among
    the trunk's listeners."""
    priority: Priority = 1
    """Lower is tried first (as in DNS SRV, RFC 2782)."""
    weight: Weight = 1
    """Share of first attempts among targets of equal priority; 0 means only
    after every weighted target of that priority."""


class DigestAccount(_Model):
    """Credentials a peer must present when it sends us requests."""

    username: Text
    password: Secret
    realm: Text
    """Realm of our challenge (RFC 3261 §22.1)."""


DigestAlgorithm = Literal["SHA-256", "MD5"]


def _default_algorithms() -> list[DigestAlgorithm]:
    return ["SHA-256", "MD5"]


class OutboundCredentials(_Model):
    """Credentials we answer a carrier's digest challenge with."""

    username: Text
    password: Secret
    realm: Text | None = None
    """Only challenges of this realm are answered; None answers any realm."""
    algorithms: list[DigestAlgorithm] = Field(
        default_factory=_default_algorithms, min_length=1
    )
    """Algorithms accepted in a challenge, by preference (RFC 8760 §2.4)."""

    @model_validator(mode="after")
    def _distinct_algorithms(self) -> Self:
        if len(set(self.algorithms)) != len(self.algorithms):
            raise PydanticCustomError("duplicate", "an algorithm is listed twice")
        return self


class InboundIdentification(_Model):
    """How a request arriving on one of the trunk's listeners is tied to it."""

    allow: list[IPNetworkField] = Field(default_factory=list)
    """Source networks of the peer (``192.0.2.10`` means a /32)."""
    digest: DigestAccount | None = None
    """Digest authentication the peer must also (or only) pass."""


class Backoff(_Model):
    """Retry schedule after a failed registration: initial, doubling, capped."""

    initial: float = Field(default=30.0, gt=0)
    """Seconds before the first retry."""
    maximum: float = Field(default=1800.0, gt=0)
    """Longest wait between retries."""
    factor: float = Field(default=2.0, ge=1)
    """Multiplier applied after each further failure."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.initial > self.maximum:
            raise PydanticCustomError("backoff", "initial must not exceed maximum")
        return self


def _sip_uri(text: str) -> str:
    try:
        uri = parse_uri(text)
    except SipParseError as exc:
        raise PydanticCustomError("sip_uri", f"not a SIP URI: {exc.reason}") from None
    if not isinstance(uri, SipUri):
        raise PydanticCustomError("sip_uri", "must be a sip: or sips: URI")
    return text


SipUriText = Annotated[Text, AfterValidator(_sip_uri)]


class Registration(_Model):
    """Registration of the SBC at a carrier (RFC 3261 §10)."""

    aor: SipUriText
    """Address of record registered, a sip: or sips: URI."""
    registrar: SipUriText | None = None
    """Registrar URI; None sends REGISTER to the trunk's targets."""
    expires: int = Field(default=3600, ge=60, le=86400)
    """Expiry asked for, in seconds; refreshed before it runs out."""
    retry: Backoff = Field(default_factory=Backoff)


class Keepalive(_Model):
    """OPTIONS pings to each target (RFC 3261 §11)."""

    interval: float = Field(default=30.0, ge=1, le=3600)
    """Seconds between pings."""
    up_threshold: int = Field(default=2, ge=1, le=100)
    """Answered pings in a row that bring a down target up."""
    down_threshold: int = Field(default=3, ge=1, le=100)
    """Unanswered pings in a row that take a target down."""


class Limits(_Model):
    """Call admission limits of a trunk; excess calls get 503 + Retry-After."""

    max_calls: int | None = Field(default=None, ge=1)
    """Concurrent calls; None is unlimited."""
    max_cps: float | None = Field(default=None, gt=0, le=100000)
    """New calls per second (token bucket rate); None is unlimited."""
    burst: int | None = Field(default=None, ge=1)
    """Bucket size: calls admitted at once after a quiet spell; None is
    ``max_cps`` rounded up."""
    retry_after: int = Field(default=5, ge=0, le=3600)
    """Retry-After seconds sent when ``max_calls`` is reached (a rate
    rejection computes its own from the bucket)."""


class NumberRule(_Model):
    """Rewrite a number that the pattern matches whole."""

    match: Regex
    """Python regular expression, matched against the whole number."""
    replace: HeaderValue
    """Replacement; ``\\1`` or ``\\g<name>`` insert groups."""

    @field_validator("replace")
    @classmethod
    def _template(cls, replace: str, info: ValidationInfo) -> str:
        # A pattern that failed its own check is already reported.
        if "match" in info.data:
            _checked_template(info.data["match"], replace)
        return replace


class NumberRules(_Model):
    """Number normalization of a trunk; in each list the first match wins."""

    inbound: list[NumberRule] = Field(default_factory=list)
    """Numbers received from the trunk, to E.164."""
    outbound: list[NumberRule] = Field(default_factory=list)
    """E.164 numbers sent to the trunk, to the form it expects."""


def _not_protected(name: str) -> str:
    if header_key(name) in PROTECTED_HEADERS:
        raise PydanticCustomError(
            "protected", "this header belongs to the B2BUA; rules cannot touch it"
        )
    return name


class HeaderRule(_Model):
    """Add, remove or replace one header."""

    action: Literal["add", "remove", "replace"]
    name: Annotated[HeaderName, AfterValidator(_not_protected)]
    match: Regex | None = None
    """remove: only values it matches (search); replace: the part replaced."""
    value: HeaderValue | None = None
    """Text to add, or the replacement (a template when ``match`` is set)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.action == "remove" and self.value is not None:
            raise PydanticCustomError("header_rule", "remove takes no value")
        if self.action != "remove" and self.value is None:
            raise PydanticCustomError("header_rule", f"{self.action} needs a value")
        if self.action == "add" and self.match is not None:
            raise PydanticCustomError("header_rule", "add takes no match")
        if self.match is not None and self.value is not None:
            _checked_template(self.match, self.value)
        return self


class HeaderRules(_Model):
    """Header manipulation, applied in order."""

    ingress: list[HeaderRule] = Field(default_factory=list)
    """Applied to requests and responses received from the trunk."""
    egress: list[HeaderRule] = Field(default_factory=list)
    """Applied to requests and responses sent to the trunk, last thing."""


def _none_protected(names: list[str]) -> list[str]:
    if any(header_key(name) in PROTECTED_HEADERS for name in names):
        raise PydanticCustomError(
            "protected",
            "headers the B2BUA builds (Via, Contact, Route ...) cannot cross",
        )
    return names


class TopologyHiding(_Model):
    allow_headers: Annotated[HeaderNameList, AfterValidator(_none_protected)] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HEADERS)
    )
    """Headers copied from the other leg into messages sent to this trunk."""


class TrunkMedia(_Model):
    """Media policy of one trunk's legs, over the node-wide one.

    Each field left unset keeps what the call's leg has otherwise: for the
    leg towards the trunk ``media.srtp``, for the leg from it its
    listener's ``srtp``; ``media.codecs`` for both.
    """

    codecs: list[str] | None = None
    """Encoding names allowed on this trunk's legs (case-insensitive),
    replacing ``media.codecs``; an offer left with none gets 488."""
    srtp: Srtp | None = None
    """SRTP on this trunk's legs, replacing the listener's or media's."""


TrunkKind = Literal["carrier", "peer-sbc", "pbx"]


class Trunk(_Model):
    """A SIP peer the SBC exchanges calls with."""

    name: Name
    kind: TrunkKind
    listeners: list[Name] = Field(min_length=1)
    """Listeners the trunk is reached on and sends from (one per transport)."""
    targets: list[Target] = Field(min_length=1)
    inbound: InboundIdentification = Field(default_factory=InboundIdentification)
    outbound_auth: OutboundCredentials | None = None
    registration: Registration | None = None
    keepalive: Keepalive | None = None
    """None: no OPTIONS pings, targets are always considered up."""
    limits: Limits = Field(default_factory=Limits)
    numbers: NumberRules = Field(default_factory=NumberRules)
    headers: HeaderRules = Field(default_factory=HeaderRules)
    topology_hiding: TopologyHiding = Field(default_factory=TopologyHiding)
    failover_codes: list[FailoverCode] = Field(
        default_factory=lambda: list(DEFAULT_FAILOVER_CODES)
    )
    """Final responses from this trunk that make the router try the next
    candidate: statuses or classes (``5xx``)."""
    dial_plan: Name | None = None
    """Dial plan for calls arriving from this trunk; None rejects them (404)."""
    media: TrunkMedia = Field(default_factory=TrunkMedia)
    """Media policy of this trunk's legs when media anchoring is on."""
    ipsec_profile: Name | None = None
    """IPsec profile protecting all of this trunk's signalling and media;
    None: the trunk is not protected."""
    ipsec_gateway: IPAddressField | None = None
    """Tunnel mode: the peer's IKE address, in front of its inner networks.
    Transport mode: unset, each target's address is an IKE peer itself."""
    ipsec_networks: list[IPNetworkField] = Field(default_factory=list)
    """Tunnel mode: the peer's inner networks (traffic selectors on its
    side); every target and the peer's media addresses lie inside."""
    ipsec_identity_type: IdentityType = "fqdn"
    ipsec_identity: Text | None = None
    """The identity the peer must authenticate with (RFC 7296 §3.5); unset:
    its IKE address as ID_IPV4_ADDR / ID_IPV6_ADDR."""

    @model_validator(mode="after")
    def _ipsec_identity_fits(self) -> Self:
        check_identity(self.ipsec_identity_type, self.ipsec_identity)
        return self


class RouteCandidate(_Model):
    trunk: Name
    priority: Priority = 1
    """Lower is tried first."""
    weight: Weight = 1
    """Share of first attempts among candidates of equal priority."""


class Route(_Model):
    """Calls whose normalized called number starts with ``prefix``."""

    prefix: Prefix
    """``+44``, ``1800``; empty matches every number (a default route)."""
    candidates: list[RouteCandidate] = Field(min_length=1)


class DialPlan(_Model):
    name: Name
    routes: list[Route] = Field(default_factory=list)
    """Prefixes are unique within a plan; the longest match wins."""


class Media(_Model):
    """Media anchoring: every call's RTP crosses the SBC's relay.

    Off by default (``address`` unset): bodies then cross the B2BUA as they
    came, which leaks the peers' media addresses.
    """

    address: IPAddressField | None = None
    """Local IP address the relay binds and writes in c= lines (the B-leg's,
    and the A-leg's when its listener names none); unset turns media
    anchoring off."""
    port_min: int = Field(default=20000, ge=1024, le=65534)
    """Lowest relay port (RTP ports are even, RTCP = RTP + 1)."""
    port_max: int = Field(default=29999, ge=1025, le=65535)
    """Highest relay port."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds without accepted RTP before the relay reports the call."""
    latch_any_source: bool = False
    """Latch to the first RTP source whatever its address (peers behind NAT)."""
    codecs: list[str] | None = None
    """Encoding names allowed on every leg (case-insensitive); unset allows
    all. An offer left with no allowed codec gets 488."""
    srtp: Srtp = Field(default_factory=Srtp)
    """SRTP on every B-leg (the leg the SBC places)."""

    @model_validator(mode="after")
    def _range_holds_a_pair(self) -> Self:
        if self.port_max - self.port_min < 1:
            raise ValueError("media port range holds no RTP/RTCP pair")
        return self


class Config(_Model):
    """The whole configuration of one node."""

    version: Literal[1] = 1
    """Format version of this file."""
    listeners: list[Listener] = Field(default_factory=list)
    trunks: list[Trunk] = Field(default_factory=list)
    dial_plans: list[DialPlan] = Field(default_factory=list)
    media: Media = Field(default_factory=Media)
    """Media anchoring (off unless ``media.address`` is set)."""
    ipsec: IpsecNode | None = None
    """This node's IKE address and identity; needed once a trunk or mesh
    peer is protected."""
    ipsec_profiles: list[IpsecProfile] = Field(default_factory=list)
    mesh_peers: list[MeshPeer] = Field(default_factory=list)
    """Other SBC nodes of the same operator, each reached over IPsec."""

    def listener(self, name: str) -> Listener | None:
        return next((item for item in self.listeners if item.name == name), None)

    def trunk(self, name: str) -> Trunk | None:
        return next((item for item in self.trunks if item.name == name), None)

    def dial_plan(self, name: str) -> DialPlan | None:
        return next((item for item in self.dial_plans if item.name == name), None)

    def ipsec_profile(self, name: str) -> IpsecProfile | None:
        return next((item for item in self.ipsec_profiles if item.name == name), None)

    def mesh_peer(self, name: str) -> MeshPeer | None:
        return next((item for item in self.mesh_peers if item.name == name), None)


def _checked_template(pattern: str, template: str) -> None:
    try:
        check_template(pattern, template)
    except (ValueError, re.error) as exc:
        raise PydanticCustomError("template", str(exc)) from None
