"""IKE header and SK payload protection: RFC 7634 vector, tshark as oracle, fuzzing."""

import subprocess
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peer_tools import require_tool
from scapy.all import IP, UDP, Raw, wrpcap

from ipsec.ike.constants import (
    EncrId,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
)
from ipsec.ike.crypto import SkCipher, encr_algorithm
from ipsec.ike.errors import (
    DropReason,
    IkeError,
    IkeMessageDropped,
    InvalidSyntax,
    UnsupportedCriticalPayload,
)
from ipsec.ike.message import (
    IkeMessage,
    decode_header,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)
from ipsec.ike.payloads import (
    EncryptedPayload,
    IdiPayload,
    NoncePayload,
    NotifyPayload,
    UnknownPayload,
)

from .samples import (
    SPI_I,
    SPI_R,
    SUITES,
    CountingRandom,
    cipher,
    ike_auth_request,
    ike_sa_init_request,
)

# ---------------------------------------------------------------------------
# Header


def test_header_fields_decoded():
    data = encode_message(
        replace(ike_auth_request(), is_initiator=False, is_response=True)
    )

    header = decode_header(data)

    assert (header.spi_i, header.spi_r) == (SPI_I, SPI_R)
    assert (header.major_version, header.minor_version) == (2, 0)
    assert header.exchange_type == ExchangeType.IKE_AUTH
    assert (header.is_initiator, header.is_response) == (False, True)
    assert (header.message_id, header.length) == (1, len(data))
    assert header.next_payload == PayloadType.IDi


def test_unknown_exchange_type_kept_as_number():
    data = bytearray(encode_message(ike_sa_init_request()))
    data[18] = 250

    assert decode_message(bytes(data)).exchange_type == 250


def test_message_lookup_helpers():
    message = ike_sa_init_request()

    assert message.first(NoncePayload) == message.payloads[2]
    assert len(message.all(NotifyPayload)) == 3
    assert message.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    assert message.notify(NotifyType.COOKIE) is None
    assert message.first(IdiPayload) is None


# ---------------------------------------------------------------------------
# RFC 7634 Appendix B: ChaCha20-Poly1305 in an IKEv2 SK payload

RFC7634_KEY = bytes(range(0x80, 0xA0)) + bytes.fromhex("a0a1a2a3")
RFC7634_IV = bytes.fromhex("1011121314151617")
RFC7634_MESSAGE = bytes.fromhex(
    "c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d72e202500000000090000004529000029"
    "1011121314151617610394701f8d017f7c129248896b71bfe25236efd7cdc670"
    "66906315b2"
)


def rfc7634_cipher():
    encr = encr_algorithm(EncrId.ENCR_CHACHA20_POLY1305, None)
    return SkCipher(encr, None, RFC7634_KEY)


def rfc7634_message():
    return IkeMessage(
        ExchangeType.INFORMATIONAL,
        9,
        bytes.fromhex("c0c1c2c3c4c5c6c7"),
        bytes.fromhex("d0d1d2d3d4d5d6d7"),
        is_initiator=False,
        payloads=(
            NotifyPayload(NotifyType.SET_WINDOW_SIZE, bytes.fromhex("0000000a")),
        ),
    )


def test_rfc7634_appendix_b_encrypted_message():
    datagrams = protect_message(
        rfc7634_message(), rfc7634_cipher(), lambda n: RFC7634_IV
    )

    assert datagrams == [RFC7634_MESSAGE]


def test_rfc7634_appendix_b_decrypted_message():
    outer = decode_message(RFC7634_MESSAGE)

    inner = decrypt_message(RFC7634_MESSAGE, outer, rfc7634_cipher())

    assert inner == rfc7634_message()


# ---------------------------------------------------------------------------
# Round trips and tampering for every supported SK cipher


@pytest.mark.parametrize("suite", list(SUITES))
def test_sk_round_trip(suite):
    sk = cipher(*SUITES[suite])
    message = ike_auth_request()

    [data] = protect_message(message, sk, CountingRandom())
    decoded = decode_message(data)

    assert isinstance(decoded.payloads[-1], EncryptedPayload)
    assert decrypt_message(data, decoded, sk) == message


@pytest.mark.parametrize("suite", list(SUITES))
def test_sk_block_alignment(suite):
    sk = cipher(*SUITES[suite])

    [data] = protect_message(ike_auth_request(), sk, CountingRandom())

    sealed = len(data) - 28 - 4 - sk.overhead
    assert sealed % sk.encr.block_size == 0


@pytest.mark.parametrize("suite", list(SUITES))
def test_sk_tampered_octet_dropped(suite):
    sk = cipher(*SUITES[suite])
    [data] = protect_message(ike_auth_request(), sk, CountingRandom())

    # Every octet is covered: header, SK header, IV, ciphertext and ICV.
    for index in range(len(data)):
        if index in range(24, 28):
            continue  # the Length field is checked before any crypto
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(IkeError):
            decrypt_message(bytes(tampered), decode_message(bytes(tampered)), sk)


@pytest.mark.parametrize("suite", list(SUITES))
def test_sk_wrong_key_dropped_as_integrity_failure(suite):
    [data] = protect_message(
        ike_auth_request(), cipher(*SUITES[suite]), CountingRandom()
    )
    other = cipher(*SUITES[suite], seed=0x41)

    with pytest.raises(IkeMessageDropped) as caught:
        decrypt_message(data, decode_message(data), other)

    assert caught.value.reason == DropReason.INTEGRITY_CHECK_FAILED


@pytest.mark.parametrize("suite", ["aes-gcm-128", "aes-cbc-128-sha256"])
def test_sk_too_short_for_iv_and_icv_dropped(suite):
    sk = cipher(*SUITES[suite])
    message = replace(
        ike_auth_request(), payloads=(EncryptedPayload(PayloadType.IDi, bytes(20)),)
    )
    data = encode_message(message)

    with pytest.raises(IkeMessageDropped) as caught:
        decrypt_message(data, decode_message(data), sk)

    assert caught.value.reason == DropReason.ENCRYPTED_PAYLOAD_TOO_SHORT


def test_sk_inner_unknown_critical_payload_rejected():
    sk = cipher(*SUITES["aes-gcm-256"])
    message = replace(
        ike_auth_request(),
        payloads=(IdiPayload(IdType.ID_FQDN, b"a"), UnknownPayload(130, b"", True)),
    )
    [data] = protect_message(message, sk, CountingRandom())

    with pytest.raises(UnsupportedCriticalPayload) as caught:
        decrypt_message(data, decode_message(data), sk)

    assert caught.value.notification_data == bytes([130])


def test_sk_pad_length_beyond_content_rejected():
    # Authenticated content whose Pad Length is larger than the content.
    sk = cipher(*SUITES["aes-gcm-128"])
    header = replace(ike_auth_request(), payloads=())
    padded = b"\x00" * 3 + b"\x09"
    sk_length = 4 + sk.overhead + len(padded)
    associated = header.encode_header(PayloadType.SK, 28 + sk_length) + bytes(
        (PayloadType.NONCE, 0, 0, sk_length)
    )
    data = associated + sk.seal(associated, bytes(8), padded)

    with pytest.raises(InvalidSyntax):
        decrypt_message(data, decode_message(data), sk)


def test_sk_must_be_last_payload():
    message = replace(
        ike_auth_request(),
        payloads=(
            EncryptedPayload(PayloadType.NONE, bytes(40)),
            NoncePayload(bytes(16)),
        ),
    )

    with pytest.raises(InvalidSyntax):
        decode_message(encode_message(message))


def test_decrypt_without_sk_payload_rejected():
    data = encode_message(ike_sa_init_request())

    with pytest.raises(InvalidSyntax):
        decrypt_message(data, decode_message(data), cipher(*SUITES["aes-gcm-128"]))


# ---------------------------------------------------------------------------
# tshark decrypts what we protect (second, independent implementation)

TSHARK_ENCR = {
    "aes-gcm-128": "AES-GCM-128 with 16 octet ICV [RFC5282]",
    "aes-gcm-256": "AES-GCM-256 with 16 octet ICV [RFC5282]",
    "aes-cbc-128-sha256": "AES-CBC-128 [RFC3602]",
    "aes-cbc-256-sha384": "AES-CBC-256 [RFC3602]",
    "aes-cbc-192-sha512": "AES-CBC-192 [RFC3602]",
}
TSHARK_INTEG = {
    None: "NONE [RFC4306]",
    12: "HMAC_SHA2_256_128 [RFC4868]",
    13: "HMAC_SHA2_384_192 [RFC4868]",
    14: "HMAC_SHA2_512_256 [RFC4868]",
}


def tshark_dissect(tshark, pcap, suite, sk, *arguments):
    # Both directions get the same keys: only the initiator's are used here.
    uat = ",".join(
        (
            SPI_I.hex(),
            SPI_R.hex(),
            sk.encryption_key.hex(),
            sk.encryption_key.hex(),
            f'"{TSHARK_ENCR[suite]}"',
            sk.integrity_key.hex(),
            sk.integrity_key.hex(),
            f'"{TSHARK_INTEG[SUITES[suite][2]]}"',
        )
    )
    command = [tshark, "-r", str(pcap), "-o", f"uat:ikev2_decryption_table:{uat}"]
    result = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


@pytest.mark.peer("tshark")
@pytest.mark.parametrize("suite", list(TSHARK_ENCR))
def test_sk_payload_decrypted_by_tshark(suite, tmp_path):
    tshark = require_tool("tshark", "tshark")
    sk = cipher(*SUITES[suite])
    [data] = protect_message(ike_auth_request(), sk, CountingRandom())
    pcap = tmp_path / "ike_auth.pcap"
    wrpcap(
        str(pcap),
        [IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500) / Raw(data)],
    )

    fields = tshark_dissect(
        tshark,
        pcap,
        suite,
        sk,
        *("-T", "fields", "-E", "separator=|"),
        *("-e", "isakmp.id.data.fqdn", "-e", "isakmp.auth.data"),
        *("-e", "isakmp.ts.start_ipv4", "-e", "isakmp.ts.end_ipv6"),
    )
    verbose = tshark_dissect(tshark, pcap, suite, sk, "-V")

    assert fields.strip().split("|") == [
        "sbc.example.com",
        bytes(range(32)).hex(),
        "192.0.2.50,0.0.0.0",
        "2001:db8::ffff",
    ]
    if not sk.encr.is_aead:
        assert "[correct]" in verbose


@pytest.mark.peer("tshark")
def test_ike_sa_init_dissected_by_tshark(tmp_path):
    tshark = require_tool("tshark", "tshark")
    pcap = tmp_path / "ike_sa_init.pcap"
    data = encode_message(ike_sa_init_request())
    wrpcap(
        str(pcap),
        [IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500) / Raw(data)],
    )

    result = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
        + [
            "-e",
            "isakmp.ispi",
            "-e",
            "isakmp.exchangetype",
            "-e",
            "isakmp.notify.msgtype",
        ]
        + [
            "-e",
            "isakmp.key_exchange.dh_group",
            "-e",
            "isakmp.nonce",
            "-e",
            "isakmp.tf.id.dh",
            "-e",
            "_ws.malformed",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout.strip().split("|") == [
        SPI_I.hex(),
        "34",
        "16388,16389,16430",
        "19",
        bytes(range(0x10, 0x30)).hex(),
        "19,31,14",
        "",
    ]


# ---------------------------------------------------------------------------
# Fuzzing: any input decodes or raises IkeError, never anything else


def sample_datagrams():
    sk = cipher(*SUITES["aes-cbc-128-sha256"])
    return [
        encode_message(ike_sa_init_request()),
        encode_message(ike_auth_request()),
        *protect_message(ike_auth_request(), sk, CountingRandom()),
    ]


SAMPLES = sample_datagrams()
FUZZ_CIPHER = cipher(*SUITES["aes-cbc-128-sha256"])


def decode_or_ike_error(data):
    try:
        message = decode_message(data)
        if message.payloads and isinstance(message.payloads[-1], EncryptedPayload):
            decrypt_message(data, message, FUZZ_CIPHER)
    except IkeError:
        pass


@st.composite
def mutated_datagrams(draw):
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "length"]))
        index = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[index] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[index:]
        elif kind == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "length" and len(data) >= 28:
            data[24:28] = len(data).to_bytes(4)
    return bytes(data)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_ike_error(data):
    decode_or_ike_error(data)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(min_size=28, max_size=28), st.binary(max_size=300))
def test_random_payloads_after_valid_header_raise_only_ike_error(header, body):
    # A valid version and a matching length push the fuzz past the header.
    header = bytearray(header)
    header[17] = 0x20
    data = bytes(header) + body
    decode_or_ike_error(data[:24] + len(data).to_bytes(4) + data[28:])


@settings(
    max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutated_datagrams())
def test_mutated_messages_raise_only_ike_error(data):
    decode_or_ike_error(data)
