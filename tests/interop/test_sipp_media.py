"""Media anchored by a real ``sbc serve --config``, a SIPp UAS echoing RTP.

The caller is a small UA written here with plain sockets and string
handling (independent of sbc.sip and sbc.sdp): it places the call through
the SBC, sends G.711 RTP to the address the SBC answered with and checks
that SIPp's echo (``-rtp_echo``) comes back through the relay bit-exact.
SIPp's message trace shows what the callee saw; the CDR carries the relay's
counters.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pylibsrtp
import pytest
import yaml
from peer_tools import require_root, require_tool
from sbc_process import SbcProcess
from test_sipp_b2bua import (
    Lab,
    SippRun,
    all_headers,
    finish,
    free_port,
    pbx_side,
    read_records,
    sipp_run,
)
from test_sipp_b2bua import start as start_sipp

DIALLED = "2125550100"
SUITE = "AES_CM_128_HMAC_SHA1_80"
PHONE_KEY = bytes(range(100, 130))  # the test phone's SRTP master key||salt
SCENARIOS = Path(__file__).with_name("scenarios")
SDP_KEYS = ("c=", "o=", "a=", "m=")
WAIT = 10.0
PACKETS = 50


@pytest.fixture
def sipp():
    return require_tool("sipp", "sip-tester")


def media_ports() -> tuple[int, int]:
    # A range per process, apart from tests/media and tests/sdp ranges.
    base = 40000 + (os.getpid() % 50) * 100
    return base, base + 99


class TinyUac:
    """Just enough of RFC 3261 over UDP for one call from the PBX's side."""

    def __init__(self, host: str, port: int, sbc: tuple[str, int]) -> None:
        self.host, self.port, self.sbc = host, port, sbc
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((host, port))
        self.sip.settimeout(0.5)
        self.call_id = f"{os.urandom(8).hex()}@{host}"
        self.from_tag = os.urandom(4).hex()
        self.to_header = f"<sip:{DIALLED}@{sbc[0]}>"
        self.remote_target = f"sip:{DIALLED}@{sbc[0]}:{sbc[1]}"
        self.cseq = 1

    def close(self) -> None:
        self.sip.close()

    def request(self, method: str, cseq: int, body: str = "", branch=None) -> str:
        branch = branch or f"z9hG4bK{os.urandom(6).hex()}"
        lines = [
            f"{method} {self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:pbx@{self.host}>;tag={self.from_tag}",
            f"To: {self.to_header}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:pbx@{self.host}:{self.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        message = "\r\n".join(lines) + "\r\n\r\n" + body
        self.sip.sendto(message.encode(), self.sbc)
        return branch

    def final_response(self, method: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                data, _ = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            status = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0") else 0
            if status >= 200 and f" {method}\r\n" in header(text, "CSeq") + "\r\n":
                return text
        raise AssertionError(f"no final response to {method}")

    def invite(self, sdp: str) -> str:
        self.request("INVITE", 1, sdp)
        response = self.final_response("INVITE")
        if response.startswith("SIP/2.0 2"):
            self.to_header = header(response, "To")
            contact = re.search(r"<([^>]+)>", header(response, "Contact"))
            assert contact is not None
            self.remote_target = contact.group(1)
            self.request("ACK", 1)
        return response

    def reinvite(self, sdp: str, cseq: int) -> str:
        self.cseq = cseq
        self.request("INVITE", cseq, sdp)
        response = self.final_response("INVITE")
        assert response.startswith("SIP/2.0 200"), response
        self.request("ACK", cseq)
        return response

    def bye(self) -> str:
        self.request("BYE", self.cseq + 1)
        return self.final_response("BYE")

    def answer_request(self, method: str) -> str:
        """Wait for a request from the SBC, answer it 200 and return it."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                data, source = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            if text.startswith(f"{method} "):
                self.sip.sendto(ok_response(text), source)
                return text
        raise AssertionError(f"no {method} from the SBC")


def ok_response(request: str) -> bytes:
    """200 OK to ``request``: its Via, From, To, Call-ID and CSeq (§8.2.6.2)."""
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines.append(f"{name}: {header(request, name)}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reason_text(message: str) -> str | None:
    # RFC 3326 §2: Reason: protocol *(; reason-params), text a quoted-string.
    match = re.fullmatch(r'SIP\s*;\s*text="([^"\\]*)"', header(message, "Reason"))
    return None if match is None else match.group(1)


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*?)\r?$", message, re.IGNORECASE | re.M)
    return match.group(1) if match else ""


def sdp_lines(messages: str) -> list[str]:
    """The c=, o= and a= lines in a SIPp message trace."""
    return [line.strip() for line in messages.splitlines() if line[:2] in SDP_KEYS]


def body_of(message: str) -> str:
    return message.partition("\r\n\r\n")[2]


def offer(
    host: str, rtp_port: int, *, version: int, direction: str, key: bytes = b""
) -> str:
    profile = "RTP/SAVP" if key else "RTP/AVP"
    crypto = (
        f"a=crypto:1 {SUITE} inline:{base64.b64encode(key).decode()}\r\n" if key else ""
    )
    return (
        "v=0\r\n"
        f"o=pbx 1 {version} IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} {profile} 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"a={direction}\r\n"
        f"{crypto}"
    )


def media_target(sdp: str) -> tuple[str, int]:
    address = re.search(r"^c=IN IP[46] (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+) ", sdp, re.M)
    assert address and port, sdp
    return address.group(1), int(port.group(1))


def rtp_packet(sequence: int, ssrc: int) -> bytes:
    # G.711 mu-law: 160 bytes per 20 ms, a payload that differs per packet.
    payload = bytes((sequence * 7 + n) & 0xFF for n in range(160))
    header_bytes = struct.pack("!BBHII", 0x80, 0, sequence, sequence * 160, ssrc)
    return header_bytes + payload


def exchange_rtp(sock: socket.socket, target: tuple[str, int]) -> list[bytes]:
    """Send PACKETS at 50/s and collect what comes back within WAIT."""
    sent = [rtp_packet(n, 0x1234ABCD) for n in range(1, PACKETS + 1)]
    received: list[bytes] = []
    sock.settimeout(0.02)
    for packet in sent:
        sock.sendto(packet, target)
        received += drain(sock, 0.02)
    received += drain(sock, 1.0)
    return received


def drain(sock: socket.socket, seconds: float) -> list[bytes]:
    received = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            continue
        received.append(data)
    return received


def lab_config(
    lab: Lab, media_address: str | None = None, srtp: dict | None = None, **media
) -> dict:
    """The SIPp lab's configuration with media anchored.

    With ``media_address`` the carrier side (listeners, B-leg media) moves
    to that address, the PBX side keeps ``lab.host``; ``srtp`` goes on the
    PBX's listeners (the A-leg).
    """
    port_min, port_max = media_ports()
    config = lab.config()
    if srtp is not None:
        for listener in config["listeners"]:
            if listener["name"].startswith("sbc-"):
                listener["srtp"] = srtp
    if media_address is not None:
        for listener in config["listeners"]:
            if listener["name"].startswith("carrier-"):
                listener["address"] = media_address
    config["media"] = {
        "address": media_address or lab.host,
        "port_min": port_min,
        "port_max": port_max,
        **media,
    }
    return config


@dataclass
class MediaCall:
    """One test's running pieces: the UA, its RTP socket, SIPp, the SBC."""

    uac: TinyUac
    rtp: socket.socket
    uas: SippRun
    records: list[dict] = field(default_factory=list)
    stop_status: int | None = None
    log: str = ""

    def offer(
        self, version: int = 1, direction: str = "sendrecv", key: bytes = b""
    ) -> str:
        host, port = self.rtp.getsockname()
        return offer(host, port, version=version, direction=direction, key=key)

    def move_rtp(self) -> socket.socket:
        """A new RTP socket on another port (the phone moved its media)."""
        old, self.rtp = self.rtp, bound_socket(self.uac.host)
        return old


def bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def media_call(sipp, tmp_path: Path, lab: Lab, uas_role=("-sn", "uas"), **media):
    """Run the SBC and an echoing SIPp UAS; records are read after the stop."""
    config_file = tmp_path / "sbc.yaml"
    config_file.write_text(yaml.safe_dump(lab_config(lab, **media), sort_keys=False))
    callee_media = free_port(lab.callee_host)
    with SbcProcess(tmp_path / "data", "--config", str(config_file)) as sbc:
        uas = start_sipp(
            sipp_run(
                sipp, tmp_path / "callee", (*uas_role, "-rtp_echo"), lab,
                (lab.callee_host, lab.callee_ports[0]),
                "-m", "1", "-mi", lab.callee_host, "-mp", str(callee_media),
            )
        )  # fmt: skip
        call = MediaCall(
            TinyUac(lab.caller_host, lab.caller_port, pbx_side(sbc, "udp")),
            bound_socket(lab.caller_host),
            uas,
        )
        try:
            time.sleep(0.3)  # SIPp binds its sockets
            yield call
        finally:
            call.uac.close()
            call.rtp.close()
            finish(uas, timeout=10.0)
            call.stop_status = sbc.stop()
    call.records.extend(read_records(tmp_path / "data"))
    call.log = (tmp_path / "data" / "sbc.log").read_text(encoding="utf-8")


@contextlib.contextmanager
def capture_media(tmp_path: Path):
    """tcpdump on lo for the relay's port range; yields the rows read back.

    Bounded in packets (-c) and time; the rows are (src, sport, dst, dport).
    """
    tcpdump = require_tool("tcpdump", "tcpdump")
    tshark = require_tool("tshark", "tshark")
    require_root("tcpdump captures on lo")
    port_min, port_max = media_ports()
    pcap = tmp_path / "media.pcap"
    process = subprocess.Popen(
        [tcpdump, "-i", "lo", "-U", "-n", "-c", "2000", "-w", str(pcap),
         f"udp and portrange {port_min}-{port_max}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    rows: list[tuple[str, int, str, int]] = []
    try:
        assert process.stderr is not None
        assert "listening on" in process.stderr.readline()
        yield rows
    finally:
        time.sleep(0.5)  # let tcpdump write what the kernel handed it
        process.terminate()
        process.communicate(timeout=10)
    fields = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields",
         "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for line in fields.splitlines():
        src, sport, dst, dport = line.split("\t")
        rows.append((src, int(sport), dst, int(dport)))


def sent_packets() -> set[bytes]:
    return {rtp_packet(n, 0x1234ABCD) for n in range(1, PACKETS + 1)}


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_anchored_echo_crosses_relay_bit_exact(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    with capture_media(tmp_path) as wire, media_call(sipp, tmp_path, lab) as call:
        response = call.uac.invite(call.offer())
        assert response.startswith("SIP/2.0 200"), response
        echoed = exchange_rtp(call.rtp, media_target(body_of(response)))
        assert call.uac.bye().startswith("SIP/2.0 200")

    assert set(echoed) == sent_packets()  # every packet back, payload untouched
    # On the wire each peer talks to the SBC only: 50 packets per hop.
    port_min, port_max = media_ports()
    hops: dict[tuple[str, str], int] = {}
    for src, sport, dst, dport in wire:
        relay_port = sport if src == lab.host else dport
        assert lab.host in (src, dst) and port_min <= relay_port <= port_max
        hops[(src, dst)] = hops.get((src, dst), 0) + 1
    assert hops == {
        (lab.caller_host, lab.host): PACKETS,
        (lab.host, lab.callee_host): PACKETS,
        (lab.callee_host, lab.host): PACKETS,
        (lab.host, lab.caller_host): PACKETS,
    }
    # Only the SBC's address in the SDP each side saw.
    assert media_target(body_of(response))[0] == lab.host
    callee_saw = sdp_lines(call.uas.messages)
    assert f"c=IN IP4 {lab.host}" in callee_saw
    assert lab.caller_host not in "".join(callee_saw)
    media = call.records[0]["media"]
    assert media["0.A"]["packets_received"] == PACKETS
    assert media["0.B"]["packets_sent"] == PACKETS
    assert media["0.B"]["packets_received"] == PACKETS
    assert media["0.A"]["packets_sent"] == PACKETS


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_injection_from_wrong_source_dropped_and_counted(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    with media_call(sipp, tmp_path, lab) as call:
        response = call.uac.invite(call.offer())
        target = media_target(body_of(response))
        echoed = exchange_rtp(call.rtp, target)
        with bound_socket(lab.caller_host) as intruder:
            injected = exchange_rtp(intruder, target)
        assert call.uac.bye().startswith("SIP/2.0 200")

    assert set(echoed) == sent_packets()
    assert injected == []
    media = call.records[0]["media"]
    assert media["0.A"]["drop.wrong_source"] == PACKETS
    assert media["0.B"]["packets_sent"] == PACKETS  # only the real phone's


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_hold_resume_and_moved_address_follow_reinvites(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    hold = ("-sf", str(SCENARIOS / "b2bua_uas_hold.xml"))

    with media_call(sipp, tmp_path, lab, uas_role=hold) as call:
        answer = call.uac.invite(call.offer())
        before = exchange_rtp(call.rtp, media_target(body_of(answer)))
        held = call.uac.reinvite(call.offer(version=2, direction="sendonly"), 2)
        with call.move_rtp() as old_rtp:
            resumed = call.uac.reinvite(call.offer(version=3), 3)
            after = exchange_rtp(call.rtp, media_target(body_of(resumed)))
            left_on_old = drain(old_rtp, 0.2)
        assert call.uac.bye().startswith("SIP/2.0 200")

    assert set(before) == sent_packets()
    assert "a=recvonly" in body_of(held).splitlines()  # the hold was answered
    # The SBC's ports never change; the relay follows the phone's new port.
    assert media_target(body_of(resumed)) == media_target(body_of(answer))
    assert set(after) == sent_packets()
    assert left_on_old == []
    callee_saw = sdp_lines(call.uas.messages)
    assert "a=sendonly" in callee_saw and lab.caller_host not in "".join(callee_saw)
    assert call.records[0]["media"]["0.A"]["packets_received"] == 2 * PACKETS


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_codec_allow_list_refuses_offer_with_488(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    with media_call(sipp, tmp_path, lab, codecs=["G722"]) as call:
        response = call.uac.invite(call.offer())

    assert response.startswith("SIP/2.0 488"), response
    assert [record["final_status"] for record in call.records] == [488]


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_ipv4_caller_ipv6_callee_bridged(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    lab.callee_host, lab.callee_ports = "::1", [free_port("::1")]

    with media_call(sipp, tmp_path, lab, media_address="::1") as call:
        response = call.uac.invite(call.offer())
        assert response.startswith("SIP/2.0 200"), response
        echoed = exchange_rtp(call.rtp, media_target(body_of(response)))
        assert call.uac.bye().startswith("SIP/2.0 200")

    assert set(echoed) == sent_packets()
    assert media_target(body_of(response))[0] == lab.host
    assert "c=IN IP6 ::1" in sdp_lines(call.uas.messages)
    assert call.records[0]["media"]["0.B"]["packets_received"] == PACKETS


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_timeout_ends_the_call_on_both_legs(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    with media_call(sipp, tmp_path, lab, timeout=1.0) as call:
        response = call.uac.invite(call.offer())
        assert response.startswith("SIP/2.0 200"), response
        # No RTP at all: the relay's ticker reports it and the SBC hangs up.
        bye = call.uac.answer_request("BYE")
        assert finish(call.uas, timeout=WAIT) == 0, call.uas.describe()

    assert header(bye, "Call-ID") == call.uac.call_id
    assert reason_text(bye) == "media_timeout"
    callee_byes = [
        block
        for block in all_headers(call.uas.messages).split("\n")
        if block.startswith("BYE ")
    ]
    assert callee_byes, "SIPp saw no BYE"
    assert call.uas.stat() == (1, 0)
    assert 'Reason: SIP;text="media_timeout"' in call.uas.messages
    [record] = call.records
    assert record["disposition"] == "answered"
    assert record["hangup_side"] == "sbc"
    assert record["end_reason"] == "media_timeout"
    assert record["media"]["timeout"]["idle_for"] >= 1.0
    assert record["media"]["0.A"]["packets_received"] == 0
    # SIGTERM: the relay is closed before the process exits.
    assert call.stop_status == 0
    assert "media relay closed" in call.log


def srtp_sessions(answer: str) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """The phone's outbound (its key) and inbound (the SBC's key) sessions."""
    crypto = re.search(rf"^a=crypto:1 {SUITE} inline:(\S+)\r?$", answer, re.M)
    assert crypto, answer
    sbc_key = base64.b64decode(crypto.group(1).split("|")[0])
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    outbound, inbound = (
        pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
        for key, ssrc_type in (
            (PHONE_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
            (sbc_key, pylibsrtp.Policy.SSRC_ANY_INBOUND),
        )
    )
    return pylibsrtp.Session(outbound), pylibsrtp.Session(inbound)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_srtp_caller_to_rtp_callee_bit_exact(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    srtp = {"mode": "mandatory", "suites": [SUITE]}

    with media_call(sipp, tmp_path, lab, srtp=srtp) as call:
        response = call.uac.invite(call.offer(key=PHONE_KEY))
        assert response.startswith("SIP/2.0 200"), response
        outbound, inbound = srtp_sessions(body_of(response))
        target = media_target(body_of(response))
        sent = [rtp_packet(n, 0x1234ABCD) for n in range(1, PACKETS + 1)]
        call.rtp.settimeout(0.02)
        echoed = []
        for packet in sent:
            call.rtp.sendto(outbound.protect(packet), target)
            echoed += drain(call.rtp, 0.02)
        echoed += drain(call.rtp, 1.0)
        assert call.uac.bye().startswith("SIP/2.0 200")

    assert "RTP/SAVP" in body_of(response)
    # The callee spoke plain RTP; the phone gets SRTP it can authenticate.
    callee_saw = sdp_lines(call.uas.messages)
    assert not any(line.startswith("a=crypto") for line in callee_saw)
    assert [line for line in callee_saw if line.startswith("m=audio")]
    assert all("RTP/AVP" in line for line in callee_saw if line.startswith("m="))
    assert {inbound.unprotect(packet) for packet in echoed} == set(sent)
    media = call.records[0]["media"]
    assert media["0.A"]["packets_received"] == PACKETS
    assert media["0.A"].get("drop.srtp_unprotect_failed", 0) == 0


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_media_srtp_mandatory_refuses_plain_offer_with_488(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    srtp = {"mode": "mandatory", "suites": [SUITE]}

    with media_call(sipp, tmp_path, lab, srtp=srtp) as call:
        response = call.uac.invite(call.offer())

    assert response.startswith("SIP/2.0 488"), response
