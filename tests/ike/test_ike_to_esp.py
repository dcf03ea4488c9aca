"""CHILD_SAs negotiated by two IKE engines carry traffic through the ESP engine.

The ESP engine (ipsec/esp, written independently) is the oracle that the
SPIs and KEYMAT orientation of ``ChildSaEstablished`` are right.
"""

import pytest

from ipsec.esp import (
    Encryption,
    InboundSA,
    Integrity,
    Mode,
    Opened,
    OutboundSA,
    Protocol,
    SAConfig,
)
from ipsec.ike.constants import EncrId
from ipsec.ike.events import ChildSaEstablished

from .test_ike_sa import drain, esp_proposal, establish


def esp_configs(child):
    """(outbound, inbound) SAConfig from one side's ChildSaEstablished."""
    encryption = Encryption.from_transform(
        child.encr.encr_id, child.encr.key_length or 0
    )
    integrity = Integrity.from_transform(child.integ.integ_id if child.integ else 0)

    def config(spi, keys):
        return SAConfig(
            spi=int.from_bytes(spi),
            protocol=Protocol.ESP,
            mode=Mode.TRANSPORT,
            encryption=encryption,
            integrity=integrity,
            encryption_key=keys[0],
            integrity_key=keys[1],
            esn=child.esn,
        )

    return config(child.outbound_spi, child.outbound_keys), config(
        child.inbound_spi, child.inbound_keys
    )


@pytest.mark.parametrize(
    "encr",
    [
        (EncrId.ENCR_AES_GCM_16, 128),
        (EncrId.ENCR_AES_GCM_16, 256),
        (EncrId.ENCR_CHACHA20_POLY1305, None),
        (EncrId.ENCR_AES_CBC, 256),
    ],
    ids=["gcm-128", "gcm-256", "chacha20", "cbc-256-sha256"],
)
def test_negotiated_child_sa_carries_traffic_both_ways(encr):
    changes = {"esp_proposals": (esp_proposal(encr=encr),)}
    initiator, responder = establish(
        initiator_changes=changes, responder_changes=changes
    )
    [i_child] = [e for e in drain(initiator) if isinstance(e, ChildSaEstablished)]
    [r_child] = [e for e in drain(responder) if isinstance(e, ChildSaEstablished)]
    i_out, i_in = esp_configs(i_child)
    r_out, r_in = esp_configs(r_child)

    to_responder = OutboundSA(i_out, 0.0).seal(b"INVITE sip:trunk", 17, 0.0)
    to_initiator = OutboundSA(r_out, 0.0).seal(b"SIP/2.0 200 OK", 17, 0.0)
    at_responder = InboundSA(r_in, 0.0).open(to_responder, 0.0)
    at_initiator = InboundSA(i_in, 0.0).open(to_initiator, 0.0)

    assert (
        isinstance(at_responder, Opened) and at_responder.payload == b"INVITE sip:trunk"
    )
    assert (
        isinstance(at_initiator, Opened) and at_initiator.payload == b"SIP/2.0 200 OK"
    )
    assert to_responder[:4] == r_child.inbound_spi
