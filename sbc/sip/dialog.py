"""SIP dialogs (RFC 3261 §12), sans-IO.

A dialog is the peer-to-peer relationship a 2xx or a tagged 1xx to an
INVITE creates. It is identified by Call-ID, local tag and remote tag and
holds what every later request in it needs: the route set, the remote
target, both CSeq counters and the two parties' From/To values.

Nothing here sends or reads the clock: the caller builds a request with
`Dialog.build_request` and hands it to the transaction layer itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from sbc.sip.errors import SipError
from sbc.sip.headers import NameAddr, parse_name_addr
from sbc.sip.message import Headers, Request, Response
from sbc.sip.requests import DEFAULT_MAX_FORWARDS
from sbc.sip.uri import SipUri

# Methods that may change the remote target (RFC 3261 §12.2, RFC 3311 §5.1).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


class DialogState(enum.Enum):
    EARLY = "Early"
    CONFIRMED = "Confirmed"


class DialogId(NamedTuple):
    """RFC 3261 §12: Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


class OutOfOrderRequest(SipError):
    """500: an in-dialog request whose CSeq is lower than the last (§12.2.2)."""

    status_code = 500


@dataclass(slots=True)
class Dialog:
    """One dialog, seen from this side."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str
    """The From value (as UAC) or To value (as UAS) we send, tag included."""
    remote_party: str
    """The other party's value, its tag included."""
    remote_target: str
    """The URI of the peer's Contact; Request-URI of loose-routed requests."""
    route_set: tuple[str, ...]
    """Route values, in the order requests carry them."""
    local_cseq: int
    remote_cseq: int | None
    local_contact: str
    state: DialogState = DialogState.EARLY

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a tagged 1xx or a 2xx to our `request` creates (§12.1.2).

        The route set is the response's Record-Route in reverse order; the
        remote target its Contact.
        """
        to_tag = response.to_tag
        if to_tag is None:
            raise ValueError("a response without a To tag creates no dialog")
        from_tag = request.from_tag
        if from_tag is None:
            raise ValueError("our request carries no From tag")
        routes = tuple(reversed(_route_values(response, "Record-Route")))
        return cls(
            call_id=request.call_id,
            local_tag=from_tag,
            remote_tag=to_tag,
            local_party=_required(request, "From"),
            remote_party=_required(response, "To"),
            remote_target=_contact_uri(response) or request.uri,
            route_set=routes,
            local_cseq=request.cseq.number,
            remote_cseq=None,
            local_contact=request.headers.get("Contact") or "",
            state=_state_of(response.status),
        )

    @classmethod
    def as_uas(
        cls, request: Request, local_tag: str, local_contact: str, *, early: bool
    ) -> Dialog:
        """The dialog our response to `request` creates (§12.1.1).

        The route set is the request's Record-Route in order; the remote
        target its Contact; the remote CSeq its CSeq number.
        """
        from_tag = request.from_tag
        if from_tag is None:
            raise ValueError("an RFC 2543 request without From tag is not served")
        to = _required(request, "To")
        if request.to_tag is None:
            to = f"{to};tag={local_tag}"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_tag,
            local_party=to,
            remote_party=_required(request, "From"),
            remote_target=_contact_uri(request) or "",
            route_set=tuple(_route_values(request, "Record-Route")),
            local_cseq=0,
            remote_cseq=request.cseq.number,
            local_contact=local_contact,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
        )

    def next_cseq(self) -> int:
        """The CSeq number of the next request we send (§12.2.1.1)."""
        self.local_cseq += 1
        return self.local_cseq

    def build_request(
        self,
        method: str,
        via: str,
        *,
        cseq: int | None = None,
        max_forwards: str = DEFAULT_MAX_FORWARDS,
    ) -> Request:
        """A request within the dialog (RFC 3261 §12.2.1.1).

        `via` is our complete top Via value with a fresh branch. Without
        `cseq` the local CSeq is incremented first; ACK passes the INVITE's.
        The Request-URI and Route follow the loose or strict routing rule.
        """
        number = self.next_cseq() if cseq is None else cseq
        request_uri, routes = self.request_target()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", max_forwards)
        for route in routes:
            headers.add("Route", route)
        headers.add("From", self.local_party)
        headers.add("To", self.remote_party)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{number} {method}")
        if method in TARGET_REFRESH_METHODS and self.local_contact:
            headers.add("Contact", self.local_contact)
        return Request(method, request_uri, headers)

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for the next request (§12.2.1.1).

        Loose routing (first route has ``lr``): the remote target is the
        Request-URI and the route set goes in Route as is. Strict routing:
        the first route's URI becomes the Request-URI and the remote target
        is appended as the last Route.
        """
        if not self.route_set:
            return self.remote_target, []
        first = parse_route(self.route_set[0])
        uri = first.uri
        if isinstance(uri, SipUri) and not uri.lr:
            # Strict router (RFC 2543): it expects itself in the Request-URI.
            stripped = SipUri(
                uri.scheme, uri.host, uri.user, uri.password, uri.port, uri.params
            )
            routes = [*self.route_set[1:], f"<{self.remote_target}>"]
            return str(stripped), routes
        return self.remote_target, list(self.route_set)

    def next_hop(self) -> str:
        """The URI that decides where the next request goes (§8.1.2)."""
        if self.route_set:
            return str(parse_route(self.route_set[0]).uri)
        return self.remote_target

    def receive_request(self, request: Request) -> None:
        """Check and record an in-dialog request's CSeq (§12.2.2).

        Raises OutOfOrderRequest (500) when it is lower than the last one.
        ACK and CANCEL carry the CSeq of the request they belong to.
        """
        if request.method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise OutOfOrderRequest("Server Internal Error: CSeq out of order")
        self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS:
            self.refresh_target(request)

    def refresh_target(self, message: Request | Response) -> None:
        """Take the remote target from a target refresh's Contact (§12.2)."""
        target = _contact_uri(message)
        if target:
            self.remote_target = target

    def confirm(self, response: Response) -> None:
        """A 2xx arrived for our INVITE: the early dialog is confirmed.

        The remote target follows the 2xx's Contact and the route set its
        Record-Route, since a 2xx may come through another path (§13.2.2.4).
        """
        self.state = DialogState.CONFIRMED
        self.refresh_target(response)
        if "Record-Route" in response.headers:
            self.route_set = tuple(reversed(_route_values(response, "Record-Route")))


def parse_route(value: str) -> NameAddr:
    """Parse one Route or Record-Route value."""
    return parse_name_addr(value, "Route")


def uas_dialog_id(request: Request) -> DialogId | None:
    """The id of the dialog an in-dialog request we receive belongs to."""
    to_tag, from_tag = request.to_tag, request.from_tag
    if to_tag is None or from_tag is None:
        return None
    return DialogId(request.call_id, to_tag, from_tag)


def _state_of(status: int) -> DialogState:
    return DialogState.CONFIRMED if 200 <= status < 300 else DialogState.EARLY


def _route_values(message: Request | Response, name: str) -> list[str]:
    return message.headers.values(name)


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.contact
    if not contacts or contacts[0].is_star:
        return None
    return str(contacts[0].uri)


def _required(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise ValueError(f"a dialog needs the {name} header")
    return value
