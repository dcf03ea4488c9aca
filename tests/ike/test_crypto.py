"""prf, prf+, integrity and cipher sizes: RFC 4231 / RFC 4868 vectors, stdlib oracles."""

import hashlib
import hmac

import pytest

from ipsec.ike.constants import EncrId, IntegId, PrfId
from ipsec.ike.crypto import (
    encr_algorithm,
    integ_algorithm,
    nat_detection_hash,
    pad,
    prf_algorithm,
    strip_padding,
)
from ipsec.ike.errors import InvalidSyntax, NoProposalChosen

SHA256 = prf_algorithm(PrfId.PRF_HMAC_SHA2_256)
SHA384 = prf_algorithm(PrfId.PRF_HMAC_SHA2_384)
SHA512 = prf_algorithm(PrfId.PRF_HMAC_SHA2_512)

# RFC 4231 §4.2 (test case 1) and §4.4 (test case 3).
RFC4231_CASES = [
    (
        SHA256,
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        SHA384,
        b"\x0b" * 20,
        b"Hi There",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
        "faea9ea9076ede7f4af152e8b2fa9cb6",
    ),
    (
        SHA512,
        b"\x0b" * 20,
        b"Hi There",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        SHA256,
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        SHA384,
        b"\xaa" * 20,
        b"\xdd" * 50,
        "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
        "2a5ab39dc13814b94e3ab6e101a34f27",
    ),
]


@pytest.mark.parametrize(("prf", "key", "data", "expected"), RFC4231_CASES)
def test_prf_rfc4231_vectors(prf, key, data, expected):
    assert prf.prf(key, data).hex() == expected


# RFC 4868 §2.7.2.1-3: the truncated authenticators, keys of the hash size.
RFC4868_CASES = [
    (IntegId.AUTH_HMAC_SHA2_256_128, b"\x0b" * 32, "198a607eb44bfbc69903a0f1cf2bbdc5"),
    (
        IntegId.AUTH_HMAC_SHA2_384_192,
        b"\x0b" * 48,
        "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973",
    ),
    (
        IntegId.AUTH_HMAC_SHA2_512_256,
        b"\x0b" * 64,
        "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8",
    ),
]


@pytest.mark.parametrize(("integ_id", "key", "expected"), RFC4868_CASES)
def test_integrity_rfc4868_vectors(integ_id, key, expected):
    integ = integ_algorithm(integ_id)

    assert integ.compute(key, b"Hi There").hex() == expected
    assert (integ.key_size, integ.icv_size) == (len(key), len(expected) // 2)


def independent_prf_plus(hash_name, key, seed, length):
    """prf+ written straight from RFC 7296 §2.13 with the stdlib hmac module."""
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(key, block + seed + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("prf", [SHA256, SHA384, SHA512], ids=["256", "384", "512"])
@pytest.mark.parametrize("length", [1, 32, 33, 132, 500, 255 * 32])
def test_prf_plus_matches_independent_computation(prf, length):
    if length > 255 * prf.output_size:
        pytest.skip("beyond prf+ for this hash")
    key = bytes(range(40))
    seed = b"Ni" * 16 + b"Nr" * 16

    assert prf.prf_plus(key, seed, length) == independent_prf_plus(
        prf.hash_name, key, seed, length
    )


def test_prf_plus_strongswan_vector():
    # strongSwan's test_prf_plus.c: HMAC-SHA2-256, key 0x0b * 20, seed "Hi There".
    expected = (
        "b9bdc08988b4c2b75aa93e596ac84205fa2ddde1bf7a2572067b00e14b237732"
        "830509981ad2f94a8c32a47daa2255b660c436347ae756a6edc023477d809590"
        "e682f61d9c04b06b4ad971a34c8147fa66792ff1434b93c722b32e12f48832eb"
        "c15ce2369ce71fe9b7b81e5704c14d0f5280a6ec626e992d7a9f"
    )

    assert SHA256.prf_plus(b"\x0b" * 20, b"Hi There", 122).hex() == expected


def test_prf_plus_refuses_more_than_255_blocks():
    with pytest.raises(ValueError):
        SHA256.prf_plus(b"k", b"s", 255 * 32 + 1)


@pytest.mark.parametrize(
    ("encr_id", "key_length", "key_size", "iv_size", "block_size", "icv_size"),
    [
        (EncrId.ENCR_AES_GCM_16, 128, 20, 8, 1, 16),
        (EncrId.ENCR_AES_GCM_16, 256, 36, 8, 1, 16),
        (EncrId.ENCR_CHACHA20_POLY1305, None, 36, 8, 1, 16),
        (EncrId.ENCR_AES_CBC, 128, 16, 16, 16, 0),
        (EncrId.ENCR_AES_CBC, 256, 32, 16, 16, 0),
    ],
)
def test_encryption_sizes(encr_id, key_length, key_size, iv_size, block_size, icv_size):
    encr = encr_algorithm(encr_id, key_length)

    assert (encr.key_size, encr.iv_size, encr.block_size, encr.icv_size) == (
        key_size,
        iv_size,
        block_size,
        icv_size,
    )


@pytest.mark.parametrize(
    ("encr_id", "key_length"),
    [
        (EncrId.ENCR_AES_CBC, None),
        (EncrId.ENCR_AES_GCM_16, 64),
        (EncrId.ENCR_CHACHA20_POLY1305, 256),
        (EncrId.ENCR_AES_GCM_8, 128),
        (EncrId.ENCR_AES_CTR, 128),
    ],
)
def test_unsupported_encryption_refused(encr_id, key_length):
    with pytest.raises(NoProposalChosen):
        encr_algorithm(encr_id, key_length)


def test_unsupported_prf_and_integrity_refused():
    with pytest.raises(NoProposalChosen):
        prf_algorithm(PrfId.PRF_HMAC_SHA1)
    with pytest.raises(NoProposalChosen):
        integ_algorithm(IntegId.AUTH_HMAC_SHA1_96)


def test_nat_detection_hash_matches_sha1():
    spi_i, spi_r = bytes(range(8)), bytes(8)
    address, port = bytes([192, 0, 2, 10]), 500

    expected = hashlib.sha1(spi_i + spi_r + address + b"\x01\xf4").digest()

    assert nat_detection_hash(spi_i, spi_r, address, port) == expected


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17])
def test_padding_round_trip(size):
    content = bytes(range(size))
    padded_size = (size // 16 + 1) * 16

    padded = pad(content, padded_size)

    assert len(padded) == padded_size and strip_padding(padded) == content


@pytest.mark.parametrize("padded", [b"", b"\x01", b"abc\x04"])
def test_pad_length_beyond_content_rejected(padded):
    with pytest.raises(InvalidSyntax):
        strip_padding(padded)
