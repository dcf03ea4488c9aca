"""The demo's capture check reads a NAT-T keepalive as IKE, not as clear.

A trunk whose port pair idles for 20 s gets RFC 3948 §2.3 keepalives (one
0xFF octet in UDP 4500); a demo run that idles that long must not call them
traffic in clear. The frames are written with scapy and read by tshark,
as in a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from peer_tools import require_tool
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from sbc.demo import check_capture

A, B = "127.0.1.1", "127.0.2.1"


def _frame(sport: int, dport: int, payload: bytes) -> Ether:
    return Ether() / IP(src=A, dst=B) / UDP(sport=sport, dport=dport) / Raw(payload)


@pytest.mark.peer("tshark")
def test_nat_keepalive_on_4500_is_ike_and_one_on_other_ports_is_clear(
    tmp_path: Path,
) -> None:
    require_tool("tshark", "tshark")
    pcap = tmp_path / "between.pcap"
    esp = (0x1234).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(40)
    wrpcap(str(pcap), [
        _frame(4500, 4500, b"\xff"),
        _frame(4500, 4500, esp),
        _frame(4501, 4501, b"\xff"),
        _frame(5060, 5060, b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n"),
    ])  # fmt: skip

    check = check_capture(pcap)

    assert (check.frames, check.ike, check.esp) == (4, 1, 1)
    assert len(check.clear) == 2 and any("sip" in s for s in check.clear)
    assert not check.holds
