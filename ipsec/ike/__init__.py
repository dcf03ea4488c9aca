"""IKEv2 (RFC 7296): message codec, key schedule and Diffie-Hellman.

The public surface is re-exported here; submodules are importable for the
less common names (every payload class lives in ``ipsec.ike.payloads``).
"""

from .certificates import CertificateAuthentication, LocalCertificate
from .config import Identity, IkeSaConfig
from .cookies import CookieJar
from .crypto import (
    EncrAlgorithm,
    IntegAlgorithm,
    PrfAlgorithm,
    RandomBytes,
    SkCipher,
    encr_algorithm,
    integ_algorithm,
    nat_detection_hash,
    prf_algorithm,
)
from .dh import KeyExchange, generate_key_exchange, key_exchange_from_private
from .errors import DropReason, IkeError, IkeMessageDropped, IkeNotifyError
from .events import (
    ChildSaEstablished,
    ChildSaFailed,
    IkeEvent,
    IkeSaEstablished,
    IkeSaFailed,
)
from .fragments import FragmentReassembler
from .ike_sa import IkeSa, IkeSaState
from .keymat import (
    ChildSaKeys,
    IkeSaKeys,
    IkeSaTransforms,
    PresharedKey,
    compute_rekeyed_skeyseed,
    compute_skeyseed,
    derive_child_sa_keys,
    derive_ike_sa_keys,
    psk_auth_data,
    signed_octets,
    sk_ciphers,
    verify_psk_auth,
)
from .message import (
    IkeHeader,
    IkeMessage,
    decode_header,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)

__all__ = [
    "CertificateAuthentication",
    "ChildSaEstablished",
    "ChildSaFailed",
    "ChildSaKeys",
    "CookieJar",
    "DropReason",
    "EncrAlgorithm",
    "FragmentReassembler",
    "Identity",
    "IkeError",
    "IkeEvent",
    "IkeHeader",
    "IkeMessage",
    "IkeMessageDropped",
    "IkeNotifyError",
    "IkeSa",
    "IkeSaConfig",
    "IkeSaEstablished",
    "IkeSaFailed",
    "IkeSaKeys",
    "IkeSaState",
    "IkeSaTransforms",
    "IntegAlgorithm",
    "LocalCertificate",
    "KeyExchange",
    "PresharedKey",
    "PrfAlgorithm",
    "RandomBytes",
    "SkCipher",
    "compute_rekeyed_skeyseed",
    "compute_skeyseed",
    "decode_header",
    "decode_message",
    "decrypt_message",
    "derive_child_sa_keys",
    "derive_ike_sa_keys",
    "encode_message",
    "encr_algorithm",
    "generate_key_exchange",
    "integ_algorithm",
    "key_exchange_from_private",
    "nat_detection_hash",
    "prf_algorithm",
    "protect_message",
    "psk_auth_data",
    "signed_octets",
    "sk_ciphers",
    "verify_psk_auth",
]
