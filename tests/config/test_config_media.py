"""The media section of the configuration and the SRTP policy of listeners."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from sbc.config.model import Config


def test_media_defaults_leave_anchoring_off():
    media = Config().media

    assert media.address is None
    assert (media.port_min, media.port_max, media.timeout) == (20000, 29999, 60.0)
    assert media.codecs is None and media.srtp.mode == "none"


def test_media_section_parsed_with_ipv6_and_srtp():
    config = Config.model_validate(
        {
            "media": {
                "address": "::1",
                "codecs": ["PCMA", "telephone-event"],
                "srtp": {"mode": "mandatory", "suites": ["AEAD_AES_128_GCM"]},
            }
        }
    )

    assert config.media.address == ipaddress.ip_address("::1")
    assert config.media.srtp.suites == ["AEAD_AES_128_GCM"]


@pytest.mark.parametrize(
    "media",
    [
        pytest.param({"address": "media.example"}, id="host-name"),
        pytest.param({"port_min": 30000, "port_max": 30000}, id="no-pair"),
        pytest.param({"port_min": 80}, id="privileged-port"),
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"srtp": {"mode": "always"}}, id="unknown-mode"),
        pytest.param({"srtp": {"suites": ["AES_256_CM_HMAC_SHA1_80"]}}, id="suite"),
        pytest.param({"srtp": {"suites": []}}, id="no-suite"),
        pytest.param({"rtp_engine": "x"}, id="unknown-field"),
    ],
)
def test_media_section_refused_invalid(media):
    with pytest.raises(ValidationError):
        Config.model_validate({"media": media})
