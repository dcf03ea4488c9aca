"""Key schedule: NIST CAVP IKEv2 KDF vectors, stdlib oracles, PSK AUTH, redaction."""

import hmac
import logging

import pytest

from ipsec.ike.constants import EncrId, IdType, IntegId, PrfId
from ipsec.ike.crypto import encr_algorithm, integ_algorithm, prf_algorithm
from ipsec.ike.errors import AuthenticationFailed
from ipsec.ike.keymat import (
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
from ipsec.ike.message import decode_message, decrypt_message, protect_message
from ipsec.ike.payloads import IdiPayload, IdrPayload

from .samples import CountingRandom, ike_auth_request

SHA256 = prf_algorithm(PrfId.PRF_HMAC_SHA2_256)

# NIST CAVP IKEv2 KDF (SHA-256), as carried in NSS's ike-sha256-vectors.h.
CAVP_SHARED_SECRET = bytes.fromhex(
    "0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29"
)
CAVP_NONCE_I = bytes.fromhex("3f302be1abcb28e1")
CAVP_NONCE_R = bytes.fromhex("8c332ee006064c9b")
CAVP_SPI_I = bytes.fromhex("40dac39e1e1a8640")
CAVP_SPI_R = bytes.fromhex("8619a1cf9a6e4c07")
CAVP_SKEYSEED = bytes.fromhex(
    "5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe"
)
CAVP_DKM = bytes.fromhex(
    "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ec"
    "e98aca531188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6"
    "cdf6854379e31be72b8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4"
    "e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d36aa4ab55e90f8986"
    "d12d4aad"
)
CAVP_REKEY_SHARED_SECRET = bytes.fromhex(
    "25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c"
)
CAVP_REKEY_SKEYSEED = bytes.fromhex(
    "2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398"
)

GCM_128 = IkeSaTransforms(encr_algorithm(EncrId.ENCR_AES_GCM_16, 128), SHA256, None)
CBC_256 = IkeSaTransforms(
    encr_algorithm(EncrId.ENCR_AES_CBC, 256),
    prf_algorithm(PrfId.PRF_HMAC_SHA2_384),
    integ_algorithm(IntegId.AUTH_HMAC_SHA2_384_192),
)


def all_key_bytes(keys):
    return b"".join(getattr(keys, name) for name in type(keys).__slots__)


def test_skeyseed_cavp_vector():
    skeyseed = compute_skeyseed(SHA256, CAVP_NONCE_I, CAVP_NONCE_R, CAVP_SHARED_SECRET)

    assert skeyseed == CAVP_SKEYSEED


def test_ike_sa_keys_cavp_vector():
    # With AES-GCM-128 the seven keys need 136 octets; CAVP gives the first 132.
    keys = derive_ike_sa_keys(
        GCM_128, CAVP_SKEYSEED, CAVP_NONCE_I, CAVP_NONCE_R, CAVP_SPI_I, CAVP_SPI_R
    )

    assert all_key_bytes(keys)[:132] == CAVP_DKM
    assert keys.sk_d == CAVP_DKM[:32]


def test_rekeyed_skeyseed_cavp_vector():
    skeyseed = compute_rekeyed_skeyseed(
        SHA256, CAVP_DKM[:32], CAVP_REKEY_SHARED_SECRET, CAVP_NONCE_I, CAVP_NONCE_R
    )

    assert skeyseed == CAVP_REKEY_SKEYSEED


def independent_prf_plus(hash_name, key, seed, length):
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(key, block + seed + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def test_ike_sa_keys_split_in_rfc_order():
    # RFC 7296 §2.14: SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr.
    nonce_i, nonce_r = bytes(range(32)), bytes(range(32, 64))
    spi_i, spi_r = b"I" * 8, b"R" * 8
    skeyseed = bytes(range(48))

    keys = derive_ike_sa_keys(CBC_256, skeyseed, nonce_i, nonce_r, spi_i, spi_r)

    stream = independent_prf_plus(
        "sha384", skeyseed, nonce_i + nonce_r + spi_i + spi_r, 48 * 3 + 48 * 2 + 32 * 2
    )
    assert keys == IkeSaKeys(
        stream[0:48],
        stream[48:96],
        stream[96:144],
        stream[144:176],
        stream[176:208],
        stream[208:256],
        stream[256:304],
    )


def test_aead_ike_sa_has_no_integrity_keys():
    keys = derive_ike_sa_keys(
        GCM_128, bytes(32), bytes(16), bytes(16), bytes(8), bytes(8)
    )

    assert (keys.sk_ai, keys.sk_ar) == (b"", b"")
    assert len(keys.sk_ei) == len(keys.sk_er) == 20  # 16-octet key + 4-octet salt


@pytest.mark.parametrize("pfs", [False, True])
def test_child_sa_keymat(pfs):
    # RFC 7296 §2.17: prf+(SK_d, [g^ir |] Ni | Nr), initiator's keys first.
    sk_d, nonce_i, nonce_r = bytes(range(32)), b"i" * 32, b"r" * 32
    shared = b"g" * 256 if pfs else None

    keys = derive_child_sa_keys(SHA256, sk_d, nonce_i, nonce_r, 36, 32, shared)

    stream = independent_prf_plus(
        "sha256", sk_d, (shared or b"") + nonce_i + nonce_r, 2 * (36 + 32)
    )
    assert keys == ChildSaKeys(
        stream[0:36], stream[36:68], stream[68:104], stream[104:136]
    )


def test_child_sa_keymat_differs_with_pfs():
    without = derive_child_sa_keys(SHA256, bytes(32), b"i" * 32, b"r" * 32, 20, 0)
    with_pfs = derive_child_sa_keys(
        SHA256, bytes(32), b"i" * 32, b"r" * 32, 20, 0, b"g"
    )

    assert without.encryption_key_i != with_pfs.encryption_key_i
    assert without.integrity_key_i == b""


def test_sk_ciphers_pair_directions():
    keys = derive_ike_sa_keys(
        CBC_256, bytes(48), bytes(16), bytes(16), bytes(8), bytes(8)
    )
    initiator_to_responder, responder_to_initiator = sk_ciphers(CBC_256, keys)
    message = ike_auth_request()

    [data] = protect_message(message, initiator_to_responder, CountingRandom())

    assert (
        decrypt_message(data, decode_message(data), initiator_to_responder) == message
    )
    assert initiator_to_responder.encryption_key == keys.sk_ei
    assert responder_to_initiator.integrity_key == keys.sk_ar


def test_psk_auth_matches_rfc7296_formula():
    # RFC 7296 §2.15 written out with the stdlib hmac module.
    psk = PresharedKey(b"correct horse battery staple")
    real_message_1 = b"\x01" * 300
    nonce_r = b"\x02" * 32
    sk_pi = b"\x03" * 32
    id_i = IdiPayload(IdType.ID_FQDN, b"sbc.example.com")

    octets = signed_octets(SHA256, real_message_1, nonce_r, sk_pi, id_i)
    auth = psk_auth_data(SHA256, psk, octets)

    maced_id = hmac.new(sk_pi, b"\x02\x00\x00\x00sbc.example.com", "sha256").digest()
    key = hmac.new(psk.secret, b"Key Pad for IKEv2", "sha256").digest()
    expected = hmac.new(key, real_message_1 + nonce_r + maced_id, "sha256").digest()
    assert octets == real_message_1 + nonce_r + maced_id
    assert auth == expected


def test_psk_auth_verification():
    psk = PresharedKey(b"trunk secret")
    octets = signed_octets(
        SHA256, b"m2", b"n" * 16, b"k" * 32, IdrPayload(IdType.ID_FQDN, b"peer")
    )
    auth = psk_auth_data(SHA256, psk, octets)

    verify_psk_auth(SHA256, psk, octets, auth)
    with pytest.raises(AuthenticationFailed):
        verify_psk_auth(SHA256, PresharedKey(b"other secret"), octets, auth)
    with pytest.raises(AuthenticationFailed):
        verify_psk_auth(SHA256, psk, octets, auth[:-1])


def test_key_holders_never_print_keys(caplog):
    psk = PresharedKey(b"\xaa" * 16)
    ike_keys = derive_ike_sa_keys(
        CBC_256, bytes(48), bytes(16), bytes(16), bytes(8), bytes(8)
    )
    child_keys = derive_child_sa_keys(SHA256, bytes(32), b"i" * 16, b"r" * 16, 20, 0)
    cipher, _ = sk_ciphers(CBC_256, ike_keys)
    secrets = [
        psk.secret,
        *map(bytes, [ike_keys.sk_d, ike_keys.sk_ei, child_keys.encryption_key_r]),
    ]

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("ipsec.ike.test").debug(
            "%s %r %s %r %s %r %s",
            psk,
            psk,
            ike_keys,
            child_keys,
            cipher,
            cipher,
            [ike_keys],
        )

    text = caplog.text
    assert "IkeSaKeys(sk_d=<48 octets>" in text and "PresharedKey(<redacted>)" in text
    for secret in secrets:
        assert secret.hex() not in text and repr(secret) not in text


def test_key_holders_compare_by_value():
    a = derive_child_sa_keys(SHA256, bytes(32), b"i" * 16, b"r" * 16, 16, 32)
    b = derive_child_sa_keys(SHA256, bytes(32), b"i" * 16, b"r" * 16, 16, 32)

    assert a == b and isinstance(a, ChildSaKeys)
