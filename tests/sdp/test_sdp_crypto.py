"""SDES a=crypto parsing and generation (RFC 4568)."""

from __future__ import annotations

import base64

import pytest

from sbc.sdp import SRTP_SUITES, CryptoAttribute, InvalidCrypto, Mki, SrtpKeys

from .peers import seeded

# RFC 4568 §9.1 example line.
RFC_EXAMPLE = (
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
)


def test_parse_rfc_example_fields():
    crypto = CryptoAttribute.parse(RFC_EXAMPLE)
    material = base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")

    (key,) = crypto.key_params
    assert crypto.tag == 1
    assert crypto.suite.name == "AES_CM_128_HMAC_SHA1_80"
    assert (key.key, key.salt) == (material[:16], material[16:])
    assert key.lifetime == 2**20
    assert key.mki == Mki(1, 4)


def test_round_trip_rfc_example():
    assert CryptoAttribute.parse(RFC_EXAMPLE).to_value() == RFC_EXAMPLE


def test_parse_decimal_lifetime_and_mki_only():
    line = "7 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1000|255:1"

    crypto = CryptoAttribute.parse(line)

    assert crypto.key_params[0].lifetime == 1000
    assert crypto.key_params[0].mki == Mki(255, 1)
    assert crypto.to_value() == line


def test_parse_mki_without_lifetime():
    line = (
        "2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|3:2"
    )

    crypto = CryptoAttribute.parse(line)

    assert crypto.key_params[0].lifetime is None
    assert crypto.key_params[0].mki == Mki(3, 2)


def test_parse_several_keys_with_mki():
    key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    line = f"1 AES_CM_128_HMAC_SHA1_80 {key}|2^20|1:4;{key}|2^20|2:4"

    crypto = CryptoAttribute.parse(line)

    assert [k.mki for k in crypto.key_params] == [Mki(1, 4), Mki(2, 4)]


@pytest.mark.parametrize("name", sorted(SRTP_SUITES))
def test_generate_then_parse_every_suite(name):
    suite = SRTP_SUITES[name]

    crypto = CryptoAttribute.generate(3, suite, seeded(int(suite.key_length)))
    parsed = CryptoAttribute.parse(crypto.to_value())

    assert parsed == crypto
    assert len(parsed.key_params[0].key) == suite.key_length
    assert len(parsed.key_params[0].salt) == suite.salt_length


def test_generate_draws_fresh_keys():
    suite = SRTP_SUITES["AEAD_AES_128_GCM"]
    draw = seeded(1)

    first = CryptoAttribute.generate(1, suite, draw)
    second = CryptoAttribute.generate(1, suite, draw)

    assert first.key_params[0].key != second.key_params[0].key


def test_parse_wsh_session_parameter_accepted():
    crypto = CryptoAttribute.parse(RFC_EXAMPLE + " WSH=128")

    assert crypto.session_params == ("WSH=128",)
    assert crypto.to_value().endswith(" WSH=128")


KEY30 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
INVALID = {
    "unknown_suite": f"1 F8_128_HMAC_SHA1_80 inline:{KEY30}",
    "tag_not_number": f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY30}",
    "tag_too_long": f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}",
    "no_key": "1 AES_CM_128_HMAC_SHA1_80",
    "not_inline": f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY30}",
    "bad_base64": "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
    "short_key": "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhc",
    "gcm_length_for_cm": f"1 AEAD_AES_256_GCM inline:{KEY30}",
    "lifetime_too_big": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^49",
    "lifetime_zero": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|0",
    "lifetime_word": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|forever",
    "mki_length_zero": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:0",
    "mki_length_129": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:129",
    "mki_value_too_big": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|256:1",
    "mki_before_lifetime": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:4|2^20",
    "three_fields": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4|9",
    "two_keys_no_mki": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}",
    "unencrypted_srtp": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP",
    "kdr": f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=23",
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_parse_invalid_raises_488(value):
    with pytest.raises(InvalidCrypto) as caught:
        CryptoAttribute.parse(value)

    assert caught.value.status_code == 488
    assert KEY30 not in str(caught.value)


def test_repr_and_str_never_show_keys():
    crypto = CryptoAttribute.parse(RFC_EXAMPLE)
    keys = SrtpKeys(crypto.suite, crypto.key_params[0], crypto.key_params)
    material = crypto.key_params[0].key + crypto.key_params[0].salt

    for text in (repr(crypto), str(crypto), repr(crypto.key_params[0]), repr(keys)):
        assert KEY30 not in text
        assert repr(material[:16]) not in text
        assert "inline" not in text
