"""Run the benchmarks: ``python -m bench [NAME ...]`` (all when none named).

Each benchmark is a module of this package run in its own process, so one
benchmark's sockets, namespaces and peers never overlap another's. Figures
go to stdout; docs/benchmarks.md records them with the machine and date.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "sip_parse": "SIP parse, validate, serialize and frame rates",
    "esp_engine": "ESP seal/open and protect/unprotect rates in memory",
    "esp_udp": "ESP-in-UDP loss-free rates against strongSwan (root)",
    "ike_codec": "IKEv2 codec, SK protection, key exchange and key schedule costs",
    "ike_handshake": "IKE_SA + CHILD_SA setups per second in memory",
    "b2bua_cps": "call rate through sbc serve vs SIPp direct and Kamailio (~9 min)",
    "b2bua_calls": "B2BUA CPU per call through in-memory transaction layers",
    "media_relay": "RTP relay loss-free rate against rtpengine (root)",
    "media_core": "media core CPU per packet alone, 800 streams",
    "media_callgrind": "instructions per relayed packet under callgrind (valgrind)",
    "sdp_anchor": "SDP parse and offer/answer anchoring per call setup",
    "ike_setup": "IKEv2 responder setups/s, latency, held-SA memory vs charon (root, ~11 min)",
    "secure_calls": "G.711 calls over a secure trunk vs plain vs charon+rtpengine (root)",
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}"
        )
        return 2
    failed = 0
    for name in names or list(BENCHMARKS):
        print(f"\n== {name}: {BENCHMARKS[name]}", flush=True)
        failed += (
            subprocess.run(
                [sys.executable, "-m", f"bench.{name}"], check=False
            ).returncode
            != 0
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
