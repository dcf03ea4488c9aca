"""The two-node example on addresses of the test's own.

The example files (docs/examples/two-node-*.yaml) run on fixed loopback
addresses; a test rewrites them onto three random 127/8 addresses (node A,
node B, and the SIPp ends), so that parallel workers never share a socket
and the capture filter sees only this test's nodes. Everything else is the
example as shipped, plus what a test overrides.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml
from peer_tools import require_root, require_tool

from sbc.config import check_config_file
from sbc.demo import EXAMPLES, DemoSettings

EXAMPLE_A, EXAMPLE_B, EXAMPLE_PEERS = "127.0.1.1", "127.0.2.1", "127.0.0.1"
FAST_DPD = {
    "dpd": {"delay": 1, "action": "restart"},
    "retransmission": {"timeout": 0.5, "tries": 2},
}
"""A dead peer is declared after 1 + 0.5 x (1 + 1.8 + 3.24) s, about 4 s."""


def lab_addresses() -> tuple[str, str, str]:
    """Node A, node B and the SIPp ends: 127.x.y.1, distinct."""
    second = random.randrange(10, 250)
    third = random.sample(range(1, 250), 3)
    a, b, peers = (f"127.{second}.{n}.1" for n in third)
    return a, b, peers


def requirements() -> None:
    require_root("IKE binds UDP 500 and 4500; tcpdump on lo")
    for tool, package in (("sipp", "sip-tester"), ("tcpdump", "tcpdump")):
        require_tool(tool, package)
    require_tool("tshark", "tshark")


def moved(example: Path, addresses: tuple[str, str, str]) -> dict[str, Any]:
    """An example file's document with the test's addresses in it."""
    text = example.read_text(encoding="utf-8")
    for old, new in zip((EXAMPLE_A, EXAMPLE_B, EXAMPLE_PEERS), addresses, strict=True):
        text = text.replace(old, new)
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return document


def write(document: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    assert check_config_file(path) == [], check_config_file(path)
    return path


def lab_settings(
    tmp_path: Path,
    addresses: tuple[str, str, str],
    *,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    **settings: Any,
) -> DemoSettings:
    """Demo settings over the moved examples; ``a``/``b`` replace whole
    top-level sections of node A's or B's document."""
    document_a = {**moved(EXAMPLES / "two-node-a.yaml", addresses), **(a or {})}
    document_b = {**moved(EXAMPLES / "two-node-b.yaml", addresses), **(b or {})}
    return DemoSettings(
        config_a=write(document_a, tmp_path / "node-a.yaml"),
        config_b=write(document_b, tmp_path / "node-b.yaml"),
        work_dir=tmp_path / "run",
        **settings,
    )


def profiles(document: dict[str, Any], **changes: Any) -> list[dict[str, Any]]:
    """The document's IPsec profiles with ``changes`` applied to each."""
    return [{**profile, **changes} for profile in document["ipsec_profiles"]]
