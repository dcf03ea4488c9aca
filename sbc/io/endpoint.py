"""The asyncio glue around the SIP engines.

Bytes from the UDP, TCP and TLS transports are parsed, validated, stamped
(Via received/rport) and fed to the transaction layer; its events go to the
transaction user (the answering core, or the B2BUA call engine), which
answers and sends through the layer; whatever the layer wants sent goes out
on the right socket or connection. One timer
handle wakes the engines at their next deadline. Nothing received, however
broken, raises past this module: it is answered, or dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import ssl
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sbc.io.addresses import Address, format_host_port, is_ip_literal
from sbc.io.counters import DropReason, SipCounters, TransportCounters
from sbc.io.ipsec_channel import (
    NOT_UDP,
    ChannelCounters,
    ChannelListener,
    ChannelUnavailable,
)
from sbc.io.routing import (
    client_via,
    request_transport,
    response_destination,
    stamp_request,
)
from sbc.io.settings import TRANSPORTS, ListenSpec, TransportSettings
from sbc.io.stream import StreamConnection, StreamTransports
from sbc.io.tls import client_context, server_context
from sbc.io.udp import UdpListener, open_udp_listener
from sbc.log import TRANSPORT_LOGGER, MessageLogger, format_peer, with_context
from sbc.sip.core import CorePolicy, ResponseReady, SipCore
from sbc.sip.errors import SipParseError
from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    TransactionEvent,
)
from sbc.sip.framing import StreamFramer
from sbc.sip.headers import Via
from sbc.sip.message import Request, Response, make_response
from sbc.sip.parser import parse_message, validate_request, validate_response
from sbc.sip.requests import new_branch
from sbc.sip.timers import TimerValues
from sbc.sip.transaction import (
    ClientTransactionKey,
    TransactionError,
    TransactionLayer,
)

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_log = logging.getLogger(TRANSPORT_LOGGER)

_STREAMS = ("TCP", "TLS")
# Events through which a received request reaches the core.
_REQUEST_EVENTS = (RequestReceived, AckReceived, CancelReceived)
# Peers remembered to answer from the UDP socket they used (symmetric UDP);
# bounded so that spoofed sources cannot grow it without limit.
_MAX_REMEMBERED_PEERS = 65536
# The sent-by of a request's top Via over UDP (the first Via line; our
# own requests write it in this canonical form).
_TOP_UDP_VIA = re.compile(
    rb"\r\n(?:via|v)[ \t]*:[ \t]*SIP/2\.0/UDP[ \t]+(\[[^\]\r\n]*\]|[^\s;:]+)(?::(\d+))?",
    re.IGNORECASE,
)


def _new_tag() -> str:
    return secrets.token_hex(8)


class TransactionUser(Protocol):
    """What consumes the transaction layer's events (RFC 3261 §8, the TU).

    `SipCore` (through `CoreUser`) without a configuration, the B2BUA call
    engine (`sbc.b2bua.B2bua`) with one. Both answer through the layer.
    """

    def handle_event(self, event: TransactionEvent, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_timer(self) -> float | None: ...


class CoreUser:
    """`SipCore` as a transaction user: its answers go back through the layer."""

    def __init__(self, core: SipCore, layer: TransactionLayer) -> None:
        self.core = core
        self._layer = layer

    def handle_event(self, event: TransactionEvent, now: float) -> None:
        for ready in self.core.handle_event(event, now):
            self._respond(ready, now)

    def handle_timer(self, now: float) -> None:
        for ready in self.core.handle_timer(now):
            self._respond(ready, now)

    def next_timer(self) -> float | None:
        return self.core.next_timer()

    def _respond(self, ready: ResponseReady, now: float) -> None:
        try:
            self._layer.send_response(ready.response, now, key=ready.key)
        except TransactionError as exc:
            # The transaction ended meanwhile (e.g. Timer H): nothing to do.
            _log.debug("response %d not sent: %s", ready.response.status, exc)


class SipEndpoint:
    """SIP listeners wired to one transaction layer and one transaction user.

    Listeners marked ``ipsec`` are bindings in ``data_plane``'s datagram
    channel (sbc.io.ipsec_channel). ``ipsec_peers`` maps each host that
    must only be reached inside IPsec (a protected trunk's target) to the
    IPsec listener it is reached through; a host heard on an IPsec listener
    is added to it. UDP for those hosts never leaves on a kernel socket.
    """

    def __init__(
        self,
        settings: TransportSettings,
        policy: CorePolicy | None = None,
        *,
        timers: TimerValues | None = None,
        data_plane: DataPlane | None = None,
        ipsec_peers: Mapping[str, Address] | None = None,
    ) -> None:
        self.settings = settings
        self.data_plane = data_plane
        self.transactions = TransactionLayer(timers or TimerValues())
        self.core = SipCore(policy or CorePolicy(), _new_tag)
        self.user: TransactionUser = CoreUser(self.core, self.transactions)
        """Set to the call engine once the listeners are bound (`sbc.io.calls`)."""
        self.counters = {name: TransportCounters(name) for name in TRANSPORTS}
        self.sip_counters = SipCounters()
        self.listening: list[ListenSpec] = []
        """Every listener with the address it is bound to (ports resolved)."""
        self.arrival: ListenSpec | None = None
        """While a received request is handled: the listener it arrived on."""
        self._udp: list[UdpListener] = []
        self._udp_by_peer: dict[Address, UdpListener] = {}
        self.ipsec_counters = ChannelCounters()
        self._channels: list[ChannelListener] = []
        self._ipsec_peers = dict(ipsec_peers or {})
        self._channel_by_host: dict[str, ChannelListener] = {}
        self._streams = StreamTransports(
            self,
            self.counters,
            self._new_framer,
            server_tls=_server_tls(settings),
            client_tls=client_context(settings.tls_ca),
            max_connections=settings.max_connections,
        )
        self._messages = MessageLogger()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Life cycle

    async def start(self) -> None:
        """Open every listener; on failure close those opened and raise OSError."""
        try:
            for spec in self.settings.listen:
                await self._listen(spec)
            self._route_ipsec_peers()
        except BaseException:
            await self.close()
            raise
        self._schedule_sweep()

    async def close(self) -> None:
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        for listener in self._udp:
            listener.close()
        self._udp.clear()
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        await self._streams.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def open_connections(self) -> int:
        return self._streams.open_connections

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every counter, grouped as ``sip``, ``udp``, ``tcp`` and ``tls``,
        and ``ipsec`` (the IPsec listeners) when there is a data plane."""
        groups = {"sip": self.sip_counters.snapshot()}
        for name, counters in self.counters.items():
            groups[name.lower()] = counters.snapshot()
        groups["sip"]["open_connections"] = self.open_connections
        if self.data_plane is not None:
            groups["ipsec"] = self.ipsec_counters.snapshot()
        return groups

    # Sending requests (the TU's side)

    async def send_request(
        self, request: Request, destination: Address, transport: str = "UDP"
    ) -> ClientTransactionKey:
        """Send a request in a new client transaction.

        The transport layer adds the top Via (sent-by, a new branch, rport).
        A request over 1,300 bytes for UDP goes over TCP instead, and back
        to UDP if no TCP connection can be made (RFC 3261 §18.1.1), except
        toward a host reached inside IPsec, which gets UDP only. Raises
        OSError when a TCP/TLS destination cannot be reached.
        """
        transport = transport.upper()
        branch = new_branch(secrets.token_bytes(8))
        sized_local = self._local_address(transport, destination[0]) or ("", 0)
        via_line = f"Via: {client_via(transport, sized_local, branch)}\r\n"
        size = len(request.to_bytes()) + len(via_line)

        # Connect first, so that a refused TCP connection can still fall
        # back to UDP before any transaction exists.
        chosen = request_transport(size, transport)
        if destination[0] in self._channel_by_host:
            # Only UDP is carried inside IPsec; IP fragments the large ones.
            if transport != "UDP":
                raise OSError(f"{transport} to {destination[0]}: only UDP inside IPsec")
            chosen = transport
        connection_local = None
        if chosen in _STREAMS:
            connection_local, chosen = await self._connect_for_request(
                chosen, transport, destination, size
            )
        local = self._local_address(chosen, destination[0]) or connection_local
        if local is None:
            raise OSError(f"no {chosen} listener to send to {destination}")
        request.headers.prepend("Via", str(client_via(chosen, local, branch)))
        now = self._now()
        key = self.transactions.send_request(request, destination, chosen, now)
        self._run_engines(now)
        return key

    def wake(self) -> None:
        """Send what the engines queued outside a receive or a timer.

        A service that drives the transaction layer on its own (registration,
        keepalive) calls this so its requests leave now and the endpoint's one
        timer learns the new deadlines.
        """
        self._run_engines(self._now())

    def send_cancel(
        self, invite_key: ClientTransactionKey
    ) -> ClientTransactionKey | None:
        """CANCEL a pending INVITE: same destination, port and transport (§9.1)."""
        now = self._now()
        key = self.transactions.cancel(invite_key, now)
        self._run_engines(now)
        return key

    async def _connect_for_request(
        self, chosen: str, asked: str, destination: Address, size: int
    ) -> tuple[Address | None, str]:
        try:
            connection = await self._streams.connect(
                chosen, destination, self.settings.connect_timeout
            )
        except OSError as exc:  # refused, unreachable, timed out, TLS failed
            if chosen == asked:
                raise
            # RFC 3261 §18.1.1: a refused connection means retrying over UDP.
            _log.warning(
                "%d-byte request for %s: TCP impossible (%s), sending over UDP",
                size,
                format_host_port(*destination),
                exc or type(exc).__name__,
            )
            return None, asked
        return connection.local, chosen

    # Receiving (called by the transports)

    def datagram_received(
        self, data: bytes, source: Address, listener: UdpListener | ChannelListener
    ) -> None:
        if isinstance(listener, ChannelListener):
            # The SA vouches for the inner source: answer it the same way.
            self._channel_by_host[source[0]] = listener
            self._receive(data, source, "UDP", None, listener.local, ipsec=True)
            return
        remembered = self._udp_by_peer
        if len(remembered) >= _MAX_REMEMBERED_PEERS and source not in remembered:
            remembered.clear()
        remembered[source] = listener
        self._receive(data, source, "UDP", None, listener.local)

    def stream_message_received(
        self, data: bytes, connection: StreamConnection
    ) -> None:
        self._receive(
            data,
            connection.peer,
            connection.transport_name,
            connection,
            connection.local,
        )

    def stream_framing_failed(
        self, error: SipParseError, connection: StreamConnection
    ) -> None:
        connection.log.debug("framing failed, closing: %s", error.reason)

    def _receive(
        self,
        data: bytes,
        source: Address,
        transport: str,
        connection: StreamConnection | None,
        local: Address,
        *,
        ipsec: bool = False,
    ) -> None:
        """The one place where received bytes enter the engines."""
        self._messages.received(data, source, transport)
        try:
            self._process(data, source, transport, connection, local, ipsec)
        except Exception:
            # Bad input raises SipParseError, handled below; anything else is
            # a bug. uvloop would close the socket if it escaped, so keep the
            # listener serving and make the bug visible.
            self.sip_counters.internal_errors += 1
            _peer_log(source, transport).exception("internal error on a message")

    def _process(
        self,
        data: bytes,
        source: Address,
        transport: str,
        connection: StreamConnection | None,
        local: Address,
        ipsec: bool,
    ) -> None:
        via = None
        try:
            message = parse_message(data)
            if isinstance(message, Response):
                validate_response(message)
            else:
                validate_request(message)
                # Stamping splits the rest of the top Via row, which
                # validation does not read: it can fail too.
                via = stamp_request(message, source)
        except SipParseError as exc:
            self._reject(exc, source, transport, connection)
            return
        now = self._now()
        if isinstance(message, Response):
            self.sip_counters.responses += 1
            self.transactions.receive_response(message, source, transport, now)
            self._run_engines(now)
        elif via is not None:
            self.arrival = ListenSpec(transport, *local, ipsec=ipsec)
            try:
                self._receive_request(message, via, source, transport, connection, now)
            finally:
                self.arrival = None

    def _receive_request(
        self,
        request: Request,
        via: Via,
        source: Address,
        transport: str,
        connection: StreamConnection | None,
        now: float,
    ) -> None:
        if connection is not None and "alias" in via.params:
            self._streams.add_alias(connection, via.sent_by)
        self.sip_counters.requests += 1
        self.transactions.receive_request(request, source, transport, now)

        # Without a request event the transaction layer absorbed the request:
        # a retransmission, or the ACK of a non-2xx final response.
        events = self._drain_events()
        if not any(isinstance(event, _REQUEST_EVENTS) for event in events):
            if request.method == "ACK":
                self.sip_counters.acks_absorbed += 1
            else:
                self.sip_counters.retransmissions_absorbed += 1
        self._run_engines(now, events)

    def _reject(
        self,
        error: SipParseError,
        source: Address,
        transport: str,
        connection: StreamConnection | None,
    ) -> None:
        """Answer a bad request when it can be answered; count it either way."""
        counters = self.counters[transport]
        request = error.request
        if error.is_response:
            counters.drop(DropReason.MALFORMED_RESPONSE)
        elif request is None or request.method == "ACK":
            counters.drop(DropReason.UNPARSEABLE_REQUEST)
        elif self._answer_statelessly(request, error, source, transport, connection):
            counters.drop(DropReason.ANSWERED_ERROR)
        else:
            counters.drop(DropReason.UNPARSEABLE_REQUEST)
        # Guarded: a flood of bad datagrams must not build a logger each.
        if _log.isEnabledFor(logging.DEBUG):
            _peer_log(source, transport).debug("dropped or answered: %s", error.reason)
        if error.stream_unusable and connection is not None:
            counters.drop(DropReason.FRAMING_ERROR)
            connection.close()

    def _answer_statelessly(
        self,
        request: Request,
        error: SipParseError,
        source: Address,
        transport: str,
        connection: StreamConnection | None,
    ) -> bool:
        """Send the error response; False when even that cannot be built.

        A top Via too broken to read (an IPv6 zone index, say) is echoed as
        it came and the answer goes back to the source address, the only
        return path left (RFC 3261 §18.2.2 falls back to it with rport).
        """
        try:
            via: Via | None = stamp_request(request, source)
        except SipParseError:
            via = None
        try:
            response = make_response(
                request, error.status_code, error.reason, to_tag=_new_tag()
            )
        except SipParseError:
            # The To header is itself malformed: nothing well formed to echo.
            return False
        data = response.to_bytes()
        if connection is not None:
            self._messages.sent(data, source, transport)
            connection.send(data)
        else:
            destination = (
                source if via is None else response_destination(via, reliable=False)
            )
            self._send(data, destination, transport)
        return True

    # Driving the engines

    def _run_engines(
        self, now: float, events: list[TransactionEvent] | None = None
    ) -> None:
        """Hand events to the TU until none are left, then send and re-arm."""
        pending = events if events is not None else self._drain_events()
        while pending:
            for event in pending:
                self.user.handle_event(event, now)
            pending = self._drain_events()
        for transmission in self.transactions.datagrams_to_send():
            self._send(*transmission)
        self._arm_timer()

    def _drain_events(self) -> list[TransactionEvent]:
        events = []
        while (event := self.transactions.next_event()) is not None:
            events.append(event)
        return events

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        try:
            self.transactions.handle_timer(now)
            self.user.handle_timer(now)
            self._run_engines(now)
        except Exception:
            # As in _receive: a bug must not stop the timers for good.
            self.sip_counters.internal_errors += 1
            _log.exception("internal error in the SIP timers")
            self._arm_timer()

    def _arm_timer(self) -> None:
        deadlines = [
            deadline
            for deadline in (self.transactions.next_timer(), self.user.next_timer())
            if deadline is not None
        ]
        if not deadlines:
            return
        deadline = min(deadlines)
        # An earlier wake-up than needed is harmless; only arm earlier ones.
        if self._timer is not None and self._timer_deadline <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    # Sending bytes

    def _send(self, data: bytes, destination: Address, transport: str) -> None:
        self._messages.sent(data, destination, transport)
        if transport == "UDP":
            self._send_udp(data, destination)
        elif destination[0] in self._channel_by_host:
            # A stream to a host reached inside IPsec would cross in clear.
            self.ipsec_counters.drops[NOT_UDP] += 1
            self._transport_failed(destination, transport, "only UDP inside IPsec")
        elif transport in _STREAMS:
            self._send_stream(data, destination, transport)
        else:
            self._transport_failed(destination, transport, f"{transport} is not served")

    def _send_udp(self, data: bytes, destination: Address) -> None:
        host = destination[0]
        channel = self._channel_by_host.get(host)
        if channel is not None:
            self._send_channel(channel, data, destination)
            return
        listener = self._udp_named_by_via(data) or self._udp_by_peer.get(destination)
        if listener is None:
            if not is_ip_literal(host):
                self._spawn(self._resolve_and_send(data, destination))
                return
            listener = self._udp_for(host)
        if listener is None:
            self.counters["UDP"].drop(DropReason.SEND_FAILED)
            self._transport_failed(
                destination, "UDP", "no UDP listener for that family"
            )
            return
        listener.send(data, destination)

    def _send_stream(self, data: bytes, destination: Address, transport: str) -> None:
        connection = self._streams.get(transport, destination)
        if connection is not None:
            connection.send(data)
        else:
            self._spawn(self._connect_and_send(data, destination, transport))

    async def _connect_and_send(
        self, data: bytes, destination: Address, transport: str
    ) -> None:
        # A response whose connection has gone: RFC 3261 §18.2.2 opens a new
        # one to received (or sent-by) on the sent-by port.
        target = _reconnect_target(data) or destination
        try:
            connection = await self._streams.connect(
                transport, target, self.settings.connect_timeout
            )
        except OSError as exc:
            self.counters[transport].drop(DropReason.SEND_FAILED)
            self._transport_failed(
                destination, transport, str(exc) or type(exc).__name__
            )
            return
        connection.send(data)

    async def _resolve_and_send(self, data: bytes, destination: Address) -> None:
        host, port = destination
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            self._transport_failed(destination, "UDP", f"cannot resolve {host}: {exc}")
            return
        resolved = (str(infos[0][4][0]), port)
        channel = self._channel_by_host.get(resolved[0])
        if channel is not None:
            self._send_channel(channel, data, resolved)
            return
        listener = self._udp_named_by_via(data) or self._udp_for(resolved[0])
        if listener is None:
            self._transport_failed(
                destination, "UDP", "no UDP listener for that family"
            )
            return
        listener.send(data, resolved)

    def _send_channel(
        self, channel: ChannelListener, data: bytes, destination: Address
    ) -> None:
        # Never a kernel socket instead: a drop fails the transactions now.
        drop = channel.send(data, destination)
        if drop is not None:
            why = f"the IPsec data plane dropped it ({drop})"
            self._transport_failed(destination, "UDP", why)

    def _transport_failed(self, destination: Address, transport: str, why: str) -> None:
        _peer_log(destination, transport).debug("cannot send: %s", why)
        self.sip_counters.transport_errors += 1
        now = self._now()
        self.transactions.report_transport_error(destination, transport, now)
        self._run_engines(now)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Listeners and addresses

    async def open_listener(
        self, spec: ListenSpec, tls: ssl.SSLContext | None = None
    ) -> ListenSpec:
        """Open one more listener while serving; returns it with the port
        bound. A TLS listener serves ``tls`` (else the settings' certificate).
        Raises OSError (address in use, not local), ValueError (TLS without
        a certificate) or ChannelUnavailable (IPsec without a data plane)."""
        await self._listen(spec, tls)
        return self.listening[-1]

    async def close_listener(self, bound: ListenSpec) -> None:
        """Close the listener bound as ``bound`` (one of `listening`).

        Its TCP/TLS connections stay open until idle, so dialogs they carry
        can finish; UDP peers remembered on it are answered from another
        socket of the family.
        """
        if bound not in self.listening:
            return
        self.listening.remove(bound)
        local = (bound.host, bound.port)
        if bound.ipsec:
            for channel in [c for c in self._channels if c.local == local]:
                self._channels.remove(channel)
                channel.close()
            # Hosts reached through it stay pinned to the closed listener:
            # no path at all until it reopens, never a clear one.
        elif bound.transport == "UDP":
            for listener in [u for u in self._udp if u.local == local]:
                self._udp.remove(listener)
                listener.close()
            self._udp_by_peer = {
                peer: u for peer, u in self._udp_by_peer.items() if u.local != local
            }
        else:
            await self._streams.close_listener(local)
        _log.info("closed %s", bound)

    async def _listen(
        self, spec: ListenSpec, tls: ssl.SSLContext | None = None
    ) -> None:
        if spec.ipsec:
            bound = self._open_channel(spec)
        elif spec.transport == "UDP":
            listener = await open_udp_listener(
                spec.host,
                spec.port,
                self,
                self.counters["UDP"],
                self.settings.udp_receive_buffer,
            )
            self._udp.append(listener)
            bound = listener.local
        else:
            bound = await self._streams.listen(
                spec.transport, spec.host, spec.port, tls
            )
        listening = ListenSpec(spec.transport, bound[0], bound[1], spec.ipsec)
        self.listening.append(listening)
        _log.info("listening on %s", listening)

    def _open_channel(self, spec: ListenSpec) -> Address:
        if self.data_plane is None:
            raise ChannelUnavailable(f"{spec}: no IPsec data plane to carry it")
        channel = ChannelListener(self.data_plane, spec, self, self.ipsec_counters)
        channel.open()
        self._channels.append(channel)
        for host, local in self._ipsec_peers.items():
            if local == channel.local:
                self._channel_by_host[host] = channel
        for host, previous in self._channel_by_host.items():
            if previous.local == channel.local:
                self._channel_by_host[host] = channel
        return channel.local

    def set_ipsec_peers(self, peers: Mapping[str, Address]) -> None:
        """Replace the hosts pinned to IPsec listeners while serving.

        Raises ChannelUnavailable, changing nothing, when a host names an
        address with no IPsec listener open. A host no longer pinned is
        forgotten even if it was heard inside IPsec (its trunk went clear).
        """
        pinned = self._pinned(peers)
        for host in self._ipsec_peers.keys() - pinned.keys():
            self._channel_by_host.pop(host, None)
        self._ipsec_peers = dict(peers)
        self._channel_by_host.update(pinned)

    def _route_ipsec_peers(self) -> None:
        self._channel_by_host.update(self._pinned(self._ipsec_peers))

    def _pinned(self, peers: Mapping[str, Address]) -> dict[str, ChannelListener]:
        """Each protected host's IPsec listener; ChannelUnavailable if absent."""
        by_local = {channel.local: channel for channel in self._channels}
        pinned = {}
        for host, local in peers.items():
            channel = by_local.get(local)
            if channel is None:
                where = format_host_port(*local)
                raise ChannelUnavailable(f"{host}: no IPsec listener on {where}")
            pinned[host] = channel
        return pinned

    def _udp_named_by_via(self, data: bytes) -> UdpListener | None:
        """The UDP listener a request's top Via names, if one does.

        A request leaves from the socket its Via advertises (a trunk's own
        listener), so that the peer sees one address for us; a response
        leaves from the socket its request came in on (symmetric UDP).
        """
        if len(self._udp) < 2 or data.startswith(b"SIP/2.0 "):
            return None
        head = data[: data.find(b"\r\n\r\n")]
        match = _TOP_UDP_VIA.search(head)
        if match is None:
            return None
        host = match[1].strip(b"[]").decode("ascii", "replace")
        port = int(match[2]) if match[2] else 5060
        by_host = {u.local[0]: u for u in self._udp if u.local[1] == port}
        wildcard = "::" if ":" in host else "0.0.0.0"
        return by_host.get(host) or by_host.get(wildcard)

    def _udp_for(self, host: str) -> UdpListener | None:
        ipv6 = ":" in host
        return next((u for u in self._udp if (":" in u.local[0]) == ipv6), None)

    def _local_address(self, transport: str, destination_host: str) -> Address | None:
        """The address our Via advertises for ``transport`` toward a host."""
        channel = self._channel_by_host.get(destination_host)
        if channel is not None and transport == "UDP":
            return channel.local
        ipv6 = ":" in destination_host
        for spec in self.listening:
            if spec.transport == transport and (":" in spec.host) == ipv6:
                host = spec.host
                if host in ("0.0.0.0", "::"):
                    host = _source_address_toward(destination_host)
                return host, spec.port
        return None

    def _schedule_sweep(self) -> None:
        settings = self.settings
        shortest = min(
            settings.idle_timeout, settings.connect_timeout, settings.message_timeout
        )
        interval = max(0.05, shortest / 4)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        settings = self.settings
        self._streams.close_idle(
            self._now(),
            settings.idle_timeout,
            settings.connect_timeout,
            settings.message_timeout,
        )
        self._schedule_sweep()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _new_framer(self) -> StreamFramer:
        return StreamFramer(
            max_header_bytes=self.settings.max_header_bytes,
            max_body_bytes=self.settings.max_body_bytes,
        )


def _peer_log(
    address: Address, transport: str
) -> logging.LoggerAdapter[logging.Logger]:
    return with_context(_log, peer=format_peer(address, transport))


def _server_tls(settings: TransportSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return server_context(settings.tls_cert, settings.tls_key)


def _reconnect_target(data: bytes) -> Address | None:
    if not data.startswith(b"SIP/2.0 "):
        return None
    try:
        message = parse_message(data)
        return response_destination(message.top_via, reliable=True)
    except SipParseError:
        return None


def _source_address_toward(host: str) -> str:
    """The local address the kernel would send from toward ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet leaves: UDP connect only routes
        return str(probe.getsockname()[0])
