"""A strongSwan pair (charon + kernel-libipsec) in the two bench namespaces.

Each charon gets a private /run (a tmpfs in the mount namespace that
``ip netns exec`` creates) because the pid file path is fixed, its own
strongswan.conf through STRONGSWAN_CONF, a vici socket in the run directory
and a level-1 file log. kernel-libipsec runs tunnel mode with UDP
encapsulation, the same path the appliance's data plane takes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.esp_lab import SUBNET_A, SUBNET_B, Namespace, stop

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = (
    "random nonce openssl gcm aes sha2 hmac kdf pem pkcs1 x509 pubkey "
    "kernel-libipsec kernel-netlink socket-default vici"
)
ESP_PROPOSALS = {
    "AES_GCM_16_128": "aes128gcm16",
    "CHACHA20_POLY1305": "chacha20poly1305",
}

STRONGSWAN_CONF = """\
charon {{
  load_modular = no
  load = {plugins}
  install_routes = yes
  filelog {{
    bench {{
      path = {directory}/charon.log
      default = 1
      time_format = %T
    }}
  }}
  syslog {{
  }}
  plugins {{
    vici {{
      socket = unix://{directory}/charon.vici
    }}
  }}
}}
swanctl {{
  socket = unix://{directory}/charon.vici
}}
"""

SWANCTL_CONF = """\
connections {{
  bench {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    encap = yes
    proposals = aes128gcm16-prfsha256-ecp256
    local {{
      auth = psk
      id = {local_id}
    }}
    remote {{
      auth = psk
      id = {remote_id}
    }}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        mode = tunnel
        esp_proposals = {esp}
        rekey_time = 1h
        life_time = 2h
        rand_time = 0
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-a = a.bench.example
    id-b = b.bench.example
    secret = 0x{psk}
  }}
}}
"""


@dataclass
class Charon:
    namespace: Namespace
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"unix://{self.directory}/charon.vici"

    def swanctl(
        self, *argv: str, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "STRONGSWAN_CONF": str(self.directory / "strongswan.conf"),
        }
        return subprocess.run(
            ["swanctl", *argv, "--uri", self.uri],
            capture_output=True, text=True, timeout=timeout, env=environment,
        )  # fmt: skip


def write_configs(directory: Path, side: str, encryption: str, psk: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    a_side = side == "a"
    (directory / "strongswan.conf").write_text(
        STRONGSWAN_CONF.format(plugins=PLUGINS, directory=directory)
    )
    swanctl = directory / "swanctl.conf"
    swanctl.touch(mode=0o600)
    swanctl.write_text(
        SWANCTL_CONF.format(
            local="192.0.2.1" if a_side else "192.0.2.2",
            remote="192.0.2.2" if a_side else "192.0.2.1",
            local_id="a.bench.example" if a_side else "b.bench.example",
            remote_id="b.bench.example" if a_side else "a.bench.example",
            local_ts=SUBNET_A if a_side else SUBNET_B,
            remote_ts=SUBNET_B if a_side else SUBNET_A,
            esp=ESP_PROPOSALS[encryption],
            psk=psk,
        )
    )


def start(namespace: Namespace, directory: Path) -> Charon:
    conf = directory / "strongswan.conf"
    process = namespace.spawn(
        ["sh", "-c", f"mount -t tmpfs bench /run && STRONGSWAN_CONF={conf} exec {CHARON}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    charon = Charon(namespace, directory, process)
    deadline = time.monotonic() + 5.0
    while not (directory / "charon.vici").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(
                f"charon in {namespace.name} did not start; see {directory}"
            )
        time.sleep(0.02)
    return charon


def start_pair(
    a: Namespace, b: Namespace, directory: Path, encryption: str
) -> tuple[Charon, Charon]:
    """Start both charons, load the connection and bring the CHILD_SA up."""
    psk = secrets.token_hex(32)
    charons = []
    for namespace, side in ((a, "a"), (b, "b")):
        write_configs(directory / side, side, encryption, psk)
        (directory / side / "charon.vici").unlink(missing_ok=True)
        charons.append(start(namespace, directory / side))
    for charon in charons:
        loaded = charon.swanctl(
            "--load-all", "--file", str(charon.directory / "swanctl.conf")
        )
        if loaded.returncode:
            raise RuntimeError(f"swanctl --load-all: {loaded.stdout}{loaded.stderr}")
    initiated = charons[0].swanctl("--initiate", "--child", "net", "--timeout", "10")
    if initiated.returncode:
        raise RuntimeError(f"swanctl --initiate: {initiated.stdout}{initiated.stderr}")
    return charons[0], charons[1]


def stop_pair(charons: tuple[Charon, Charon]) -> None:
    for charon in charons:
        stop(charon.process)
        charon.namespace.processes.remove(charon.process)
