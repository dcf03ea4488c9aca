"""Transport rules of RFC 3261 §18 and RFC 3581, without I/O.

Where a response goes, what the server stamps on the top Via of a request it
receives, and which transport a request it sends must use.
"""

from __future__ import annotations

from sbc.io.addresses import Address
from sbc.sip.headers import Via
from sbc.sip.message import Request
from sbc.sip.uri import Params

# RFC 3261 §18.1.1: without a known path MTU, a request larger than this
# must go over a congestion-controlled transport.
UDP_SIZE_LIMIT = 1300


def stamp_received(via: Via, source: Address) -> Via:
    """The top Via of a received request with ``received`` and ``rport`` set.

    ``received`` is added even when it equals sent-by: RFC 3581 §4 requires
    it whenever rport is present, and always adding it keeps the response
    route independent of whether sent-by is a name or an address
    (RFC 3261 §18.2.1). ``rport`` is filled with the source port only when
    the client asked for it with an empty rport.
    """
    host, port = source
    params = via.params.copy()
    params.set("received", host)
    if "rport" in params:
        params.set("rport", str(port))
    return Via(via.transport, via.host, via.port, params, via.protocol)


def response_destination(via: Via, *, reliable: bool) -> Address:
    """Where to send a response when no connection to reuse exists.

    RFC 3261 §18.2.2: over a reliable transport, a new connection goes to
    ``received`` (else sent-by host) on the sent-by port. Over an unreliable
    one, ``maddr`` wins, then ``received`` with the ``rport`` value when the
    client asked for it (RFC 3581 §4), else the sent-by port, then sent-by
    itself. The host may be a name that the caller must resolve.
    """
    sent_by_host, sent_by_port = via.sent_by
    received = via.received
    if reliable:
        return received or sent_by_host, sent_by_port
    maddr = via.params.get("maddr")
    if maddr:
        return maddr.strip("[]"), sent_by_port
    if received is None:
        return sent_by_host, sent_by_port
    # A bare rport means the server failed to fill it: use sent-by.
    rport = via.rport
    return received, sent_by_port if rport is None else rport


def request_transport(size: int, transport: str) -> str:
    """The transport a request of ``size`` bytes must use (RFC 3261 §18.1.1).

    A request over 1,300 bytes toward a UDP next hop whose path MTU is
    unknown (always, here) goes over TCP instead.
    """
    if transport == "UDP" and size > UDP_SIZE_LIMIT:
        return "TCP"
    return transport


def client_via(transport: str, local: Address, branch: str) -> Via:
    """The Via a client transport puts on a request it sends (§18.1.1).

    rport is asked for so that responses find us through NATs (RFC 3581 §3).
    """
    host, port = local
    return Via(transport, host, port, Params([("branch", branch), ("rport", None)]))


def stamp_request(request: Request, source: Address) -> Via:
    """Replace the top Via of ``request`` by :func:`stamp_received` of it.

    Only the first Via value changes; the others keep their raw text and
    order. Returns the stamped Via. Raises SipParseError on a bad Via.
    """
    stamped = stamp_received(request.top_via, source)
    request.replace_top_via(stamped)
    return stamped
