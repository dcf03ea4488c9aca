"""The opt-in ESP key log, read back by a real Wireshark (tshark)."""

from __future__ import annotations

import os
import stat
import subprocess
from ipaddress import ip_address

import pytest
from peer_tools import require_tool
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from ipsec.esp import Encryption, Integrity, Mode, OutboundSA, Protocol, SAConfig
from ipsec.esp.keylog import KEYLOG_ENVIRONMENT_VARIABLE, EspKeyLog

OUTER_SOURCE = ip_address("198.51.100.7")
OUTER_DESTINATION = ip_address("198.51.100.8")
SUITES = {
    "aes-gcm-128": (Encryption.AES_GCM_16_128, Integrity.NONE),
    "aes-gcm-256": (Encryption.AES_GCM_16_256, Integrity.NONE),
    "aes-cbc-128-sha256": (Encryption.AES_CBC_128, Integrity.HMAC_SHA2_256_128),
    "aes-cbc-256-sha512": (Encryption.AES_CBC_256, Integrity.HMAC_SHA2_512_256),
    "null-sha384": (Encryption.NULL, Integrity.HMAC_SHA2_384_192),
}


def make_config(suite: str, mode: Mode, esn: bool) -> SAConfig:
    encryption, integrity = SUITES[suite]
    return SAConfig(
        spi=0x0BADCAFE,
        protocol=Protocol.ESP,
        mode=mode,
        encryption=encryption,
        integrity=integrity,
        encryption_key=os.urandom(encryption.key_length),
        integrity_key=os.urandom(integrity.key_length),
        esn=esn,
        tunnel_source=OUTER_SOURCE if mode is Mode.TUNNEL else None,
        tunnel_destination=OUTER_DESTINATION if mode is Mode.TUNNEL else None,
    )


def write_capture(path, config: SAConfig, markers: list[bytes]) -> None:
    """ESP-in-UDP (RFC 3948) packets sealed by our engine, as a pcap."""
    outbound = OutboundSA(config, 0.0)
    frames = []
    for marker in markers:
        datagram = UDP(sport=5004, dport=5006) / Raw(marker)
        if config.mode is Mode.TUNNEL:
            inner = IP(src="10.1.0.1", dst="10.2.0.1") / datagram
            sealed = outbound.seal(bytes(inner), 4, 0.0)
        else:
            sealed = outbound.seal(bytes(datagram), 17, 0.0)
        frames.append(
            Ether()
            / IP(src=str(OUTER_SOURCE), dst=str(OUTER_DESTINATION))
            / UDP(sport=4500, dport=4500, chksum=0)
            / Raw(sealed)
        )
    wrpcap(str(path), frames)


def tshark_fields(capture, config_dir, *extra_options: str) -> list[list[str]]:
    tshark = require_tool("tshark", "tshark")
    command = [
        tshark,
        "-r",
        str(capture),
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
        *extra_options,
        "-Y",
        "udp.dstport == 5006",
        "-T",
        "fields",
        "-e",
        "data.data",
        "-e",
        "esp.icv_good",
    ]
    # A private configuration directory is a private Wireshark profile.
    environment = dict(os.environ, WIRESHARK_CONFIG_DIR=str(config_dir))
    finished = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    return [line.split("\t") for line in finished.stdout.splitlines()]


CASES = [
    (suite, mode, esn)
    for suite in SUITES
    for mode in (Mode.TUNNEL, Mode.TRANSPORT)
    for esn in (False, True)
]


@pytest.mark.parametrize(
    ("suite", "mode", "esn"),
    CASES,
    ids=[f"{s}-{m.name.lower()}-{'esn' if e else 'seq32'}" for s, m, e in CASES],
)
def test_keylog_lets_tshark_decrypt_sealed_packets(
    tmp_path, monkeypatch, suite, mode, esn
):
    config = make_config(suite, mode, esn)
    markers = [b"rtp-marker-%d" % n for n in range(3)]
    capture = tmp_path / "esp.pcap"
    write_capture(capture, config, markers)
    profile = tmp_path / "wireshark"
    profile.mkdir()
    monkeypatch.setenv(KEYLOG_ENVIRONMENT_VARIABLE, str(profile / "esp_sa"))

    keylog = EspKeyLog.from_environment()
    keylog.log(config, OUTER_SOURCE, OUTER_DESTINATION)
    rows = tshark_fields(capture, profile)

    assert [bytes.fromhex(row[0]) for row in rows] == markers
    # Wireshark 4.0 has no ESN setting: it checks the ICV of 32-bit SAs
    # only. That ESN ICVs fail there shows the high bits are in the input.
    if not esn:
        assert [row[1] for row in rows] == ["1"] * len(markers)


def test_keylog_line_works_as_tshark_uat_option(tmp_path):
    config = make_config("aes-gcm-128", Mode.TUNNEL, esn=False)
    capture = tmp_path / "esp.pcap"
    write_capture(capture, config, [b"uat-option"])
    keylog = EspKeyLog(str(tmp_path / "keys"))
    keylog.log(config, OUTER_SOURCE, OUTER_DESTINATION)
    line = (tmp_path / "keys").read_text().strip()
    empty_profile = tmp_path / "empty"
    empty_profile.mkdir()

    rows = tshark_fields(capture, empty_profile, "-o", f"uat:esp_sa:{line}")

    assert rows == [[b"uat-option".hex(), "1"]]


def test_keylog_without_keys_tshark_cannot_decrypt(tmp_path):
    config = make_config("aes-gcm-128", Mode.TUNNEL, esn=False)
    capture = tmp_path / "esp.pcap"
    write_capture(capture, config, [b"secret"])
    empty_profile = tmp_path / "empty"
    empty_profile.mkdir()

    assert tshark_fields(capture, empty_profile) == []


def test_keylog_disabled_unless_environment_names_a_file():
    assert EspKeyLog.from_environment({}) is None
    assert EspKeyLog.from_environment({KEYLOG_ENVIRONMENT_VARIABLE: ""}) is None


def test_keylog_file_private_and_one_row_per_sa(tmp_path):
    path = tmp_path / "keys"
    keylog = EspKeyLog(str(path))
    first = make_config("aes-cbc-128-sha256", Mode.TUNNEL, esn=True)
    second = make_config("aes-gcm-256", Mode.TUNNEL, esn=True)

    keylog.log(first, OUTER_SOURCE, OUTER_DESTINATION)
    keylog.log(second, OUTER_DESTINATION, OUTER_SOURCE)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = path.read_text().splitlines()
    assert rows[0] == ",".join(
        f'"{field}"'
        for field in (
            "IPv4",
            "198.51.100.7",
            "198.51.100.8",
            "0x0badcafe",
            "AES-CBC [RFC3602]",
            "0x" + first.encryption_key.hex(),
            "HMAC-SHA-256-128 [RFC4868]",
            "0x" + first.integrity_key.hex(),
        )
    )
    assert rows[1].startswith('"IPv4","198.51.100.8","198.51.100.7"')
    assert second.encryption_key.hex() in rows[1]


def test_keylog_never_logs_keys(tmp_path, caplog):
    config = make_config("aes-gcm-128", Mode.TUNNEL, esn=True)

    with caplog.at_level("DEBUG"):
        EspKeyLog(str(tmp_path / "keys")).log(config, OUTER_SOURCE, OUTER_DESTINATION)

    assert "key log enabled" in caplog.text
    assert config.encryption_key.hex() not in caplog.text
