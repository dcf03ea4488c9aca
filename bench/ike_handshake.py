"""IKE_SA + first CHILD_SA setups per second between two in-memory engines.

Run: .venv/bin/python -m bench.ike_handshake [--count 200]

Both engines run on this one core, so a figure here is the CPU cost of
both ends of IKE_SA_INIT + IKE_AUTH (PSK), without any network. For scale:
a charon pair on this kind of machine took 6-11 ms per setup on the wire
(/work/shared/LAB-NOTES.md).
"""

from __future__ import annotations

import argparse
import os
import time
from ipaddress import IPv4Address

from ipsec.ike.config import Identity, IkeSaConfig
from ipsec.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IdType,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.ike_sa import IkeSa, IkeSaState
from ipsec.ike.keymat import PresharedKey
from ipsec.ike.payloads import Proposal, TrafficSelector, Transform

EVERYTHING = TrafficSelector(IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255"))
SUITES = {
    "AES-GCM-256 / Curve25519": (
        (EncrId.ENCR_AES_GCM_16, 256),
        None,
        DhGroup.CURVE25519,
    ),
    "AES-GCM-256 / ECP-256": ((EncrId.ENCR_AES_GCM_16, 256), None, DhGroup.ECP_256),
    "AES-CBC-128+SHA-256 / MODP-2048": (
        (EncrId.ENCR_AES_CBC, 128),
        IntegId.AUTH_HMAC_SHA2_256_128,
        DhGroup.MODP_2048,
    ),
}


def config(suite: str, local: bytes, remote: bytes) -> IkeSaConfig:
    encr, integ, group = SUITES[suite]
    transforms = [Transform(TransformType.ENCR, *encr)]
    if integ is not None:
        transforms.append(Transform(TransformType.INTEG, integ))
    transforms += [
        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
        Transform(TransformType.DH, group),
    ]
    esp = (
        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
        Transform(TransformType.ESN, EsnId.ESN),
    )
    return IkeSaConfig(
        Identity(IdType.ID_FQDN, local),
        Identity(IdType.ID_FQDN, remote),
        PresharedKey(b"benchmark secret"),
        (Proposal(1, ProtocolId.IKE, tuple(transforms)),),
        (Proposal(1, ProtocolId.ESP, esp),),
        (EVERYTHING,),
        (EVERYTHING,),
    )


def one_setup(initiator_config: IkeSaConfig, responder_config: IkeSaConfig) -> None:
    initiator = IkeSa(
        initiator_config,
        is_initiator=True,
        local_spi=os.urandom(8),
        random_bytes=os.urandom,
    )
    responder = IkeSa(
        responder_config,
        is_initiator=False,
        local_spi=os.urandom(8),
        random_bytes=os.urandom,
    )
    initiator.initiate(0.0)
    for _ in range(4):
        for data in initiator.datagrams_to_send():
            responder.receive_datagram(data, 0.0)
        for data in responder.datagrams_to_send():
            initiator.receive_datagram(data, 0.0)
    if initiator.state is not IkeSaState.ESTABLISHED:
        raise RuntimeError(f"setup ended in {initiator.state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    arguments = parser.parse_args()
    for suite in SUITES:
        initiator_config = config(suite, b"sbc.example.com", b"trunk.example.com")
        responder_config = config(suite, b"trunk.example.com", b"sbc.example.com")
        count = (
            arguments.count if "MODP" not in suite else max(1, arguments.count // 10)
        )
        start = time.perf_counter()
        for _ in range(count):
            one_setup(initiator_config, responder_config)
        elapsed = time.perf_counter() - start
        print(
            f"{suite:<34} {elapsed / count * 1e3:8.2f} ms/setup {count / elapsed:9.1f} setups/s"
        )


if __name__ == "__main__":
    main()
