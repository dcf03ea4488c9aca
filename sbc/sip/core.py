"""What the appliance answers to SIP requests, for now, without I/O.

The core is the transaction user (TU) of the transaction layer: it takes the
layer's events and gives back responses to send on server transactions.
There is no routing yet, so every request the SBC would forward ends in a
final response here:

- OPTIONS to the SBC itself: 200 with Allow, Accept and Supported (§11).
- INVITE: the transaction layer sends 100 (Trying); after
  ``CorePolicy.no_route_delay`` the core answers 480 "no route". A CANCEL
  arriving first gets 200 and the INVITE 487 (§9.2).
- Anything in a dialog (a To tag), and BYE outside one: 481 (§12.2.2).
- A method not in Allow: 501 with Allow (§8.2.1).
- Require naming an unknown option tag: 420 with Unsupported (§8.2.2.3).
- Max-Forwards 0 on a request that would be forwarded: 483 (§16.3).

Every final response to a request without a To tag gets one (§8.2.6.2).
Time comes in as ``now`` and To tags from the ``new_tag`` callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sbc import __version__
from sbc.log import CORE_LOGGER, with_context
from sbc.sip.errors import BadExtension, MethodNotImplemented, SipError, SipParseError
from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
)
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import ServerTransactionKey
from sbc.sip.uri import SipUri, TelUri

_log = logging.getLogger(CORE_LOGGER)


@dataclass(frozen=True, slots=True)
class CorePolicy:
    """What the SBC claims to support and how it answers."""

    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
    """Methods the SBC serves; any other gets 501 with this list."""
    accept: tuple[str, ...] = ("application/sdp",)
    """Body types accepted in requests (415 otherwise)."""
    supported: tuple[str, ...] = ()
    """Option tags the SBC implements; a Require outside it gets 420."""
    no_route_delay: float = 0.0
    """Seconds an INVITE stays pending before the 480 (no route) answer."""
    server: str = f"secure-sbc/{__version__}"
    """The Server header of every response; empty for none."""


@dataclass(frozen=True, slots=True)
class ResponseReady:
    """A response the core decided on, to send on server transaction ``key``."""

    key: ServerTransactionKey
    response: Response


@dataclass(slots=True)
class _PendingInvite:
    request: Request
    to_tag: str
    deadline: float


class SipCore:
    """The request-answering policy; feed it transaction events and timers."""

    def __init__(self, policy: CorePolicy, new_tag: Callable[[], str]) -> None:
        self.policy = policy
        self._new_tag = new_tag
        self._allow = ", ".join(policy.allow)
        # INVITEs waiting for their 480, in deadline order: every one waits
        # the same delay, so insertion order is deadline order.
        self._pending: dict[ServerTransactionKey, _PendingInvite] = {}

    def handle_event(self, event: TransactionEvent, now: float) -> list[ResponseReady]:
        """Responses to send because of ``event`` (often none)."""
        if isinstance(event, RequestReceived):
            return self._request_received(event, now)
        if isinstance(event, CancelReceived):
            return self._cancel_received(event)
        if isinstance(event, TransactionTerminated | TransactionTimedOut):
            self._forget(event.key)
        elif isinstance(event, AckReceived):
            # An ACK for a 2xx: the SBC sends no 2xx to INVITE yet.
            _log.debug("ignoring ACK from %s (no dialog)", event.source)
        return []

    def handle_timer(self, now: float) -> list[ResponseReady]:
        """Answer 480 to every INVITE whose delay has passed."""
        due = []
        for key, pending in self._pending.items():
            if pending.deadline > now:
                break
            due.append(key)
        return [self._no_route(key, self._pending.pop(key)) for key in due]

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, if ever."""
        first = next(iter(self._pending.values()), None)
        return None if first is None else first.deadline

    # Requests

    def _request_received(
        self, event: RequestReceived, now: float
    ) -> list[ResponseReady]:
        request = event.request
        try:
            self._check(request)
            if request.method == "INVITE":
                return self._invite_received(event, now)
            return [self._answer(event.key, request, *self._answer_locally(request))]
        except SipError as exc:
            return [self._error(event.key, request, exc)]

    def _check(self, request: Request) -> None:
        """The checks of RFC 3261 §8.2 every request passes, in order."""
        method = request.method
        # §8.2.1: a method we do not serve.
        if method not in self.policy.allow:
            raise MethodNotImplemented(
                f"Not Implemented: {method} is not served",
                allow=list(self.policy.allow),
            )

        # §12.2.2: a request inside a dialog the SBC does not have.
        if request.to_tag is not None or method == "BYE":
            raise SipError("Call/Transaction Does Not Exist", status_code=481)

        # §8.2.2.3: extensions the client requires but we lack.
        unsupported = [
            tag for tag in request.require if tag not in self.policy.supported
        ]
        if unsupported:
            raise BadExtension("Bad Extension", unsupported=unsupported)

        # §8.2.3: a body we cannot read.
        self._check_body(request)
        self._check_uri_scheme(request)

        # §16.3 item 3: the request would be forwarded with no hops left.
        if request.max_forwards == 0 and self._would_forward(request):
            raise SipError("Too Many Hops", status_code=483)

    def _check_body(self, request: Request) -> None:
        if not request.body:
            return
        content_type = request.content_type
        if content_type is None or content_type.mime_type not in self.policy.accept:
            raise SipError("Unsupported Media Type", status_code=415)
        encoding = request.headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise SipError("Unsupported Media Type: content encoding", status_code=415)

    def _check_uri_scheme(self, request: Request) -> None:
        # §8.2.2.1: a scheme the SBC cannot serve gets 416.
        if not isinstance(request.request_uri, SipUri | TelUri):
            raise SipError("Unsupported URI Scheme", status_code=416)

    def _would_forward(self, request: Request) -> bool:
        """True unless the request is an OPTIONS for the SBC itself.

        An OPTIONS whose Request-URI has no user part asks about the SBC
        (trunk keepalives); one naming a user would go on to that user.
        """
        uri = request.request_uri
        addressed_to_sbc = isinstance(uri, SipUri) and not uri.user
        return not (request.method == "OPTIONS" and addressed_to_sbc)

    def _answer_locally(self, request: Request) -> tuple[int, str | None]:
        if request.method == "OPTIONS" and not self._would_forward(request):
            return 200, None
        return 480, _NO_ROUTE

    def _invite_received(
        self, event: RequestReceived, now: float
    ) -> list[ResponseReady]:
        pending = _PendingInvite(
            event.request, self._new_tag(), now + self.policy.no_route_delay
        )
        self._pending[event.key] = pending
        self._context(event.request).debug("INVITE pending, no route yet")
        return self.handle_timer(now)

    def _cancel_received(self, event: CancelReceived) -> list[ResponseReady]:
        # §9.2: 481 when nothing matches; otherwise 200, and 487 for the
        # INVITE if it is still pending. Both carry the same To tag.
        cancel = event.request
        if event.cancelled_key is None:
            return [self._answer(event.key, cancel, 481, None)]
        pending = self._pending.pop(event.cancelled_key, None)
        if pending is None:
            return [self._answer(event.key, cancel, 200, None)]
        self._context(cancel).debug("INVITE cancelled")
        return [
            self._answer(event.key, cancel, 200, None, to_tag=pending.to_tag),
            self._answer(
                event.cancelled_key, pending.request, 487, None, to_tag=pending.to_tag
            ),
        ]

    def _no_route(
        self, key: ServerTransactionKey, pending: _PendingInvite
    ) -> ResponseReady:
        self._context(pending.request).info("INVITE answered 480: no route")
        return self._answer(key, pending.request, 480, _NO_ROUTE, to_tag=pending.to_tag)

    def _forget(self, key: object) -> None:
        if isinstance(key, ServerTransactionKey):
            self._pending.pop(key, None)

    # Responses

    def _answer(
        self,
        key: ServerTransactionKey,
        request: Request,
        status: int,
        reason: str | None,
        *,
        to_tag: str | None = None,
    ) -> ResponseReady:
        tag = to_tag or self._new_tag()
        response = make_response(request, status, reason, to_tag=tag)
        headers = response.headers
        if status == 200 and request.method == "OPTIONS":
            headers.add("Allow", self._allow)
            headers.add("Accept", ", ".join(self.policy.accept))
            headers.add("Supported", ", ".join(self.policy.supported))
        if self.policy.server:
            headers.add("Server", self.policy.server)
        return ResponseReady(key, response)

    def _error(
        self, key: ServerTransactionKey, request: Request, error: SipError
    ) -> ResponseReady:
        self._context(request).debug("answering %d %s", error.status_code, error.reason)
        ready = self._answer(key, request, error.status_code, error.reason)
        headers = ready.response.headers
        if isinstance(error, MethodNotImplemented):
            headers.add("Allow", ", ".join(error.allow))
        elif isinstance(error, BadExtension):
            headers.add("Unsupported", ", ".join(error.unsupported))
        elif error.status_code == 415:
            headers.add("Accept", ", ".join(self.policy.accept))
            headers.add("Accept-Encoding", "identity")
        return ready

    def _context(self, request: Request) -> logging.LoggerAdapter[logging.Logger]:
        try:
            call_id: str | None = request.call_id
            branch = request.top_via.branch
        except SipParseError:
            call_id = branch = None
        return with_context(_log, call_id=call_id, branch=branch)


_NO_ROUTE = "Temporarily Unavailable (no route)"
