"""Per-trunk media policy: the engine names each leg's trunk to the hook.

The SBC node of the in-memory lab runs with the real `MediaAnchor` on a
real relay bound to loopback, built with the production `trunk_policy`;
the SDP the callee and the caller get is read as text.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from b2bua_harness import CALLEE, SBC, Lab, lab_config
from pydantic import ValidationError

from sbc.b2bua import B2bua, B2buaSettings
from sbc.b2bua.media import MediaAnchor
from sbc.cdr import Disposition
from sbc.config.model import Config
from sbc.io.media_glue import leg_setup, trunk_policy
from sbc.media import MediaRelay, MediaSettings

HOST = "127.0.0.1"
CALL_ID = "alice-1@192.0.2.10"  # the lab caller's first Call-ID


def port_range() -> tuple[int, int]:
    # Per process, apart from the other media tests' ranges.
    base = 40000 + (os.getpid() % 50) * 100
    return base, base + 99


def offer(payload_types: str, rtpmaps: tuple[str, ...]) -> bytes:
    lines = ["v=0", f"o=alice 1 1 IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}"]
    lines += ["t=0 0", f"m=audio 4000 RTP/AVP {payload_types}"]
    lines += [f"a=rtpmap:{item}" for item in rtpmaps]
    return ("\r\n".join(lines) + "\r\n").encode()


PCMU_PCMA = offer("0 8", ("0 PCMU/8000", "8 PCMA/8000"))
PCMU_ONLY = offer("0", ("0 PCMU/8000",))


def anchored_lab(config: Config, relay: MediaRelay, session) -> Lab:
    """A lab whose engine anchors media and reports routes to the anchor."""
    anchor = MediaAnchor(os.urandom, trunk_policy=trunk_policy(config))
    anchor.prepare(CALL_ID, session, leg_setup(config, HOST)(None).policies)
    lab = Lab(config=config)
    node = lab.sbc
    node.engine = B2bua(
        node.layer,
        config,
        B2buaSettings.from_config(config),
        lab.rng,
        node,
        bodies=anchor,
        route_chosen=anchor.route_chosen,
    )
    return lab


def place_call(config: Config, body: bytes, *, pbx_refuses: bool = False):
    """The caller's INVITE with ``body``; what the SBC sent, per callee."""

    async def scenario():
        relay = MediaRelay(MediaSettings(*port_range(), media_timeout=30.0))
        try:
            session = await relay.allocate(CALL_ID, HOST, HOST)
            lab = anchored_lab(config, relay, session)
            call = lab.caller.invite(body=body)
            lab.run()
            if pbx_refuses:
                lab.callee.respond(lab.callee.last("INVITE"), 503)
                lab.run()
            return lab, call
        finally:
            await relay.close()

    return asyncio.run(scenario())


def invite_bodies(lab: Lab, callee) -> list[bytes]:
    return [m.body for m in lab.requests_between(SBC, callee, "INVITE")]


def media_lines(body: bytes) -> list[str]:
    return re.findall(r"^m=[^\r\n]*", body.decode(), re.M)


def test_trunk_media_mandatory_srtp_offers_only_srtp_to_that_trunk():
    config = lab_config({"pbx": {"media": {"srtp": {"mode": "mandatory"}}}})

    lab, _ = place_call(config, PCMU_PCMA)

    [body] = invite_bodies(lab, CALLEE)
    assert [line.split()[2:] for line in media_lines(body)] == [["RTP/SAVP", "0", "8"]]
    assert re.search(
        r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:\S+", body.decode(), re.M
    )
    assert f"c=IN IP4 {HOST}".encode() in body


def test_trunk_media_without_overrides_offers_plain_rtp():
    lab, _ = place_call(lab_config(), PCMU_PCMA)

    [body] = invite_bodies(lab, CALLEE)
    assert [line.split()[2:] for line in media_lines(body)] == [["RTP/AVP", "0", "8"]]
    assert b"a=crypto" not in body


def test_trunk_media_mandatory_srtp_on_caller_trunk_refuses_plain_offer_488():
    config = lab_config({"carrier": {"media": {"srtp": {"mode": "mandatory"}}}})

    lab, call = place_call(config, PCMU_PCMA)

    assert call.final is not None and call.final.status == 488
    assert invite_bodies(lab, CALLEE) == []
    [record] = lab.sbc.records
    assert record.final_status == 488
    assert record.disposition is Disposition.FAILED
    lab.assert_clean()


def test_trunk_media_codec_allow_list_filters_the_offer():
    config = lab_config({"pbx": {"media": {"codecs": ["PCMA"]}}})

    lab, _ = place_call(config, PCMU_PCMA)

    [body] = invite_bodies(lab, CALLEE)
    assert [line.split()[2:] for line in media_lines(body)] == [["RTP/AVP", "8"]]
    assert b"PCMU" not in body


def test_trunk_media_codec_allow_list_with_no_match_refuses_488():
    config = lab_config({"pbx": {"media": {"codecs": ["PCMA"]}}})

    lab, call = place_call(config, PCMU_ONLY)

    assert call.final is not None and call.final.status == 488
    assert invite_bodies(lab, CALLEE) == []
    lab.assert_clean()


def test_trunk_media_failover_applies_the_next_trunks_policy():
    # The pbx allows PCMU only, the backup PCMA only: each offer follows
    # its own trunk's list, not the one tried before.
    config = lab_config(
        {
            "pbx": {"media": {"codecs": ["PCMU"]}},
            "backup": {"media": {"codecs": ["PCMA"]}},
        }
    )

    lab, _ = place_call(config, PCMU_PCMA, pbx_refuses=True)

    [to_pbx] = invite_bodies(lab, CALLEE)
    [to_backup] = invite_bodies(lab, ("192.0.2.21", 5060))
    assert [line.split()[3:] for line in media_lines(to_pbx)] == [["0"]]
    assert [line.split()[3:] for line in media_lines(to_backup)] == [["8"]]


def with_media(config: Config, media: dict) -> Config:
    return Config.model_validate({**config.model_dump(mode="json"), "media": media})


def test_trunk_media_srtp_none_overrides_mandatory_b_leg_default():
    config = with_media(
        lab_config({"pbx": {"media": {"srtp": {"mode": "none"}}}}),
        {"address": HOST, "srtp": {"mode": "mandatory"}},
    )

    lab, _ = place_call(config, PCMU_PCMA)

    [body] = invite_bodies(lab, CALLEE)
    assert [line.split()[2] for line in media_lines(body)] == ["RTP/AVP"]
    assert b"a=crypto" not in body


def test_trunk_media_codecs_replace_the_node_wide_list():
    config = with_media(
        lab_config({"pbx": {"media": {"codecs": ["pcmu"]}}}),
        {"address": HOST, "codecs": ["PCMA"]},
    )

    lab, _ = place_call(config, PCMU_PCMA)

    # The caller's leg keeps media.codecs (PCMA), the pbx's allows PCMU
    # only: nothing is allowed on both, so the offer is refused.
    assert invite_bodies(lab, CALLEE) == []
    assert lab.caller.calls[0].final is not None
    assert lab.caller.calls[0].final.status == 488


def test_trunk_media_config_defaults_to_no_overrides():
    trunk = lab_config().trunk("pbx")

    assert trunk is not None
    assert trunk.media.codecs is None and trunk.media.srtp is None


def test_trunk_media_config_rejects_unknown_suite_and_field():
    for media in (
        {"srtp": {"mode": "mandatory", "suites": ["NULL_CIPHER"]}},
        {"srtp_mode": "mandatory"},
    ):
        with pytest.raises(ValidationError) as error:
            lab_config({"pbx": {"media": media}})
        assert error.value.errors()[0]["loc"][:3] == ("trunks", 1, "media")
