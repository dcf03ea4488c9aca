"""The B2BUA call engine, sans-IO: transaction events in, requests out.

The engine is the transaction user (TU) of one `TransactionLayer`. The glue
feeds the layer, then calls `pump(now)` so the engine drains the layer's
events; it calls `handle_timer(now)` when `next_timer()` passes. The engine
reads no clock and draws all randomness (tags, Call-IDs, branches, glare
delays, weighted routing) from the `rng` passed in.

A call is two user agents back to back (RFC 7092 §3.1): the A-leg, where
the SBC is the UAS of the caller's INVITE, and the B-leg, where it is the
UAC of an INVITE of its own to a trunk target. Each has its own Call-ID,
tags, CSeq, branches and route set; only bodies (through the body hook) and
the headers of the receiving trunk's allow-list cross between them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

from sbc.admission import AdmissionControl, AdmissionStats, CallRejected
from sbc.b2bua.call import Call, CallPhase, Leg, Side
from sbc.b2bua.errors import (
    DialogNotFound,
    LoopDetected,
    MethodNotAllowed,
    OverlappingInvite,
    RequestPending,
    SessionIntervalTooSmall,
    TransferRefused,
    TrunkUnavailable,
)
from sbc.b2bua.session_timer import (
    SessionTimer,
    interval_after_422,
    negotiate_as_uac,
    negotiate_as_uas,
)
from sbc.b2bua.settings import (
    B2buaSettings,
    BodyHook,
    CallRecordWriter,
    LocalEndpoint,
    PassThroughBodies,
    RandomSource,
)
from sbc.b2bua.timers import TimerQueue
from sbc.cdr import CallRecord, Disposition, HangupSide, disposition_for
from sbc.config.model import Config, DigestAccount
from sbc.routing import (
    CallRouter,
    Candidate,
    DigestChallengeNeeded,
    NoRouteFound,
    NoTrunkAvailable,
    RoutingError,
)
from sbc.rules import TrunkRules, copy_allowed_headers, number_from_uri
from sbc.sip.dialog import Dialog, DialogState
from sbc.sip.digest import (
    ClientCredentials,
    CredentialsRejected,
    DigestVerifier,
    NonceIssuer,
    Unauthorized,
    Verdict,
    answer_challenge,
    choose_challenge,
    digest_username,
)
from sbc.sip.errors import (
    BadExtension,
    BadRequest,
    MethodNotImplemented,
    SipError,
    SipParseError,
    TooManyHops,
)
from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.headers import Challenge, parse_credentials, quote_string
from sbc.sip.message import Headers, Request, Response, header_key, make_response
from sbc.sip.requests import new_branch
from sbc.sip.transaction import (
    ClientTransactionKey,
    ServerTransactionKey,
    TransactionError,
    TransactionLayer,
)

B2BUA_LOGGER = "sbc.b2bua"
_log = logging.getLogger(B2BUA_LOGGER)

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "INFO")
SUPPORTED = ("100rel", "timer")
# Methods a peer may not use through the SBC: event packages, instant
# messages and registration are not served (policy, docs/b2bua.md).
REFUSED_METHODS = frozenset({"MESSAGE", "NOTIFY", "SUBSCRIBE", "REGISTER", "PUBLISH"})
# Headers the engine writes itself, so an allow-list never copies them.
_ENGINE_HEADERS = frozenset(
    header_key(name)
    for name in (
        "Allow",
        "Supported",
        "Require",
        "Unsupported",
        "Session-Expires",
        "Min-SE",
        "RSeq",
        "RAck",
        "Content-Type",
        "Retry-After",
    )
)
# Provisional responses held while a reliable one awaits its PRACK.
MAX_QUEUED_PROVISIONALS = 8
# 422 retries per B-leg attempt (RFC 4028 §7.1 asks for a retry, not a loop).
MAX_SESSION_RETRIES = 2
# How long a refresh waits when an offer/answer exchange is in progress.
REFRESH_BUSY_DELAY = 2.0


class Purpose(enum.Enum):
    """Why the engine opened a client transaction."""

    INVITE = "initial INVITE"
    RELAY = "relayed request"
    REFRESH = "session refresh"
    BYE = "BYE"
    PRACK = "PRACK"
    FORK_BYE = "BYE of an extra 2xx"


@dataclass(slots=True, eq=False)
class _Pending:
    """A client transaction of ours and what its responses are for."""

    call: Call
    leg: Leg
    purpose: Purpose
    request: Request
    key: ClientTransactionKey
    source: Leg | None = None
    """RELAY: the leg whose request this one carries."""
    source_key: ServerTransactionKey | None = None
    source_request: Request | None = None
    session: SessionTimer | None = None
    """RELAY of INVITE/UPDATE: the source leg's timer once answered."""
    ack: Request | None = None
    final: bool = False
    busy: bool = False
    last_rseq: int | None = None
    """RELAY of a re-INVITE: the last RSeq PRACKed (RFC 3262 §4)."""
    answered: frozenset[tuple[int, str, bool]] = frozenset()
    """INVITE: the (401/407, realm, stale) challenges already answered."""


RouteChosen = Callable[[str, Side, str], None]
"""Told (A-leg Call-ID, side, trunk) when a leg's trunk is known: the A-leg's
once classified, each B-leg's before its INVITE body is rewritten, so the
body hook can apply that trunk's media policy."""


class TrunkService(Protocol):
    """A client of the engine's transaction layer beside the calls
    (registration, keepalive): it gets the events of its own transactions."""

    def handle_event(self, event: TransactionEvent, now: float) -> bool:
        """Whether the event was for one of the service's transactions."""
        ...

    def handle_timer(self, now: float) -> None: ...

    def next_timer(self) -> float | None: ...


class B2bua:
    """Every call of one SBC node; the TU of `layer`."""

    def __init__(
        self,
        layer: TransactionLayer,
        config: Config,
        settings: B2buaSettings,
        rng: RandomSource,
        cdr: CallRecordWriter,
        *,
        bodies: BodyHook | None = None,
        router: CallRouter | None = None,
        admission: AdmissionControl | None = None,
        digest: DigestVerifier | None = None,
        arrival: Callable[[RequestReceived], str | None] | None = None,
        route_chosen: RouteChosen | None = None,
    ) -> None:
        self._layer = layer
        self._on_route = route_chosen
        self._arrival = arrival
        """The glue's answer to "which listener did this request arrive on"."""
        self._settings = settings
        self._rng = rng
        self._cdr = cdr
        self._bodies: BodyHook = bodies or PassThroughBodies()
        self._router = router or CallRouter(config)
        self._admission = admission or AdmissionControl.from_config(config)
        self._rules: dict[str, TrunkRules] = {}
        self._allowed: dict[str, frozenset[str]] = {}
        self._endpoints = {e.transport.upper(): e for e in settings.endpoints}
        self._trunk_endpoints = _trunk_endpoints(config, settings)
        self._legs: dict[tuple[str, str], Leg] = {}
        self._invites: dict[ServerTransactionKey, Call] = {}
        self._merged: dict[tuple[str, str | None, int], ServerTransactionKey] = {}
        self._clients: dict[ClientTransactionKey, _Pending] = {}
        self._relays: dict[ServerTransactionKey, _Pending] = {}
        self._calls: set[Call] = set()
        self._timers = TimerQueue()
        self.down_trunks: set[str] = set()
        """Trunks the keepalive logic reports down; routing skips them."""
        self.blocked_trunks: set[str] = set()
        """Trunks an operator disabled or is draining: no new call comes from
        them (503) or goes to them; calls in progress continue."""
        self.unprotected_trunks: AbstractSet[str] = frozenset()
        """Protected trunks without a CHILD_SA (a live set of sbc.secure):
        routing skips them; calls in progress keep their state."""
        self._services: list[TrunkService] = []
        # Digest (docs/b2bua.md, "Authentication, registration and keepalive").
        self._verifier = digest or DigestVerifier(NonceIssuer(rng.randbytes))
        self._accounts: dict[str, DigestAccount] = {}
        self._credentials: dict[str, ClientCredentials] = {}
        self._take_trunks(config)
        self._in_dialog: dict[str, Callable[[Leg, RequestReceived, float], None]] = {
            "BYE": self._bye_received,
            "INVITE": self._reinvite_received,
            "UPDATE": self._update_received,
            "PRACK": self._prack_received,
            "INFO": self._relay_request,
            "OPTIONS": self._options_in_dialog,
        }

    # -- The glue's side -------------------------------------------------------

    def pump(self, now: float) -> None:
        """Handle every event the transaction layer has queued."""
        layer = self._layer
        event = layer.next_event()
        while event is not None:
            self.handle_event(event, now)
            event = layer.next_event()

    def handle_event(self, event: TransactionEvent, now: float) -> None:
        if self._services and self._for_service(event, now):
            return
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, ResponseReceived):
            self._on_response(event, now)
        elif isinstance(event, AckReceived):
            self._on_ack(event, now)
        elif isinstance(event, CancelReceived):
            self._on_cancel(event, now)
        elif isinstance(event, StrayResponseReceived):
            self._on_stray(event)
        elif isinstance(event, TransactionTerminated):
            self._on_terminated(event)
        else:
            self._on_failure(event, now)

    def handle_timer(self, now: float) -> None:
        """Fire the engine's own timers due at `now`, then drain the layer."""
        self._timers.fire_due(now)
        for service in self._services:
            service.handle_timer(now)
        self.pump(now)

    def next_timer(self) -> float | None:
        """The engine's next deadline (the layer has its own)."""
        deadline = self._timers.next_deadline()
        for service in self._services:
            due = service.next_timer()
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        return deadline

    def attach(self, service: TrunkService) -> None:
        """Run `service` (registration, keepalive) on the engine's layer:
        it gets the events of its transactions and its timers fire with
        the engine's."""
        self._services.append(service)

    def detach(self, service: TrunkService) -> None:
        """Stop running `service`; its transactions' later events are stray."""
        if service in self._services:
            self._services.remove(service)

    def reconfigure(self, config: Config, settings: B2buaSettings) -> None:
        """Take a new configuration (checked whole already) for new calls.

        Calls in progress keep going: the rules of a trunk that was removed
        stay until its last call ends; a changed trunk's rules apply to its
        calls' later requests. Admission keeps counting the calls in progress.
        """
        self._settings = settings
        self._endpoints = {e.transport.upper(): e for e in settings.endpoints}
        self._trunk_endpoints = _trunk_endpoints(config, settings)
        self._router = CallRouter(config)
        self._admission.reconfigure({t.name: t.limits for t in config.trunks})
        self._take_trunks(config)
        names = {trunk.name for trunk in config.trunks}
        self.down_trunks &= names
        self.blocked_trunks &= names

    def _take_trunks(self, config: Config) -> None:
        # Rules of trunks gone from the configuration stay for their calls.
        in_use = {leg.trunk for call in self._calls for leg in call.legs}
        rules = {t.name: TrunkRules.from_trunk(t) for t in config.trunks}
        for name in in_use - rules.keys():
            rules[name] = self._rules[name]
        self._rules = rules
        self._allowed = {
            name: trunk_rules.allowed_headers - _ENGINE_HEADERS
            for name, trunk_rules in rules.items()
        }
        self._accounts = {
            t.name: t.inbound.digest for t in config.trunks if t.inbound.digest
        }
        self._credentials = {
            t.name: ClientCredentials(
                t.outbound_auth.username,
                t.outbound_auth.password.get_secret_value(),
                t.outbound_auth.realm,
                tuple(t.outbound_auth.algorithms),
            )
            for t in config.trunks
            if t.outbound_auth is not None
        }

    def admission_stats(self, trunk: str) -> AdmissionStats:
        """Calls in progress, admitted and refused on ``trunk``."""
        return self._admission.stats(trunk)

    def calls(self) -> tuple[Call, ...]:
        """The calls in progress, for read-only views (never to be changed)."""
        return tuple(self._calls)

    def _for_service(self, event: TransactionEvent, now: float) -> bool:
        # Only client transactions the calls do not own can be a service's.
        if not isinstance(
            event, (ResponseReceived, TransactionTimedOut, TransportErrorOccurred)
        ):
            return False
        if event.key in self._clients:
            return False
        return any(service.handle_event(event, now) for service in self._services)

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def table_sizes(self) -> dict[str, int]:
        """Entries in every table, for leak checks and statistics."""
        return {
            "calls": len(self._calls),
            "legs": len(self._legs),
            "invites": len(self._invites),
            "merged": len(self._merged),
            "clients": len(self._clients),
            "relays": len(self._relays),
            "timers": len(self._timers),
        }

    # -- Requests --------------------------------------------------------------

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        try:
            if request.to_tag is None:
                self._out_of_dialog(event, now)
            else:
                self._within_dialog(event, now)
        except SipError as exc:
            self._refuse(event, exc, now)

    def _out_of_dialog(self, event: RequestReceived, now: float) -> None:
        method = event.request.method
        if method == "INVITE":
            self._new_call(event, now)
        elif method == "OPTIONS":
            self._respond(event.key, self._options_answer(event.request), now)
        elif method in ("BYE", "PRACK", "UPDATE", "INFO"):
            raise DialogNotFound("Call/Transaction Does Not Exist")
        else:
            self._refuse_method(method)

    def _within_dialog(self, event: RequestReceived, now: float) -> None:
        request = event.request
        leg = self._legs.get((request.call_id, request.to_tag or ""))
        dialog = None if leg is None else leg.dialog_for(request.from_tag)
        if leg is not None and leg.closed and request.method == "BYE":
            # Both sides hung up at once: the crossing BYE still gets 200.
            self._respond(event.key, make_response(request, 200), now)
            return
        if leg is None or dialog is None or leg.closed:
            raise DialogNotFound("Call/Transaction Does Not Exist")
        dialog.receive_request(request)
        self._rules[leg.trunk].ingress_headers.apply(request.headers)
        handler = self._in_dialog.get(request.method)
        if handler is None:
            self._refuse_method(request.method)
        else:
            handler(leg, event, now)

    def _refuse_method(self, method: str) -> None:
        if method == "REFER":
            raise TransferRefused("Forbidden: call transfer is not offered")
        if method in REFUSED_METHODS:
            raise MethodNotAllowed("Method Not Allowed", allow=ALLOW)
        raise MethodNotImplemented("Not Implemented", allow=list(ALLOW))

    def _refuse(self, event: RequestReceived, exc: SipError, now: float) -> None:
        request = event.request
        tag = self._token() if request.to_tag is None else None
        response = make_response(request, exc.status_code, exc.reason, to_tag=tag)
        _add_error_headers(response.headers, exc)
        self._respond(event.key, response, now)
        # A challenge is a step of the call attempt, not a refused call.
        if isinstance(exc, Unauthorized):
            return
        if request.method == "INVITE" and request.to_tag is None:
            self._record_refusal(request, exc.status_code, now)

    def _options_answer(self, request: Request) -> Response:
        # RFC 3261 §11.2: the capabilities of the SBC itself, unless the
        # request requires an extension the SBC lacks (§8.2.2.3: 420).
        _require_supported(request)
        tag = self._token() if request.to_tag is None else None
        response = make_response(request, 200, to_tag=tag)
        response.headers.add("Allow", ", ".join(ALLOW))
        response.headers.add("Accept", "application/sdp")
        response.headers.add("Supported", ", ".join(SUPPORTED))
        return response

    def _options_in_dialog(self, leg: Leg, event: RequestReceived, now: float) -> None:
        self._respond(event.key, self._options_answer(event.request), now)

    # -- A new call ------------------------------------------------------------

    def _new_call(self, event: RequestReceived, now: float) -> None:
        request = event.request
        self._check_new_invite(event)
        # Classify by the listener the INVITE arrived on when the glue says
        # which; otherwise by the first listener of its transport.
        arrived_on = None if self._arrival is None else self._arrival(event)
        listener = arrived_on or self._endpoint(event.transport).listener
        trunk = self._classify(event, listener, now)
        if trunk in self.blocked_trunks:
            raise TrunkUnavailable("Service Unavailable: trunk disabled")
        rules = self._rules[trunk]
        rules.ingress_headers.apply(request.headers)
        session = negotiate_as_uas(request, self._settings.session_timer)

        call = Call(start_time=now)
        call.calling_received = number_from_uri(request.from_.uri) or "anonymous"
        call.called_received = number_from_uri(request.request_uri)
        if call.called_received is None:
            raise NoRouteFound("Not Found", cause="no called number")
        call.calling_e164 = rules.inbound_numbers.apply(call.calling_received)
        call.called_e164 = rules.inbound_numbers.apply(call.called_received)

        # Admission before routing: a refused call takes no token (503).
        call.a_ticket = self._admission.admit(trunk, now)
        try:
            call.plan = self._router.route(
                trunk, call.called_e164, self._rng, down_trunks=self._unusable()
            )
        except RoutingError:
            self._admission.release(call.a_ticket)
            raise
        self._open_call(call, event, trunk, session, now)
        self._route_chosen(request.call_id, Side.A, trunk)
        self._attempt(call, now)

    def _attempt(self, call: Call, now: float, session: int = 0) -> None:
        try:
            self._start_attempt(call, now, session)
        except SipError as exc:
            # The body hook refused the offer (488, say): the call is open
            # now, so it ends through the usual path rather than a refusal.
            # No failover: the hook has given up anchoring this offer.
            call.hangup_side = HangupSide.SBC
            self._fail_a(call, exc.status_code, None, now)

    def _check_new_invite(self, event: RequestReceived) -> None:
        request = event.request
        # §8.2.2.2: the same request by another path is a merged request.
        merged = self._merged.get(_merge_key(request))
        if merged is not None and merged != event.key:
            raise LoopDetected("Loop Detected")
        if request.from_tag is None:
            # An RFC 2543 caller without From tag could not be told apart
            # from its own retransmissions within a dialog (§12.1.1).
            raise BadRequest("Bad Request: From tag required")
        if request.max_forwards == 0:
            raise TooManyHops("Too Many Hops")
        _require_supported(request)

    def _classify(self, event: RequestReceived, listener: str, now: float) -> str:
        request = event.request
        username = digest_username(request.authorization)
        match = self._router.classify(listener, event.source[0], username)
        if isinstance(match, DigestChallengeNeeded):
            raise self._verifier.challenge(match.realm, now)
        if match.authenticate:
            self._authenticate(request, match.trunk, now)
        return match.trunk

    def _authenticate(self, request: Request, trunk: str, now: float) -> None:
        """RFC 3261 §22.2: challenge, then verify the retried request.

        Policy: credentials that fail get 403, not a new challenge, so a
        wrong password costs the peer one round trip and no guessing loop;
        a right digest on an expired or reused nonce is challenged again
        with stale=true (RFC 7616 §3.3).
        """
        account = self._accounts[trunk]
        offered = [
            item
            for item in request.authorization
            if item.scheme.lower() == "digest" and item.get("realm") == account.realm
        ]
        if not offered:
            raise self._verifier.challenge(account.realm, now)
        verdict = self._verifier.verify(
            offered[0],
            method=request.method,
            request_uri=request.uri,
            realm=account.realm,
            password=account.password.get_secret_value(),
            now=now,
        )
        if verdict is Verdict.STALE:
            raise self._verifier.challenge(account.realm, now, stale=True)
        if verdict is Verdict.REJECTED:
            _log.info("call %s: digest credentials rejected", request.call_id)
            raise CredentialsRejected("Forbidden")

    def _open_call(
        self,
        call: Call,
        event: RequestReceived,
        trunk: str,
        session: SessionTimer,
        now: float,
    ) -> None:
        request = event.request
        a = Leg(
            Side.A,
            call,
            request.call_id,
            self._token(),
            event.source,
            event.transport,
            trunk,
            request,
            invite_key=event.key,
            invite_in_progress=True,
            session=session,
        )
        a.last_body_received = request.body
        call.a = a
        self._legs[(a.call_id, a.local_tag)] = a
        self._invites[event.key] = call
        call.merge_key = _merge_key(request)
        self._merged[call.merge_key] = event.key
        self._calls.add(call)
        _log.debug("call %s from trunk %s: %s", a.call_id, trunk, call.called_e164)

    def _start_attempt(self, call: Call, now: float, session: int = 0) -> None:
        """Send the B-leg INVITE to the plan's current candidate."""
        plan = call.plan
        if plan is None:
            raise RuntimeError("a call reaches the B-leg only after routing")
        leg = None
        while leg is None:
            endpoint = self._endpoints.get(plan.current.target.transport.upper())
            if endpoint is not None:
                leg = self._b_leg(
                    call, plan.current, session or self._policy_interval()
                )
                break
            # No local listener speaks the target's transport: next candidate.
            try:
                plan.fail_over(None)
            except NoTrunkAvailable as exc:
                self._fail_a(call, exc.status_code, None, now)
                return
        key = self._layer.send_request(leg.invite, leg.peer, leg.transport, now)
        leg.invite_key = key
        self._clients[key] = _Pending(call, leg, Purpose.INVITE, leg.invite, key)
        self._legs[(leg.call_id, leg.local_tag)] = leg
        call.b = leg
        call.attempts.append(leg)
        self._arm_progress(leg, now)

    def _arm_progress(self, leg: Leg, now: float) -> None:
        if leg.progress_timer is not None:
            leg.progress_timer.cancel()
        deadline = now + self._settings.no_answer_timeout
        leg.progress_timer = self._timers.schedule(
            deadline, lambda at: self._no_progress(leg, at)
        )

    def _no_progress(self, leg: Leg, now: float) -> None:
        # Timer C: CANCEL; the 487, or the CANCEL wait ending, fails over.
        leg.progress_timer = None
        if not leg.closed and isinstance(leg.invite_key, ClientTransactionKey):
            leg.no_answer = True
            self._layer.cancel(leg.invite_key, now)

    def _b_leg(self, call: Call, candidate: Candidate, interval: int) -> Leg:
        target = candidate.target
        transport = target.transport.upper()
        endpoint = self._endpoint(transport, candidate.trunk)
        rules = self._rules[candidate.trunk]
        call.calling_sent = rules.outbound_numbers.apply(call.calling_e164 or "")
        call.called_sent = rules.outbound_numbers.apply(call.called_e164 or "")
        host = f"[{target.host}]" if ":" in target.host else target.host
        host_port = f"{host}:{target.port}"
        uri_params = "" if transport == "UDP" else f";transport={transport.lower()}"
        a_invite = call.a.invite
        tag = self._token()

        headers = Headers()
        headers.add("Via", self._via(endpoint))
        headers.add("Max-Forwards", str((a_invite.max_forwards or 70) - 1))
        headers.add("From", self._b_from(a_invite, call.calling_sent, endpoint, tag))
        headers.add("To", f"<sip:{call.called_sent}@{host_port}>")
        headers.add("Call-ID", self._rng.randbytes(12).hex())
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", _contact(endpoint))
        headers.add("Allow", ", ".join(ALLOW))
        headers.add("Supported", ", ".join(SUPPORTED))
        headers.add("Session-Expires", str(interval))
        headers.add("Min-SE", str(self._settings.session_timer.min_se))
        copy_allowed_headers(a_invite.headers, headers, self._allowed[candidate.trunk])
        invite = Request(
            "INVITE", f"sip:{call.called_sent}@{host_port}{uri_params}", headers
        )
        leg = Leg(
            Side.B,
            call,
            invite.call_id,
            tag,
            (target.host, target.port),
            transport,
            candidate.trunk,
            invite,
            session_asked=interval,
        )
        # The trunk's media policy applies to the offer this leg carries.
        self._route_chosen(call.a.call_id, Side.B, candidate.trunk)
        self._carry_body(call.a, leg, a_invite, invite)
        rules.egress_headers.apply(headers)
        return leg

    def _b_from(
        self, a_invite: Request, number: str, endpoint: LocalEndpoint, tag: str
    ) -> str:
        # The display name is the caller's; the address is ours (RFC 3323).
        name = a_invite.from_.display_name
        shown = "" if name is None else f"{quote_string(name)} "
        return f"{shown}<sip:{number}@{endpoint.host_port}>;tag={tag}"

    # -- Responses on the B-leg INVITE -----------------------------------------

    def _on_response(self, event: ResponseReceived, now: float) -> None:
        pending = self._clients.get(event.key)
        if pending is None:
            return
        response = event.response
        if response.status == 100:
            return
        try:
            self._response_for(pending, response, now)
        except SipParseError as exc:
            # A header the engine needs (RSeq, Session-Expires ...) is
            # malformed: a bad response is discarded, never answered.
            _log.debug("call %s: response dropped: %s", pending.call.a.call_id, exc)

    def _response_for(self, pending: _Pending, response: Response, now: float) -> None:
        self._rules[pending.leg.trunk].ingress_headers.apply(response.headers)
        if pending.purpose is Purpose.INVITE:
            self._b_invite_response(pending, response, now)
        elif pending.purpose is Purpose.RELAY:
            self._relayed_response(pending, response, now)
        elif pending.purpose is Purpose.REFRESH:
            self._refresh_response(pending, response, now)

    def _b_invite_response(
        self, pending: _Pending, response: Response, now: float
    ) -> None:
        leg = pending.leg
        status = response.status
        if status >= 200 and leg.progress_timer is not None:
            leg.progress_timer.cancel()
            leg.progress_timer = None
        if status < 200:
            self._b_provisional(leg, response, now)
        elif status < 300:
            self._b_success(leg, response, now)
        elif not pending.final:
            pending.final = True
            if status in (401, 407) and self._answer_challenge(pending, response, now):
                return
            self._b_failure(leg, status, response, now)

    def _answer_challenge(
        self, pending: _Pending, response: Response, now: float
    ) -> bool:
        """Re-send the B-leg INVITE with credentials (RFC 3261 §22.2).

        Each (status, realm) is answered once, and once more when it
        comes back with stale=true: the same challenge again means the
        credentials failed, and the response then counts as the attempt's
        final failure (relayed, or failover).
        """
        leg, call = pending.leg, pending.call
        credentials = self._credentials.get(leg.trunk)
        if credentials is None or not self._may_answer(call, leg):
            return False
        try:
            offered = (
                response.www_authenticate
                if response.status == 401
                else response.proxy_authenticate
            )
        except SipParseError:
            return False
        challenge = choose_challenge(offered, credentials)
        if challenge is None:
            return False
        # A stale=true challenge (RFC 7616 §3.3) earns one more answer.
        answered = (response.status, challenge.get("realm") or "", challenge.stale)
        if answered in pending.answered:
            return False

        invite = self._authorized_invite(leg, challenge, credentials, response.status)
        leg.invite = invite
        leg.early.clear()
        leg.last_rseq.clear()
        key = self._layer.send_request(invite, leg.peer, leg.transport, now)
        leg.invite_key = key
        self._clients[key] = _Pending(
            call,
            leg,
            Purpose.INVITE,
            invite,
            key,
            answered=pending.answered | {answered},
        )
        self._arm_progress(leg, now)
        return True

    def _authorized_invite(
        self,
        leg: Leg,
        challenge: Challenge,
        credentials: ClientCredentials,
        status: int,
    ) -> Request:
        # §8.1.3.5: the same request on a new branch with CSeq one higher.
        old = leg.invite
        headers = old.headers.copy()
        headers.set("Via", self._via(self._endpoint(leg.transport, leg.trunk)))
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        value = answer_challenge(
            challenge,
            credentials,
            method="INVITE",
            uri=old.uri,
            cnonce=self._rng.randbytes(8).hex(),
        )
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        _replace_credentials(headers, name, challenge.get("realm") or "", value)
        return Request("INVITE", old.uri, headers, old.body)

    def _b_provisional(self, leg: Leg, response: Response, now: float) -> None:
        call = leg.call
        tag = response.to_tag
        if leg.progress_timer is not None:
            self._arm_progress(leg, now)
        if call.phase is not CallPhase.PROCEEDING or call.cancelled:
            return
        if tag is None:
            # A 1xx without To tag makes no dialog (§12.1), but is progress.
            self._relay_provisional(call, response, False, now)
            return
        dialog = leg.early.get(tag)
        if dialog is None:
            dialog = leg.early[tag] = Dialog.as_uac(leg.invite, response)
        else:
            dialog.refresh_target(response)

        # RFC 3262 §4: PRACK each new RSeq once; a retransmission or an
        # out-of-order RSeq is neither acknowledged nor passed on.
        reliable = response.rseq is not None and "100rel" in response.require
        if reliable:
            rseq = response.rseq or 0
            last = leg.last_rseq.get(tag)
            if last is not None and rseq != last + 1:
                return
            leg.last_rseq[tag] = rseq
            self._send_prack(leg, dialog, rseq, now)
        self._relay_provisional(call, response, reliable, now)

    def _send_prack(self, leg: Leg, dialog: Dialog, rseq: int, now: float) -> None:
        request = dialog.build_request(
            "PRACK", self._via(self._endpoint(leg.transport, leg.trunk))
        )
        request.headers.add("RAck", f"{rseq} {leg.invite.cseq.number} INVITE")
        self._send_request(leg, request, Purpose.PRACK, now)

    def _relay_provisional(
        self, call: Call, b_response: Response, reliable: bool, now: float
    ) -> None:
        a = call.a
        response = self._a_response(call, b_response)
        required = "100rel" in a.invite.require
        if required or (reliable and "100rel" in a.invite.supported):
            self._send_reliable(a, response, now)
        elif a.unacked_1xx is not None:
            self._queue_provisional(a, response, False)
        else:
            self._respond_a(a, response, now)

    def _b_success(self, leg: Leg, response: Response, now: float) -> None:
        call = leg.call
        tag = response.to_tag
        kept = leg.dialog
        if kept is not None and kept.remote_tag == tag:
            # A retransmitted 2xx: our ACK was lost (§13.2.2.4).
            if leg.ack is not None:
                self._layer.send_stateless(leg.ack, leg.peer, leg.transport)
            return
        if kept is not None or tag is None or not self._may_answer(call, leg):
            # A second fork's 2xx, or the call ended meanwhile (C11, C12).
            self._ack_and_bye(leg, response, now)
            return

        dialog = leg.early.pop(tag, None)
        if dialog is None:
            dialog = Dialog.as_uac(leg.invite, response)
        dialog.confirm(response)
        leg.early.clear()
        leg.dialog = dialog
        leg.peer_allows_update = "UPDATE" in response.headers.values("Allow")
        leg.session = negotiate_as_uac(response, leg.session_asked)
        leg.last_body_received = response.body or leg.last_body_received
        if not leg.invite.body and response.body:
            # Delayed offer: the answer arrives in the A-leg's ACK (§13.2.2.4).
            call.a.forward_ack_to = leg
        else:
            leg.ack = self._send_ack(leg, dialog, leg.invite.cseq.number, b"", "", now)
        try:
            self._answer_a(call, response, now)
        except SipError as exc:
            self._answer_refused(call, leg, exc, now)

    def _answer_refused(self, call: Call, leg: Leg, exc: SipError, now: float) -> None:
        """The callee's 2xx cannot go to the caller (the body hook refused its
        SDP, e.g. no codec of the offer): a UAC cannot refuse a 2xx but by ACK
        and BYE (RFC 3261 §13.2.2.4), and the caller gets the refusal's status."""
        _log.info("call %s: answer from %s refused: %s", call.a.call_id, leg.trunk, exc)
        if leg.ack is None and leg.dialog is not None:
            # A delayed offer waited for the caller's ACK to carry the answer.
            call.a.forward_ack_to = None
            cseq = leg.invite.cseq.number
            leg.ack = self._send_ack(leg, leg.dialog, cseq, b"", "", now)
        if call.end_reason is None:
            call.end_reason = f"answer refused: {exc}"
        if call.hangup_side is None:
            call.hangup_side = HangupSide.SBC
        self._fail_a(call, exc.status_code, None, now)
        self._hang_up(leg, now)
        self._maybe_finish(call, now)

    def _may_answer(self, call: Call, leg: Leg) -> bool:
        return (
            call.phase is CallPhase.PROCEEDING and not call.cancelled and leg is call.b
        )

    def _ack_and_bye(self, leg: Leg, response: Response, now: float) -> None:
        """ACK a 2xx we do not want, then end its dialog with BYE (§15)."""
        if response.to_tag is None:
            return
        dialog = Dialog.as_uac(leg.invite, response)
        self._send_ack(leg, dialog, leg.invite.cseq.number, b"", "", now)
        bye = dialog.build_request(
            "BYE", self._via(self._endpoint(leg.transport, leg.trunk))
        )
        self._send_request(leg, bye, Purpose.FORK_BYE, now)
        if leg.dialog is None:
            leg.closed = True
            self._maybe_finish(leg.call, now)

    def _b_failure(
        self, leg: Leg, status: int | None, response: Response | None, now: float
    ) -> None:
        call = leg.call
        leg.closed = True
        leg.early.clear()
        leg.cancel_timers()
        if not self._may_answer(call, leg):
            self._maybe_finish(call, now)
            return
        if leg.no_answer:
            # RFC 3261 §16.8: a branch Timer C cancelled failed by timing
            # out, whatever its 487 says; the caller never sees that 487.
            status, response = None, None
        retry = self._session_retry(leg, response)
        if retry:
            call.session_retries += 1
            self._attempt(call, now, retry)
            return
        try:
            plan = call.plan
            following = None if plan is None else plan.fail_over(status)
        except NoTrunkAvailable as exc:
            if leg.no_answer and call.hangup_side is None:
                call.hangup_side = HangupSide.SBC  # the SBC gave up ringing
            self._fail_a(call, exc.status_code, None, now)
            return
        if following is None:
            self._fail_a(call, status or 408, response, now)
        else:
            self._attempt(call, now)

    def _session_retry(self, leg: Leg, response: Response | None) -> int:
        # RFC 4028 §7.1: after 422, retry with Session-Expires >= Min-SE.
        if response is None or response.status != 422:
            return 0
        if leg.call.session_retries >= MAX_SESSION_RETRIES:
            return 0
        return interval_after_422(response, leg.session_asked) or 0

    # -- Answers on the A-leg --------------------------------------------------

    def _a_response(
        self, call: Call, b_response: Response | None, status: int = 0
    ) -> Response:
        """A response to the A-leg INVITE relaying `b_response`'s content."""
        a = call.a
        code = status or (b_response.status if b_response else 500)
        reason = b_response.reason if b_response is not None and not status else None
        response = make_response(a.invite, code, reason, to_tag=a.local_tag)
        if code < 300:
            response.headers.add(
                "Contact", _contact(self._endpoint(a.transport, a.trunk))
            )
        if b_response is not None and call.b is not None:
            copy_allowed_headers(
                b_response.headers, response.headers, self._allowed[a.trunk]
            )
            # §20.33: a relayed 503, 486 or 3xx keeps the callee's Retry-After.
            _add_retry_after(b_response, response)
            self._carry_body(call.b, a, b_response, response)
        return response

    def _answer_a(self, call: Call, b_response: Response, now: float) -> None:
        a = call.a
        response = self._a_response(call, b_response)
        headers = response.headers
        headers.add("Allow", ", ".join(ALLOW))
        headers.add("Supported", ", ".join(SUPPORTED))
        self._add_session_headers(a, response)
        self._stop_reliable(a)
        a.invite_in_progress = False
        a.answer_due_in_ack = not a.invite.body
        _set_phase(call, CallPhase.ANSWERED)
        call.answer_time = now
        call.final_status = response.status
        self._ensure_a_dialog(a, response)
        self._send_2xx(a, response, a.invite_key, now)
        for leg in (a, call.b):
            if leg is not None:
                self._start_session(leg, now)

    def _fail_a(
        self, call: Call, status: int, b_response: Response | None, now: float
    ) -> None:
        a = call.a
        response = self._a_response(
            call, b_response, status if b_response is None else 0
        )
        self._stop_reliable(a)
        self._respond_a(a, response, now)
        a.invite_in_progress = False
        a.closed = True
        call.final_status = status
        _set_phase(call, CallPhase.ENDING)
        self._maybe_finish(call, now)

    def _respond_a(self, a: Leg, response: Response, now: float) -> None:
        if isinstance(a.invite_key, ServerTransactionKey):
            self._respond(a.invite_key, response, now)
        if 100 < response.status < 300:
            self._ensure_a_dialog(a, response)

    def _ensure_a_dialog(self, a: Leg, response: Response) -> None:
        if a.dialog is None:
            contact = _contact(self._endpoint(a.transport, a.trunk))
            a.dialog = Dialog.as_uas(a.invite, a.local_tag, contact, early=True)
        if 200 <= response.status < 300:
            a.dialog.state = DialogState.CONFIRMED

    def _add_session_headers(self, leg: Leg, response: Response) -> None:
        session = leg.session
        if session is None:
            return
        response.headers.add("Session-Expires", session.header())
        # RFC 4028 §9: a UAC told to refresh must see Require: timer.
        if session.refresher == "uac":
            response.headers.add("Require", "timer")

    # -- 2xx retransmission and ACK (RFC 3261 §13.3.1.4) -----------------------

    def _send_2xx(
        self,
        leg: Leg,
        response: Response,
        key: ClientTransactionKey | ServerTransactionKey | None,
        now: float,
    ) -> None:
        if not isinstance(key, ServerTransactionKey):
            return
        if leg.retransmit_timer is not None:
            leg.retransmit_timer.cancel()
        leg.final_2xx = response
        leg.final_2xx_key = key
        self._respond(key, response, now)
        self._arm_2xx_retransmit(leg, now, now, self._layer.timers.t1)

    def _arm_2xx_retransmit(
        self, leg: Leg, now: float, started: float, interval: float
    ) -> None:
        def fire(at: float) -> None:
            self._retransmit_2xx(leg, at, started, interval)

        deadline = min(now + interval, started + 64 * self._layer.timers.t1)
        leg.retransmit_timer = self._timers.schedule(deadline, fire)

    def _retransmit_2xx(
        self, leg: Leg, now: float, started: float, interval: float
    ) -> None:
        leg.retransmit_timer = None
        response, key = leg.final_2xx, leg.final_2xx_key
        if response is None or key is None:
            return
        timers = self._layer.timers
        if now - started >= 64 * timers.t1:
            # §13.3.1.4: no ACK in 64*T1, the session is torn down with BYE.
            leg.final_2xx = None
            self._end_call(leg.call, HangupSide.SBC, now)
            return
        self._respond(key, response, now)
        self._arm_2xx_retransmit(leg, now, started, min(interval * 2, timers.t2))

    def _on_ack(self, event: AckReceived, now: float) -> None:
        request = event.request
        leg = self._legs.get((request.call_id, request.to_tag or ""))
        if leg is None or leg.final_2xx is None:
            return
        if request.cseq.number != leg.final_2xx.cseq.number:
            return
        leg.final_2xx = None
        leg.final_2xx_key = None
        if leg.retransmit_timer is not None:
            leg.retransmit_timer.cancel()
            leg.retransmit_timer = None
        leg.answer_due_in_ack = False
        if request.body:
            leg.last_body_received = request.body
        self._forward_ack(leg, request, now)
        if leg.bye_after_ack:
            self._hang_up(leg, now)
            self._maybe_finish(leg.call, now)

    def _forward_ack(self, leg: Leg, ack: Request, now: float) -> None:
        # The other leg's 2xx carried an offer: its ACK carries this answer.
        target = leg.forward_ack_to
        leg.forward_ack_to = None
        if target is None or target.dialog is None or target.closed:
            return
        body = self._translate_body(leg, ack)
        target.ack = self._send_ack(
            target,
            target.dialog,
            target.ack_cseq or target.invite.cseq.number,
            body,
            _content_type(ack),
            now,
        )
        target.ack_cseq = 0
        if body:
            target.last_body_sent = body

    def _send_ack(
        self,
        leg: Leg,
        dialog: Dialog,
        cseq: int,
        body: bytes,
        content_type: str,
        now: float,
    ) -> Request:
        ack = dialog.build_request(
            "ACK", self._via(self._endpoint(leg.transport, leg.trunk)), cseq=cseq
        )
        if body:
            ack.headers.add("Content-Type", content_type or "application/sdp")
            ack.body = body
        self._layer.send_stateless(ack, leg.peer, leg.transport)
        return ack

    # -- Reliable provisional responses as UAS (RFC 3262 §3) -------------------

    def _send_reliable(self, a: Leg, response: Response, now: float) -> None:
        if a.unacked_1xx is not None:
            self._queue_provisional(a, response, True)
            return
        # §3: the first RSeq is random in 1..2**31-1, then one per response.
        a.rseq = a.rseq + 1 if a.rseq else 1 + int(self._rng.random() * (2**31 - 2))
        response.headers.add("Require", "100rel")
        response.headers.add("RSeq", str(a.rseq))
        a.unacked_1xx = response
        self._respond_a(a, response, now)
        self._arm_reliable(a, now, now, self._layer.timers.t1)

    def _queue_provisional(self, a: Leg, response: Response, reliable: bool) -> None:
        # §3: no second reliable 1xx before the first is acknowledged.
        if len(a.queued_1xx) >= MAX_QUEUED_PROVISIONALS:
            a.queued_1xx.popleft()
        a.queued_1xx.append((response, reliable))

    def _arm_reliable(
        self, a: Leg, now: float, started: float, interval: float
    ) -> None:
        def fire(at: float) -> None:
            self._retransmit_reliable(a, at, started, interval)

        deadline = min(now + interval, started + 64 * self._layer.timers.t1)
        a.reliable_timer = self._timers.schedule(deadline, fire)

    def _retransmit_reliable(
        self, a: Leg, now: float, started: float, interval: float
    ) -> None:
        a.reliable_timer = None
        response = a.unacked_1xx
        if response is None:
            return
        if now - started >= 64 * self._layer.timers.t1:
            # §3: no PRACK in 64*T1: reject the INVITE with a 5xx.
            a.unacked_1xx = None
            call = a.call
            call.hangup_side = HangupSide.SBC
            self._fail_a(call, 504, None, now)
            self._cancel_b(call, now)
            return
        self._respond_a(a, response, now)
        self._arm_reliable(a, now, started, interval * 2)

    def _prack_received(self, leg: Leg, event: RequestReceived, now: float) -> None:
        request = event.request
        rack = request.rack
        unacked = leg.unacked_1xx
        matches = (
            unacked is not None
            and rack is not None
            and rack.rseq == leg.rseq
            and rack.cseq_number == leg.invite.cseq.number
            and rack.method == "INVITE"
        )
        if not matches:
            # §4: a PRACK matching no unacknowledged reliable 1xx gets 481.
            raise DialogNotFound("Call/Transaction Does Not Exist")
        self._respond(event.key, make_response(request, 200), now)
        leg.unacked_1xx = None
        if leg.reliable_timer is not None:
            leg.reliable_timer.cancel()
            leg.reliable_timer = None
        self._flush_provisionals(leg, now)

    def _flush_provisionals(self, a: Leg, now: float) -> None:
        while a.queued_1xx and a.unacked_1xx is None:
            response, reliable = a.queued_1xx.popleft()
            if reliable:
                self._send_reliable(a, response, now)
            else:
                self._respond_a(a, response, now)

    def _stop_reliable(self, a: Leg) -> None:
        a.unacked_1xx = None
        a.queued_1xx.clear()
        if a.reliable_timer is not None:
            a.reliable_timer.cancel()
            a.reliable_timer = None

    # -- CANCEL and BYE ----------------------------------------------------------

    def _on_cancel(self, event: CancelReceived, now: float) -> None:
        cancelled = event.cancelled_key
        call = None if cancelled is None else self._invites.get(cancelled)
        tag = call.a.local_tag if call is not None else self._token()
        status = 481 if cancelled is None else 200
        self._respond(event.key, make_response(event.request, status, to_tag=tag), now)
        if cancelled is None or not event.pending:
            return  # §9.2: a CANCEL after the final response changes nothing
        if call is not None:
            call.cancelled = True
            call.hangup_side = HangupSide.CALLER
            self._fail_a(call, 487, None, now)
            self._cancel_b(call, now)
            return
        relay = self._relays.get(cancelled)
        if relay is not None and relay.source_request is not None:
            response = make_response(relay.source_request, 487)
            self._respond(cancelled, response, now)
            self._layer.cancel(relay.key, now)

    def _cancel_b(self, call: Call, now: float) -> None:
        b = call.b
        if b is None or b.closed or b.dialog is not None:
            return
        if isinstance(b.invite_key, ClientTransactionKey):
            self._layer.cancel(b.invite_key, now)

    def _bye_received(self, leg: Leg, event: RequestReceived, now: float) -> None:
        call = leg.call
        self._respond(event.key, make_response(event.request, 200), now)
        leg.closed = True
        leg.final_2xx = None
        leg.cancel_timers()
        if call.hangup_side is None:
            side = HangupSide.CALLER if leg.side is Side.A else HangupSide.CALLEE
            call.hangup_side = side
        if leg.side is Side.A and call.phase is CallPhase.PROCEEDING:
            # §15.1.2: BYE on an early dialog ends the INVITE with 487.
            call.cancelled = True
            self._fail_a(call, 487, None, now)
            self._cancel_b(call, now)
            return
        self._end_call(call, call.hangup_side, now)

    def end_call(self, call_id: str, reason: str, now: float) -> bool:
        """End the call whose A-leg Call-ID is `call_id`, on both legs.

        An answered call gets BYE on each leg, with the reason in a Reason
        header (RFC 3326); a call still ringing gets its final response on
        the A-leg and CANCEL on the B-leg. The CDR records the SBC as the
        side that hung up and `reason` as why. False when no such call is
        in progress, or it is already ending (a party hung up meanwhile).
        """
        # A linear search: ending calls from outside is rare (media
        # timeouts, an operator), so no index is kept per message for it.
        call = next((c for c in self._calls if c.a.call_id == call_id), None)
        if call is None or call.phase is CallPhase.ENDING:
            # Gone, or already being torn down for its own reason.
            return False
        _log.info("call %s: ended by the SBC: %s", call_id, reason)
        if call.end_reason is None:
            call.end_reason = reason
        self._end_call(call, HangupSide.SBC, now)
        return True

    def _end_call(self, call: Call, side: HangupSide, now: float) -> None:
        if call.hangup_side is None:
            call.hangup_side = side
        if call.phase is CallPhase.PROCEEDING:
            self._fail_a(call, 500, None, now)
            self._cancel_b(call, now)
        _set_phase(call, CallPhase.ENDING)
        for leg in call.legs:
            self._hang_up(leg, now)
        self._maybe_finish(call, now)

    def _hang_up(self, leg: Leg, now: float) -> None:
        if leg.closed or leg.dialog is None:
            return
        if leg.final_2xx is not None:
            # §15: no BYE before the ACK of our 2xx (or its give-up).
            leg.bye_after_ack = True
            return
        leg.closed = True
        leg.cancel_timers()
        bye = leg.dialog.build_request(
            "BYE", self._via(self._endpoint(leg.transport, leg.trunk))
        )
        reason = leg.call.end_reason
        if reason is not None:
            # RFC 3326 §2: why the SBC, not a party, ended the session.
            bye.headers.add("Reason", f"SIP;text={quote_string(reason)}")
        self._send_request(leg, bye, Purpose.BYE, now)

    # -- Requests within a dialog: relay or answer -------------------------------

    def _reinvite_received(self, leg: Leg, event: RequestReceived, now: float) -> None:
        request = event.request
        if leg.invite_in_progress:
            # §14.2: a second INVITE while the first is unanswered.
            raise OverlappingInvite(
                "Server Internal Error", retry_after=int(self._rng.random() * 10)
            )
        if leg.final_2xx is not None and leg.answer_due_in_ack:
            raise RequestPending("Request Pending")
        if leg.offer_answer_busy or leg.call.phase is not CallPhase.ANSWERED:
            raise RequestPending("Request Pending")
        session = negotiate_as_uas(request, self._settings.session_timer)
        if (
            request.body
            and request.body == leg.last_body_received
            and leg.last_body_sent
        ):
            # An unchanged offer is a session refresh: answered on this leg.
            self._answer_locally(leg, event, session, now)
            return
        self._relay_request(leg, event, now, session)

    def _update_received(self, leg: Leg, event: RequestReceived, now: float) -> None:
        request = event.request
        if request.body and leg.offer_answer_busy:
            raise RequestPending("Request Pending")  # RFC 3311 §5.2
        session = negotiate_as_uas(request, self._settings.session_timer)
        if not request.body:
            self._answer_locally(leg, event, session, now)
            return
        self._relay_request(leg, event, now, session)

    def _answer_locally(
        self, leg: Leg, event: RequestReceived, session: SessionTimer, now: float
    ) -> None:
        request = event.request
        response = make_response(request, 200)
        response.headers.add(
            "Contact", _contact(self._endpoint(leg.transport, leg.trunk))
        )
        response.headers.add("Supported", ", ".join(SUPPORTED))
        if request.method == "INVITE" and leg.last_body_sent:
            response.headers.add("Content-Type", leg.last_content_type)
            response.body = leg.last_body_sent
        leg.session = session
        self._add_session_headers(leg, response)
        if request.method == "INVITE":
            self._send_2xx(leg, response, event.key, now)
        else:
            self._respond(event.key, response, now)
        self._start_session(leg, now)

    def _relay_request(
        self,
        leg: Leg,
        event: RequestReceived,
        now: float,
        session: SessionTimer | None = None,
    ) -> None:
        request = event.request
        other = leg.other
        dialog = None if other is None else _current_dialog(other)
        if other is None or other.closed or dialog is None:
            raise RequestPending("Request Pending")
        relayed = dialog.build_request(
            request.method, self._via(self._endpoint(other.transport, other.trunk))
        )
        copy_allowed_headers(
            request.headers, relayed.headers, self._allowed[other.trunk]
        )
        if request.method in ("INVITE", "UPDATE"):
            relayed.headers.add("Supported", ", ".join(SUPPORTED))
            if other.session is not None:
                interval = other.session.interval
                relayed.headers.add("Session-Expires", f"{interval};refresher=uac")
        self._carry_body(leg, other, request, relayed)
        self._rules[other.trunk].egress_headers.apply(relayed.headers)
        pending = self._send_request(other, relayed, Purpose.RELAY, now)
        pending.source, pending.source_key = leg, event.key
        pending.source_request, pending.session = request, session
        self._relays[event.key] = pending
        if request.method == "INVITE" or (request.method == "UPDATE" and request.body):
            pending.busy = True
            leg.offer_answer_busy += 1
            other.offer_answer_busy += 1
        if request.method == "INVITE":
            leg.invite_in_progress = True
            # A re-INVITE is answered at once (§14.2); one held at 1xx for
            # 64*T1 is cancelled, and its 487 is relayed back.
            deadline = now + 64 * self._layer.timers.t1
            self._timers.schedule(
                deadline, lambda at: self._relay_unanswered(pending, at)
            )

    def _relay_unanswered(self, pending: _Pending, now: float) -> None:
        if not pending.final:
            self._layer.cancel(pending.key, now)

    def _relayed_response(
        self, pending: _Pending, response: Response, now: float
    ) -> None:
        status = response.status
        method = pending.request.method
        if status < 200 and (
            method != "INVITE" or not self._prack_relayed(pending, response, now)
        ):
            return
        if status >= 200 and pending.final:
            if status < 300 and pending.ack is not None:
                self._layer.send_stateless(
                    pending.ack, pending.leg.peer, pending.leg.transport
                )
            return
        if status >= 200:
            pending.final = True
            self._release_busy(pending)
        if 200 <= status < 300 and method == "INVITE":
            self._ack_relayed(pending, response, now)
        if 200 <= status < 300 and method in ("INVITE", "UPDATE"):
            self._refreshed(pending, response, now)
        self._relay_back(pending, response, now)
        if status in (408, 481):
            # §12.2.1.2: the dialog is gone on that leg; end the call.
            self._end_call(pending.call, HangupSide.SBC, now)

    def _prack_relayed(self, pending: _Pending, response: Response, now: float) -> bool:
        """PRACK a reliable 1xx to a relayed re-INVITE; False for a duplicate.

        The 1xx goes on to the source leg unreliably (RFC 3262 §4 rules as
        for the initial INVITE: one PRACK per new RSeq, in order).
        """
        rseq, dialog = response.rseq, pending.leg.dialog
        if rseq is None or "100rel" not in response.require or dialog is None:
            return True
        if pending.last_rseq is not None and rseq != pending.last_rseq + 1:
            return False
        pending.last_rseq = rseq
        prack = dialog.build_request(
            "PRACK", self._via(self._endpoint(pending.leg.transport, pending.leg.trunk))
        )
        prack.headers.add("RAck", f"{rseq} {pending.request.cseq.number} INVITE")
        self._send_request(pending.leg, prack, Purpose.PRACK, now)
        return True

    def _ack_relayed(self, pending: _Pending, response: Response, now: float) -> None:
        leg = pending.leg
        if leg.dialog is None:
            return
        leg.dialog.refresh_target(response)
        cseq = pending.request.cseq.number
        if not pending.request.body and response.body and pending.source is not None:
            leg.ack_cseq = cseq
            pending.source.forward_ack_to = leg
            return
        pending.ack = self._send_ack(leg, leg.dialog, cseq, b"", "", now)

    def _refreshed(self, pending: _Pending, response: Response, now: float) -> None:
        # A completed INVITE/UPDATE refreshes the session on both legs.
        leg, source = pending.leg, pending.source
        if leg.session is not None:
            leg.session = negotiate_as_uac(response, leg.session.interval)
        self._start_session(leg, now)
        if source is not None and pending.session is not None:
            source.session = pending.session
            self._start_session(source, now)

    def _relay_back(self, pending: _Pending, response: Response, now: float) -> None:
        source, key, request = (
            pending.source,
            pending.source_key,
            pending.source_request,
        )
        if source is None or key is None or request is None:
            return
        relayed = make_response(request, response.status, response.reason)
        headers = relayed.headers
        success = 200 <= response.status < 300
        if success and request.method in ("INVITE", "UPDATE"):
            headers.add(
                "Contact", _contact(self._endpoint(source.transport, source.trunk))
            )
            headers.add("Supported", ", ".join(SUPPORTED))
            self._add_session_headers(source, relayed)
        copy_allowed_headers(response.headers, headers, self._allowed[source.trunk])
        _add_retry_after(response, relayed)
        self._carry_body(pending.leg, source, response, relayed)
        self._rules[source.trunk].egress_headers.apply(headers)
        if response.status >= 200:
            source.invite_in_progress = False
        if success and request.method == "INVITE":
            source.answer_due_in_ack = not request.body
            self._send_2xx(source, relayed, key, now)
        else:
            self._respond(key, relayed, now)

    def _release_busy(self, pending: _Pending) -> None:
        if not pending.busy:
            return
        pending.busy = False
        for leg in (pending.leg, pending.source):
            if leg is not None and leg.offer_answer_busy:
                leg.offer_answer_busy -= 1

    # -- Session timers (RFC 4028) ---------------------------------------------

    def _start_session(self, leg: Leg, now: float) -> None:
        for timer in (leg.refresh_timer, leg.expiry_timer):
            if timer is not None:
                timer.cancel()
        leg.refresh_timer = leg.expiry_timer = None
        session = leg.session
        if session is None or leg.closed:
            return
        if session.we_refresh:
            leg.refresh_timer = self._timers.schedule(
                now + session.refresh_delay(), lambda at: self._refresh(leg, at)
            )
        leg.expiry_timer = self._timers.schedule(
            now + session.expiry_delay(), lambda at: self._session_expired(leg, at)
        )

    def _refresh(self, leg: Leg, now: float, interval: int = 0) -> None:
        leg.refresh_timer = None
        session, dialog = leg.session, leg.dialog
        if leg.closed or session is None or dialog is None:
            return
        if leg.offer_answer_busy or leg.final_2xx is not None:
            leg.refresh_timer = self._timers.schedule(
                now + REFRESH_BUSY_DELAY, lambda at: self._refresh(leg, at)
            )
            return
        # An UPDATE without body refreshes without touching the media; a
        # peer without UPDATE gets a re-INVITE repeating our last offer.
        method = "UPDATE" if leg.peer_allows_update else "INVITE"
        request = dialog.build_request(
            method, self._via(self._endpoint(leg.transport, leg.trunk))
        )
        headers = request.headers
        headers.add("Supported", ", ".join(SUPPORTED))
        headers.add("Session-Expires", f"{interval or session.interval};refresher=uac")
        headers.add("Min-SE", str(self._settings.session_timer.min_se))
        if method == "INVITE" and leg.last_body_sent:
            headers.add("Content-Type", leg.last_content_type)
            request.body = leg.last_body_sent
        pending = self._send_request(leg, request, Purpose.REFRESH, now)
        pending.busy = True
        leg.offer_answer_busy += 1
        leg.call.session_refreshes += 1
        # A re-INVITE answered with 100 only never times out in the layer
        # (the TU owns that, §17.1.1.2): give up after 64*T1 like Timer B.
        deadline = now + 64 * self._layer.timers.t1
        self._timers.schedule(
            deadline, lambda at: self._refresh_unanswered(pending, at)
        )

    def _refresh_unanswered(self, pending: _Pending, now: float) -> None:
        if pending.final:
            return
        pending.final = True
        self._release_busy(pending)
        if pending.request.method == "INVITE":
            self._layer.cancel(pending.key, now)
        if not pending.call.finished:
            self._end_call(pending.call, HangupSide.SBC, now)

    def _refresh_response(
        self, pending: _Pending, response: Response, now: float
    ) -> None:
        leg, status = pending.leg, response.status
        if status < 200:
            return
        if pending.final:
            if status < 300 and pending.ack is not None:
                self._layer.send_stateless(pending.ack, leg.peer, leg.transport)
            return
        pending.final = True
        self._release_busy(pending)
        if status < 300:
            if pending.request.method == "INVITE" and leg.dialog is not None:
                cseq = pending.request.cseq.number
                pending.ack = self._send_ack(leg, leg.dialog, cseq, b"", "", now)
            asked = pending.request.session_expires
            leg.session = negotiate_as_uac(response, asked.delta if asked else 0)
            self._start_session(leg, now)
        elif status == 422:
            retry = interval_after_422(
                response, leg.session.interval if leg.session else 0
            )
            if retry:
                self._refresh(leg, now, retry)
        elif status == 491:
            delay = glare_retry_delay(leg.side is Side.B, self._rng)
            leg.refresh_timer = self._timers.schedule(
                now + delay, lambda at: self._refresh(leg, at)
            )
        elif status in (408, 481):
            self._end_call(leg.call, HangupSide.SBC, now)

    def _session_expired(self, leg: Leg, now: float) -> None:
        leg.expiry_timer = None
        _log.info(
            "call %s: session timer expired on leg %s",
            leg.call.a.call_id,
            leg.side.value,
        )
        self._end_call(leg.call, HangupSide.SBC, now)

    # -- Transaction failures and clean-up --------------------------------------

    def _on_failure(
        self, event: TransactionTimedOut | TransportErrorOccurred, now: float
    ) -> None:
        key = event.key
        if not isinstance(key, ClientTransactionKey):
            return
        pending = self._clients.get(key)
        if pending is None or pending.final:
            return
        pending.final = True
        self._release_busy(pending)
        if pending.purpose is Purpose.INVITE:
            if pending.leg.dialog is None:
                self._b_failure(pending.leg, None, None, now)
        elif pending.purpose is Purpose.RELAY:
            self._relay_timeout(pending, now)
        elif pending.purpose is Purpose.REFRESH:
            self._end_call(pending.call, HangupSide.SBC, now)

    def _relay_timeout(self, pending: _Pending, now: float) -> None:
        key, request = pending.source_key, pending.source_request
        if key is not None and request is not None:
            if pending.source is not None:
                pending.source.invite_in_progress = False
            self._respond(key, make_response(request, 408), now)
        self._end_call(pending.call, HangupSide.SBC, now)

    def _on_stray(self, event: StrayResponseReceived) -> None:
        # A 2xx retransmitted after Timer M: ACK it again (§13.2.2.4).
        response = event.response
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return
        leg = self._legs.get((response.call_id, response.from_tag or ""))
        if leg is not None and leg.ack is not None and leg.dialog is not None:
            if leg.dialog.remote_tag == response.to_tag:
                self._layer.send_stateless(leg.ack, leg.peer, leg.transport)

    def _on_terminated(self, event: TransactionTerminated) -> None:
        key = event.key
        if isinstance(key, ClientTransactionKey):
            self._clients.pop(key, None)
            return
        self._relays.pop(key, None)
        call = self._invites.pop(key, None)
        if call is not None:
            merge = call.merge_key
            if merge is not None and self._merged.get(merge) == key:
                del self._merged[merge]

    def _maybe_finish(self, call: Call, now: float) -> None:
        if call.finished or not all(leg.closed for leg in call.legs):
            return
        call.finished = True
        for leg in call.legs:
            leg.cancel_timers()
            # Kept 64*T1 for late requests and retransmissions, which rarely
            # come: their typed headers are parsed again if one does.
            leg.invite.headers.forget_typed()
        # The legs stay findable for 64*T1, so that a BYE crossing ours still
        # gets 200 and a late request gets 481 rather than a new call.
        linger = now + 64 * self._layer.timers.t1
        self._timers.schedule(linger, lambda at: self._forget_legs(call))
        self._calls.discard(call)
        if call.a_ticket is not None:
            self._admission.release(call.a_ticket)
        self._bodies.release(call.a.call_id)
        record = _call_record(call, now)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "call %s ended: %s %d, hung up by %s",
                record.call_id,
                record.disposition.value,
                record.final_status,
                record.hangup_side.value if record.hangup_side else "nobody",
            )
        self._cdr.write(record)

    def _forget_legs(self, call: Call) -> None:
        for leg in call.legs:
            self._legs.pop((leg.call_id, leg.local_tag), None)

    def _record_refusal(self, request: Request, status: int, now: float) -> None:
        self._cdr.write(
            CallRecord(
                call_id=request.call_id,
                start_time=now,
                end_time=now,
                disposition=Disposition.REJECTED,
                final_status=status,
                hangup_side=HangupSide.SBC,
            )
        )

    # -- Small helpers ----------------------------------------------------------

    def _send_request(
        self, leg: Leg, request: Request, purpose: Purpose, now: float
    ) -> _Pending:
        key = self._layer.send_request(request, leg.peer, leg.transport, now)
        pending = _Pending(leg.call, leg, purpose, request, key)
        self._clients[key] = pending
        return pending

    def _respond(
        self, key: ServerTransactionKey, response: Response, now: float
    ) -> None:
        try:
            self._layer.send_response(response, now, key=key)
        except TransactionError as exc:
            # The transaction ended under us (transport error): nothing to send.
            _log.debug("response %d not sent: %s", response.status, exc)

    def _carry_body(
        self,
        source: Leg,
        target: Leg,
        inbound: Request | Response,
        outbound: Request | Response,
    ) -> None:
        """Move a body across legs through the body hook."""
        if not inbound.body:
            return
        content_type = _content_type(inbound)
        body = self._bodies.rewrite(
            source.call.a.call_id, source.side, inbound.body, content_type
        )
        outbound.headers.add("Content-Type", content_type)
        outbound.body = body
        source.last_body_received = inbound.body
        target.last_body_sent = body
        target.last_content_type = content_type

    def _translate_body(self, source: Leg, message: Request) -> bytes:
        if not message.body:
            return b""
        return self._bodies.rewrite(
            source.call.a.call_id, source.side, message.body, _content_type(message)
        )

    def _unusable(self) -> AbstractSet[str]:
        if not self.blocked_trunks and not self.unprotected_trunks:
            return self.down_trunks
        return self.down_trunks | self.blocked_trunks | self.unprotected_trunks

    def _route_chosen(self, call_id: str, side: Side, trunk: str) -> None:
        if self._on_route is not None:
            self._on_route(call_id, side, trunk)

    def _endpoint(self, transport: str, trunk: str | None = None) -> LocalEndpoint:
        """Our Via/Contact address toward ``trunk``: its own listener of that
        transport (an IPsec listener names the address inside the SA), else
        the first listener of the transport."""
        own = self._trunk_endpoints.get((trunk or "", transport.upper()))
        if own is not None:
            return own
        endpoint = self._endpoints.get(transport.upper())
        if endpoint is None:
            raise SipError("Service Unavailable: no listener", status_code=503)
        return endpoint

    def _via(self, endpoint: LocalEndpoint) -> str:
        branch = new_branch(self._rng.randbytes(8))
        return (
            f"SIP/2.0/{endpoint.transport} {endpoint.host_port};branch={branch};rport"
        )

    def _token(self) -> str:
        return self._rng.randbytes(6).hex()

    def _policy_interval(self) -> int:
        return self._settings.session_timer.session_expires


def glare_retry_delay(owns_call_id: bool, rng: RandomSource) -> float:
    """Seconds before retrying after 491 (RFC 3261 §14.1).

    The UAC that chose the dialog's Call-ID waits 2.1-4 s, the other 0-2 s,
    so the two retries do not collide again.
    """
    if owns_call_id:
        return 2.1 + rng.random() * 1.9
    return rng.random() * 2.0


def _set_phase(call: Call, phase: CallPhase) -> None:
    if call.phase is not phase:
        # Guarded: the arguments cost more than the call when DEBUG is off.
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "call %s: %s -> %s", call.a.call_id, call.phase.value, phase.value
            )
        call.phase = phase


def _current_dialog(leg: Leg) -> Dialog | None:
    if leg.dialog is not None:
        return leg.dialog
    # Early requests (UPDATE, INFO) go to the most recent early dialog.
    return next(reversed(leg.early.values()), None)


def _merge_key(request: Request) -> tuple[str, str | None, int]:
    return request.call_id, request.from_tag, request.cseq.number


def _contact(endpoint: LocalEndpoint) -> str:
    params = (
        ""
        if endpoint.transport == "UDP"
        else f";transport={endpoint.transport.lower()}"
    )
    return f"<sip:{endpoint.host_port}{params}>"


def _content_type(message: Request | Response) -> str:
    return message.headers.get("Content-Type") or "application/sdp"


def _add_retry_after(source: Response, target: Response) -> None:
    value = source.headers.get("Retry-After")
    if value is not None:
        target.headers.add("Retry-After", value)


def _add_error_headers(headers: Headers, exc: SipError) -> None:
    """The header each error response must carry (§21, RFC 4028 §6)."""
    if isinstance(exc, MethodNotAllowed):
        headers.add("Allow", ", ".join(exc.allow))
    elif isinstance(exc, MethodNotImplemented):
        headers.add("Allow", ", ".join(exc.allow))
    elif isinstance(exc, BadExtension):
        headers.add("Unsupported", ", ".join(exc.unsupported))
    elif isinstance(exc, SessionIntervalTooSmall):
        headers.add("Min-SE", str(exc.min_se))
    elif isinstance(exc, OverlappingInvite):
        headers.add("Retry-After", str(exc.retry_after))
    elif isinstance(exc, CallRejected):
        headers.add("Retry-After", str(exc.retry_after))
    elif isinstance(exc, Unauthorized):
        for challenge in exc.challenges:
            headers.add("WWW-Authenticate", challenge)


def _replace_credentials(headers: Headers, name: str, realm: str, value: str) -> None:
    """Credentials for ``realm`` replace earlier ones for it; those for
    other realms stay, as a request challenged twice needs both (§22.3)."""
    kept = [
        item
        for item in headers.get_all(name)
        if parse_credentials(item, name).get("realm") != realm
    ]
    headers.remove(name)
    for item in (*kept, value):
        headers.add(name, item)


def _call_record(call: Call, now: float) -> CallRecord:
    a, b = call.a, call.b
    status = call.final_status or 500
    return CallRecord(
        call_id=a.call_id,
        start_time=call.start_time,
        end_time=max(now, call.start_time),
        disposition=disposition_for(status, cancelled=call.cancelled),
        final_status=status,
        answer_time=call.answer_time,
        b_call_id=None if b is None else b.call_id,
        a_trunk=a.trunk,
        b_trunk=None if b is None else b.trunk,
        calling_received=call.calling_received,
        calling_e164=call.calling_e164,
        calling_sent=call.calling_sent,
        called_received=call.called_received,
        called_e164=call.called_e164,
        called_sent=call.called_sent,
        hangup_side=call.hangup_side,
        end_reason=call.end_reason,
    )


def _trunk_endpoints(
    config: Config, settings: B2buaSettings
) -> dict[tuple[str, str], LocalEndpoint]:
    """(trunk, transport) -> the trunk's first listener of that transport."""
    by_listener = {e.listener: e for e in settings.listener_endpoints}
    chosen: dict[tuple[str, str], LocalEndpoint] = {}
    for trunk in config.trunks:
        for name in trunk.listeners:
            endpoint = by_listener.get(name)
            if endpoint is not None:
                chosen.setdefault((trunk.name, endpoint.transport.upper()), endpoint)
    return chosen


def _require_supported(request: Request) -> None:
    """420 with Unsupported for a Require naming an extension the SBC
    lacks (RFC 3261 §8.2.2.3)."""
    unknown = [tag for tag in request.require if tag not in SUPPORTED]
    if unknown:
        raise BadExtension("Bad Extension", unsupported=unknown)
