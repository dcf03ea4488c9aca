"""Per-message cost of the IKEv2 codec, SK protection, key exchange and key schedule.

Run: .venv/bin/python -m bench.ike_codec [--seconds 0.5]

Each line is one operation on one core: microseconds per call and calls per
second. IKE is per message, not per packet; the figures size how many
IKE_SA setups per second one core can carry (see docs/ike.md).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from ipsec.ike.constants import (
    AuthMethod,
    DhGroup,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.crypto import SkCipher, encr_algorithm, integ_algorithm, prf_algorithm
from ipsec.ike.dh import SUPPORTED_GROUPS, generate_key_exchange
from ipsec.ike.keymat import (
    IkeSaTransforms,
    compute_skeyseed,
    derive_child_sa_keys,
    derive_ike_sa_keys,
)
from ipsec.ike.message import (
    IkeMessage,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)
from ipsec.ike.payloads import (
    AuthPayload,
    IdiPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsiPayload,
    TsrPayload,
)

SUITES = {
    "AES-GCM-256": (EncrId.ENCR_AES_GCM_16, 256, None),
    "ChaCha20-Poly1305": (EncrId.ENCR_CHACHA20_POLY1305, None, None),
    "AES-CBC-128/SHA-256": (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128),
}


def ike_sa_init() -> IkeMessage:
    proposal = Proposal(
        1,
        ProtocolId.IKE,
        (
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
            Transform(TransformType.DH, DhGroup.CURVE25519),
        ),
    )
    return IkeMessage(
        ExchangeType.IKE_SA_INIT,
        0,
        os.urandom(8),
        payloads=(
            SaPayload((proposal,)),
            KePayload(DhGroup.CURVE25519, os.urandom(32)),
            NoncePayload(os.urandom(32)),
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, os.urandom(20)),
            NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, os.urandom(20)),
        ),
    )


def ike_auth() -> IkeMessage:
    everything = TrafficSelector(IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255"))
    return IkeMessage(
        ExchangeType.IKE_AUTH,
        1,
        os.urandom(8),
        os.urandom(8),
        payloads=(
            IdiPayload(IdType.ID_FQDN, b"sbc.example.com"),
            AuthPayload(AuthMethod.SHARED_KEY_MIC, os.urandom(32)),
            SaPayload(
                (
                    Proposal(
                        1,
                        ProtocolId.ESP,
                        (Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),),
                        os.urandom(4),
                    ),
                )
            ),
            TsiPayload((everything,)),
            TsrPayload((everything,)),
        ),
    )


def measure(name: str, operation: Callable[[], object], seconds: float) -> None:
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            operation()
        calls += 10
    elapsed = time.perf_counter() - start
    print(f"{name:<48} {elapsed / calls * 1e6:9.1f} µs {calls / elapsed:12,.0f}/s")


def bench_codec(seconds: float) -> None:
    for label, message in (("IKE_SA_INIT", ike_sa_init()), ("IKE_AUTH", ike_auth())):
        data = encode_message(message)
        measure(
            f"encode {label} ({len(data)} B)",
            lambda m=message: encode_message(m),
            seconds,
        )
        measure(f"decode {label}", lambda d=data: decode_message(d), seconds)


def bench_protection(seconds: float) -> None:
    message = ike_auth()
    for label, (encr_id, key_length, integ_id) in SUITES.items():
        encr = encr_algorithm(encr_id, key_length)
        integ = integ_algorithm(integ_id) if integ_id else None
        cipher = SkCipher(
            encr,
            integ,
            os.urandom(encr.key_size),
            os.urandom(integ.key_size if integ else 0),
        )
        [data] = protect_message(message, cipher, os.urandom)
        measure(
            f"protect IKE_AUTH {label}",
            lambda c=cipher: protect_message(message, c, os.urandom),
            seconds,
        )
        measure(
            f"decode+decrypt IKE_AUTH {label}",
            lambda c=cipher, d=data: decrypt_message(d, decode_message(d), c),
            seconds,
        )


def bench_key_exchange(seconds: float) -> None:
    for group in SUPPORTED_GROUPS:
        peer = generate_key_exchange(group, os.urandom).public_value

        def exchange(g: DhGroup = group, p: bytes = peer) -> bytes:
            return generate_key_exchange(g, os.urandom).shared_secret(p)

        measure(f"key pair + shared secret {group.name}", exchange, seconds)


def bench_key_schedule(seconds: float) -> None:
    prf = prf_algorithm(PrfId.PRF_HMAC_SHA2_256)
    transforms = IkeSaTransforms(encr_algorithm(EncrId.ENCR_AES_GCM_16, 256), prf, None)
    nonce_i, nonce_r, secret = os.urandom(32), os.urandom(32), os.urandom(32)

    def schedule() -> object:
        skeyseed = compute_skeyseed(prf, nonce_i, nonce_r, secret)
        keys = derive_ike_sa_keys(
            transforms, skeyseed, nonce_i, nonce_r, b"i" * 8, b"r" * 8
        )
        return derive_child_sa_keys(prf, keys.sk_d, nonce_i, nonce_r, 20, 0)

    measure("SKEYSEED + SK_* + CHILD_SA KEYMAT (SHA-256)", schedule, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.5)
    arguments = parser.parse_args()
    bench_codec(arguments.seconds)
    bench_protection(arguments.seconds)
    bench_key_exchange(arguments.seconds)
    bench_key_schedule(arguments.seconds)


if __name__ == "__main__":
    main()
