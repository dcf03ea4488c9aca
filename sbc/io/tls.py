"""TLS for SIP streams, driven through memory BIOs.

The stream protocol owns the socket and hands ciphertext to a
:class:`TlsSession`, which gives back plaintext and ciphertext to send. Doing
TLS here rather than in the event loop lets the transport count and close a
connection whose handshake fails, which the loop's own TLS layer swallows.
"""

from __future__ import annotations

import ssl
from pathlib import Path

_READ_CHUNK = 65536


class TlsError(Exception):
    """The TLS layer failed: a bad handshake, record or certificate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Context for TLS listeners: TLS 1.2 or later, no client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert_file, key_file)
    return context


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Context for outbound TLS; the peer's certificate must verify.

    RFC 5922 §7.3 matches the certificate against the host the request
    was sent to, which Python's hostname check does for names and for IP
    addresses alike.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    if ca_file is None:
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class TlsSession:
    """One TLS connection's state, without I/O.

    Feed ciphertext to :meth:`receive`; send what it and :meth:`send`
    return. Plaintext written before the handshake completes is held back.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._held: list[bytes] = []
        self.handshake_complete = False
        self.peer_closed = False

    def start(self) -> bytes:
        """The first flight (a ClientHello on the client side)."""
        self._advance_handshake()
        return self._outgoing.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Take ciphertext; return (plaintext received, ciphertext to send).

        Raises TlsError when the peer's data cannot be accepted.
        """
        self._incoming.write(data)
        if not self.handshake_complete:
            self._advance_handshake()
        plaintext = self._read_plaintext() if self.handshake_complete else b""
        return plaintext, self._outgoing.read()

    def send(self, plaintext: bytes) -> bytes:
        """Ciphertext carrying ``plaintext`` (empty while handshaking)."""
        if not self.handshake_complete:
            self._held.append(plaintext)
            return b""
        self._write(plaintext)
        return self._outgoing.read()

    def close(self) -> bytes:
        """A close_notify alert to send before closing the socket."""
        if self.handshake_complete:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                # The peer has not answered with its own close_notify yet;
                # the alert we produced is still in the outgoing BIO.
                pass
        return self._outgoing.read()

    def _advance_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TlsError(f"handshake failed: {_describe(exc)}") from None
        self.handshake_complete = True
        for plaintext in self._held:
            self._write(plaintext)
        self._held.clear()

    def _read_plaintext(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            except ssl.SSLError as exc:
                raise TlsError(f"bad record: {_describe(exc)}") from None
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _write(self, plaintext: bytes) -> None:
        try:
            self._ssl.write(plaintext)
        except ssl.SSLError as exc:
            raise TlsError(f"write failed: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else type(exc).__name__
