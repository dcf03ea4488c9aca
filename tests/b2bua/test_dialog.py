"""The RFC 3261 §12 dialog layer on its own: creation, routing, CSeq."""

from __future__ import annotations

import pytest

from sbc.sip.dialog import Dialog, DialogState, OutOfOrderRequest, uas_dialog_id
from sbc.sip.message import Request, Response
from sbc.sip.parser import parse_message

INVITE = (
    "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKd1\r\n"
    "Max-Forwards: 70\r\n"
    "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    "From: <sip:alice@example.com>;tag=al\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: dlg-1@192.0.2.10\r\n"
    "CSeq: 4 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5070>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def parsed(text: str) -> Request | Response:
    return parse_message(text.encode())


def response(status: int, *, tag: str, contact: str, record_route: str) -> Response:
    text = (
        f"SIP/2.0 {status} X\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKd1\r\n"
        f"Record-Route: {record_route}\r\n"
        "From: <sip:alice@example.com>;tag=al\r\n"
        f"To: <sip:bob@example.com>;tag={tag}\r\n"
        "Call-ID: dlg-1@192.0.2.10\r\n"
        "CSeq: 4 INVITE\r\n"
        f"Contact: <{contact}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parsed(text)
    assert isinstance(message, Response)
    return message


def uac_dialog(record_route: str, status: int = 200) -> Dialog:
    invite = parsed(INVITE)
    assert isinstance(invite, Request)
    reply = response(
        status, tag="bb", contact="sip:bob@192.0.2.35", record_route=record_route
    )
    return Dialog.as_uac(invite, reply)


def test_uac_dialog_reverses_record_route_and_targets_contact():
    dialog = uac_dialog("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")

    assert dialog.id == ("dlg-1@192.0.2.10", "al", "bb")
    assert dialog.route_set == ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
    assert dialog.remote_target == "sip:bob@192.0.2.35"
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.local_cseq == 4 and dialog.remote_cseq is None


def test_uac_dialog_from_1xx_is_early_until_confirmed():
    dialog = uac_dialog("<sip:p1.example.com;lr>", status=180)
    assert dialog.state is DialogState.EARLY

    dialog.confirm(
        response(
            200,
            tag="bb",
            contact="sip:bob@192.0.2.36",
            record_route="<sip:p9.example.com;lr>",
        )
    )
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target == "sip:bob@192.0.2.36"
    assert dialog.route_set == ("<sip:p9.example.com;lr>",)


def test_loose_routing_keeps_remote_target_as_request_uri():
    dialog = uac_dialog("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")

    bye = dialog.build_request("BYE", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb1")

    assert bye.uri == "sip:bob@192.0.2.35"
    assert bye.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    assert bye.cseq.number == 5 and bye.cseq.method == "BYE"
    assert bye.to_tag == "bb" and bye.from_tag == "al"
    assert dialog.next_hop() == "sip:p2.example.com;lr"


def test_strict_routing_puts_first_route_in_request_uri_and_target_last():
    dialog = uac_dialog(
        "<sip:p1.example.com;lr>, <sip:strict.example.com;maddr=192.0.2.7>"
    )

    bye = dialog.build_request("BYE", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb2")

    assert bye.uri == "sip:strict.example.com;maddr=192.0.2.7"
    assert bye.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:bob@192.0.2.35>",
    ]


def test_no_route_set_sends_to_remote_target():
    dialog = uac_dialog("<sip:p1.example.com;lr>")
    dialog.route_set = ()

    info = dialog.build_request("INFO", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb3")

    assert info.uri == "sip:bob@192.0.2.35" and "Route" not in info.headers
    assert dialog.next_hop() == "sip:bob@192.0.2.35"


def test_ack_reuses_invite_cseq_and_target_refresh_carries_contact():
    dialog = uac_dialog("<sip:p1.example.com;lr>")
    dialog.local_contact = "<sip:alice@192.0.2.10:5070>"

    ack = dialog.build_request("ACK", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa1", cseq=4)
    update = dialog.build_request("UPDATE", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKu1")

    assert ack.cseq.number == 4 and "Contact" not in ack.headers
    assert (
        update.cseq.number == 5
        and update.headers.get("Contact") == "<sip:alice@192.0.2.10:5070>"
    )


def test_uas_dialog_keeps_record_route_order_and_remote_cseq():
    invite = parsed(INVITE)
    assert isinstance(invite, Request)

    dialog = Dialog.as_uas(invite, "sbc1", "<sip:192.0.2.1:5060>", early=False)

    assert dialog.id == ("dlg-1@192.0.2.10", "sbc1", "al")
    assert dialog.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert dialog.remote_target == "sip:alice@192.0.2.10:5070"
    assert dialog.remote_cseq == 4
    assert dialog.local_party.endswith(";tag=sbc1")
    bye = dialog.build_request("BYE", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs1")
    assert bye.uri == "sip:alice@192.0.2.10:5070"
    assert bye.headers.get("From") == dialog.local_party


def test_lower_remote_cseq_is_refused_with_500_and_target_refreshed():
    invite = parsed(INVITE)
    assert isinstance(invite, Request)
    dialog = Dialog.as_uas(invite, "sbc1", "<sip:192.0.2.1>", early=False)
    reinvite = parsed(
        INVITE.replace("CSeq: 4", "CSeq: 9")
        .replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=sbc1")
        .replace("5070", "5080")
    )
    assert isinstance(reinvite, Request)
    assert uas_dialog_id(reinvite) == dialog.id

    dialog.receive_request(reinvite)
    assert (
        dialog.remote_cseq == 9 and dialog.remote_target == "sip:alice@192.0.2.10:5080"
    )

    stale = parsed(
        INVITE.replace("CSeq: 4 INVITE", "CSeq: 8 INFO").replace(
            "INVITE sip", "INFO sip"
        )
    )
    assert isinstance(stale, Request)
    with pytest.raises(OutOfOrderRequest) as caught:
        dialog.receive_request(stale)
    assert caught.value.status_code == 500


def test_response_without_to_tag_creates_no_dialog():
    invite = parsed(INVITE)
    reply = parsed(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKd1\r\n"
        "From: <sip:alice@example.com>;tag=al\r\nTo: <sip:bob@example.com>\r\n"
        "Call-ID: dlg-1@192.0.2.10\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request) and isinstance(reply, Response)
    with pytest.raises(ValueError):
        Dialog.as_uac(invite, reply)
