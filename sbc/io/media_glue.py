"""Media anchoring inside ``sbc serve --config``: the relay beside the B2BUA.

The engine rewrites SDP synchronously, but the relay binds its sockets in
a coroutine. `MediaFirstUser` therefore holds a new INVITE until its relay
session is allocated, then hands it to the engine
from the endpoint's timer, so the SDP rewriter finds the ports ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sbc.b2bua import B2bua, CallRecordWriter
from sbc.b2bua.media import LegHome, MediaAnchor, TrunkPolicy
from sbc.cdr import CallRecord
from sbc.config.model import Config, Media, Srtp
from sbc.media import (
    MediaEvent,
    MediaRelay,
    MediaSettings,
    MediaTimedOut,
    PortsExhausted,
)
from sbc.sdp import LegPolicy, SdpError, SessionDescription
from sbc.sip.events import RequestReceived, TransactionEvent
from sbc.sip.message import make_response
from sbc.sip.transaction import TransactionError, TransactionLayer

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_log = logging.getLogger(__name__)

_OFFERLESS_STREAMS = 2


def media_relay(
    media: Media,
    anchor: MediaAnchor,
    wake: Callable[[], None],
    data_plane: DataPlane | None = None,
) -> MediaRelay:
    """The relay of the configured ``media`` section, reporting to ``anchor``.

    A timeout may end a call, so ``wake`` (the endpoint's) then sends the
    BYEs the engine queued outside any receive or timer of the endpoint.
    ``data_plane`` carries the legs of calls on IPsec listeners.
    """
    relay: MediaRelay

    def on_event(event: MediaEvent) -> None:
        if isinstance(event, MediaTimedOut):
            anchor.timed_out(event.call_id, event.idle_for, relay.time())
            wake()

    settings = MediaSettings(
        port_min=media.port_min,
        port_max=media.port_max,
        media_timeout=media.timeout,
        latch_any_source=media.latch_any_source,
    )
    relay = MediaRelay(settings, on_event=on_event, data_plane=data_plane)
    return relay


@dataclass(frozen=True, slots=True)
class LegSetup:
    """The relay address and SDP policy of each leg (A, B) of a new call."""

    hosts: tuple[str, str]
    policies: tuple[LegPolicy, LegPolicy]
    ipsec: tuple[bool, bool] = (False, False)
    """Legs relayed inside IPsec (the data plane's channel), not on sockets."""


def leg_setup(config: Config, address: str) -> Callable[[str | None], LegSetup]:
    """The leg setup for a call arriving on a listener (by name).

    The A-leg uses its listener's ``media_address`` (or its address when that
    is specific) and its ``srtp``, inside IPsec when the listener is; the
    B-leg, not routed yet when ports are bound, uses ``media.address`` and
    ``media.srtp`` on sockets.
    """
    media = config.media
    b_policy = _policy(media, media.srtp)

    def setup(listener_name: str | None) -> LegSetup:
        listener = None if listener_name is None else config.listener(listener_name)
        if listener is None:
            return LegSetup((address, address), (_policy(media, Srtp()), b_policy))
        chosen = listener.media_address or listener.address
        host = address if chosen.is_unspecified else str(chosen)
        policies = (_policy(media, listener.srtp), b_policy)
        return LegSetup((host, address), policies, (listener.ipsec, False))

    return setup


def leg_homes(config: Config, address: str, data_plane: DataPlane | None) -> LegHome:
    """Where each trunk's B-leg media lives: a protected trunk's inside IPsec
    on its IPsec listener's ``media_address`` (or address), any other's on
    sockets at ``address`` (``media.address``).

    Raises ValueError when a trunk is protected and there is no data plane:
    its media would otherwise be relayed in clear.
    """
    inside: dict[str, str] = {}
    for trunk in config.trunks:
        listeners = (config.listener(name) for name in trunk.listeners)
        listener = next((item for item in listeners if item and item.ipsec), None)
        if trunk.ipsec_profile is None or listener is None:
            continue
        if data_plane is None:
            raise ValueError(f"trunk {trunk.name} is protected: no IPsec data plane")
        inside[trunk.name] = str(listener.media_address or listener.address)

    def home(trunk: str) -> tuple[str, DataPlane | None]:
        host = inside.get(trunk)
        return (address, None) if host is None else (host, data_plane)

    return home


def trunk_policy(config: Config) -> TrunkPolicy:
    """Each trunk's ``media`` overrides over a leg's policy otherwise."""
    overrides = {trunk.name: trunk.media for trunk in config.trunks}

    def policy(trunk: str, base: LegPolicy) -> LegPolicy:
        media = overrides.get(trunk)
        if media is None:
            return base
        if media.codecs is not None:
            base = dataclasses.replace(base, codecs=frozenset(media.codecs))
        if media.srtp is not None:
            base = _with_srtp(base, media.srtp)
        return base

    return policy


def _with_srtp(base: LegPolicy, srtp: Srtp) -> LegPolicy:
    if srtp.mode == "none":
        return dataclasses.replace(base, srtp_suites=(), srtp_required=False)
    return dataclasses.replace(
        base,
        srtp_suites=tuple(srtp.suites),
        srtp_required=srtp.mode == "mandatory",
    )


def _policy(media: Media, srtp: Srtp) -> LegPolicy:
    codecs = None if media.codecs is None else frozenset(media.codecs)
    if srtp.mode == "none":
        return LegPolicy(codecs=codecs)
    return LegPolicy(
        codecs=codecs,
        srtp_suites=tuple(srtp.suites),
        srtp_required=srtp.mode == "mandatory",
    )


class MediaCdr:
    """Adds each call's media counters to its record before writing it."""

    def __init__(self, inner: CallRecordWriter, anchor: MediaAnchor) -> None:
        self._inner = inner
        self._anchor = anchor

    def write(self, record: CallRecord) -> None:
        counters = self._anchor.take_counters(record.call_id)
        if counters:
            record = dataclasses.replace(record, media={**record.media, **counters})
        self._inner.write(record)


class ArrivalMemo:
    """The engine's listener lookup, remembered for requests it gets late.

    The endpoint knows a request's listener only while receiving it; a held
    INVITE reaches the engine afterwards, so its answer is kept meanwhile.
    """

    def __init__(self, lookup: Callable[[RequestReceived], str | None]) -> None:
        self._lookup = lookup
        self._kept: dict[int, str | None] = {}

    def keep(self, event: RequestReceived) -> str | None:
        """Look the listener up now, for the engine's later call."""
        name = self._lookup(event)
        self._kept[id(event)] = name
        return name

    def forget(self, event: RequestReceived) -> None:
        self._kept.pop(id(event), None)

    def __call__(self, event: RequestReceived) -> str | None:
        if id(event) in self._kept:
            return self._kept.pop(id(event))
        return self._lookup(event)


class MediaFirstUser:
    """The endpoint's transaction user: the engine, with relay ports first.

    ``wake`` re-arms the endpoint's timer; a held INVITE is delivered from
    `handle_timer`; ``arrival`` is the memo the engine was built with.
    """

    def __init__(
        self,
        engine: B2bua,
        layer: TransactionLayer,
        anchor: MediaAnchor,
        relay: MediaRelay,
        setup: Callable[[str | None], LegSetup],
        arrival: ArrivalMemo,
        wake: Callable[[], None],
    ) -> None:
        self.engine = engine
        self._layer = layer
        self._anchor = anchor
        self._relay = relay
        self._setup = setup
        self._arrival = arrival
        self._wake = wake
        self._held: set[str] = set()
        self._ready: list[RequestReceived] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def handle_event(self, event: TransactionEvent, now: float) -> None:
        if _is_new_invite(event) and isinstance(event, RequestReceived):
            call_id = event.request.call_id
            if call_id in self._held:
                return
            if not self._anchor.prepared(call_id):
                self._hold(event)
                return
        self.engine.handle_event(event, now)

    def handle_timer(self, now: float) -> None:
        ready, self._ready = self._ready, []
        for event in ready:
            self.engine.handle_event(event, now)
        self.engine.handle_timer(now)

    def next_timer(self) -> float | None:
        if self._ready:
            # Due at once: any past deadline makes the endpoint call us.
            return 0.0
        return self.engine.next_timer()

    async def close(self) -> None:
        """Stop port allocations under way, then close the relay's sockets."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Awaited so no allocation finishes (and binds) after the relay closed.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._relay.close()

    def _hold(self, event: RequestReceived) -> None:
        self._held.add(event.request.call_id)
        setup = self._setup(self._arrival.keep(event))
        task = asyncio.get_running_loop().create_task(self._allocate(event, setup))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _allocate(self, event: RequestReceived, setup: LegSetup) -> None:
        request = event.request
        try:
            session = await self._relay.allocate(
                request.call_id,
                *setup.hosts,
                streams=_stream_count(request.body),
                ipsec=setup.ipsec,
            )
        except (PortsExhausted, OSError, ValueError) as exc:
            # No ports, a media address not on this host, or a leg inside
            # IPsec with no data plane: 503 lets the caller try another SBC
            # (RFC 3261 §21.5.4).
            self._held.discard(request.call_id)
            self._arrival.forget(event)
            _log.warning("call %s: no media ports: %s", request.call_id, exc)
            self._refuse(event, PortsExhausted.sip_status)
            return
        self._anchor.prepare(request.call_id, session, setup.policies)
        self._held.discard(request.call_id)
        self._ready.append(event)
        self._wake()

    def _refuse(self, event: RequestReceived, status: int) -> None:
        response = make_response(event.request, status, to_tag=os.urandom(8).hex())
        try:
            self._layer.send_response(response, asyncio.get_running_loop().time())
        except TransactionError as exc:
            _log.debug("refusal %d not sent: %s", status, exc)
        self._wake()


def _stream_count(body: bytes) -> int:
    # One relay port pair per m= line of the first offer; a body that does
    # not parse gets one, and the engine refuses it with 400 anyway. An
    # offerless INVITE gets its offer in the 2xx: room for audio and video.
    if not body:
        return _OFFERLESS_STREAMS
    try:
        return max(1, len(SessionDescription.parse(body).media))
    except SdpError:
        return 1


def _is_new_invite(event: TransactionEvent) -> bool:
    if not isinstance(event, RequestReceived):
        return False
    request = event.request
    return request.method == "INVITE" and request.to_tag is None
