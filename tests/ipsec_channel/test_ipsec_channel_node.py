"""A call through the node to a protected trunk, SAs negotiated by IKE.

The node (`sbc.node.Node` with the secure runtime) answers a PBX in clear
on one loopback address and routes to a trunk protected in transport mode
toward a peer, whose own secure runtime (another data plane and IKE
daemon, on another loopback address) carries the UAS and the far RTP end
on its datagram channel. The B-leg's SIP and RTP can only have crossed
inside the CHILD_SA: nothing of the peer listens on a kernel socket.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from channel_helpers import (
    LOOPBACK,
    ChannelPeer,
    RtpPeer,
    ScriptedUser,
    free_udp_port,
    rtp_packet,
    sdp,
)
from peer_tools import require_root

from sbc.cdr import CallRecord
from sbc.config.model import Config
from sbc.io.endpoint import SipEndpoint
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.media import Side
from sbc.node import Node, NodeSettings
from sbc.sdp import SessionDescription
from sbc.secure import node_runtime
from sbc.secure.runtime import SecureTrunks
from sbc.sip.events import AckReceived, RequestReceived
from sbc.sip.message import Headers, Request, Response, make_response
from sbc.sip.parser import parse_message

PSK = "loopback protected trunk"
SIP_PORT = 5060
RTP_PACKETS = 5


def protected_side(me: str, peer: str, **extra: Any) -> dict[str, Any]:
    """A node at ``me`` with a transport-mode trunk ``peer-trunk`` to ``peer``."""
    return {
        "ipsec": {"node": f"n{me}", "address": me, "identity": f"{me}.sbc.test"},
        "listeners": [
            {"name": "sec", "transport": "udp", "address": me, "port": SIP_PORT,
             "ipsec": True},
        ],
        "ipsec_profiles": [{"name": "p", "psk": PSK, **extra}],
        "trunks": [
            {"name": "peer-trunk", "kind": "carrier", "listeners": ["sec"],
             "targets": [{"host": peer}], "ipsec_profile": "p",
             "ipsec_identity": f"{peer}.sbc.test"},
        ],
    }  # fmt: skip


def sbc_config(me: str, peer: str, pbx_port: int) -> Config:
    """The protected side plus a PBX in clear whose calls go to the peer.

    The clear listener comes first, so it is the first UDP listener: each
    leg's Via and Contact must still name its own trunk's listener.
    """
    document = protected_side(me, peer)
    document["listeners"].insert(
        0, {"name": "lo", "transport": "udp", "address": me, "port": pbx_port}
    )
    document["trunks"].append(
        {"name": "pbx", "kind": "pbx", "listeners": ["lo"],
         "targets": [{"host": LOOPBACK}], "inbound": {"allow": [f"{LOOPBACK}/32"]},
         "dial_plan": "plan"}
    )  # fmt: skip
    document["dial_plans"] = [
        {"name": "plan", "routes": [{"prefix": "", "candidates": [{"trunk": "peer-trunk"}]}]}
    ]  # fmt: skip
    document["media"] = {"address": me}
    return Config.model_validate(document)


def loopback_pair() -> tuple[str, str]:
    # Addresses of their own, so IKE's port 500 is free on them.
    base, one, two = random.randrange(1, 250), *random.sample(range(1, 250), 2)
    return f"127.{base}.{one}.1", f"127.{base}.{two}.1"


class Records:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        self.records.append(record)


def caller_request(
    method: str, sbc: tuple[str, int], caller: tuple[str, int], **fields: str
) -> bytes:
    body = fields.get("body", "").encode()
    lines = [
        f"{method} sip:+15550100@{sbc[0]}:{sbc[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {caller[0]}:{caller[1]};rport;branch={fields['branch']}",
        "Max-Forwards: 70",
        "From: <sip:+15550101@pbx.test>;tag=pbx1",
        "To: <sip:+15550100@sbc.test>" + fields.get("to_tag", ""),
        "Call-ID: node-call-1",
        f"CSeq: {fields['cseq']} {method}",
        f"Contact: <sip:pbx@{caller[0]}:{caller[1]}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def final_response(caller: RtpPeer) -> Response:
    while True:
        data, _ = await caller.receive()
        message = parse_message(data)
        assert isinstance(message, Response)
        if message.status >= 200:
            return message


async def request_from(caller: RtpPeer, method: str) -> Request:
    """The next ``method`` request the caller receives (responses skipped)."""
    while True:
        data, _ = await caller.receive()
        message = parse_message(data)
        if isinstance(message, Request) and message.method == method:
            return message


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


def test_call_to_protected_trunk_carries_sip_and_rtp_inside_its_sas():
    require_root("IKE binds UDP 500 on loopback addresses")

    async def scenario() -> None:
        me, peer_address = loopback_pair()
        pbx_port = free_udp_port()
        peer = SecureTrunks(retry_delays=(0.5,))
        document = protected_side(peer_address, me, start_action="none")
        await peer.start(Config.model_validate(document))
        far_port = free_udp_port()
        uas_spec = ListenSpec("UDP", peer_address, SIP_PORT, ipsec=True)
        uas = SipEndpoint(
            TransportSettings(listen=(uas_spec,)),
            data_plane=peer.data_plane,
            ipsec_peers={me: (peer_address, SIP_PORT)},
        )
        await uas.start()
        uas_user = ScriptedUser(
            uas.transactions,
            contact=f"<sip:uas@{peer_address}:{SIP_PORT}>",
            answer=sdp(peer_address, far_port),
        )
        uas.user = uas_user
        far = ChannelPeer(peer.data_plane, peer_address, far_port)
        records = Records()
        node = Node(
            NodeSettings(TransportSettings(listen=())), records,
            secure_runtime=node_runtime,
        )  # fmt: skip
        caller, caller_rtp = await RtpPeer.open(), await RtpPeer.open()
        try:
            outcomes = await node.start(sbc_config(me, peer_address, pbx_port))
            assert all(outcome.applied for outcome in outcomes.values()), outcomes
            secure = node.secure
            assert secure is not None
            await until(lambda: secure.trunk_protection() == {"peer-trunk": "up"})
            await _call(node, uas, far, caller, caller_rtp, (me, pbx_port))
            await until(lambda: records.records)
            [record] = records.records
            assert record.ipsec, "the record names the SAs of the protected leg"
        finally:
            caller.close()
            caller_rtp.close()
            await node.stop()
            await uas.close()
            await peer.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))


async def _call(node, uas, far, caller, caller_rtp, sbc) -> None:
    uas_user = uas.user
    offer = sdp(LOOPBACK, caller_rtp.address[1]).decode()
    caller.send(
        caller_request("INVITE", sbc, caller.address, branch="z9hG4bKn1", cseq="1",
                       body=offer),
        sbc,
    )  # fmt: skip

    # The B-leg INVITE arrived inside, offering relay ports in the channel.
    invite = (await uas_user.next(RequestReceived)).request
    offered = SessionDescription.parse(invite.body).media[0].port
    inside = f"{sbc[0]}:{SIP_PORT}"
    assert f"{invite.top_via.host}:{invite.top_via.port}" == inside
    assert invite.headers.get("Contact") == f"<sip:{inside}>"
    ok = await final_response(caller)
    assert ok.status == 200
    assert ok.headers.get("Contact") == f"<sip:{sbc[0]}:{sbc[1]}>"
    a_port = SessionDescription.parse(ok.body).media[0].port
    to_tag = f";tag={ok.to_tag}"
    caller.send(
        caller_request("ACK", sbc, caller.address, branch="z9hG4bKn2", cseq="1",
                       to_tag=to_tag),
        sbc,
    )  # fmt: skip
    await uas_user.next(AckReceived)

    for n in range(RTP_PACKETS):
        caller_rtp.send(rtp_packet(n, b"p" * 160), (sbc[0], a_port))
        data, source = await far.receive()
        assert data == rtp_packet(n, b"p" * 160) and source == (sbc[0], offered)
        far.send(rtp_packet(n, b"q" * 160, ssrc=0x55), (sbc[0], offered))
        data, _ = await caller_rtp.receive()
        assert data == rtp_packet(n, b"q" * 160, ssrc=0x55)
    assert node.relay is not None
    [session] = node.relay.sessions.values()
    assert session.channels[Side.B] is not None and session.channels[Side.A] is None
    assert session.counters(Side.B).packets_sent == RTP_PACKETS

    # The far end hangs up toward the Contact it was given: inside the SA.
    bye = Request("BYE", f"sip:{inside}", Headers([
        ("Max-Forwards", "70"),
        ("From", f"{invite.headers.get('To')};tag=uas1"),
        ("To", str(invite.headers.get("From"))),
        ("Call-ID", invite.call_id),
        ("CSeq", "1 BYE"),
    ]))  # fmt: skip
    await uas.send_request(bye, (sbc[0], SIP_PORT), "UDP")
    relayed = await request_from(caller, "BYE")
    caller.send(make_response(relayed, 200).to_bytes(), sbc)
    assert (await uas_user.final_response()).status == 200
