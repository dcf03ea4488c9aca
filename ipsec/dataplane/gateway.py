"""A tunnel-mode gateway for LAN hosts: TUN device in, ESP out, and back.

Run ``python -m ipsec.dataplane.gateway --config gateway.json``. The file
gives the TUN device, the outer addresses, and for each CHILD_SA its subnets,
transform and manually keyed SAs (the lab and benchmark use this; in
production the IKE daemon installs SAs through :class:`DataPlane`). Keys are
read from the file and never logged; keep the file private (mode 0600).

``--keylog FILE`` (or SBC_IPSEC_KEYLOG) appends each SA to a Wireshark
esp_sa table, for debugging only. The process prints ``ready`` on stdout
once the device, sockets, SAs and policies are in place, writes its counters
as JSON to ``--stats`` on SIGUSR1 and on exit, and exits on SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import uvloop

from ipsec.esp import Encryption, Integrity, Mode, Protocol, SAConfig
from ipsec.esp.keylog import EspKeyLog
from ipsec.esp.spd import Direction, TrafficSelector

from .plane import DataPlane, Transport
from .tun import DEFAULT_MTU, TunDevice
from .udp_encap import IKE_PORT_NAT_T

logger = logging.getLogger("ipsec.dataplane.gateway")


@dataclass(frozen=True)
class ChildConfig:
    """One CHILD_SA: the subnets it joins and its SA in each direction."""

    local_subnet: str
    remote_subnet: str
    outbound: SAConfig
    inbound: SAConfig


@dataclass(frozen=True)
class GatewayConfig:
    tun_name: str
    tun_mtu: int
    tun_addresses: list[str]
    routes: list[str]
    route_source: str | None
    """Preferred source for the routes: the gateway's own LAN address."""
    transport: Transport
    local: str
    port: int
    peer: str
    peer_port: int
    children: list[ChildConfig]


def load_config(path: Path) -> GatewayConfig:
    """Read and check a gateway configuration file (JSON)."""
    raw = json.loads(path.read_text())
    tun = raw["tun"]
    local, peer = raw["local"], raw["peer"]
    transport = Transport(raw.get("transport", "udp"))
    children = [_child(child, local, peer, transport) for child in raw["children"]]
    return GatewayConfig(
        tun_name=tun["name"],
        tun_mtu=int(tun.get("mtu", DEFAULT_MTU)),
        tun_addresses=list(tun.get("addresses", [])),
        routes=list(tun.get("routes", [])),
        route_source=tun.get("route_source"),
        transport=transport,
        local=local,
        port=int(raw.get("port", IKE_PORT_NAT_T)),
        peer=peer,
        peer_port=int(raw.get("peer_port", IKE_PORT_NAT_T)),
        children=children,
    )


def _child(
    raw: dict[str, Any], local: str, peer: str, transport: Transport
) -> ChildConfig:
    encryption = Encryption[raw.get("encryption", "AES_GCM_16_128")]
    integrity = Integrity[raw.get("integrity", "NONE")]

    def sa(direction: dict[str, Any], source: str, destination: str) -> SAConfig:
        return SAConfig(
            spi=int(direction["spi"]),
            protocol=Protocol[raw.get("protocol", "ESP")],
            mode=Mode.TUNNEL,
            encryption=encryption,
            integrity=integrity,
            encryption_key=bytes.fromhex(direction.get("encryption_key", "")),
            integrity_key=bytes.fromhex(direction.get("integrity_key", "")),
            tunnel_source=ip_address(source),
            tunnel_destination=ip_address(destination),
        )

    child = ChildConfig(
        local_subnet=raw["local_subnet"],
        remote_subnet=raw["remote_subnet"],
        outbound=sa(raw["outbound"], local, peer),
        inbound=sa(raw["inbound"], peer, local),
    )
    if child.outbound.protocol is Protocol.AH and transport is Transport.UDP:
        # RFC 3948 encapsulates ESP only; AH cannot cross NAT at all.
        raise ValueError("AH needs the raw transport")
    return child


class Gateway:
    """Sets up the TUN device, transport, SAs and policies on a DataPlane."""

    def __init__(
        self,
        config: GatewayConfig,
        loop: asyncio.AbstractEventLoop,
        keylog: EspKeyLog | None = None,
    ) -> None:
        self.config = config
        self.plane = DataPlane(loop, keylog=keylog)

    async def start(self) -> None:
        config, plane = self.config, self.plane
        if config.transport is Transport.UDP:
            plane.open_udp_encap(config.local, config.port)
        else:
            for protocol in {child.outbound.protocol for child in config.children}:
                plane.open_raw(protocol, config.local)
        for child in config.children:
            self._install(child)
        tun = await TunDevice.create(
            config.tun_name,
            mtu=config.tun_mtu,
            addresses=[ip_interface(a) for a in config.tun_addresses],
            routes=[ip_network(r) for r in config.routes],
            route_source=ip_address(config.route_source)
            if config.route_source
            else None,
        )
        plane.attach_tun(tun)
        logger.info(
            "gateway up: %s, %d CHILD_SA(s) to %s over %s",
            tun.name, len(config.children), config.peer, config.transport.value,
        )  # fmt: skip

    def _install(self, child: ChildConfig) -> None:
        config, plane = self.config, self.plane
        plane.add_sa(
            child.outbound, inbound=False, transport=config.transport,
            peer=config.peer, peer_port=config.peer_port,
        )  # fmt: skip
        plane.add_sa(child.inbound, inbound=True)
        local = TrafficSelector.from_network(child.local_subnet)
        remote = TrafficSelector.from_network(child.remote_subnet)
        plane.add_policy(local, remote, child.outbound.spi)
        plane.add_policy(local, remote, child.inbound.spi, direction=Direction.INBOUND)

    def write_stats(self, path: Path | None) -> None:
        if path is None:
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.plane.stats(), default=str, indent=1))
        os.replace(temporary, path)


async def _serve(
    config: GatewayConfig, stats: Path | None, keylog: EspKeyLog | None
) -> None:
    loop = asyncio.get_running_loop()
    gateway = Gateway(config, loop, keylog)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, gateway.write_stats, stats)
    try:
        await gateway.start()
        print("ready", flush=True)  # noqa: T201 - the parent process waits for it
        await stop.wait()
    finally:
        gateway.write_stats(stats)
        gateway.plane.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--stats", type=Path, help="write counters here (JSON)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--keylog",
        help="append SA keys to this file for Wireshark (esp_sa); debugging only",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=arguments.log_level, stream=sys.stderr)
    try:
        config = load_config(arguments.config)
    except (OSError, KeyError, ValueError) as error:
        # A bad file is the operator's to fix; say which and why, not how.
        parser.error(f"{arguments.config}: {error!r}")
    keylog = EspKeyLog(arguments.keylog) if arguments.keylog else None
    uvloop.run(_serve(config, arguments.stats, keylog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
