"""The body hook that anchors every call's media on the SBC's relay.

Each SDP crossing the B2BUA goes through `anchor_offer` or `anchor_answer`
(sbc.sdp), so only the relay's address and ports reach either peer; a
completed offer/answer is applied to the call's `MediaSession` (sbc.media).
The relay binds its sockets asynchronously, while the engine rewrites bodies
synchronously: the glue allocates the session before it hands the INVITE to
the engine (`prepare`), and the hook only looks it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sbc.media import (
    MediaSession,
    PortsExhausted,
    RemoteMedia,
    SrtpParameters,
    SrtpSuite,
)
from sbc.media import Side as MediaSide
from sbc.sdp import (
    Leg,
    LegMedia,
    LegPolicy,
    MediaPlan,
    NotAcceptableHere,
    PendingOffer,
    RelayPorts,
    SdpError,
    SessionDescription,
    StreamPorts,
    anchor_answer,
    anchor_offer,
)
from sbc.sip.errors import SipError

from .call import Side

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_log = logging.getLogger(__name__)

_SDP = "application/sdp"
_MEDIA_SIDE = {Side.A: MediaSide.A, Side.B: MediaSide.B}
_OTHER = {Side.A: Side.B, Side.B: Side.A}


MEDIA_TIMEOUT = "media_timeout"
"""The end reason of a call the relay reported silent (CDR, Reason header)."""

EndCall = Callable[[str, str, float], bool]
"""`B2bua.end_call`: (A-leg Call-ID, reason, now) -> whether a call ended."""

TrunkPolicy = Callable[[str, LegPolicy], LegPolicy]
"""A leg's SDP policy once its trunk is known: (trunk, policy otherwise)."""

LegHome = Callable[[str], "tuple[str, DataPlane | None]"]
"""Where a B-leg's media lives once its trunk is known: the relay address,
and the data plane whose channel carries it when the trunk is protected."""


@dataclass(slots=True)
class _CallMedia:
    """One call's relay session, its two SDP legs and the open offer."""

    session: MediaSession
    legs: dict[Side, Leg]
    policies: dict[Side, LegPolicy]
    """Each leg's policy before any trunk's overrides (failover resets)."""
    pending: PendingOffer | None = None
    offerer: Side | None = None
    answered: bool = False
    idle_for: float | None = None
    snapshot: dict[str, dict[str, float | int | None]] = field(default_factory=dict)


class MediaAnchor:
    """`BodyHook` that rewrites SDP through sbc.sdp and drives sbc.media.

    ``random_bytes`` supplies SDES keys and o= session ids (``os.urandom``
    in production). Bodies of calls that have no session (media anchoring
    was not prepared for them) and bodies that are not SDP pass unchanged.
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        trunk_policy: TrunkPolicy | None = None,
        leg_home: LegHome | None = None,
    ) -> None:
        self._random_bytes = random_bytes
        self._trunk_policy = trunk_policy
        self._leg_home = leg_home
        self._end_call: EndCall | None = None
        self._calls: dict[str, _CallMedia] = {}
        self._finished: dict[str, dict[str, dict[str, float | int | None]]] = {}

    def end_calls_with(self, end_call: EndCall) -> None:
        """Let a media timeout end answered calls (the engine is built after
        its body hook, hence not a constructor argument)."""
        self._end_call = end_call

    def prepare(
        self, call_id: str, session: MediaSession, policies: tuple[LegPolicy, LegPolicy]
    ) -> None:
        """Adopt the relay session allocated for a new call's first offer,
        with the SDP policy of each leg (A, B)."""
        legs = {
            side: Leg(
                session.hosts[_MEDIA_SIDE[side]],
                session_id=int.from_bytes(self._random_bytes(4), "big"),
                policy=policy,
            )
            for side, policy in zip((Side.A, Side.B), policies, strict=True)
        }
        self._calls[call_id] = _CallMedia(
            session, legs, dict(zip((Side.A, Side.B), policies, strict=True))
        )

    def route_chosen(self, call_id: str, side: Side, trunk: str) -> None:
        """Apply ``trunk``'s media policy to the call's leg on ``side``; the
        engine calls this before a body reaches that leg. A B-leg also moves
        to where its trunk's media lives (inside IPsec or not)."""
        media = self._calls.get(call_id)
        if media is None:
            return
        if side is Side.B and self._leg_home is not None:
            self._move_b_leg(media, *self._leg_home(trunk))
        if self._trunk_policy is not None:
            policy = self._trunk_policy(trunk, media.policies[side])
            media.legs[side].policy = policy

    def _move_b_leg(
        self, media: _CallMedia, host: str, channel: DataPlane | None
    ) -> None:
        session = media.session
        try:
            session.move_leg(MediaSide.B, host, channel)
        except (PortsExhausted, ValueError) as exc:
            # No ports left inside, or no sockets on that address any more
            # (the configuration changed mid-call): this trunk cannot be
            # tried, and the leg stays where it was, never in clear.
            _log.warning("call %s: B-leg media not moved: %s", session.call_id, exc)
            raise SipError(
                "Service Unavailable: no media path", status_code=503
            ) from None
        media.legs[Side.B].media_address = host

    def prepared(self, call_id: str) -> bool:
        return call_id in self._calls

    def session(self, call_id: str) -> MediaSession | None:
        media = self._calls.get(call_id)
        return None if media is None else media.session

    def rewrite(
        self, call_id: str, source: Side, body: bytes, content_type: str
    ) -> bytes:
        media = self._calls.get(call_id)
        if media is None or content_type.lower() != _SDP:
            return body
        try:
            description = SessionDescription.parse(body)
            if media.pending is not None and source is not media.offerer:
                return self._answer(media, description)
            return self._offer(media, source, description)
        except SdpError as exc:
            # Requests are refused with this status (488 or 400); a refused
            # answer in the callee's 2xx ends that leg with ACK and BYE.
            _log.debug("call %s: SDP from leg %s refused: %s", call_id, source, exc)
            if not media.answered and media.pending is None:
                # The first offer failed: the call will be refused, and the
                # engine never releases a call it did not set up.
                self.release(call_id)
            raise SipError(str(exc), status_code=exc.status_code) from None

    def release(self, call_id: str) -> None:
        """Close the call's sockets; its counters stay for `take_counters`."""
        media = self._calls.pop(call_id, None)
        if media is None:
            return
        counters: dict[str, dict[str, float | int | None]] = dict(
            media.session.snapshot()
        )
        if media.idle_for is not None:
            counters["timeout"] = {"idle_for": media.idle_for}
        self._finished[call_id] = counters
        media.session.close()

    def timed_out(self, call_id: str, idle_for: float, now: float) -> None:
        """The relay reported no RTP for the media timeout.

        A call that never completed an offer/answer holds ports for nothing:
        its session is released. An answered call is dead air: the engine
        ends it on both legs (`end_calls_with`), and its CDR records the
        timeout; the engine releasing the call closes the session.
        """
        media = self._calls.get(call_id)
        if media is None:
            return
        media.idle_for = idle_for
        _log.info("call %s: no RTP for %.0f s", call_id, idle_for)
        if not media.answered:
            self.release(call_id)
            self._finished.pop(call_id, None)
        elif self._end_call is not None:
            self._end_call(call_id, MEDIA_TIMEOUT, now)

    def take_counters(self, call_id: str) -> dict[str, dict[str, float | int | None]]:
        """The per-stream counters of an ended call, once (for its CDR)."""
        return self._finished.pop(call_id, {})

    # -- Offer and answer -------------------------------------------------------

    def _offer(
        self, media: _CallMedia, source: Side, offer: SessionDescription
    ) -> bytes:
        answerer = _OTHER[source]

        def allocate_ports(index: int, _media: object) -> StreamPorts:
            return StreamPorts(
                _relay_ports(media.session, source, index),
                _relay_ports(media.session, answerer, index),
            )

        outbound, pending = anchor_offer(
            offer,
            offerer=media.legs[source],
            answerer=media.legs[answerer],
            allocate_ports=allocate_ports,
            random_bytes=self._random_bytes,
        )
        media.pending, media.offerer = pending, source
        return outbound.to_bytes()

    def _answer(self, media: _CallMedia, answer: SessionDescription) -> bytes:
        pending, offerer = media.pending, media.offerer
        if pending is None or offerer is None:
            raise NotAcceptableHere("an answer with no offer outstanding")
        to_offerer, plan = anchor_answer(
            answer, pending, random_bytes=self._random_bytes
        )
        media.pending = media.offerer = None
        media.answered = True
        _apply(media.session, plan, offerer)
        return to_offerer.to_bytes()


def _relay_ports(session: MediaSession, side: Side, index: int) -> RelayPorts:
    # The relay has one port pair per m= line of the first offer: a later
    # offer with more lines cannot be anchored (RFC 3264 §8 allows 488).
    if index >= len(session.core.streams):
        raise NotAcceptableHere("more media streams than the call was set up with")
    local = session.local(_MEDIA_SIDE[side], index)
    return RelayPorts(local.rtp_port, local.rtcp_port)


def _apply(session: MediaSession, plan: MediaPlan, offerer: Side) -> None:
    """Feed each negotiated stream's two halves to the relay."""
    for stream in plan.streams:
        for side in (Side.A, Side.B):
            leg = stream.offerer if side is offerer else stream.answerer
            remote = _remote(leg, session.hosts[_MEDIA_SIDE[side]])
            session.update_leg(_MEDIA_SIDE[side], remote, stream=stream.index)


def _remote(leg: LegMedia, local_host: str) -> RemoteMedia:
    keys = leg.srtp
    srtp = (
        None
        if keys is None
        else SrtpParameters(
            SrtpSuite(keys.suite.name),
            send_key=keys.send.key_salt,
            receive_key=keys.receive[0].key_salt,
        )
    )
    endpoint = leg.remote
    if endpoint is None:
        # c=0.0.0.0 hold (RFC 3264 §8.4): the relay sends nothing to this peer.
        unspecified = "::" if ":" in local_host else "0.0.0.0"
        return RemoteMedia(unspecified, 0, srtp=srtp, payload_types=leg.payload_types)
    return RemoteMedia(
        host=endpoint.address,
        rtp_port=endpoint.rtp_port,
        rtcp_port=endpoint.rtcp_port,
        rtcp_mux=leg.rtcp_mux,
        srtp=srtp,
        payload_types=dict(leg.payload_types),
    )
