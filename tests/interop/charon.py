"""strongSwan's charon as a real IKEv2 peer, in a network namespace.

Each instance gets its own directory (strongswan.conf, swanctl.conf, the
vici socket, its log) and a private /run: ``ip netns exec`` gives the
command its own mount namespace, where a tmpfs over /run keeps charon's
fixed pid file apart from any other instance (LAB-NOTES). The load list puts
kernel-libipsec before kernel-netlink, since the kernel here has no ESP:
charon then runs ESP in userspace on a TUN device (ipsec0), tunnel mode
only, always UDP-encapsulated.

``netns_entered(name)`` moves the calling thread into a namespace for the
span of a ``with`` block, so that the sockets and the TUN device of our own
daemon, created in that block, live there too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netns import Namespace, stop, wait_for

CHARON = "/usr/lib/ipsec/charon"
_CLONE_NEWNET = 0x40000000

_PLUGINS = (
    "random nonce openssl gcm aes sha2 hmac kdf pem pkcs1 x509 pubkey "
    "kernel-libipsec kernel-netlink socket-default vici"
)


@dataclass
class CharonConnection:
    """One swanctl connection with one child, PSK on both sides."""

    local_addr: str
    remote_addr: str
    local_id: str
    remote_id: str
    psk: str
    local_ts: str
    remote_ts: str
    proposals: str = "aes128gcm16-prfsha256-x25519"
    esp_proposals: str = "aes128gcm16"
    start_action: str = "none"
    child_rekey_time: str = "3600s"
    child_life_time: str = "4000s"
    encap: str = "yes"
    ike_rekey_time: str = "3600s"
    """``yes`` fakes a NAT so that ESP goes in UDP (kernel-libipsec needs it)."""
    name: str = "sbc"
    child: str = "sip"

    def render(self) -> str:
        # Rekeying happens when a test asks for it; DPD stays off.
        # life_time above rekey_time, as LAB-NOTES say.
        return f"""
connections {{
  {self.name} {{
    version = 2
    local_addrs = {self.local_addr}
    remote_addrs = {self.remote_addr}
    encap = {self.encap}
    proposals = {self.proposals}
    rekey_time = {self.ike_rekey_time}
    over_time = 600s
    rand_time = 0s
    local {{
      auth = psk
      id = {self.local_id}
    }}
    remote {{
      auth = psk
      id = {self.remote_id}
    }}
    children {{
      {self.child} {{
        local_ts = {self.local_ts}
        remote_ts = {self.remote_ts}
        esp_proposals = {self.esp_proposals}
        mode = tunnel
        start_action = {self.start_action}
        rekey_time = {self.child_rekey_time}
        life_time = {self.child_life_time}
        rand_time = 0s
      }}
    }}
  }}
}}
secrets {{
  ike-{self.name} {{
    id-local = {self.local_id}
    id-remote = {self.remote_id}
    secret = "{self.psk}"
  }}
}}
"""


class Charon:
    """A charon process in ``namespace``, driven with swanctl over vici."""

    def __init__(self, namespace: Namespace, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.conf = directory / "strongswan.conf"
        self.swanctl_conf = directory / "swanctl.conf"
        self.log = directory / "charon.log"
        self.vici = directory / "charon.vici"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.conf.write_text(self._strongswan_conf())
        command = (
            f"mount -t tmpfs none /run && STRONGSWAN_CONF={self.conf} exec {CHARON}"
        )
        self.process = self.namespace.spawn(
            ["sh", "-c", command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for(self.vici.exists, timeout):
            raise RuntimeError(f"charon did not open its vici socket:\n{self.tail()}")

    def load(self, connection: CharonConnection) -> None:
        """Replace the loaded connections and secrets with ``connection``."""
        self.swanctl_conf.write_text(connection.render())
        self.swanctl("--load-all", "--file", str(self.swanctl_conf))

    def swanctl(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "STRONGSWAN_CONF": str(self.conf)}
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace.name, "swanctl", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"swanctl {' '.join(argv)} failed: {result.stdout}{result.stderr}"
            )
        return result

    def list_sas(self) -> str:
        return self.swanctl("--list-sas", check=False).stdout

    def initiate(self, child: str = "sip", timeout: int = 10) -> str:
        """Initiate ``child`` and its IKE_SA; swanctl waits for the outcome."""
        result = self.swanctl(
            "--initiate", "--child", child, "--timeout", str(timeout),
            check=False, timeout=timeout + 10,
        )  # fmt: skip
        return result.stdout + result.stderr

    def terminate_ike(self, name: str = "sbc", timeout: int = 10) -> str:
        result = self.swanctl(
            "--terminate", "--ike", name, "--timeout", str(timeout),
            check=False, timeout=timeout + 10,
        )  # fmt: skip
        return result.stdout + result.stderr

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no charon log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def _strongswan_conf(self) -> str:
        socket = f"unix://{self.vici}"
        return f"""
charon {{
  load_modular = no
  load = {_PLUGINS}
  install_routes = yes
  filelog {{
    charon-log {{
      path = {self.log}
      default = 1
      time_format = %T
    }}
  }}
  plugins {{
    vici {{
      socket = {socket}
    }}
  }}
}}
swanctl {{
  socket = {socket}
}}
"""


@contextlib.contextmanager
def netns_entered(name: str) -> Iterator[None]:
    """Run the ``with`` body in network namespace ``name`` (this thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace")
        try:
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(target)
        os.close(home)
