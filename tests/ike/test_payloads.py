"""Payload codec: scapy as the independent oracle, round trips and malformed input."""

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import load_contrib

from ipsec.ike.constants import (
    AuthMethod,
    CertEncoding,
    CfgType,
    DhGroup,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.errors import (
    IkeError,
    InvalidMajorVersion,
    InvalidSyntax,
    UnsupportedCriticalPayload,
)
from ipsec.ike.message import IkeMessage, decode_message, encode_message
from ipsec.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    ConfigAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TsiPayload,
    TsrPayload,
    UnknownPayload,
    VendorIdPayload,
)

from .samples import (
    KE_DATA,
    NAT_DESTINATION_HASH,
    NAT_SOURCE_HASH,
    NONCE_I,
    SPI_I,
    SPI_R,
    ike_auth_payloads,
    ike_auth_request,
    ike_sa_init_request,
)

load_contrib("ikev2")
from scapy.contrib.ikev2 import (  # noqa: E402
    IKEv2,
    IKEv2_AUTH,
    IKEv2_CERTREQ,
    IKEv2_CP,
    IKEv2_Delete,
    IKEv2_IDi,
    IKEv2_IDr,
    IKEv2_KE,
    IKEv2_Nonce,
    IKEv2_Notify,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2_TSi,
    IKEv2_TSr,
    IKEv2_VendorID,
    IPv4TrafficSelector,
    IPv6TrafficSelector,
)


def scapy_payloads(packet):
    """The payload layers of a dissected IKEv2 packet, in order."""
    layers = []
    layer = packet.payload
    while layer and layer.name != "Raw":
        layers.append(layer)
        layer = layer.payload
    return layers


def scapy_transforms(proposal):
    out = []
    transform = proposal.trans
    while isinstance(transform, IKEv2_Transform):
        key_length = transform.key_length if transform.length > 8 else None
        out.append((transform.transform_type, transform.transform_id, key_length))
        transform = transform.payload
    return out


def scapy_proposals(sa):
    out = []
    proposal = sa.prop
    while isinstance(proposal, IKEv2_Proposal):
        out.append((proposal.proposal, proposal.proto, scapy_transforms(proposal)))
        proposal = proposal.payload
    return out


# ---------------------------------------------------------------------------
# scapy dissects what we encode


def test_ike_sa_init_dissected_by_scapy():
    packet = IKEv2(encode_message(ike_sa_init_request()))

    assert packet.init_SPI == SPI_I
    assert packet.resp_SPI == bytes(8)
    assert packet.exch_type == ExchangeType.IKE_SA_INIT
    assert packet.version == 0x20
    assert packet.flags == 0x08
    assert packet.id == 0
    kinds = [type(layer) for layer in scapy_payloads(packet)]
    assert kinds == [
        IKEv2_SA,
        IKEv2_KE,
        IKEv2_Nonce,
        IKEv2_Notify,
        IKEv2_Notify,
        IKEv2_Notify,
        IKEv2_VendorID,
    ]


def test_ike_sa_init_proposals_dissected_by_scapy():
    packet = IKEv2(encode_message(ike_sa_init_request()))

    assert scapy_proposals(packet[IKEv2_SA]) == [
        (
            1,
            ProtocolId.IKE,
            [
                (TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
                (TransformType.PRF, PrfId.PRF_HMAC_SHA2_256, None),
                (TransformType.DH, DhGroup.ECP_256, None),
                (TransformType.DH, DhGroup.CURVE25519, None),
            ],
        ),
        (
            2,
            ProtocolId.IKE,
            [
                (TransformType.ENCR, EncrId.ENCR_AES_CBC, 128),
                (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128, None),
                (TransformType.PRF, PrfId.PRF_HMAC_SHA2_384, None),
                (TransformType.DH, DhGroup.MODP_2048, None),
            ],
        ),
    ]


def test_ike_sa_init_values_dissected_by_scapy():
    layers = scapy_payloads(IKEv2(encode_message(ike_sa_init_request())))

    ke, nonce, nat_source, nat_destination, fragmentation, vendor = layers[1:]
    assert (ke.group, ke.ke) == (DhGroup.ECP_256, KE_DATA)
    assert nonce.nonce == NONCE_I
    assert (nat_source.type, nat_source.notify) == (
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NAT_SOURCE_HASH,
    )
    assert (nat_destination.type, nat_destination.notify) == (
        NotifyType.NAT_DETECTION_DESTINATION_IP,
        NAT_DESTINATION_HASH,
    )
    assert (fragmentation.type, fragmentation.notify, fragmentation.length) == (
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        b"",
        8,
    )
    assert vendor.vendorID == b"secure-sbc"


def test_ike_auth_payloads_dissected_by_scapy():
    packet = IKEv2(encode_message(ike_auth_request()))

    assert packet.flags == 0x08 and packet.resp_SPI == SPI_R and packet.id == 1
    assert packet[IKEv2_IDi].IDtype == IdType.ID_FQDN
    assert packet[IKEv2_IDi].ID == b"sbc.example.com"
    assert packet[IKEv2_IDr].ID == "192.0.2.1"
    assert packet[IKEv2_AUTH].auth_type == AuthMethod.SHARED_KEY_MIC
    assert packet[IKEv2_AUTH].load == bytes(range(32))
    assert packet[IKEv2_CERTREQ].cert_encoding == CertEncoding.X509_SIGNATURE
    assert packet[IKEv2_CP].CFGType == CfgType.CFG_REQUEST
    assert packet[IKEv2_CP].attributes[0].type == 1
    assert packet[IKEv2_Delete].proto == ProtocolId.ESP
    assert packet[IKEv2_Delete].SPI == [bytes.fromhex("01020304"), bytes(4)]
    ts_i = packet[IKEv2_TSi].traffic_selector[0]
    assert (ts_i.starting_address_v4, ts_i.ending_address_v4) == (
        "192.0.2.50",
        "192.0.2.250",
    )
    assert (ts_i.IP_protocol_ID, ts_i.start_port, ts_i.end_port) == (17, 5060, 5061)
    ts_r = packet[IKEv2_TSr].traffic_selector
    assert (ts_r[0].starting_address_v6, ts_r[0].ending_address_v6) == (
        "2001:db8::",
        "2001:db8::ffff",
    )
    assert ts_r[1].ending_address_v4 == "255.255.255.255"


def test_esp_proposal_spi_dissected_by_scapy():
    packet = IKEv2(encode_message(ike_auth_request()))

    proposal = packet[IKEv2_SA].prop
    assert (proposal.proto, proposal.SPIsize, proposal.SPI) == (
        ProtocolId.ESP,
        4,
        bytes.fromhex("c0ffee01"),
    )


# ---------------------------------------------------------------------------
# We decode what scapy builds


def test_scapy_ike_sa_init_decoded():
    transforms = (
        IKEv2_Transform(transform_type=1, transform_id=12, length=12, key_length=256)
        / IKEv2_Transform(transform_type=3, transform_id=12)
        / IKEv2_Transform(transform_type=2, transform_id=7)
        / IKEv2_Transform(transform_type=4, transform_id=31)
    )
    packet = (
        IKEv2(init_SPI=SPI_I, exch_type=34, flags="Initiator", id=0)
        / IKEv2_SA(
            prop=IKEv2_Proposal(proposal=1, proto=1, trans_nb=4, trans=transforms)
        )
        / IKEv2_KE(group=31, ke=bytes(32))
        / IKEv2_Nonce(nonce=NONCE_I)
        / IKEv2_Notify(type=16388, notify=NAT_SOURCE_HASH)
    )

    message = decode_message(bytes(packet))

    assert (message.exchange_type, message.spi_i, message.is_initiator) == (
        ExchangeType.IKE_SA_INIT,
        SPI_I,
        True,
    )
    assert message.payloads == (
        SaPayload(
            (
                Proposal(
                    1,
                    ProtocolId.IKE,
                    (
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 256),
                        Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
                        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_512),
                        Transform(TransformType.DH, DhGroup.CURVE25519),
                    ),
                ),
            )
        ),
        KePayload(DhGroup.CURVE25519, bytes(32)),
        NoncePayload(NONCE_I),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, NAT_SOURCE_HASH),
    )


def test_scapy_ike_auth_payloads_decoded():
    # scapy's IPv6 selector defaults to a wrong length of 20; set the real 40.
    packet = (
        IKEv2(init_SPI=SPI_I, resp_SPI=SPI_R, exch_type=35, flags="Response", id=1)
        / IKEv2_IDr(IDtype=2, ID=b"peer.example.com")
        / IKEv2_AUTH(auth_type=2, load=bytes(48))
        / IKEv2_TSi(
            traffic_selector=[
                IPv4TrafficSelector(
                    IP_protocol_ID=0,
                    starting_address_v4="192.0.2.50",
                    ending_address_v4="192.0.2.250",
                )
            ]
        )
        / IKEv2_TSr(
            traffic_selector=[
                IPv6TrafficSelector(
                    length=40,
                    IP_protocol_ID=6,
                    start_port=5061,
                    end_port=5061,
                    starting_address_v6="2001:db8::2",
                    ending_address_v6="2001:db8::2",
                )
            ]
        )
        / IKEv2_Delete(proto=1)
        / IKEv2_Notify(type=16385, notify=struct.pack("!I", 10))
    )

    message = decode_message(bytes(packet))

    assert (message.is_response, message.is_initiator) == (True, False)
    assert message.payloads == (
        IdrPayload(IdType.ID_FQDN, b"peer.example.com"),
        AuthPayload(AuthMethod.SHARED_KEY_MIC, bytes(48)),
        TsiPayload(
            (TrafficSelector(IPv4Address("192.0.2.50"), IPv4Address("192.0.2.250")),)
        ),
        TsrPayload(
            (
                TrafficSelector(
                    IPv6Address("2001:db8::2"),
                    IPv6Address("2001:db8::2"),
                    6,
                    5061,
                    5061,
                ),
            )
        ),
        DeletePayload(ProtocolId.IKE),
        NotifyPayload(NotifyType.SET_WINDOW_SIZE, struct.pack("!I", 10)),
    )


# ---------------------------------------------------------------------------
# Round trips


ROUND_TRIP_PAYLOADS = {
    "sa-ike": SaPayload(ike_sa_init_request().payloads[0].proposals),
    "sa-rekey-spi": SaPayload(
        (
            Proposal(
                1,
                ProtocolId.IKE,
                (Transform(TransformType.ENCR, EncrId.ENCR_CHACHA20_POLY1305),),
                bytes(range(8)),
            ),
        )
    ),
    "sa-unknown-attribute": SaPayload(
        (
            Proposal(
                1,
                ProtocolId.AH,
                (
                    Transform(
                        TransformType.INTEG,
                        IntegId.AUTH_HMAC_SHA2_512_256,
                        None,
                        (
                            TransformAttribute(99, b"\x00\x07", True),
                            TransformAttribute(100, b"tlv value"),
                        ),
                    ),
                ),
                b"\x00\x00\x10\x01",
            ),
        )
    ),
    "ke": KePayload(DhGroup.MODP_2048, bytes(256)),
    "idi": IdiPayload(IdType.ID_RFC822_ADDR, b"trunk@example.com"),
    "idr": IdrPayload(IdType.ID_IPV6_ADDR, IPv6Address("2001:db8::1").packed),
    "cert": CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x82der"),
    "certreq": CertReqPayload(CertEncoding.X509_SIGNATURE, bytes(40)),
    "auth": AuthPayload(AuthMethod.SHARED_KEY_MIC, bytes(32)),
    "nonce-min": NoncePayload(bytes(16)),
    "nonce-max": NoncePayload(bytes(256)),
    "notify-spi": NotifyPayload(
        NotifyType.REKEY_SA, b"", ProtocolId.ESP, bytes.fromhex("deadbeef")
    ),
    "notify-error": NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13"),
    "notify-unknown-status": NotifyPayload(40000, b"opaque"),
    "delete-ike": DeletePayload(ProtocolId.IKE),
    "delete-esp": DeletePayload(ProtocolId.ESP, (b"\x01\x02\x03\x04",)),
    "vendor": VendorIdPayload(b"\x88" * 16),
    "tsi": TsiPayload(ike_auth_payloads()[7].traffic_selectors),
    "tsr": TsrPayload(ike_auth_payloads()[8].traffic_selectors),
    "ts-empty": TsiPayload(()),
    "cp": CpPayload(CfgType.CFG_REPLY, (ConfigAttribute(1, bytes([10, 0, 0, 1])),)),
    "eap": EapPayload(b"\x01\x02\x00\x05\x01"),
    "unknown": UnknownPayload(200, b"future payload"),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP_PAYLOADS))
def test_payload_round_trip(name):
    payload = ROUND_TRIP_PAYLOADS[name]
    message = IkeMessage(
        ExchangeType.INFORMATIONAL, 7, SPI_I, SPI_R, payloads=(payload,)
    )

    assert decode_message(encode_message(message)) == message


def test_ike_auth_message_round_trip():
    message = ike_auth_request()

    assert decode_message(encode_message(message)) == message


def test_c27_traffic_selector_range_round_trip():
    # C27(b): a range that is no CIDR block travels as start and end address.
    selector = TrafficSelector(IPv4Address("192.0.2.50"), IPv4Address("192.0.2.250"))
    message = IkeMessage(
        ExchangeType.CREATE_CHILD_SA,
        3,
        SPI_I,
        SPI_R,
        payloads=(TsiPayload((selector,)),),
    )

    decoded = decode_message(encode_message(message)).payloads[0]

    assert decoded.traffic_selectors[0].start_address == IPv4Address("192.0.2.50")
    assert decoded.traffic_selectors[0].end_address == IPv4Address("192.0.2.250")


# ---------------------------------------------------------------------------
# Critical bit and unknown payloads (RFC 7296 §2.5, §3.2)


def encoded_with(payloads):
    return encode_message(
        IkeMessage(
            ExchangeType.INFORMATIONAL, 2, SPI_I, SPI_R, payloads=tuple(payloads)
        )
    )


def test_unknown_critical_payload_rejected_with_its_type():
    data = encoded_with(
        [NoncePayload(NONCE_I), UnknownPayload(222, b"xyz", critical=True)]
    )

    with pytest.raises(UnsupportedCriticalPayload) as caught:
        decode_message(data)

    assert caught.value.notify_type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert caught.value.notification_data == bytes([222])


def test_unknown_noncritical_payload_kept():
    data = encoded_with([UnknownPayload(222, b"xyz"), NoncePayload(NONCE_I)])

    message = decode_message(data)

    assert message.payloads == (UnknownPayload(222, b"xyz"), NoncePayload(NONCE_I))


def test_critical_bit_ignored_on_known_payload():
    data = bytearray(encoded_with([NoncePayload(NONCE_I)]))
    data[28 + 1] = 0x80  # the Nonce payload's critical bit

    assert decode_message(bytes(data)).payloads == (NoncePayload(NONCE_I),)


def test_unknown_status_notify_kept_as_number():
    message = decode_message(encoded_with([NotifyPayload(50000, b"\x01")]))

    notify = message.payloads[0]
    assert notify.notify_type == 50000 and not notify.is_error


def test_reserved_header_flags_ignored():
    data = bytearray(encoded_with([NoncePayload(NONCE_I)]))
    data[19] |= 0xC7  # every reserved flag bit

    message = decode_message(bytes(data))

    assert (message.is_initiator, message.is_response) == (True, False)


# ---------------------------------------------------------------------------
# Malformed input


def with_length(data, length=None):
    """Rewrite the header Length field (to the actual size by default)."""
    data = bytearray(data)
    data[24:28] = struct.pack("!I", len(data) if length is None else length)
    return bytes(data)


def test_major_version_3_rejected():
    data = bytearray(encode_message(ike_sa_init_request()))
    data[17] = 0x30

    with pytest.raises(InvalidMajorVersion) as caught:
        decode_message(bytes(data))

    assert caught.value.notify_type == NotifyType.INVALID_MAJOR_VERSION
    assert caught.value.major_version == 3


def test_ikev1_version_rejected():
    data = bytearray(encode_message(ike_sa_init_request()))
    data[17] = 0x10

    with pytest.raises(InvalidMajorVersion):
        decode_message(bytes(data))


def test_higher_minor_version_accepted():
    data = bytearray(encode_message(ike_sa_init_request()))
    data[17] = 0x21

    assert decode_message(bytes(data)) == ike_sa_init_request()


@pytest.mark.parametrize("declared", [0, 27, 29, 0xFFFFFFFF])
def test_header_length_mismatch_rejected(declared):
    data = with_length(encode_message(ike_sa_init_request()), declared)

    with pytest.raises(InvalidSyntax):
        decode_message(data)


def test_truncated_message_rejected_at_every_length():
    data = encode_message(ike_auth_request())

    for size in range(len(data)):
        with pytest.raises(IkeError):
            decode_message(data[:size])


def test_truncated_payloads_rejected_at_every_length():
    # The header length is fixed up, so each cut lands in the payload parser.
    data = encode_message(ike_auth_request())

    for size in range(28, len(data)):
        with pytest.raises(InvalidSyntax):
            decode_message(with_length(data[:size]))


@pytest.mark.parametrize("length", [0, 1, 2, 3, 0xFFFF])
def test_absurd_payload_length_rejected(length):
    data = bytearray(encoded_with([NoncePayload(NONCE_I), VendorIdPayload(b"v")]))
    data[30:32] = struct.pack("!H", length)

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


def test_zero_length_payload_cannot_loop():
    # A chain of payloads naming each other with length 0 would never end
    # if lengths were trusted; the decoder refuses the first one.
    header = bytearray(encoded_with([]))
    body = struct.pack("!BBH", PayloadType.VENDOR_ID, 0, 0) * 4
    header[16] = PayloadType.VENDOR_ID

    with pytest.raises(InvalidSyntax):
        decode_message(with_length(bytes(header) + body))


def test_bytes_after_last_payload_rejected():
    data = encoded_with([NoncePayload(NONCE_I)]) + b"\x00\x00\x00\x00"

    with pytest.raises(InvalidSyntax):
        decode_message(with_length(data))


def test_next_payload_beyond_data_rejected():
    data = bytearray(encoded_with([NoncePayload(NONCE_I)]))
    data[28] = PayloadType.VENDOR_ID  # announces a payload that is not there

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


@pytest.mark.parametrize("size", [0, 15, 257])
def test_nonce_size_outside_16_to_256_rejected(size):
    with pytest.raises(InvalidSyntax):
        decode_message(encoded_with([NoncePayload(bytes(size))]))


def test_traffic_selector_of_unknown_type_rejected():
    data = bytearray(encoded_with([ike_auth_payloads()[7]]))
    data[28 + 8] = 9  # TS_FC_ADDR_RANGE

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


def test_traffic_selector_count_mismatch_rejected():
    data = bytearray(encoded_with([ike_auth_payloads()[7]]))
    data[28 + 4] = 2  # Number of TSs: 2, only one present

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


def test_delete_spi_count_mismatch_rejected():
    data = bytearray(encoded_with([DeletePayload(ProtocolId.ESP, (bytes(4),))]))
    data[28 + 6 : 28 + 8] = struct.pack("!H", 3)

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


def sa_bytes(proposals):
    return encoded_with([SaPayload(proposals)])


def test_proposal_transform_count_mismatch_rejected():
    data = bytearray(sa_bytes(ike_sa_init_request().payloads[0].proposals))
    data[28 + 4 + 7] = 9  # first proposal announces 9 transforms

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


def test_proposal_last_substructure_lies_rejected():
    data = bytearray(sa_bytes(ike_sa_init_request().payloads[0].proposals[:1]))
    data[28 + 4] = 2  # "more proposals follow", but none does

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


@pytest.mark.parametrize(("protocol", "spi_size"), [(1, 4), (3, 0), (3, 8), (9, 0)])
def test_proposal_spi_size_checked(protocol, spi_size):
    proposal = Proposal(
        1,
        protocol,
        (Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128),),
        bytes(spi_size),
    )

    with pytest.raises(InvalidSyntax):
        decode_message(sa_bytes((proposal,)))


def test_key_length_attribute_in_tlv_format_rejected():
    data = bytearray(sa_bytes(ike_sa_init_request().payloads[0].proposals[:1]))
    attribute = 28 + 4 + 8 + 8  # SA header, proposal header, transform header
    assert data[attribute : attribute + 2] == b"\x80\x0e"
    data[attribute : attribute + 4] = b"\x00\x0e\x00\x00"

    with pytest.raises(InvalidSyntax):
        decode_message(bytes(data))


# ---------------------------------------------------------------------------
# Property: any well-formed payload list survives encode then decode

ids = st.sampled_from(list(IdType)) | st.integers(0, 255)
octets = st.binary(max_size=40)


def transforms():
    return st.builds(
        Transform,
        st.sampled_from(list(TransformType)),
        st.integers(0, 65535),
        st.none() | st.integers(0, 65535),
        st.lists(
            st.builds(
                TransformAttribute,
                st.integers(0, 0x7FFF).filter(lambda t: t != 14),
                octets,
            ),
            max_size=2,
        ).map(tuple),
    )


def proposals():
    protocol_and_spi = st.sampled_from(
        [
            (ProtocolId.IKE, 0),
            (ProtocolId.IKE, 8),
            (ProtocolId.ESP, 4),
            (ProtocolId.AH, 4),
        ]
    )
    return protocol_and_spi.flatmap(
        lambda ps: st.builds(
            Proposal,
            st.integers(1, 255),
            st.just(ps[0]),
            st.lists(transforms(), min_size=1, max_size=4).map(tuple),
            st.binary(min_size=ps[1], max_size=ps[1]),
        )
    )


def selectors():
    v4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
    v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
    ports = st.integers(0, 65535)
    return st.one_of(
        st.builds(TrafficSelector, v4, v4, st.integers(0, 255), ports, ports),
        st.builds(TrafficSelector, v6, v6, st.integers(0, 255), ports, ports),
    )


any_payload = st.one_of(
    st.builds(SaPayload, st.lists(proposals(), min_size=1, max_size=3).map(tuple)),
    st.builds(KePayload, st.integers(0, 65535), octets),
    st.builds(IdiPayload, ids, octets),
    st.builds(IdrPayload, ids, octets),
    st.builds(CertPayload, st.integers(0, 255), octets),
    st.builds(AuthPayload, st.integers(0, 255), octets),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=64)),
    st.builds(
        NotifyPayload,
        st.integers(0, 65535),
        octets,
        st.integers(0, 255),
        st.binary(max_size=8),
    ),
    st.builds(
        DeletePayload,
        st.just(ProtocolId.ESP),
        st.lists(st.binary(min_size=4, max_size=4), max_size=3).map(tuple),
    ),
    st.builds(VendorIdPayload, octets),
    st.builds(TsiPayload, st.lists(selectors(), max_size=3).map(tuple)),
    st.builds(TsrPayload, st.lists(selectors(), max_size=3).map(tuple)),
    st.builds(
        CpPayload,
        st.integers(0, 255),
        st.lists(
            st.builds(ConfigAttribute, st.integers(0, 0x7FFF), octets), max_size=3
        ).map(tuple),
    ),
    st.builds(UnknownPayload, st.integers(100, 255), octets),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(any_payload, max_size=6))
def test_payload_lists_round_trip(payloads):
    message = IkeMessage(
        ExchangeType.INFORMATIONAL, 9, SPI_I, SPI_R, payloads=tuple(payloads)
    )

    assert decode_message(encode_message(message)) == message
