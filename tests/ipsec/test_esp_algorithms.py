"""Transform IDs and key lengths as IKEv2 negotiates them (RFC 7296 §3.3)."""

from __future__ import annotations

import pytest

from ipsec.esp import Encryption, Integrity


@pytest.mark.parametrize(
    ("transform_id", "key_bits", "expected", "keymat"),
    [
        (12, 128, Encryption.AES_CBC_128, 16),
        (12, 256, Encryption.AES_CBC_256, 32),
        (20, 128, Encryption.AES_GCM_16_128, 20),
        (20, 256, Encryption.AES_GCM_16_256, 36),
        (28, 0, Encryption.CHACHA20_POLY1305, 36),
        (11, 0, Encryption.NULL, 0),
    ],
)
def test_encryption_from_transform_and_keymat_length(
    transform_id, key_bits, expected, keymat
):
    encryption = Encryption.from_transform(transform_id, key_bits)

    assert encryption is expected
    # KEYMAT for AEAD includes the 4-byte salt (RFC 4106 §8.1, RFC 7634 §4).
    assert encryption.key_length == keymat


@pytest.mark.parametrize(
    ("transform_id", "key_bits"), [(12, 0), (20, 192), (28, 256), (3, 0)]
)
def test_encryption_from_transform_refuses_unknown(transform_id, key_bits):
    with pytest.raises(ValueError):
        Encryption.from_transform(transform_id, key_bits)


@pytest.mark.parametrize(
    ("transform_id", "expected", "icv"),
    [
        (0, Integrity.NONE, 0),
        (12, Integrity.HMAC_SHA2_256_128, 16),
        (13, Integrity.HMAC_SHA2_384_192, 24),
        (14, Integrity.HMAC_SHA2_512_256, 32),
    ],
)
def test_integrity_from_transform_and_icv_length(transform_id, expected, icv):
    integrity = Integrity.from_transform(transform_id)

    assert integrity is expected
    assert integrity.icv_length == icv
    # RFC 4868 §2.1.1: the key is as long as the hash output.
    assert integrity.key_length == 2 * icv or integrity is Integrity.NONE


def test_integrity_from_transform_refuses_sha1():
    with pytest.raises(ValueError):
        Integrity.from_transform(2)
