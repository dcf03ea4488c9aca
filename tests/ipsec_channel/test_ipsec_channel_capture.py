"""What a protected trunk puts on the wire: ESP in UDP only, read by tshark.

Transport mode on loopback, so the inner addresses are the outer ones: a
SIP message or RTP packet that slipped past the channel would cross ``lo``
in clear on its own ports and be captured. tcpdump records every UDP
datagram on the test's ports; tshark, with the SBC's ESP key log, decrypts
the ESP and finds the call inside.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
from channel_helpers import (
    LOOPBACK,
    ChannelPeer,
    RtpPeer,
    free_udp_port,
    new_request,
    protected_endpoints,
    relay_for,
    rtp_packet,
    run,
    sdp,
)
from peer_tools import require_root, require_tool

from ipsec.esp import Mode
from ipsec.esp.keylog import EspKeyLog
from sbc.media import RemoteMedia, Side
from sbc.sip.events import AckReceived, RequestReceived, TransportErrorOccurred

RTP_PACKETS = 5


class Capture:
    """tcpdump on lo for the given UDP ports, until stopped."""

    def __init__(self, path: Path, ports: list[int]) -> None:
        self.path = path
        expression = "udp and (" + " or ".join(f"port {p}" for p in ports) + ")"
        self.process = subprocess.Popen(
            [require_tool("tcpdump", "tcpdump"), "-i", "lo", "-n", "-U",
             "--immediate-mode", "-w", str(path), expression],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stderr is not None
        # tcpdump says "listening on" once the capture is armed.
        line = self.process.stderr.readline()
        assert b"listening" in line, line

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=10)


def frames(capture: Path, decode_as: list[str], keylog: Path | None) -> list[list[str]]:
    """Per frame: protocol stack, outer UDP ports, SIP method and status."""
    options = [arg for item in decode_as for arg in ("-d", item)]
    if keylog is not None:
        table = "uat:esp_sa:" + keylog.read_text().strip()
        options += ["-o", "esp.enable_encryption_decode:TRUE", "-o", table]
    result = subprocess.run(
        [require_tool("tshark", "tshark"), "-r", str(capture), *options,
         "-T", "fields", "-E", "separator=|", "-e", "frame.protocols",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "sip.Method",
         "-e", "sip.Status-Code"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [line.split("|") for line in result.stdout.splitlines()]


@pytest.mark.peer("tcpdump")
def test_protected_call_on_the_wire_is_esp_only(tmp_path):
    require_root("a tcpdump capture on lo")
    keylog = tmp_path / "esp_sa"
    pcap = tmp_path / "lo.pcap"

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        far_port = free_udp_port()
        answer = sdp(LOOPBACK, far_port)
        keys = EspKeyLog(str(keylog))
        async with protected_endpoints(
            Mode.TRANSPORT, keylog=keys, answer=answer
        ) as ends:
            planes = ends.planes
            relay = relay_for(planes)
            session = await relay.allocate(
                "call-1", LOOPBACK, LOOPBACK, ipsec=(False, True)
            )
            b_local = session.local(Side.B)
            clear = await RtpPeer.open()
            far = ChannelPeer(planes.peer, LOOPBACK, far_port)
            sip_ports = [ends.sbc_address[1], ends.uas_address[1]]
            media_ports = [b_local.rtp_port, b_local.rtcp_port, far_port, far_port + 1]
            capture = Capture(pcap, [*planes.encap_ports, *sip_ports, *media_ports])
            try:
                await _call(ends, session, clear, far, b_local.rtp_port, answer)
                # Without SAs: the request fails at once and nothing leaves.
                planes.remove_sas()
                host, port = ends.uas_address
                options = new_request("OPTIONS", f"sip:{host}:{port}", call_id="late")
                await ends.sbc.send_request(options, ends.uas_address, "UDP")
                await ends.sbc_user.next(TransportErrorOccurred, timeout=1.0)
                assert ends.sbc.snapshot()["ipsec"]["drop.no_sa"] == 1
                await asyncio.sleep(0.3)
            finally:
                capture.stop()
                clear.close()
                await relay.close()
        return list(planes.encap_ports), sip_ports, media_ports

    encap_ports, sip_ports, media_ports = run(scenario())

    decode_as = [f"udp.port=={port},udpencap" for port in encap_ports]
    sealed = frames(pcap, decode_as, None)
    assert sealed, "the capture holds nothing"
    for stack, source, destination, _, _ in sealed:
        assert stack.endswith("udp:udpencap:esp"), stack
        assert {int(source), int(destination)} == set(encap_ports)

    decode_as += [f"udp.port=={port},sip" for port in sip_ports]
    decode_as += [f"udp.port=={port},rtp" for port in media_ports]
    opened = frames(pcap, decode_as, keylog)
    methods = [method for _, _, _, method, _ in opened if method]
    statuses = [status for _, _, _, _, status in opened if status]
    # Retransmissions may repeat some; the late OPTIONS never left.
    assert set(methods) == {"INVITE", "ACK", "BYE"}
    assert set(statuses) <= {"100", "200"} and "200" in statuses
    rtp = [stack for stack, *_ in opened if stack.endswith(":rtp")]
    assert len(rtp) == 2 * RTP_PACKETS


async def _call(ends, session, clear, far, b_rtp_port, answer) -> None:
    """INVITE (offer naming the relay's B-leg), 200, ACK, RTP both ways, BYE."""
    host, port = ends.uas_address
    sbc_host, sbc_port = ends.sbc_address
    invite = new_request(
        "INVITE", f"sip:+15550100@{host}:{port}", call_id="call-1",
        contact=f"<sip:sbc@{sbc_host}:{sbc_port}>", body=sdp(sbc_host, b_rtp_port),
    )  # fmt: skip
    await ends.sbc.send_request(invite, ends.uas_address, "UDP")
    assert (await ends.sbc_user.final_response()).body == answer
    ack = new_request("ACK", f"sip:uas@{host}:{port}", call_id="call-1", to_tag="uas1")
    ack.headers.prepend("Via", f"SIP/2.0/UDP {sbc_host}:{sbc_port};branch=z9hG4bKa1")
    ends.sbc.transactions.send_stateless(ack, ends.uas_address, "UDP")
    ends.sbc.wake()
    await ends.uas_user.next(AckReceived)

    session.update_leg(Side.A, RemoteMedia(LOOPBACK, clear.address[1]))
    session.update_leg(Side.B, RemoteMedia(LOOPBACK, far.address[1]))
    a_port = session.local(Side.A).rtp_port
    for n in range(RTP_PACKETS):
        clear.send(rtp_packet(n, b"a" * 160), (LOOPBACK, a_port))
        await far.receive()
        far.send(rtp_packet(n, b"b" * 160, ssrc=0x55), (LOOPBACK, b_rtp_port))
        await clear.receive()

    bye = new_request(
        "BYE", f"sip:uas@{host}:{port}", call_id="call-1", cseq=2, to_tag="uas1"
    )
    await ends.sbc.send_request(bye, ends.uas_address, "UDP")
    assert (await ends.uas_user.next(RequestReceived)).request.method == "BYE"
    assert (await ends.sbc_user.final_response()).status == 200
