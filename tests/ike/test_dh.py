"""Diffie-Hellman groups: RFC 5903, RFC 7748, RFC 8031 vectors; MODP checks; C23."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ipsec.ike.constants import DhGroup, NotifyType
from ipsec.ike.dh import (
    ECP_CURVES,
    ECP_ORDERS,
    MODP_GROUPS,
    SUPPORTED_GROUPS,
    generate_key_exchange,
    key_exchange_from_private,
    private_value_size,
)
from ipsec.ike.errors import InvalidKePayload, InvalidSyntax, NoProposalChosen

from .samples import CountingRandom

# RFC 5903 §8.1-8.3: i, g^i (x | y), r, g^r (x | y), girx.
RFC5903 = {
    DhGroup.ECP_256: (
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    ),
    DhGroup.ECP_384: (
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655"
        "E35B538041E649EE3FAEF896783AB194",
        "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6"
        "DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F"
        "65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942"
        "E0308312916B8ED2960E4BD55A7448FC",
        "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D"
        "0D1AC43A0336DEF96FDA41D0774A3571DCFBEC7AACF3196472169E838430367F"
        "66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4"
        "D603135569B9E9D09CF5D4A270F59746",
    ),
    DhGroup.ECP_521: (
        "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A0"
        "95AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D"
        "4A52",
        "0015417E84DBF28C0AD3C278713349DC7DF153C897A1891BD98BAB4357C9ECBE"
        "E1E3BF42E00B8E380AEAE57C2D107564941885942AF5A7F4601723C4195D176C"
        "ED3E017CAE20B6641D2EEB695786D8C946146239D099E18E1D5A514C739D7CB4"
        "A10AD8A788015AC405D7799DC75E7B7D5B6CF2261A6A7F1507438BF01BEB6CA3"
        "926F9582",
        "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E"
        "9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB15168"
        "5EB9",
        "00D0B3975AC4B799F5BEA16D5E13E9AF971D5E9B984C9F39728B5E5739735A21"
        "9B97C356436ADC6E95BB0352F6BE64A6C2912D4EF2D0433CED2B6171640012D9"
        "460F015C68226383956E3BD066E797B623C27CE0EAC2F551A10C2C724D985207"
        "7B87220B6536C5C408A1D2AEBB8E86D678AE49CB57091F4732296579AB44FCD1"
        "7F0FC56A",
        "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04"
        "D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3"
        "DDEA",
    ),
}

# RFC 7748 §6.1 / §6.2 and RFC 8031 Appendix A: private_i, public_i,
# private_r, public_r, shared secret.
MONTGOMERY = {
    "rfc7748-x25519": (
        DhGroup.CURVE25519,
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    ),
    "rfc8031-x25519": (
        DhGroup.CURVE25519,
        "751fb4308655b476b6789b7325f9ea8cddd16a58533ff6d9e60009464a5f9d94",
        "48d5ddd4061257ba166fa3f9bbdb74f1a4e81c089384fa77f790709f0dfbc766",
        "0a54645253290d60ddadd0e030bacd9e5501efdc220755a1e978f1b839a05688",
        "0be7c1f5aad87d7e448662673298a443478b859745179eaf564c79c0ef6eee25",
        "c74950607a12327f3204d94b6825bfb068b7f8319a9e3708ed3d43ce8130c950",
    ),
    "rfc7748-x448": (
        DhGroup.CURVE448,
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf5"
        "74a9419744897391006382a6f127ab1d9ac2d8c0a598726b",
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bb"
        "c836647241d953d40c5b12da88120d53177f80e532c41fa0",
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120"
        "bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d",
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972"
        "fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609",
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56"
        "fd2464c335543936521c24403085d59a449a5037514a879d",
    ),
}


def unhex(text):
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("group", list(RFC5903), ids=lambda g: g.name)
def test_ecp_rfc5903_vectors(group):
    private_i, public_i, private_r, public_r, girx = map(unhex, RFC5903[group])
    initiator = key_exchange_from_private(group, private_i)
    responder = key_exchange_from_private(group, private_r)

    assert initiator.public_value == public_i
    assert responder.public_value == public_r
    assert initiator.shared_secret(public_r) == girx
    assert responder.shared_secret(public_i) == girx


@pytest.mark.parametrize("name", list(MONTGOMERY))
def test_montgomery_vectors(name):
    group, *values = MONTGOMERY[name]
    private_i, public_i, private_r, public_r, shared = map(unhex, values)
    initiator = key_exchange_from_private(group, private_i)
    responder = key_exchange_from_private(group, private_r)

    assert (initiator.public_value, responder.public_value) == (public_i, public_r)
    assert initiator.shared_secret(public_r) == shared
    assert responder.shared_secret(public_i) == shared


@pytest.mark.parametrize(
    ("scalar", "u", "output"),
    [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            # The top bit of u is set and must be masked (RFC 7748 §5).
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_x25519_rfc7748_function_vectors(scalar, u, output):
    exchange = key_exchange_from_private(DhGroup.CURVE25519, unhex(scalar))

    assert exchange.shared_secret(unhex(u)) == unhex(output)


MODP_VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "modp_strongswan.json").read_text()
)["vectors"]


@pytest.mark.parametrize("group", [14, 15, 16])
def test_modp_strongswan_vectors(group):
    vector = {k: unhex(v) for k, v in MODP_VECTORS[str(group)].items()}
    initiator = key_exchange_from_private(group, vector["private_i"])
    responder = key_exchange_from_private(group, vector["private_r"])

    assert initiator.public_value == vector["pub_i"]
    assert responder.public_value == vector["pub_r"]
    assert initiator.shared_secret(vector["pub_r"]) == vector["shared_secret"]
    assert responder.shared_secret(vector["pub_i"]) == vector["shared_secret"]


def pi_fraction_bits(bits):
    """floor(pi * 2^bits), by Machin's formula in integers."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inverse(x):
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    return (16 * arctan_inverse(5) - 4 * arctan_inverse(239)) >> guard


@pytest.mark.parametrize(
    ("group", "bits", "k"),
    [
        (DhGroup.MODP_2048, 2048, 124476),
        (DhGroup.MODP_3072, 3072, 1690314),
        (DhGroup.MODP_4096, 4096, 240904),
    ],
)
def test_modp_prime_is_rfc3526_formula(group, bits, k):
    # RFC 3526: p = 2^n - 2^(n-64) - 1 + 2^64 * ( [2^(n-130) pi] + k ).
    expected = (
        2**bits - 2 ** (bits - 64) - 1 + 2**64 * (pi_fraction_bits(bits - 130) + k)
    )

    assert MODP_GROUPS[group].prime == expected
    assert MODP_GROUPS[group].size * 8 == bits


def test_modp_public_value_padded_to_prime_length():
    # 2^2 has one significant octet; the wire value keeps all 256.
    exchange = key_exchange_from_private(DhGroup.MODP_2048, b"\x02")

    assert exchange.public_value == (4).to_bytes(256)


@pytest.mark.parametrize("group", SUPPORTED_GROUPS, ids=lambda g: g.name)
def test_generated_pair_agrees_and_uses_given_randomness(group):
    first = CountingRandom(1)
    initiator = generate_key_exchange(group, first)
    responder = generate_key_exchange(group, CountingRandom(77))
    again = generate_key_exchange(group, CountingRandom(1))

    assert first.next == 1 + private_value_size(group)
    assert again.public_value == initiator.public_value
    assert initiator.shared_secret(responder.public_value) == responder.shared_secret(
        initiator.public_value
    )


@pytest.mark.parametrize("group", SUPPORTED_GROUPS, ids=lambda g: g.name)
def test_c23_public_value_of_wrong_size_asks_for_our_group(group):
    # C23(c): a KE sized for another group is answered with INVALID_KE_PAYLOAD
    # naming the selected group, not NO_PROPOSAL_CHOSEN or INVALID_SYNTAX.
    exchange = generate_key_exchange(group, CountingRandom())
    other_size = len(exchange.public_value) // 2

    with pytest.raises(InvalidKePayload) as caught:
        exchange.shared_secret(bytes(other_size))

    assert caught.value.notify_type == NotifyType.INVALID_KE_PAYLOAD
    assert caught.value.notification_data == int(group).to_bytes(2)


def test_c23_modp_2048_value_for_modp_4096_refused():
    responder = generate_key_exchange(DhGroup.MODP_4096, CountingRandom())
    initiator = generate_key_exchange(DhGroup.MODP_2048, CountingRandom(9))

    with pytest.raises(InvalidKePayload) as caught:
        responder.shared_secret(initiator.public_value)

    assert caught.value.wanted_group == DhGroup.MODP_4096


@pytest.mark.parametrize("value", [0, 1, "p-1", "p", "max"])
@pytest.mark.parametrize("group", [DhGroup.MODP_2048, DhGroup.MODP_3072])
def test_modp_public_value_out_of_range_refused(group, value):
    prime = MODP_GROUPS[group].prime
    number = {
        "p-1": prime - 1,
        "p": prime,
        "max": 2 ** (8 * MODP_GROUPS[group].size) - 1,
    }
    peer = number.get(value, value).to_bytes(MODP_GROUPS[group].size)
    exchange = generate_key_exchange(group, CountingRandom())

    with pytest.raises(InvalidSyntax):
        exchange.shared_secret(peer)


@pytest.mark.parametrize("group", list(RFC5903), ids=lambda g: g.name)
def test_ecp_point_off_the_curve_refused(group):
    exchange = generate_key_exchange(group, CountingRandom())
    public = bytearray(generate_key_exchange(group, CountingRandom(5)).public_value)
    public[-1] ^= 0x01  # y no longer satisfies the curve equation

    with pytest.raises(InvalidSyntax):
        exchange.shared_secret(bytes(public))


@pytest.mark.parametrize("group", list(RFC5903), ids=lambda g: g.name)
def test_ecp_all_zero_point_refused(group):
    exchange = generate_key_exchange(group, CountingRandom())

    with pytest.raises(InvalidSyntax):
        exchange.shared_secret(bytes(len(exchange.public_value)))


@pytest.mark.parametrize("group", [DhGroup.CURVE25519, DhGroup.CURVE448])
def test_montgomery_small_order_point_refused(group):
    # u = 0 yields an all-zero secret whatever the scalar (RFC 8031 §2).
    exchange = generate_key_exchange(group, CountingRandom())

    with pytest.raises(InvalidSyntax):
        exchange.shared_secret(bytes(len(exchange.public_value)))


def test_x25519_order_one_point_refused():
    exchange = generate_key_exchange(DhGroup.CURVE25519, CountingRandom())

    with pytest.raises(InvalidSyntax):
        exchange.shared_secret((1).to_bytes(32, "little"))


@pytest.mark.parametrize(
    "group", [DhGroup.NONE, DhGroup.MODP_1024, DhGroup.MODP_8192, 999]
)
def test_unsupported_group_refused(group):
    with pytest.raises(NoProposalChosen):
        generate_key_exchange(group, CountingRandom())


@pytest.mark.parametrize("group", SUPPORTED_GROUPS, ids=lambda g: g.name)
def test_key_exchange_repr_hides_private_value(group):
    exchange = generate_key_exchange(group, CountingRandom())

    assert repr(exchange) == f"{type(exchange).__name__}({group.name})"
    assert str(exchange) == repr(exchange)


@pytest.mark.parametrize("group", list(ECP_CURVES), ids=lambda g: DhGroup(g).name)
def test_ecp_group_order_is_exact(group):
    # OpenSSL accepts private scalars in [1, n-1] only: n-1 passes, n fails.
    curve = ECP_CURVES[group][0]
    order = ECP_ORDERS[group]

    ec.derive_private_key(order - 1, curve)
    with pytest.raises(ValueError):
        ec.derive_private_key(order, curve)
