"""Two SBC nodes joined by a secure trunk, SIPp on both ends: ``python -m sbc.demo``.

The run, on one machine:

1. a tcpdump capture on ``lo`` of every frame between the two nodes' IKE
   addresses;
2. node B, then node A: ``sbc serve --config`` with the example files
   (docs/examples/two-node-b.yaml, two-node-a.yaml), each with a data
   directory of its own and its admin API on a free loopback port, read
   with a viewer account made for the run; the run waits until A's
   protected trunks are up;
3. SIPp as the carrier behind node B (answers with G.711 A-law, echoes RTP)
   and SIPp as the PBX in front of node A (the calls, each playing seven
   seconds of A-law audio from SIPp's own pcap);
4. the report: calls passed and failed (SIPp), the call records of both
   nodes (every call with RTP received and sent on both legs), the packets
   relayed, the SAs (algorithms, packet counts) from node A's admin API, and
   the capture check, made by tshark: only IKE and ESP in UDP between the
   nodes, no SIP or RTP in clear.

It exits 0 only when every call passed with media both ways on both nodes
and the capture check holds. Where the SIPp ends and nodes sit is read from
the two configuration files (node A's ``pbx`` trunk, node B's ``carrier``
trunk), so other files with the same shape run as well.

Needs root (IKE binds UDP 500 and 4500; tcpdump), sipp, tcpdump and tshark.
``--keylog`` makes both nodes write their ESP and IKE keys for Wireshark
(which undoes the protection: for a lab only). Each node logs the SAs it
sends with; tshark needs both files to open both directions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
PCAP_AUDIO = Path("/usr/share/sip-tester/g711a.pcap")
"""Seven seconds of G.711 A-law RTP that the Debian SIPp package ships."""
CALL_SECONDS = 7.5
START_TIMEOUT = 30.0
TRUNK_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
DIALLED = "2125550100"
VIEWER = "demo-viewer"

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="PBX call with G.711 A-law audio">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]pbx[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:pbx@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]pbx[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="@PCAP@"/>
    </action>
  </nop>
  <pause milliseconds="@PAUSE@"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]pbx[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="Carrier answering with G.711 A-law">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]carrier[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:carrier@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv request="ACK" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


class DemoError(Exception):
    """The run could not go on; the message says which step failed."""


# -- where everything sits -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    """The addresses the run needs, read from the two configuration files."""

    node_a: str
    """Node A's IKE address."""
    node_b: str
    pbx: tuple[str, int]
    """Where the PBX (SIPp UAC) binds: node A's ``pbx`` trunk target."""
    entry: tuple[str, int]
    """Where the PBX sends its calls: the first listener of that trunk."""
    carrier: tuple[str, int]
    """Where the carrier (SIPp UAS) binds: node B's ``carrier`` trunk target."""
    protected: tuple[str, ...]
    """Node A's protected trunks, which must be up before the calls."""
    node_names: tuple[str, str]

    @classmethod
    def read(cls, config_a: Path, config_b: Path) -> Topology:
        a, b = _document(config_a), _document(config_b)
        pbx = _trunk_of_kind(a, "pbx", config_a)
        carrier = _trunk_of_kind(b, "carrier", config_b)
        listener = next(
            item for item in a["listeners"] if item["name"] == pbx["listeners"][0]
        )
        return cls(
            node_a=str(a["ipsec"]["address"]),
            node_b=str(b["ipsec"]["address"]),
            pbx=_target(pbx),
            entry=(str(listener["address"]), int(listener.get("port", 5060))),
            carrier=_target(carrier),
            protected=tuple(
                t["name"] for t in a["trunks"] if t.get("ipsec_profile") is not None
            ),
            node_names=(str(a["ipsec"]["node"]), str(b["ipsec"]["node"])),
        )


def _document(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "ipsec" not in document:
        raise DemoError(f"{path}: not a node configuration with an ipsec section")
    return document


def _trunk_of_kind(document: dict[str, Any], kind: str, path: Path) -> dict[str, Any]:
    for trunk in document.get("trunks", []):
        if trunk.get("kind") == kind:
            return dict(trunk)
    raise DemoError(f"{path}: no {kind} trunk")


def _target(trunk: dict[str, Any]) -> tuple[str, int]:
    target = trunk["targets"][0]
    return str(target["host"]), int(target.get("port", 5060))


# -- the processes ---------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Each node keeps its database in its own data directory.
    environment = {k: v for k, v in os.environ.items() if k != "SBC_DATABASE_URL"}
    return {**environment, "PYTHONUNBUFFERED": "1", **(extra or {})}


def _sbc(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "sbc.cli", *arguments]


def _wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise DemoError(f"{process.args!r} exited:\n{_tail(path)}")
        time.sleep(0.05)
    raise DemoError(f"no {text!r} within {START_TIMEOUT} s:\n{_tail(path)}")


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Signal ``process`` and wait for it; killed when it hangs."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=STOP_TIMEOUT)


class NodeProcess:
    """One ``sbc serve --config`` with its data directory and admin API."""

    def __init__(
        self,
        name: str,
        config: Path,
        data_dir: Path,
        keylog: bool = False,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.wrapper = tuple(wrapper)
        """A command the node runs under, e.g. ``ip netns exec NAME``."""
        self.config = config
        self.data_dir = data_dir
        self.admin = ("127.0.0.1", free_port())
        self.keylog = keylog
        self.process: subprocess.Popen[bytes] | None = None
        self._password = secrets.token_urlsafe(18)
        self._token: str | None = None

    @property
    def esp_keylog(self) -> Path:
        return self.data_dir / "esp_sa"

    @property
    def ike_keylog(self) -> Path:
        return self.data_dir / "ikev2_decryption_table"

    @property
    def stderr(self) -> Path:
        return self.data_dir / "stderr.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            _sbc("user", "add", VIEWER, "--role", "viewer", "--password-stdin",
                 "--data-dir", str(self.data_dir)),
            input=self._password + "\n", text=True, check=True,
            capture_output=True, env=_child_environment(),
        )  # fmt: skip
        extra = {}
        if self.keylog:
            extra = {
                "SBC_IPSEC_KEYLOG": str(self.esp_keylog),
                "SBC_IKE_KEYLOG": str(self.ike_keylog),
            }
        argv = [*self.wrapper, *_sbc(
            "serve", "--config", str(self.config), "--data-dir", str(self.data_dir),
            "--admin-listen", f"{self.admin[0]}:{self.admin[1]}",
            "--node-name", self.name,
        )]  # fmt: skip
        with self.stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=stderr,
                env=_child_environment(extra),
            )  # fmt: skip
        self.wait_for(" serving;")

    def wait_for(self, text: str) -> None:
        """Until the node has logged ``text`` (DemoError after a while)."""
        assert self.process is not None
        _wait_for_text(self.stderr, text, self.process)

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        code = _stop(self.process, signum)
        self.process = None
        return code

    def get(self, path: str) -> Any:
        """A GET on the node's admin API (``/api/v1`` + ``path``), as JSON."""
        request = urllib.request.Request(
            f"http://{self.admin[0]}:{self.admin[1]}/api/v1{path}",
            headers={"Authorization": f"Bearer {self._login()}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def _login(self) -> str:
        if self._token is None:
            body = json.dumps({"username": VIEWER, "password": self._password})
            request = urllib.request.Request(
                f"http://{self.admin[0]}:{self.admin[1]}/api/v1/auth/login",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                self._token = str(json.load(response)["access_token"])
        return self._token

    def wait_protected(self, trunks: Sequence[str], timeout: float) -> None:
        """Until every trunk in ``trunks`` has its SAs (protection up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {t["name"]: t["protection"] for t in self.get("/runtime/trunks")}
            if all(states.get(name) == "up" for name in trunks):
                return
            time.sleep(0.2)
        raise DemoError(f"node {self.name}: trunks {list(trunks)} not up: {states}")

    def records(self) -> list[dict[str, Any]]:
        path = self.data_dir / "cdr.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        # A torn last line (a crash mid-write) is skipped, as readers must.
        return [json.loads(line) for line in lines if line.endswith("}")]


class Capture:
    """tcpdump on ``lo`` of every frame between two addresses, until stopped."""

    def __init__(self, path: Path, first: str, second: str) -> None:
        self.path = path
        self._log = path.with_suffix(".log")
        tcpdump = _tool("tcpdump")
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [tcpdump, "-i", "lo", "-n",
                 "-B", "32768", "-w", str(path), f"host {first} and host {second}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        _wait_for_text(self._log, "listening on", self._process)

    def stop(self) -> int:
        """Stop capturing; how many frames the kernel dropped meanwhile."""
        _stop(self._process, signal.SIGINT)
        found = re.search(r"(\d+) packets? dropped by kernel", self._log.read_text())
        return int(found.group(1)) if found else 0


@dataclass(frozen=True, slots=True)
class SippOutcome:
    successful: int
    failed: int
    returncode: int


class Sipp:
    """One SIPp process in a directory of its own."""

    def __init__(self, directory: Path, argv: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._output = directory / "sipp.out"
        with self._output.open("wb") as output:
            self.process = subprocess.Popen(
                argv, cwd=directory, stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def wait(self, timeout: float) -> SippOutcome:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # -timeout does not always stop a stuck UAC; SIGUSR1 does.
            code = _stop(self.process, signal.SIGUSR1)
        successful, failed = _sipp_statistics(self.directory / "stat.csv")
        return SippOutcome(successful, failed, code)

    def stop(self) -> None:
        _stop(self.process)


def _sipp_statistics(path: Path) -> tuple[int, int]:
    """SuccessfulCall(C) and FailedCall(C) from the last line of ``-stf``."""
    if not path.exists():
        return 0, 0
    last = path.read_text(errors="replace").strip().splitlines()[-1].split(";")
    return int(last[15]), int(last[17])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"{name} is not installed")
    return path


# -- the checks ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaCheck:
    """One node's call records: calls with RTP both ways on both legs."""

    records: int
    answered: int
    both_ways: int
    packets_relayed: int

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> MediaCheck:
        answered = [r for r in records if r.get("disposition") == "answered"]
        return cls(
            records=len(records),
            answered=len(answered),
            both_ways=sum(_media_both_ways(r) for r in answered),
            packets_relayed=sum(
                int(leg.get("packets_sent", 0))
                for record in records
                for leg in (record.get("media") or {}).values()
                if isinstance(leg, dict)
            ),
        )


def _media_both_ways(record: dict[str, Any]) -> bool:
    legs = record.get("media") or {}
    wanted = ("0.A", "0.B")
    return all(
        legs.get(leg, {}).get("packets_received", 0) > 0
        and legs.get(leg, {}).get("packets_sent", 0) > 0
        for leg in wanted
    )


@dataclass(frozen=True, slots=True)
class CaptureCheck:
    """What tshark found between the two nodes."""

    frames: int
    ike: int
    """IKE messages, and NAT-T keepalives on the IKE port pair."""
    esp: int
    icmp: int
    """ICMP errors quoting IKE or ESP (a peer not listening yet)."""
    clear: tuple[str, ...]
    """Anything else, by protocol stack: SIP, RTP or other UDP in clear."""
    dropped: int = 0
    """Frames the kernel dropped before tcpdump saw them: not inspected."""
    esp_by_spi: dict[str, int] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.esp > 0 and not self.clear and self.dropped == 0


def check_capture(pcap: Path, dropped: int = 0) -> CaptureCheck:
    """Classify every frame: IKE (UDP 500 or 4500 with the non-ESP marker,
    and the NAT-keepalive octet on 4500), ESP in UDP 4500, ICMP about
    either, or in clear. tshark's heuristic SIP and RTP dissectors are on,
    so a stray call is named as such."""
    fields = ["frame.protocols", "udp.srcport", "udp.dstport", "esp.spi"]
    rows = _tshark_rows(pcap, [*fields, "udpencap.nat_keepalive"], [])
    counts: Counter[str] = Counter()
    spis: Counter[str] = Counter()
    clear: list[str] = []
    for stack, source, destination, spi, keepalive in rows:
        kind = _frame_kind(stack, source, destination, bool(keepalive))
        counts[kind] += 1
        if kind == "clear":
            clear.append(stack)
        elif kind == "esp" and spi:
            spis[spi.split(",")[0]] += 1
    return CaptureCheck(
        frames=len(rows), ike=counts["ike"], esp=counts["esp"],
        icmp=counts["icmp"], clear=tuple(clear), dropped=dropped,
        esp_by_spi=dict(spis),
    )  # fmt: skip


def _frame_kind(
    stack: str, source: str, destination: str, nat_keepalive: bool = False
) -> str:
    layers = stack.split(":")
    if "sip" in layers or "rtp" in layers or "rtcp" in layers:
        return "clear"
    if nat_keepalive and layers[-1:] == ["udpencap"] and source == destination:
        # RFC 3948 §2.3: one 0xFF octet that keeps the NAT-T port pair open;
        # the IKE daemon sends it when the pair idles, so it counts with IKE.
        return "ike" if source == "4500" else "clear"
    if layers[-1:] == ["isakmp"] and "icmp" not in layers:
        ports = {source.split(",")[0], destination.split(",")[0]}
        return "ike" if ports <= {"500", "4500"} else "clear"
    if layers[-2:] == ["udpencap", "esp"] and source == destination == "4500":
        return "esp"
    if "icmp" in layers and ("isakmp" in layers or "esp" in layers):
        return "icmp"
    return "clear"


def _tshark_rows(pcap: Path, fields: list[str], options: list[str]) -> list[list[str]]:
    selected = [arg for name in fields for arg in ("-e", name)]
    result = subprocess.run(
        [_tool("tshark"), "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE",
         "-o", "rtcp.heuristic_rtcp:TRUE", *options,
         "-T", "fields", "-E", "separator=|", *selected],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    width = len(fields)
    return [
        (line.split("|") + [""] * width)[:width] for line in result.stdout.splitlines()
    ]


def keylog_options(esp_keylogs: Sequence[Path], ike_keylog: Path) -> list[str]:
    """tshark options that decrypt with the nodes' key logs."""
    # One -o per table, its rows one a line, as in a Wireshark profile.
    rows = [path.read_text().strip() for path in esp_keylogs if path.exists()]
    options = ["-o", "esp.enable_encryption_decode:TRUE"]
    options += ["-o", "uat:esp_sa:" + "\n".join(rows)]
    if ike_keylog.exists():
        table = ike_keylog.read_text().strip()
        options += ["-o", f"uat:ikev2_decryption_table:{table}"]
    return options


def inner_frames(
    pcap: Path,
    esp_keylogs: Sequence[Path],
    ike_keylog: Path,
    sip_ports: Sequence[int],
) -> list[list[str]]:
    """Per frame, decrypted with the key logs (SIP read on ``sip_ports``):
    protocol stack, SIP method, SIP status, IKE exchange type and the FQDN
    identities IKE_AUTH carries."""
    decode_as = [arg for port in sip_ports for arg in ("-d", f"udp.port=={port},sip")]
    return _tshark_rows(
        pcap,
        ["frame.protocols", "sip.Method", "sip.Status-Code",
         "isakmp.exchangetype", "isakmp.id.data.fqdn"],
        [*keylog_options(esp_keylogs, ike_keylog), *decode_as],
    )  # fmt: skip


# -- the run ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoSettings:
    config_a: Path = EXAMPLES / "two-node-a.yaml"
    config_b: Path = EXAMPLES / "two-node-b.yaml"
    calls: int = 50
    rate: float = 10.0
    """New calls per second."""
    work_dir: Path | None = None
    """Where logs, records and the capture stay; None: a new temporary one."""
    keylog: bool = False
    uac_media_port: int = 6000
    uas_media_port: int = 6100


_DEFAULTS = DemoSettings()


@dataclass(frozen=True, slots=True)
class DemoReport:
    calls: int
    sipp: SippOutcome
    media_a: MediaCheck
    media_b: MediaCheck
    security_associations: list[dict[str, Any]]
    capture: CaptureCheck
    work_dir: Path

    @property
    def passed(self) -> bool:
        every = self.calls
        return (
            self.sipp.successful == every
            and self.sipp.failed == 0
            and self.media_a.both_ways == every == self.media_a.records
            and self.media_b.both_ways == every == self.media_b.records
            and bool(self.security_associations)
            and self.capture.holds
        )

    def lines(self) -> Iterator[str]:
        yield (
            f"calls: {self.sipp.successful} passed, {self.sipp.failed} failed "
            f"of {self.calls} (SIPp)"
        )
        for name, media in (("A", self.media_a), ("B", self.media_b)):
            yield (
                f"node {name}: {media.records} call records, {media.both_ways} "
                f"with RTP both ways on both legs, "
                f"{media.packets_relayed} RTP packets relayed"
            )
        for ike in self.security_associations:
            yield from _sa_lines(ike)
        capture = self.capture
        verdict = "holds" if capture.holds else "FAILS"
        yield (
            f"capture between the nodes: {capture.frames} frames, {capture.ike} "
            f"IKE, {capture.esp} ESP in UDP, {capture.icmp} ICMP about them, "
            f"{len(capture.clear)} in clear, {capture.dropped} dropped unread: "
            f"{verdict}"
        )
        for stack, count in Counter(capture.clear).most_common(5):
            yield f"  in clear: {count} x {stack}"
        for spi, count in sorted(capture.esp_by_spi.items()):
            # One frame on lo may hold a whole GSO batch of ESP packets.
            yield f"  ESP SPI {spi}: {count} frames captured"
        yield f"work directory: {self.work_dir}"
        yield "PASS" if self.passed else "FAIL"


def _sa_lines(ike: dict[str, Any]) -> Iterator[str]:
    algorithms = "/".join(
        str(ike[key]) for key in ("encryption", "integrity", "prf", "dh_group")
    )
    yield (
        f"IKE_SA {ike['spi_i']}_{ike['spi_r']} trunk {ike['trunk']} with "
        f"{ike['peer']}: {algorithms}"
    )
    for child in ike["children"]:
        esp = f"{child['encryption']}/{child['integrity']}"
        esn = ", ESN" if child["esn"] else ""
        udp = ", in UDP" if child["encapsulated"] else ""
        yield (
            f"  CHILD_SA in 0x{child['inbound_spi']} out 0x{child['outbound_spi']} "
            f"{esp} {child['mode']}{esn}{udp}: {child['packets_in']} packets in, "
            f"{child['packets_out']} out"
        )


class TwoNodes:
    """Capture, node B and node A running; stopped in reverse order."""

    def __init__(self, settings: DemoSettings, work_dir: Path) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.topology = Topology.read(settings.config_a, settings.config_b)
        names = self.topology.node_names
        self.a = NodeProcess(
            names[0], settings.config_a, work_dir / "node-a", settings.keylog
        )
        self.b = NodeProcess(
            names[1], settings.config_b, work_dir / "node-b", settings.keylog
        )
        self.pcap = work_dir / "between-nodes.pcap"
        self.capture: Capture | None = None
        self.dropped = 0

    def __enter__(self) -> TwoNodes:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        topology = self.topology
        self.capture = Capture(self.pcap, topology.node_a, topology.node_b)
        # B first: it only answers, so A's first IKE_SA_INIT finds it.
        self.b.start()
        self.a.start()
        self.a.wait_protected(topology.protected, TRUNK_TIMEOUT)

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        if self.capture is not None:
            self.dropped = self.capture.stop()
            self.capture = None


def carrier(settings: DemoSettings, topology: Topology, directory: Path) -> Sipp:
    """SIPp answering every call with A-law and echoing its RTP."""
    scenario = directory / "carrier.xml"
    directory.mkdir(parents=True, exist_ok=True)
    scenario.write_text(UAS_SCENARIO)
    host, port = topology.carrier
    return Sipp(
        directory,
        [_tool("sipp"), "-sf", str(scenario), "-i", host, "-p", str(port),
         "-mi", host, "-mp", str(settings.uas_media_port), "-rtp_echo",
         "-nostdin", "-buff_size", "4194304"],
    )  # fmt: skip


def pbx(
    settings: DemoSettings, topology: Topology, directory: Path, calls: int
) -> Sipp:
    """SIPp placing ``calls`` calls, each playing the A-law pcap."""
    scenario = directory / "pbx.xml"
    directory.mkdir(parents=True, exist_ok=True)
    text = UAC_SCENARIO.replace("@PCAP@", str(PCAP_AUDIO))
    scenario.write_text(text.replace("@PAUSE@", str(int(CALL_SECONDS * 1000))))
    host, port = topology.pbx
    entry = f"{topology.entry[0]}:{topology.entry[1]}"
    return Sipp(
        directory,
        [_tool("sipp"), "-sf", str(scenario), "-s", DIALLED, "-i", host,
         "-p", str(port), "-mi", host, "-mp", str(settings.uac_media_port),
         "-m", str(calls), "-l", str(calls), "-r", str(settings.rate),
         "-nostdin", "-buff_size", "4194304", "-timeout", f"{_uac_timeout(settings, calls)}s",
         "-timeout_error", "-trace_stat", "-stf", "stat.csv", entry],
    )  # fmt: skip


def _uac_timeout(settings: DemoSettings, calls: int) -> int:
    return int(calls / settings.rate + CALL_SECONDS + 30)


def place_calls(nodes: TwoNodes, calls: int, directory: Path) -> SippOutcome:
    """The PBX's calls through both nodes to the carrier, waited for."""
    settings, topology = nodes.settings, nodes.topology
    uas = carrier(settings, topology, directory / "carrier")
    try:
        uac = pbx(settings, topology, directory / "pbx", calls)
        return uac.wait(_uac_timeout(settings, calls) + 10)
    finally:
        uas.stop()


def wait_for_records(node: NodeProcess, count: int, timeout: float = 10.0) -> None:
    """Records are written off the event loop, a moment after each call."""
    deadline = time.monotonic() + timeout
    while len(node.records()) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def run_demo(settings: DemoSettings) -> DemoReport:
    """The whole run (see the module docstring); the report."""
    if os.geteuid() != 0:
        raise DemoError("run as root: IKE binds UDP 500 and 4500, tcpdump captures")
    if not PCAP_AUDIO.exists():
        raise DemoError(f"{PCAP_AUDIO} is missing (Debian package sip-tester)")
    work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="sbc-demo-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    with TwoNodes(settings, work_dir) as nodes:
        outcome = place_calls(nodes, settings.calls, work_dir)
        for node in (nodes.a, nodes.b):
            wait_for_records(node, settings.calls)
        security_associations = nodes.a.get("/runtime/security-associations")
    return DemoReport(
        calls=settings.calls,
        sipp=outcome,
        media_a=MediaCheck.of(nodes.a.records()),
        media_b=MediaCheck.of(nodes.b.records()),
        security_associations=security_associations,
        capture=check_capture(nodes.pcap, nodes.dropped),
        work_dir=work_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sbc.demo",
        description="Two SBC nodes joined by a secure trunk, SIPp on both ends; "
        "exit 0 when every call passed with media both ways and only IKE and "
        "ESP crossed between the nodes.",
    )
    parser.add_argument("--calls", type=int, default=_DEFAULTS.calls)
    parser.add_argument(
        "--rate", type=float, default=_DEFAULTS.rate, help="new calls per second"
    )
    parser.add_argument("--node-a", type=Path, default=_DEFAULTS.config_a)
    parser.add_argument("--node-b", type=Path, default=_DEFAULTS.config_b)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep logs, call records and the capture here (default: a temporary "
        "directory, printed at the end)",
    )
    parser.add_argument(
        "--keylog",
        action="store_true",
        help="the nodes write their ESP and IKE keys to their data directories "
        "for Wireshark (undoes the protection: a lab only)",
    )
    args = parser.parse_args(argv)
    settings = DemoSettings(
        config_a=args.node_a, config_b=args.node_b, calls=args.calls,
        rate=args.rate, work_dir=args.work_dir, keylog=args.keylog,
    )  # fmt: skip
    try:
        report = run_demo(settings)
    except (DemoError, OSError, subprocess.SubprocessError) as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return 1
    for line in report.lines():
        sys.stdout.write(line + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
