"""Offer/answer rewriting that anchors media at the SBC (RFC 3264).

The B2BUA calls `anchor_offer` with the SDP offer from one leg and sends the
result on the other; when the answer comes back it calls `anchor_answer`,
sends its result to the offerer and hands the `MediaPlan` to the relay. Each
leg sees only the SBC: its own o= line, the SBC's address in c= and the
relay's ports in m=. Nothing here does I/O; keys come from ``random_bytes``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from .codecs import Codec, codec_table, is_auxiliary, keep_formats, payload_type_of
from .crypto import SRTP_SUITES, CryptoAttribute, InvalidCrypto
from .errors import (
    AnswerMismatch,
    NoCommonCodec,
    NotAcceptableHere,
    SdpSyntaxError,
    UnusableCrypto,
)
from .leg import Leg, RandomBytes
from .model import (
    Connection,
    Line,
    MediaDescription,
    SessionDescription,
)
from .plan import (
    LegMedia,
    MediaEndpoint,
    MediaPlan,
    RelayPorts,
    SrtpKeys,
    StreamPlan,
    StreamPorts,
)

AllocatePorts = Callable[[int, str], StreamPorts]
"""Called with the m= index and media type; returns the relay's ports.

For a re-offer it should return the ports already used for that index.
"""

RTP_PROFILES = frozenset(("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"))

# Attributes describing the peer's own transport (ICE, DTLS, SDES, RTCP port).
# The SBC terminates the transport on each leg, so they never cross it.
TRANSPORT_ATTRIBUTES = (
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "fingerprint",
    "setup",
    "connection",
    "crypto",
    "rtcp",
    "rtcp-mux",
    "bundle-only",
)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

Direction = tuple[bool, bool]
"""(sends, receives) as seen by the author of an SDP."""


@dataclass(frozen=True, slots=True)
class _OfferedStream:
    """What the offer step learnt about one m= line."""

    ports: StreamPorts | None
    """None for a stream forwarded or answered at port 0."""
    codecs: dict[str, Codec]
    """The offer's payload types and their codecs."""
    direction: Direction
    remote: MediaEndpoint | None
    rtcp_mux: bool
    """The offerer offered RTCP multiplexing and its leg allows it."""
    crypto: CryptoAttribute | None
    """The offerer's a=crypto line the SBC chose (RFC 4568 §7.1.1)."""
    sent_crypto: tuple[CryptoAttribute, ...]


@dataclass(frozen=True, slots=True)
class PendingOffer:
    """An anchored offer waiting for its answer; pass it to `anchor_answer`."""

    offerer: Leg
    answerer: Leg
    offer: SessionDescription
    sent: SessionDescription
    streams: tuple[_OfferedStream, ...]


def anchor_offer(
    offer: SessionDescription,
    *,
    offerer: Leg,
    answerer: Leg,
    allocate_ports: AllocatePorts,
    random_bytes: RandomBytes,
) -> tuple[SessionDescription, PendingOffer]:
    """Rewrite an offer from ``offerer``'s leg into the offer for ``answerer``'s.

    Raises `NoCommonCodec` or `UnusableCrypto` (488) when nothing can be
    offered on; ``offer`` itself is left unchanged.
    """
    # RFC 3264 §8: a later offer never has fewer m= lines than the session.
    if len(offer.media) < max(offerer.media_count, answerer.media_count):
        raise NotAcceptableHere("the offer removes m= lines of the session")
    sent_media, streams = [], []
    for index, section in enumerate(offer.media):
        out, stream = _offer_stream(
            index, section, offer, offerer, answerer, allocate_ports, random_bytes
        )
        sent_media.append(out)
        streams.append(stream)

    # RFC 3264 §6: an offer must leave at least one stream the answerer can take.
    was_active = any(section.port != 0 for section in offer.media)
    if was_active and all(stream.ports is None for stream in streams):
        raise NoCommonCodec("no stream of the offer has a codec allowed on both legs")

    sent = SessionDescription(_session_lines(offer.lines, answerer), sent_media)
    answerer.stamp(sent)
    pending = PendingOffer(offerer, answerer, offer, sent, tuple(streams))
    return sent, pending


def _offer_stream(
    index: int,
    section: MediaDescription,
    offer: SessionDescription,
    offerer: Leg,
    answerer: Leg,
    allocate_ports: AllocatePorts,
    random_bytes: RandomBytes,
) -> tuple[MediaDescription, _OfferedStream]:
    # A port-0 stream passes as it came, only its address and keys hidden.
    if section.port == 0:
        return _passed_port_zero(section, answerer), _NOT_ANCHORED
    if section.proto not in RTP_PROFILES:
        return _rejected(section), _NOT_ANCHORED
    _check_payload_types(section)
    codecs = codec_table(section)
    kept = _allowed_formats(section, codecs, offerer, answerer)
    if not _has_media_codec(codecs, kept):
        return _rejected(section), _NOT_ANCHORED

    crypto = _choose_crypto(section, offerer)
    ports = allocate_ports(index, section.media)
    remote = _remote_endpoint(section, offer)
    direction = _effective_direction(section, offer, remote)
    mux = section.has_attribute("rtcp-mux") and offerer.policy.rtcp_mux
    out, sent_crypto = _forwarded_section(
        index, section, kept, ports.answerer_side, answerer, random_bytes
    )
    _write_offer_rtcp(out, ports.answerer_side, mux and answerer.policy.rtcp_mux)
    if remote is None:
        # RFC 3264 §8.4: c=0.0.0.0 hold becomes an explicit direction.
        _set_direction(out, direction)
    stream = _OfferedStream(
        ports, codecs, direction, remote, mux, crypto, tuple(sent_crypto)
    )
    return out, stream


_NOT_ANCHORED = _OfferedStream(None, {}, (False, False), None, False, None, ())


def _check_payload_types(section: MediaDescription) -> None:
    # RFC 3551 §3 and RFC 8866 §5.14: RTP formats are payload types 0-127.
    for payload_type in section.formats:
        if (
            not payload_type.isdigit()
            or len(payload_type) > 3
            or int(payload_type) > 127
        ):
            raise SdpSyntaxError("an RTP m= line lists a format that is not 0-127")


def _passed_port_zero(section: MediaDescription, leg: Leg) -> MediaDescription:
    out = _copy(section)
    out.remove_attributes(*TRANSPORT_ATTRIBUTES)
    if out.connection is not None:
        out.set_connection(Connection.for_address(leg.media_address))
    return out


def _rejected(section: MediaDescription) -> MediaDescription:
    """A port-0 m= line with the offered formats and no attributes (RFC 3264 §6)."""
    return MediaDescription(
        section.media, 0, None, section.proto, section.formats[:], []
    )


def _copy(section: MediaDescription) -> MediaDescription:
    return MediaDescription(
        section.media,
        section.port,
        section.port_count,
        section.proto,
        section.formats[:],
        section.lines[:],
    )


def _allowed_formats(
    section: MediaDescription, table: dict[str, Codec], offerer: Leg, answerer: Leg
) -> list[str]:
    """Formats both legs' allow-lists admit, in the offer's order."""
    kept = []
    for payload_type in section.formats:
        codec = table.get(payload_type)
        name = codec.name if codec is not None else None
        if offerer.policy.allows(name) and answerer.policy.allows(name):
            kept.append(payload_type)
    return kept


def _has_media_codec(table: dict[str, Codec], formats: list[str]) -> bool:
    """True when a format other than DTMF, comfort noise or FEC is left."""
    return any(not is_auxiliary(table.get(payload_type)) for payload_type in formats)


def _choose_crypto(section: MediaDescription, leg: Leg) -> CryptoAttribute | None:
    """Pick the first offered a=crypto line the leg accepts (RFC 4568 §7.1.1)."""
    if not section.proto.startswith("RTP/SAVP"):
        if leg.policy.srtp_required:
            raise UnusableCrypto("plain RTP offered on a leg that requires SRTP")
        return None
    for value in section.attributes("crypto"):
        try:
            crypto = CryptoAttribute.parse(value)
        except InvalidCrypto:
            continue
        has_mki = any(key.mki is not None for key in crypto.key_params)
        if crypto.suite.name in leg.policy.srtp_suites and (
            leg.policy.srtp_mki or not has_mki
        ):
            return crypto
    raise UnusableCrypto("no offered a=crypto line is acceptable")


def _remote_endpoint(
    section: MediaDescription, description: SessionDescription
) -> MediaEndpoint | None:
    """Where the SDP's author receives this stream; None on c=0.0.0.0 hold."""
    connection = section.connection or description.connection
    if connection is None:
        raise SdpSyntaxError("an active m= line has no c= line")
    if connection.is_hold:
        return None
    address = _unicast_address(connection)
    rtcp_port, rtcp_address = _rtcp_attribute(section)
    if rtcp_port is None:
        # RFC 3605 §1: without a=rtcp, RTCP goes to the next port up.
        if section.port == 65_535 and not section.has_attribute("rtcp-mux"):
            raise SdpSyntaxError("RTP port 65535 leaves no port for RTCP")
        rtcp_port = min(section.port + 1, 65_535)
    return MediaEndpoint(address, section.port, rtcp_address or address, rtcp_port)


def _unicast_address(connection: Connection) -> str:
    """The address the relay sends to: a unicast IP literal of the right family."""
    try:
        address = ipaddress.ip_address(connection.address)
    except ValueError:
        # A host name (RFC 8866 §5.7 allows one) or a multicast /ttl suffix.
        raise NotAcceptableHere("c= does not name a unicast IP address") from None
    if address.version != (6 if connection.addr_type == "IP6" else 4):
        raise SdpSyntaxError("c= address does not match its address type")
    if address.is_multicast or getattr(address, "scope_id", None):
        raise NotAcceptableHere("c= names a multicast or link-local scoped address")
    return connection.address


def _rtcp_attribute(section: MediaDescription) -> tuple[int | None, str | None]:
    # RFC 3605 §2.1: a=rtcp:<port> [<nettype> <addrtype> <address>]
    value = section.attribute("rtcp")
    if value is None:
        return None, None
    fields = value.split(" ")
    if not fields[0].isdigit() or int(fields[0]) > 65_535 or len(fields) not in (1, 4):
        raise SdpSyntaxError("a=rtcp is not <port> [IN <addrtype> <address>]")
    if len(fields) == 1:
        return int(fields[0]), None
    connection = Connection.parse(" ".join(fields[1:]))
    # WebRTC writes "a=rtcp:9 IN IP4 0.0.0.0" meaning "no separate address".
    address = None if connection.is_hold else _unicast_address(connection)
    return int(fields[0]), address


def _direction_of(
    section: MediaDescription, description: SessionDescription
) -> Direction:
    # RFC 8866 §6.7: media-level direction overrides session-level; default sendrecv.
    name = section.direction or description.direction or "sendrecv"
    return _DIRECTION_FLAGS[name]


_DIRECTION_FLAGS: dict[str, Direction] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_DIRECTION_NAMES = {flags: name for name, flags in _DIRECTION_FLAGS.items()}


def _effective_direction(
    section: MediaDescription,
    description: SessionDescription,
    remote: MediaEndpoint | None,
) -> Direction:
    sends, receives = _direction_of(section, description)
    # RFC 3264 §8.4: c=0.0.0.0 means "do not send to me", whatever a= says.
    return sends, receives and remote is not None


def _set_direction(section: MediaDescription, direction: Direction) -> None:
    section.remove_attributes(*DIRECTIONS)
    section.lines.append(("a", _DIRECTION_NAMES[direction]))


def _forwarded_section(
    index: int,
    section: MediaDescription,
    formats: list[str],
    ports: RelayPorts,
    leg: Leg,
    random_bytes: RandomBytes,
) -> tuple[MediaDescription, list[CryptoAttribute]]:
    """The offered m= section as the SBC sends it on ``leg``."""
    out = _copy(section)
    keep_formats(out, formats)
    out.remove_attributes(*TRANSPORT_ATTRIBUTES)
    out.port = ports.rtp
    if out.connection is not None:
        out.set_connection(Connection.for_address(leg.media_address))

    # The profile follows the leg's SRTP policy, not the offerer's (RFC 4568 §7.1.1).
    feedback = "F" if out.proto.endswith("F") else ""
    sent_crypto = []
    if leg.policy.srtp_suites:
        out.proto = f"RTP/SAVP{feedback}"
        for tag, name in enumerate(leg.policy.srtp_suites, 1):
            crypto = leg.local_crypto(index, tag, SRTP_SUITES[name], random_bytes)
            sent_crypto.append(crypto)
            out.lines.append(("a", f"crypto:{crypto.to_value()}"))
    else:
        out.proto = f"RTP/AVP{feedback}"
    return out, sent_crypto


def _write_offer_rtcp(section: MediaDescription, ports: RelayPorts, mux: bool) -> None:
    # RFC 5761 §5.1.1: an offer of rtcp-mux keeps a usable RTCP port as fallback.
    if mux or ports.rtcp != ports.rtp + 1:
        section.lines.append(("a", f"rtcp:{ports.rtcp}"))
    if mux:
        section.lines.append(("a", "rtcp-mux"))


def _session_lines(lines: list[Line], leg: Leg) -> list[Line]:
    """Session-level lines for ``leg``: transport attributes gone, c= the SBC's."""
    out = SessionDescription(lines[:], [])
    out.remove_attributes(*TRANSPORT_ATTRIBUTES)
    out.lines = [
        line
        for line in out.lines
        if line[0] != "a" or line[1].partition(" ")[0] != "group:BUNDLE"
    ]
    out.set_session_connection(Connection.for_address(leg.media_address))
    return out.lines


def anchor_answer(
    answer: SessionDescription,
    pending: PendingOffer,
    *,
    random_bytes: RandomBytes,
) -> tuple[SessionDescription, MediaPlan]:
    """Rewrite the answer to ``pending.sent`` into the answer for the offerer.

    Raises `AnswerMismatch` (488) when the answer does not fit the offer.
    """
    # RFC 3264 §6: the answer has exactly as many m= lines as the offer.
    if len(answer.media) != len(pending.sent.media):
        raise AnswerMismatch("answer and offer differ in their number of m= lines")
    media, plans, rejected = [], [], []
    for index, section in enumerate(answer.media):
        out, plan = _answer_stream(index, section, answer, pending, random_bytes)
        media.append(out)
        if plan is None:
            rejected.append(index)
        else:
            plans.append(plan)

    answered = SessionDescription(_session_lines(answer.lines, pending.offerer), media)
    pending.offerer.stamp(answered)
    return answered, MediaPlan(tuple(plans), tuple(rejected))


def _answer_stream(
    index: int,
    section: MediaDescription,
    answer: SessionDescription,
    pending: PendingOffer,
    random_bytes: RandomBytes,
) -> tuple[MediaDescription, StreamPlan | None]:
    offered = pending.offer.media[index]
    stream = pending.streams[index]
    if stream.ports is None or section.port == 0:
        return _rejected(offered), None
    sent = pending.sent.media[index]
    if section.media != sent.media:
        raise AnswerMismatch(f"m= line {index} answered with another media type")
    _check_payload_types(section)

    pairs = _map_payload_types(stream.codecs, sent, section)
    answerer_srtp = _answerer_srtp(section, stream)
    remote = _remote_endpoint(section, answer)
    # RFC 3264 §6.1: the answer may only narrow what the offer allows.
    sends, receives = _effective_direction(section, answer, remote)
    direction = (sends and stream.direction[1], receives and stream.direction[0])

    out = _answered_section(section, offered, pairs, stream.ports.offerer_side, pending)
    offerer_srtp = _write_answer_crypto(
        out, index, stream, pending.offerer, random_bytes
    )
    _write_answer_rtcp(out, stream.ports.offerer_side, stream.rtcp_mux)
    _set_direction(out, direction)

    answerer_mux = section.has_attribute("rtcp-mux") and sent.has_attribute("rtcp-mux")
    plan = StreamPlan(
        index=index,
        media=offered.media,
        direction=_DIRECTION_NAMES[(direction[1], direction[0])],
        offerer=LegMedia(
            stream.ports.offerer_side,
            _muxed(stream.remote, stream.rtcp_mux),
            stream.rtcp_mux,
            offerer_srtp,
            _encodings(stream.codecs, [a for a, _ in pairs]),
        ),
        answerer=LegMedia(
            stream.ports.answerer_side,
            _muxed(remote, answerer_mux),
            answerer_mux,
            answerer_srtp,
            _encodings(codec_table(section), [b for _, b in pairs]),
        ),
        to_answerer={int(a): int(b) for a, b in pairs},
        to_offerer=_to_offerer(sent, pairs),
    )
    return out, plan


def _write_answer_rtcp(section: MediaDescription, ports: RelayPorts, mux: bool) -> None:
    # RFC 5761 §5.1.1: the answer carries a=rtcp-mux only when the offer did.
    if mux:
        section.lines.append(("a", "rtcp-mux"))
    elif ports.rtcp != ports.rtp + 1:
        section.lines.append(("a", f"rtcp:{ports.rtcp}"))


def _map_payload_types(
    offered_codecs: dict[str, Codec],
    sent: MediaDescription,
    answered: MediaDescription,
) -> list[tuple[str, str]]:
    """Pair each answered payload type with the offerer's type for that codec.

    The forwarded offer kept the offerer's numbers, so a type the answerer
    renumbered (RFC 3264 §6.1 allows it) is matched by codec; this is what
    lets telephone-event on 96 or 101 reach the other leg (RFC 4733 §2.5.1).
    """
    answered_codecs = codec_table(answered)
    pairs: list[tuple[str, str]] = []
    for payload_type in answered.formats:
        match = _offered_match(
            payload_type, answered_codecs.get(payload_type), sent, offered_codecs
        )
        if match is not None and all(match != a for a, _ in pairs):
            pairs.append((match, payload_type))
    if not _has_media_codec(offered_codecs, [a for a, _ in pairs]):
        raise AnswerMismatch("the answer keeps no codec of the offer")
    return pairs


def _offered_match(
    payload_type: str,
    codec: Codec | None,
    sent: MediaDescription,
    offered_codecs: dict[str, Codec],
) -> str | None:
    if codec is None:
        return payload_type if payload_type in sent.formats else None
    same = offered_codecs.get(payload_type)
    if payload_type in sent.formats and same is not None and same.key == codec.key:
        return payload_type
    return next(
        (
            candidate
            for candidate in sent.formats
            if (found := offered_codecs.get(candidate)) is not None
            and found.key == codec.key
        ),
        None,
    )


def _encodings(codecs: dict[str, Codec], payload_types: list[str]) -> dict[str, int]:
    """The relay's view of a leg: "name/rate[/channels]" -> payload type."""
    return {
        codecs[pt].rtpmap_value(pt).partition(" ")[2]: int(pt)
        for pt in payload_types
        if pt in codecs
    }


def _to_offerer(sent: MediaDescription, pairs: list[tuple[str, str]]) -> dict[int, int]:
    """Types the answerer may send -> the offerer's types.

    The answerer should send with the forwarded offer's numbers, which are the
    offerer's own; peers that send with their answer's numbers are mapped too.
    """
    mapping = {int(a): int(a) for a, _ in pairs}
    for offered_type, answered_type in pairs:
        if answered_type not in sent.formats:
            mapping.setdefault(int(answered_type), int(offered_type))
    return mapping


def _answered_section(
    section: MediaDescription,
    offered: MediaDescription,
    pairs: list[tuple[str, str]],
    ports: RelayPorts,
    pending: PendingOffer,
) -> MediaDescription:
    """The answerer's m= section renumbered into the offerer's payload types."""
    renumber = {answered: offered_type for offered_type, answered in pairs}
    lines = []
    for line in section.lines:
        payload_type = payload_type_of(line)
        if payload_type is None:
            lines.append(line)
        elif payload_type in renumber:
            lines.append(_renumbered(line, payload_type, renumber[payload_type]))
    out = MediaDescription(
        offered.media, ports.rtp, None, offered.proto, [a for a, _ in pairs], lines
    )
    out.remove_attributes(*TRANSPORT_ATTRIBUTES)
    if out.connection is not None:
        out.set_connection(Connection.for_address(pending.offerer.media_address))
    return out


def _renumbered(line: Line, old: str, new: str) -> Line:
    name, _, rest = line[1].partition(":")
    return "a", f"{name}:{new}{rest[len(old) :]}"


def _answerer_srtp(
    section: MediaDescription, stream: _OfferedStream
) -> SrtpKeys | None:
    """Check the answer's a=crypto against what the SBC offered (RFC 4568 §7.1.3)."""
    if not stream.sent_crypto:
        return None
    values = list(section.attributes("crypto"))
    if len(values) != 1:
        raise AnswerMismatch("an SRTP answer needs exactly one a=crypto line")
    try:
        crypto = CryptoAttribute.parse(values[0])
    except InvalidCrypto as error:
        raise AnswerMismatch(f"answer a=crypto unusable: {error.reason}") from None
    ours = next((c for c in stream.sent_crypto if c.tag == crypto.tag), None)
    if ours is None or ours.suite != crypto.suite:
        raise AnswerMismatch("answer a=crypto tag or suite was not offered")
    return SrtpKeys(crypto.suite, ours.key_params[0], crypto.key_params)


def _write_answer_crypto(
    out: MediaDescription,
    index: int,
    stream: _OfferedStream,
    leg: Leg,
    random_bytes: RandomBytes,
) -> SrtpKeys | None:
    # RFC 4568 §7.1.2: the answer repeats the chosen tag and suite with its own key.
    chosen = stream.crypto
    if chosen is None:
        return None
    ours = leg.local_crypto(index, chosen.tag, chosen.suite, random_bytes)
    out.lines.append(("a", f"crypto:{ours.to_value()}"))
    return SrtpKeys(chosen.suite, ours.key_params[0], chosen.key_params)


def _muxed(remote: MediaEndpoint | None, mux: bool) -> MediaEndpoint | None:
    if remote is None or not mux:
        return remote
    return MediaEndpoint(
        remote.address, remote.rtp_port, remote.address, remote.rtp_port
    )
