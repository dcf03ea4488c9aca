"""IKE fragmentation (RFC 7383): splitting, reassembly and conformance case C25."""

import random
import struct
from dataclasses import replace

import pytest

from ipsec.ike.constants import CertEncoding, PayloadType
from ipsec.ike.errors import DropReason, IkeMessageDropped
from ipsec.ike.fragments import FragmentReassembler
from ipsec.ike.message import decode_message, fragment_capacity, protect_message
from ipsec.ike.payloads import (
    CertPayload,
    EncryptedFragmentPayload,
    EncryptedPayload,
    VendorIdPayload,
    encode_payload_chain,
)

from .samples import SUITES, CountingRandom, cipher, ike_auth_payloads, ike_auth_request

MAX_SIZE = 576


def auth_with_certificate(fragments, sk):
    """An IKE_AUTH request whose content fills exactly `fragments` SKF datagrams."""
    base = ike_auth_payloads()
    capacity = fragment_capacity(sk, MAX_SIZE)
    _, without_cert = encode_payload_chain(
        (*base, CertPayload(CertEncoding.X509_SIGNATURE, b""))
    )
    cert = bytes(i % 251 for i in range(capacity * fragments - len(without_cert) - 3))
    return ike_auth_request((*base, CertPayload(CertEncoding.X509_SIGNATURE, cert)))


def reassemble(datagrams, sk, reassembler=None):
    reassembler = reassembler or FragmentReassembler(sk)
    results = [reassembler.add(d, decode_message(d)) for d in datagrams]
    return [r for r in results if r is not None], reassembler


@pytest.mark.parametrize(
    "suite", ["aes-gcm-256", "aes-cbc-128-sha256", "chacha20-poly1305"]
)
def test_c25_twenty_fragments_in_any_order_with_duplicates(suite):
    sk = cipher(*SUITES[suite])
    message = auth_with_certificate(20, sk)
    datagrams = protect_message(message, sk, CountingRandom(), MAX_SIZE)
    shuffled = datagrams + datagrams[3:9]
    random.Random(7).shuffle(shuffled)

    completed, reassembler = reassemble(shuffled, sk)

    assert len(datagrams) == 20
    assert all(len(d) <= MAX_SIZE for d in datagrams)
    assert completed == [message]
    assert reassembler.pending_fragments == 0


def test_c25_fragment_headers():
    sk = cipher(*SUITES["aes-gcm-128"])
    datagrams = protect_message(
        auth_with_certificate(3, sk), sk, CountingRandom(), MAX_SIZE
    )

    fragments = [decode_message(d).payloads[-1] for d in datagrams]

    assert [(f.fragment_number, f.total_fragments) for f in fragments] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert [f.first_payload for f in fragments] == [PayloadType.IDi, 0, 0]
    assert all(isinstance(f, EncryptedFragmentPayload) for f in fragments)


def test_c25_small_message_sent_unfragmented():
    sk = cipher(*SUITES["aes-gcm-128"])

    datagrams = protect_message(ike_auth_request(), sk, CountingRandom(), 1280)

    assert len(datagrams) == 1
    assert isinstance(decode_message(datagrams[0]).payloads[-1], EncryptedPayload)


def rewrite_fragment(datagram, number=None, total=None, next_payload=None):
    """Change SKF fields in place (the ICV no longer matches, which is fine:
    these must be refused before any crypto)."""
    data = bytearray(datagram)
    if next_payload is not None:
        data[28] = next_payload
    current_number, current_total = struct.unpack_from("!HH", data, 32)
    struct.pack_into(
        "!HH",
        data,
        32,
        current_number if number is None else number,
        current_total if total is None else total,
    )
    return bytes(data)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"number": 0}, DropReason.FRAGMENT_NUMBER_INVALID),
        ({"number": 4}, DropReason.FRAGMENT_NUMBER_INVALID),
        ({"number": 1, "total": 0}, DropReason.FRAGMENT_NUMBER_INVALID),
        (
            {"next_payload": PayloadType.NOTIFY},
            DropReason.FRAGMENT_NEXT_PAYLOAD_INVALID,
        ),
    ],
)
def test_c25_malformed_fragment_dropped_without_state_change(changes, reason):
    sk = cipher(*SUITES["aes-gcm-128"])
    datagrams = protect_message(
        auth_with_certificate(3, sk), sk, CountingRandom(), MAX_SIZE
    )
    _, reassembler = reassemble(datagrams[:1], sk)
    bad = rewrite_fragment(datagrams[1], **changes)

    with pytest.raises(IkeMessageDropped) as caught:
        reassembler.add(bad, decode_message(bad))

    assert caught.value.reason == reason
    assert reassembler.pending_fragments == 1
    completed, _ = reassemble(datagrams[1:], sk, reassembler)
    assert len(completed) == 1


def test_c25_forged_fragment_dropped_without_state_change():
    sk = cipher(*SUITES["aes-cbc-128-sha256"])
    message = auth_with_certificate(3, sk)
    datagrams = protect_message(message, sk, CountingRandom(), MAX_SIZE)
    _, reassembler = reassemble(datagrams[:1], sk)
    forged = bytearray(datagrams[1])
    forged[-1] ^= 0xFF

    with pytest.raises(IkeMessageDropped) as caught:
        reassembler.add(bytes(forged), decode_message(bytes(forged)))

    assert caught.value.reason == DropReason.INTEGRITY_CHECK_FAILED
    assert reassemble(datagrams[1:], sk, reassembler)[0] == [message]


def first_fragment_with_clear_payload(sk, message, total_content):
    """Fragment 1 of 1 preceded by an unencrypted Vendor ID payload (C25 d)."""
    vendor = VendorIdPayload(b"clear")
    vendor_bytes = struct.pack("!BBH", PayloadType.SKF, 0, 4 + 5) + b"clear"
    first, content = encode_payload_chain(total_content)
    padded_size = sk.padded_size(len(content))
    skf_length = 8 + sk.overhead + padded_size
    associated = (
        message.encode_header(
            PayloadType.VENDOR_ID, 28 + len(vendor_bytes) + skf_length
        )
        + vendor_bytes
        + struct.pack("!BBHHH", first, 0, skf_length, 1, 1)
    )
    padded = (
        content
        + bytes(padded_size - len(content) - 1)
        + bytes([padded_size - len(content) - 1])
    )
    return associated + sk.seal(associated, bytes(sk.encr.iv_size), padded), vendor


def test_c25_first_fragment_with_unencrypted_payload():
    sk = cipher(*SUITES["aes-gcm-128"])
    message = ike_auth_request()
    data, vendor = first_fragment_with_clear_payload(sk, message, message.payloads)

    outer = decode_message(data)
    [completed], _ = reassemble([data], sk)

    assert outer.payloads[0] == vendor
    assert completed == message  # only the authenticated payloads are returned


def test_larger_total_restarts_reassembly():
    sk = cipher(*SUITES["aes-gcm-128"])
    small = protect_message(
        auth_with_certificate(2, sk), sk, CountingRandom(), MAX_SIZE
    )
    message = auth_with_certificate(3, sk)
    large = protect_message(message, sk, CountingRandom(500), MAX_SIZE)

    completed, _ = reassemble([small[0], *large], sk)

    assert completed == [message]


def test_smaller_total_dropped_as_stale():
    sk = cipher(*SUITES["aes-gcm-128"])
    small = protect_message(
        auth_with_certificate(2, sk), sk, CountingRandom(), MAX_SIZE
    )
    large = protect_message(
        auth_with_certificate(3, sk), sk, CountingRandom(500), MAX_SIZE
    )
    _, reassembler = reassemble(large[:1], sk)

    with pytest.raises(IkeMessageDropped) as caught:
        reassembler.add(small[1], decode_message(small[1]))

    assert caught.value.reason == DropReason.FRAGMENT_TOTAL_STALE


def test_new_message_id_restarts_reassembly():
    sk = cipher(*SUITES["aes-gcm-128"])
    old = protect_message(auth_with_certificate(3, sk), sk, CountingRandom(), MAX_SIZE)
    message = replace(auth_with_certificate(3, sk), message_id=2)
    new = protect_message(message, sk, CountingRandom(900), MAX_SIZE)

    completed, _ = reassemble([old[0], old[1], *new], sk)

    assert completed == [message]


def test_fragment_limits():
    sk = cipher(*SUITES["aes-gcm-128"])
    datagrams = protect_message(
        auth_with_certificate(5, sk), sk, CountingRandom(), MAX_SIZE
    )

    with pytest.raises(IkeMessageDropped) as too_many:
        reassemble(datagrams, sk, FragmentReassembler(sk, max_fragments=4))
    with pytest.raises(IkeMessageDropped) as too_large:
        reassemble(datagrams, sk, FragmentReassembler(sk, max_message_size=1000))

    assert too_many.value.reason == DropReason.TOO_MANY_FRAGMENTS
    assert too_large.value.reason == DropReason.REASSEMBLED_TOO_LARGE


def test_fragmenting_into_too_small_datagrams_refused():
    sk = cipher(*SUITES["aes-cbc-128-sha256"])

    with pytest.raises(ValueError):
        protect_message(ike_auth_request(), sk, CountingRandom(), 80)
