"""Anti-replay window and ESN inference (RFC 4303 §3.4.3, Appendix A)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from ipsec.esp import (
    DropReason,
    Encryption,
    InboundSA,
    Integrity,
    Mode,
    OutboundSA,
    Protocol,
    ReplayWindow,
    SAConfig,
    Unprotected,
)

GCM_KEY = bytes(range(20))
HMAC_KEY = bytes(range(100, 132))
CBC_KEY = bytes(range(50, 66))


def window_at(top: int, size: int = 64, esn: bool = False) -> ReplayWindow:
    return ReplayWindow(size, esn, top)


# -- the window on its own ---------------------------------------------------


def test_window_accepts_left_edge_rejects_one_past_it():
    window = window_at(1000, size=64)

    assert window.check(1000 - 63) == 937
    assert window.check(1000 - 64) is DropReason.OUTSIDE_WINDOW


def test_window_right_edge_slides_by_one():
    window = window_at(1000, size=64)

    window.update(1001)

    assert window.top == 1001
    assert window.check(1001) is DropReason.REPLAY
    assert window.check(1000) is DropReason.REPLAY
    assert window.check(1001 - 64) is DropReason.OUTSIDE_WINDOW


def test_window_duplicate_inside_window_rejected():
    window = window_at(500, size=128)
    window.update(450)

    assert window.check(450) is DropReason.REPLAY
    assert window.check(451) == 451


def test_window_far_ahead_resets_bitmap():
    window = window_at(500, size=64)
    window.update(480)

    window.update(500 + 10 * 64)

    assert window.top == 1140
    assert window.check(1139) == 1139
    assert window.check(480) is DropReason.OUTSIDE_WINDOW


def test_window_sequence_zero_never_accepted_without_esn():
    window = window_at(0, esn=False)

    assert window.check(0) is DropReason.OUTSIDE_WINDOW
    assert window.check(1) == 1


def test_window_esn_below_window_is_taken_as_next_space():
    # With ESN nothing is "left of the window": a low value below it belongs
    # to the next 2^32 space, and the ICV decides (Appendix A.2.1).
    window = window_at(1000, size=64, esn=True)

    assert window.check(1000 - 64) == (1 << 32) + 1000 - 64
    assert window.check(1000 - 63) == 937


def test_window_esn_case_b_takes_previous_space():
    # T = 2^32 + 10: the window straddles the 2^32 boundary (Appendix A, case B).
    window = window_at(0x1_0000_000A, size=64, esn=True)

    assert window.check(0xFFFFFFF0) == 0x0_FFFF_FFF0
    assert window.check(0x0000000B) == 0x1_0000_000B


def test_window_esn_case_a_takes_next_space():
    window = window_at(0x1_FFFF_FFF0, size=64, esn=True)

    assert window.check(0xFFFFFFF5) == 0x1_FFFF_FFF5
    assert window.check(0x00000003) == 0x2_0000_0003


def model_infer(top: int, size: int, low: int) -> int:
    """Appendix A restated: the one value = low (mod 2^32) in [T-W+1, T-W+1+2^32)."""
    bottom = top - size + 1
    return bottom + ((low - bottom) % (1 << 32))


@settings(max_examples=400, deadline=None)
@given(
    top=st.integers(min_value=0, max_value=(1 << 40)),
    size=st.sampled_from([64, 128, 1024, 4096]),
    low=st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_window_esn_inference_matches_restated_rule(top, size, low):
    window = window_at(top, size=size, esn=True)
    expected = model_infer(top, size, low)

    verdict = window.check(low)

    if expected <= 0:
        assert verdict is DropReason.OUTSIDE_WINDOW
    elif expected == top:
        assert verdict is DropReason.REPLAY
    else:
        assert verdict == expected


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=-300, max_value=300), st.booleans()),
        max_size=60,
    ),
    esn=st.booleans(),
)
def test_window_agrees_with_set_model(steps, esn):
    size = 64
    window = ReplayWindow(size, esn, 1000)
    received = {1000}
    top = 1000
    for delta, authentic in steps:
        sequence = max(1, top + delta)
        inferred = model_infer(top, size, sequence & 0xFFFFFFFF) if esn else sequence

        verdict = window.check(sequence & 0xFFFFFFFF)

        if inferred <= 0 or inferred <= top - size:
            assert verdict is DropReason.OUTSIDE_WINDOW
        elif inferred in received:
            assert verdict is DropReason.REPLAY
        else:
            assert verdict == inferred
            # A wrong guess of the high bits fails the ICV: no update then.
            if authentic and inferred == sequence:
                window.update(sequence)
                received.add(sequence)
                top = max(top, sequence)
        assert window.top == top


# -- through an SA: the window moves only after the ICV -----------------------


def gcm_config(esn: bool = True) -> SAConfig:
    return SAConfig(
        spi=0x3000,
        protocol=Protocol.ESP,
        mode=Mode.TRANSPORT,
        encryption=Encryption.AES_GCM_16_128,
        integrity=Integrity.NONE,
        encryption_key=GCM_KEY,
        integrity_key=b"",
        esn=esn,
        replay_window=64,
    )


def test_forged_huge_sequence_with_bad_icv_does_not_move_window():
    config = gcm_config()
    outbound, inbound = OutboundSA(config, 0.0), InboundSA(config, 0.0)
    for _ in range(5):
        inbound.open(outbound.seal(b"rtp", 17, 0.0), 0.0)
    forged = bytearray(outbound.seal(b"rtp", 17, 0.0))
    forged[4:8] = (0xFFFFFF00).to_bytes(4, "big")

    assert inbound.open(bytes(forged), 0.0).reason is DropReason.BAD_ICV

    assert inbound.replay.top == 5
    assert inbound.counters.drops[DropReason.BAD_ICV] == 1
    # The genuine packet 6 (whose bytes the forgery reused) still gets in.
    forged[4:8] = (6).to_bytes(4, "big")
    assert inbound.open(bytes(forged), 0.0).sequence == 6


def test_replayed_packet_dropped_and_counted():
    config = gcm_config(esn=False)
    outbound, inbound = OutboundSA(config, 0.0), InboundSA(config, 0.0)
    packets = [outbound.seal(bytes([n]), 17, 0.0) for n in range(100)]
    for packet in packets[30:]:
        inbound.open(packet, 0.0)

    assert inbound.open(packets[99], 0.0).reason is DropReason.REPLAY
    assert inbound.open(packets[35], 0.0).reason is DropReason.OUTSIDE_WINDOW
    assert inbound.open(packets[36], 0.0).reason is DropReason.REPLAY
    assert inbound.open(packets[0], 0.0).reason is DropReason.OUTSIDE_WINDOW
    drops = inbound.counters.drops
    assert (drops[DropReason.REPLAY], drops[DropReason.OUTSIDE_WINDOW]) == (2, 2)


def test_esn_packet_older_than_window_fails_icv_without_moving_window():
    config = gcm_config(esn=True)
    outbound, inbound = OutboundSA(config, 0.0), InboundSA(config, 0.0)
    packets = [outbound.seal(bytes([n]), 17, 0.0) for n in range(100)]
    for packet in packets[30:]:
        inbound.open(packet, 0.0)

    assert inbound.open(packets[0], 0.0).reason is DropReason.BAD_ICV

    assert inbound.replay.top == 100
    assert inbound.open(packets[99], 0.0).reason is DropReason.REPLAY


def test_reordered_packets_within_window_all_accepted():
    config = gcm_config()
    outbound, inbound = OutboundSA(config, 0.0), InboundSA(config, 0.0)
    packets = [outbound.seal(bytes([n]), 17, 0.0) for n in range(64)]

    results = [inbound.open(p, 0.0) for p in reversed(packets)]

    assert [r.sequence for r in results] == list(range(64, 0, -1))


def test_replay_window_below_minimum_refused():
    with pytest.raises(ValueError, match="replay window"):
        SAConfig(
            spi=0x3000,
            protocol=Protocol.ESP,
            mode=Mode.TRANSPORT,
            encryption=Encryption.AES_GCM_16_128,
            integrity=Integrity.NONE,
            encryption_key=GCM_KEY,
            integrity_key=b"",
            replay_window=32,
        )


# -- C30: ESN across the 2^32 wrap, against scapy ----------------------------

C30_TOP = 0x0000_0001_FFFF_FFF0
C30_SEQUENCES = (0x0000_0001_FFFF_FFF5, 0x0000_0002_0000_0003)
C30_SUITES = {
    "hmac": (
        Encryption.AES_CBC_128,
        Integrity.HMAC_SHA2_256_128,
        "AES-CBC",
        "SHA2-256-128",
    ),
    "gcm": (Encryption.AES_GCM_16_128, Integrity.NONE, "AES-GCM", None),
}


def c30_config(suite: str) -> SAConfig:
    encryption, integrity, _, _ = C30_SUITES[suite]
    return SAConfig(
        spi=0xC30,
        protocol=Protocol.ESP,
        mode=Mode.TRANSPORT,
        encryption=encryption,
        integrity=integrity,
        encryption_key=GCM_KEY if encryption.is_aead else CBC_KEY,
        integrity_key=HMAC_KEY if integrity is not Integrity.NONE else b"",
    )


def c30_scapy_encrypt(config: SAConfig, suite: str, sequence: int, packet) -> bytes:
    _, _, crypt_algo, auth_algo = C30_SUITES[suite]
    sa = SecurityAssociation(
        ESP,
        spi=config.spi,
        seq_num=sequence & 0xFFFFFFFF,
        crypt_algo=crypt_algo,
        crypt_key=config.encryption_key,
        auth_algo=auth_algo,
        auth_key=config.integrity_key or None,
        esn_en=True,
        esn=sequence >> 32,
    )
    iv = sequence.to_bytes(8, "big") if config.encryption.is_aead else b"\x5a" * 16
    return bytes(sa.encrypt(packet, iv=iv))


def c30_packet(n: int):
    return (
        IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=4000, dport=4002)
        / Raw(b"c30-%d" % n)
    )


@pytest.mark.parametrize("suite", list(C30_SUITES))
def test_c30_esn_wrap_receiver_infers_high_bits(suite):
    config = c30_config(suite)
    inbound = InboundSA(config, 0.0, last_sequence=C30_TOP)

    results = [
        inbound.unprotect(c30_scapy_encrypt(config, suite, s, c30_packet(s)), 0.0)
        for s in C30_SEQUENCES
    ]

    assert all(isinstance(r, Unprotected) for r in results)
    assert [r.sequence for r in results] == list(C30_SEQUENCES)
    assert inbound.replay.top == 0x0000_0002_0000_0003


@pytest.mark.parametrize("suite", list(C30_SUITES))
def test_c30_esn_wrap_high_bits_in_icv_input(suite):
    # The same low 32 bits sealed under the wrong high half: a receiver that
    # left the high bits out of the ICV would accept it.
    config = c30_config(suite)
    inbound = InboundSA(config, 0.0, last_sequence=C30_TOP)
    wrong_high = 0x0000_0001_0000_0003

    result = inbound.unprotect(
        c30_scapy_encrypt(config, suite, wrong_high, c30_packet(3)), 0.0
    )

    assert result.reason is DropReason.BAD_ICV
    assert inbound.replay.top == C30_TOP


@pytest.mark.parametrize("suite", list(C30_SUITES))
def test_c30_esn_wrap_sender_matches_scapy_across_boundary(suite):
    config = c30_config(suite)
    outbound = OutboundSA(
        config, 0.0, iv_source=lambda n: b"\x5a" * n, last_sequence=C30_TOP
    )
    if config.encryption.is_aead:
        outbound = OutboundSA(config, 0.0, last_sequence=C30_TOP)

    for sequence in range(C30_TOP + 1, C30_SEQUENCES[1] + 1):
        packet = c30_packet(sequence)
        ours = outbound.protect(bytes(packet), 0.0)
        assert ours == c30_scapy_encrypt(config, suite, sequence, packet), hex(sequence)
    assert outbound.sequence == 0x0000_0002_0000_0003
