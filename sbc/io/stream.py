"""SIP over TCP and TLS: framed streams and the table of open connections.

Each connection runs its bytes through the sans-IO StreamFramer, answers
double-CRLF keepalives (RFC 5626 §4.4.1) and passes whole messages up. A
framing or TLS error closes the connection. Connections are kept in one
table by (transport, peer address) so that responses and later requests to
the same peer reuse them (RFC 3261 §18.2.2, §18.1.1), and idle ones are
closed by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from sbc.io.addresses import Address, address_of
from sbc.io.counters import DropReason, TransportCounters
from sbc.io.tls import TlsError, TlsSession
from sbc.log import TRANSPORT_LOGGER, format_peer, with_context
from sbc.sip.errors import SipParseError
from sbc.sip.framing import StreamFramer

_log = logging.getLogger(TRANSPORT_LOGGER)

_PONG = b"\r\n"
# A peer that stops reading must not make us buffer without bound.
_MAX_WRITE_BUFFER = 1024 * 1024

ConnectionKey = tuple[str, Address]


class StreamSink(Protocol):
    """What stream connections hand their messages and failures to."""

    def stream_message_received(
        self, data: bytes, connection: StreamConnection
    ) -> None: ...

    def stream_framing_failed(
        self, error: SipParseError, connection: StreamConnection
    ) -> None: ...


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection carrying SIP, inbound or outbound."""

    def __init__(
        self,
        owner: StreamTransports,
        transport_name: str,
        tls: TlsSession | None,
        *,
        outbound: bool,
    ) -> None:
        self._owner = owner
        self._counters = owner.counters[transport_name]
        self._framer = owner.new_framer()
        self._tls = tls
        self._transport: asyncio.Transport | None = None
        self.transport_name = transport_name
        self.outbound = outbound
        self.peer: Address = ("", 0)
        self.local: Address = ("", 0)
        self.opened_at = 0.0
        self.last_activity = 0.0
        self.message_started: float | None = None
        """When the partial message now buffered began; None between messages."""
        self.keys: list[ConnectionKey] = []
        """Where the connection table files it: its peer and any aliases."""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.log: logging.LoggerAdapter[logging.Logger] = with_context(_log)
        """The transport logger with this connection's peer as context."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.peer = address_of(transport.get_extra_info("peername"))
        self.local = address_of(transport.get_extra_info("sockname"))
        self.log = with_context(_log, peer=self.describe())
        self.opened_at = self.last_activity = asyncio.get_running_loop().time()
        if not self._owner.register(self):
            self._transport.abort()
            return
        if self._tls is None:
            self._set_ready()
        elif self.outbound:
            self._write_raw(self._tls.start())

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = asyncio.get_running_loop().time()
        plaintext = self._decrypt(data) if self._tls is not None else data
        if plaintext:
            completed = self._deframe(plaintext)
            self._note_partial_message(now, completed)

    def eof_received(self) -> bool | None:
        # The peer will send nothing more: close rather than hold a socket in
        # CLOSE_WAIT. A response still due then takes a new connection to
        # the Via sent-by (RFC 3261 §18.2.2).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.unregister(self)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))
            # Nobody may be awaiting it (an inbound connection).
            self.ready.exception()
        self.log.debug("closed (%s)", exc or "normally")

    # Used by the SIP layer

    def send(self, data: bytes) -> None:
        """Write one message (or a CRLF pong); encrypts on TLS."""
        if self._transport is None or self._transport.is_closing():
            self._counters.drop(DropReason.SEND_FAILED)
            return
        if self._tls is not None:
            try:
                data = self._tls.send(data)
            except TlsError:
                self._fail(DropReason.TLS_RECORD_ERROR)
                return
        self._write_raw(data)
        self._counters.sent += 1

    def close(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._tls is not None:
            self._write_raw(self._tls.close())
        self._transport.close()

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def handshake_complete(self) -> bool:
        return self._tls is None or self._tls.handshake_complete

    def describe(self) -> str:
        return format_peer(self.peer, self.transport_name)

    # Steps

    def _decrypt(self, data: bytes) -> bytes:
        tls = cast(TlsSession, self._tls)
        was_complete = tls.handshake_complete
        try:
            plaintext, reply = tls.receive(data)
        except TlsError as exc:
            reason = (
                DropReason.TLS_RECORD_ERROR
                if was_complete
                else DropReason.TLS_HANDSHAKE_FAILED
            )
            self.log.debug("%s", exc.reason)
            self._fail(reason)
            return b""
        self._write_raw(reply)
        if tls.handshake_complete and not was_complete:
            self._set_ready()
        if tls.peer_closed:
            self.close()
        return plaintext

    def _deframe(self, data: bytes) -> bool:
        """Pass up what the bytes complete; True if they completed anything."""
        try:
            items = self._framer.feed(data)
        except SipParseError as exc:
            self._owner.sink.stream_framing_failed(exc, self)
            self._fail(DropReason.FRAMING_ERROR)
            return False
        for item in items:
            if isinstance(item, bytes):
                self._counters.received += 1
                self._owner.sink.stream_message_received(item, self)
            else:
                # A double-CRLF ping: answer with one CRLF (RFC 5626 §4.4.1).
                self._counters.keepalives += 1
                self.send(_PONG)
        return bool(items)

    def _note_partial_message(self, now: float, completed: bool) -> None:
        # The deadline runs from a message's first byte, not its latest one,
        # so trickling bytes cannot keep a half-sent message alive.
        if not self._framer.mid_message:
            self.message_started = None
        elif self.message_started is None or completed:
            self.message_started = now

    def _write_raw(self, data: bytes) -> None:
        transport = cast(asyncio.Transport, self._transport)
        if not data or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self.log.debug("peer does not read, closing")
            self._fail(DropReason.SEND_FAILED)

    def _fail(self, reason: DropReason) -> None:
        self._counters.drop(reason)
        self.close()

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)


class StreamTransports:
    """TCP and TLS listeners, outbound connects and the connection table."""

    def __init__(
        self,
        sink: StreamSink,
        counters: dict[str, TransportCounters],
        new_framer: Callable[[], StreamFramer],
        *,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
        max_connections: int = 4096,
    ) -> None:
        self.sink = sink
        self.counters = counters
        self.new_framer = new_framer
        self._server_tls = server_tls
        self._client_tls = client_tls
        self._max_connections = max_connections
        self._servers: list[asyncio.Server] = []
        self._connections: set[StreamConnection] = set()
        self._by_peer: dict[ConnectionKey, StreamConnection] = {}
        self._connecting: dict[ConnectionKey, asyncio.Task[StreamConnection]] = {}

    async def listen(
        self,
        transport_name: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
    ) -> Address:
        """Start a TCP or TLS listener; returns the bound address.

        A TLS listener serves ``tls`` when given, else the transports' own
        server context.
        """
        context = tls or self._server_tls
        if transport_name == "TLS" and context is None:
            raise ValueError("a TLS listener needs a certificate and key")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: self._inbound(transport_name, context),
            host,
            port,
            reuse_address=True,
        )
        self._servers.append(server)
        return address_of(server.sockets[0].getsockname())

    async def close_listener(self, local: Address) -> None:
        """Stop accepting on the TCP or TLS listener bound to ``local``;
        connections it accepted stay open until idle or closed by the peer."""
        for server in list(self._servers):
            # One TCP socket per address: TCP and TLS cannot share one.
            if address_of(server.sockets[0].getsockname()) == local:
                self._servers.remove(server)
                server.close()
                await server.wait_closed()

    def get(self, transport_name: str, peer: Address) -> StreamConnection | None:
        """An open connection to ``peer`` over that transport, if any."""
        connection = self._by_peer.get((transport_name, peer))
        return connection if connection is not None and connection.is_open else None

    def add_alias(self, connection: StreamConnection, alias: Address) -> None:
        """Let requests to ``alias`` reuse ``connection`` (RFC 5923 §5)."""
        if (connection.transport_name, alias) not in self._by_peer:
            self._index(connection, alias)

    async def connect(
        self, transport_name: str, peer: Address, timeout: float
    ) -> StreamConnection:
        """The open connection to ``peer``, connecting first if needed.

        Concurrent callers share one connect attempt. Raises OSError (refused,
        unreachable, timed out) or ConnectionError (TLS handshake failed).
        """
        existing = self.get(transport_name, peer)
        if existing is not None:
            return existing
        key = (transport_name, peer)
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.ensure_future(self._open(transport_name, peer, timeout))
            self._connecting[key] = task
            task.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    def close_idle(
        self,
        now: float,
        idle_timeout: float,
        handshake_timeout: float,
        message_timeout: float,
    ) -> None:
        """Close connections silent for ``idle_timeout``, handshakes that
        stall and messages not finished within ``message_timeout``."""
        for connection in list(self._connections):
            stalled = (
                not connection.handshake_complete
                and now - connection.opened_at > handshake_timeout
            )
            started = connection.message_started
            if stalled:
                reason = DropReason.TLS_HANDSHAKE_FAILED
            elif now - connection.last_activity > idle_timeout:
                reason = DropReason.IDLE_TIMEOUT
            elif started is not None and now - started > message_timeout:
                reason = DropReason.MESSAGE_TIMEOUT
            else:
                continue
            self.counters[connection.transport_name].drop(reason)
            connection.log.debug("closing: %s", reason.value)
            connection.close()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # Called by connections

    def register(self, connection: StreamConnection) -> bool:
        if not connection.outbound and len(self._connections) >= self._max_connections:
            self.counters[connection.transport_name].drop(DropReason.CONNECTION_LIMIT)
            return False
        self._connections.add(connection)
        self._index(connection, connection.peer)
        connection.log.debug("opened")
        return True

    def unregister(self, connection: StreamConnection) -> None:
        self._connections.discard(connection)
        for key in connection.keys:
            if self._by_peer.get(key) is connection:
                del self._by_peer[key]

    def _index(self, connection: StreamConnection, peer: Address) -> None:
        key = (connection.transport_name, peer)
        self._by_peer[key] = connection
        connection.keys.append(key)

    # Steps

    def _inbound(
        self, transport_name: str, context: ssl.SSLContext | None
    ) -> StreamConnection:
        tls = None
        if transport_name == "TLS":
            tls = TlsSession(cast(ssl.SSLContext, context), server_side=True)
        return StreamConnection(self, transport_name, tls, outbound=False)

    async def _open(
        self, transport_name: str, peer: Address, timeout: float
    ) -> StreamConnection:
        loop = asyncio.get_running_loop()
        tls = None
        if transport_name == "TLS":
            if self._client_tls is None:
                raise ConnectionError("outbound TLS is not configured")
            tls = TlsSession(
                self._client_tls, server_side=False, server_hostname=peer[0]
            )
        connection = StreamConnection(self, transport_name, tls, outbound=True)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: connection, peer[0], peer[1])
                await connection.ready
        except BaseException:
            connection.close()
            raise
        return connection
