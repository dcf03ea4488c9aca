"""A request over UDP leaves from the listener its top Via names.

With several UDP listeners (a PBX side and a carrier side, as in
docs/examples/single-node.yaml) the B2BUA writes the trunk's own listener
into the Via; the datagram must come from that socket too, or the carrier
sees the PBX side's address. A response still leaves from the socket its
request came in on.
"""

from __future__ import annotations

from io_helpers import UdpPeer, hostport, request_bytes, run, serving

from sbc.io.endpoint import SipEndpoint
from sbc.sip.parser import parse_message


def _send_options(endpoint: SipEndpoint, sent_by: tuple[str, int], to, n: int):
    via = f"SIP/2.0/UDP {hostport(*sent_by)};branch=z9hG4bKout{n};rport"
    request = parse_message(request_bytes("OPTIONS", via=via, call_id=f"out{n}"))
    endpoint.transactions.send_request(request, to, "UDP", endpoint._now())
    endpoint.wake()


def test_request_leaves_from_the_listener_its_via_names_not_the_first():
    async def scenario():
        async with serving("udp:127.0.0.1", "udp:127.0.0.1") as endpoint:
            first, second = [(s.host, s.port) for s in endpoint.listening]
            carrier = await UdpPeer.open()
            sources = []
            for n, named in enumerate((second, first, second)):
                _send_options(endpoint, named, carrier.address, n)
                sources.append((await carrier.receive())[1])

            # The carrier's own request to the first listener is answered
            # from it; our next request naming the second still uses the second.
            via = f"SIP/2.0/UDP {hostport(*carrier.address)};branch=z9hG4bKin"
            carrier.send(request_bytes("OPTIONS", via=via, call_id="in"), first)
            answer, answered_from = await carrier.receive()
            _send_options(endpoint, second, carrier.address, 3)
            _, last = await carrier.receive()
            carrier.close()

        assert sources == [second, first, second]
        assert answer.startswith(b"SIP/2.0 200") and answered_from == first
        assert last == second

    run(scenario())
