"""Registration of the SBC at a carrier trunk (RFC 3261 §10), sans-IO.

One `RegistrationClient` per trunk with a ``registration`` section. It
sends REGISTER through the engine's `TransactionLayer` (attach it with
`B2bua.attach`), refreshes before the binding expires, answers 401/407
with the trunk's ``outbound_auth``, backs off after failures and removes
its binding (Expires: 0) on `stop`. Time comes in as ``now``; tags,
Call-ID, branches and client nonces come from the ``rng`` passed in.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass

from sbc.b2bua.settings import LocalEndpoint, RandomSource
from sbc.config.model import Config, Trunk
from sbc.sip.digest import ClientCredentials, answer_challenge, choose_challenge
from sbc.sip.errors import SipParseError
from sbc.sip.events import (
    ResponseReceived,
    TransactionEvent,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.message import Headers, Request, Response
from sbc.sip.requests import new_branch
from sbc.sip.transaction import ClientTransactionKey, TransactionLayer
from sbc.sip.uri import SipUri, parse_uri

_log = logging.getLogger("sbc.b2bua.registration")

# Refresh this long before the binding runs out, or at half its life when
# that is shorter (a registrar may grant far less than asked).
REFRESH_MARGIN = 300.0
# Times a 423 Interval Too Brief is followed before it counts as a failure.
MAX_INTERVAL_RETRIES = 2


class RegistrationState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRY_WAIT = "retry wait"
    """The last attempt failed; the next one waits for the backoff."""
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Registered:
    """The registrar accepted the binding until ``expires_at``."""

    trunk: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """An attempt failed (``status`` None: no answer); retried at ``retry_at``."""

    trunk: str
    status: int | None
    retry_at: float


@dataclass(frozen=True, slots=True)
class Unregistered:
    """The binding was removed (or the registrar did not answer the removal)."""

    trunk: str


RegistrationEvent = Registered | RegistrationFailed | Unregistered


class RegistrationClient:
    """The REGISTER client of one trunk."""

    def __init__(
        self,
        layer: TransactionLayer,
        trunk: Trunk,
        endpoint: LocalEndpoint,
        rng: RandomSource,
    ) -> None:
        if trunk.registration is None:
            raise ValueError(f"trunk {trunk.name} has no registration settings")
        self._layer = layer
        self._trunk = trunk.name
        self._settings = trunk.registration
        self._endpoint = endpoint
        self._rng = rng
        target = trunk.targets[0]
        self._peer = (target.host, target.port)
        self._transport = target.transport.upper()
        self._registrar = self._settings.registrar or _target_uri(
            target.host, target.port, self._transport
        )
        aor = parse_uri(self._settings.aor)
        user = aor.user if isinstance(aor, SipUri) and aor.user else "sbc"
        self._contact_uri = _contact_uri(user, endpoint)
        auth = trunk.outbound_auth
        self._credentials = (
            None
            if auth is None
            else ClientCredentials(
                auth.username,
                auth.password.get_secret_value(),
                auth.realm,
                tuple(auth.algorithms),
            )
        )
        # §10.2: one Call-ID and From tag for every REGISTER of this client.
        self._call_id = rng.randbytes(12).hex()
        self._from_tag = rng.randbytes(6).hex()
        self._cseq = 0
        self.state = RegistrationState.IDLE
        self.expires_at: float | None = None
        self.failures = 0
        self._asked = self._settings.expires
        self._interval_retries = 0
        self._key: ClientTransactionKey | None = None
        self._request: Request | None = None
        self._answered: set[tuple[int, str, bool]] = set()
        self._deadline: float | None = None
        self._events: deque[RegistrationEvent] = deque()

    # -- The glue's side ---------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first REGISTER."""
        if self.state is RegistrationState.IDLE:
            self._register(now)

    def stop(self, now: float) -> None:
        """Remove the binding (RFC 3261 §10.2.2), or just stop retrying."""
        self._deadline = None
        bound = self.expires_at is not None and self.expires_at > now
        if bound or self.state is RegistrationState.REGISTERING:
            self._answered.clear()
            self._send(0, now)
            self.state = RegistrationState.UNREGISTERING
        else:
            self.state = RegistrationState.STOPPED

    def next_event(self) -> RegistrationEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._register(now)

    def handle_event(self, event: TransactionEvent, now: float) -> bool:
        if not isinstance(
            event, (ResponseReceived, TransactionTimedOut, TransportErrorOccurred)
        ):
            return False
        if event.key != self._key:
            return False
        if isinstance(event, ResponseReceived):
            if event.response.status >= 200:
                self._on_final(event.response, now)
        else:
            self._on_final(None, now)
        return True

    # -- Requests ---------------------------------------------------------------

    def _register(self, now: float) -> None:
        self._answered.clear()
        self._interval_retries = 0
        self.state = RegistrationState.REGISTERING
        self._send(self._asked, now)

    def _send(
        self, expires: int, now: float, credentials: tuple[str, str] | None = None
    ) -> None:
        request = self._build(expires)
        if credentials is not None:
            request.headers.add(*credentials)
        self._request = request
        self._key = self._layer.send_request(request, self._peer, self._transport, now)

    def _build(self, expires: int) -> Request:
        self._cseq += 1
        endpoint = self._endpoint
        branch = new_branch(self._rng.randbytes(8))
        headers = Headers()
        headers.add(
            "Via",
            f"SIP/2.0/{endpoint.transport} {endpoint.host_port};branch={branch};rport",
        )
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self._settings.aor}>;tag={self._from_tag}")
        headers.add("To", f"<{self._settings.aor}>")
        headers.add("Call-ID", self._call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        headers.add("Contact", f"<{self._contact_uri}>")
        headers.add("Expires", str(expires))
        return Request("REGISTER", self._registrar, headers)

    # -- Responses --------------------------------------------------------------

    def _on_final(self, response: Response | None, now: float) -> None:
        self._key = None
        removing = self.state is RegistrationState.UNREGISTERING
        if response is not None and response.status in (401, 407):
            if self._answer_challenge(response, now):
                return
        if removing:
            self._removed()
        elif response is not None and 200 <= response.status < 300:
            self._registered(response, now)
        elif response is not None and self._interval_too_brief(response, now):
            return
        else:
            self._failed(response, now)

    def _answer_challenge(self, response: Response, now: float) -> bool:
        """Once per (status, realm): the same challenge again means the
        credentials are wrong (RFC 3261 §22.2)."""
        request = self._request
        if self._credentials is None or request is None:
            return False
        try:
            offered = (
                response.www_authenticate
                if response.status == 401
                else response.proxy_authenticate
            )
        except SipParseError:
            return False
        challenge = choose_challenge(offered, self._credentials)
        if challenge is None:
            return False
        # A stale=true challenge (RFC 7616 §3.3) earns one more answer.
        answered = (response.status, challenge.get("realm") or "", challenge.stale)
        if answered in self._answered:
            return False
        self._answered.add(answered)
        value = answer_challenge(
            challenge,
            self._credentials,
            method="REGISTER",
            uri=self._registrar,
            cnonce=self._rng.randbytes(8).hex(),
        )
        name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        expires = int(request.headers.get("Expires") or self._asked)
        self._send(expires, now, (name, value))
        return True

    def _interval_too_brief(self, response: Response, now: float) -> bool:
        # §10.2.8: 423 names the shortest expiry the registrar accepts.
        if response.status != 423 or self._interval_retries >= MAX_INTERVAL_RETRIES:
            return False
        try:
            minimum = response.min_expires
        except SipParseError:
            return False
        if minimum is None or minimum <= self._asked:
            return False
        self._interval_retries += 1
        self._asked = minimum
        self._send(self._asked, now)
        return True

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        self.failures = 0
        self.expires_at = now + granted
        margin = min(granted / 2, REFRESH_MARGIN)
        self._deadline = self.expires_at - margin
        self.state = RegistrationState.REGISTERED
        self._events.append(Registered(self._trunk, self.expires_at))
        _log.info("trunk %s: registered for %d s", self._trunk, granted)

    def _granted(self, response: Response) -> int:
        """§10.2.4: our Contact's expires, else Expires, else what we asked."""
        try:
            ours = parse_uri(self._contact_uri)
            for contact in response.contact:
                if contact.uri == ours and contact.expires is not None:
                    return contact.expires
            return response.expires if response.expires is not None else self._asked
        except SipParseError:
            return self._asked

    def _failed(self, response: Response | None, now: float) -> None:
        self.failures += 1
        retry = self._settings.retry
        delay = min(retry.initial * retry.factor ** (self.failures - 1), retry.maximum)
        delay = max(delay, _retry_after(response))
        self._deadline = now + delay
        self.state = RegistrationState.RETRY_WAIT
        status = None if response is None else response.status
        self._events.append(RegistrationFailed(self._trunk, status, now + delay))
        _log.info(
            "trunk %s: registration failed (%s), retry in %.0f s",
            self._trunk,
            status or "no answer",
            delay,
        )

    def _removed(self) -> None:
        self.expires_at = None
        self.state = RegistrationState.STOPPED
        self._events.append(Unregistered(self._trunk))
        _log.info("trunk %s: unregistered", self._trunk)


def registration_clients(
    layer: TransactionLayer,
    config: Config,
    endpoints: dict[str, LocalEndpoint],
    rng: RandomSource,
) -> list[RegistrationClient]:
    """One client per trunk with ``registration``, on the listener of its
    first target's transport (``endpoints`` is keyed by upper-case
    transport); a trunk with no such listener is left out."""
    clients = []
    for trunk in config.trunks:
        if trunk.registration is None:
            continue
        endpoint = endpoints.get(trunk.targets[0].transport.upper())
        if endpoint is None:
            _log.warning("trunk %s: no listener to register from", trunk.name)
            continue
        clients.append(RegistrationClient(layer, trunk, endpoint, rng))
    return clients


def _retry_after(response: Response | None) -> float:
    # §20.33: a 503 or 500 may say when to come back; never sooner.
    value = None if response is None else response.headers.get("Retry-After")
    if value is None:
        return 0.0
    digits = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(digits) if digits.isdigit() else 0.0


def _target_uri(host: str, port: int, transport: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    params = "" if transport == "UDP" else f";transport={transport.lower()}"
    return f"sip:{shown}:{port}{params}"


def _contact_uri(user: str, endpoint: LocalEndpoint) -> str:
    transport = endpoint.transport.upper()
    params = "" if transport == "UDP" else f";transport={transport.lower()}"
    return f"sip:{user}@{endpoint.host_port}{params}"


__all__ = [
    "REFRESH_MARGIN",
    "Registered",
    "RegistrationClient",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationState",
    "Unregistered",
    "registration_clients",
]
