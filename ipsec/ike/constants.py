"""IANA numbers for IKEv2 (RFC 7296 §3 and the IANA "IKEv2 Parameters" registry).

Member names follow the RFC and registry spelling so a value can be checked
against the registry line by line.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

IKE_MAJOR_VERSION = 2
IKE_MINOR_VERSION = 0
IKE_HEADER_SIZE = 28
GENERIC_PAYLOAD_HEADER_SIZE = 4
SPI_SIZE_IKE = 8
SPI_SIZE_CHILD = 4
# RFC 7296 §3.9: nonces are at least 128 and at most 2048 bits.
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 256


class ExchangeType(IntEnum):
    """RFC 7296 §3.1 Exchange Type."""

    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    IKE_INTERMEDIATE = 43  # RFC 9242


class HeaderFlag(IntFlag):
    """RFC 7296 §3.1 Flags; the other five bits are reserved and ignored."""

    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    """RFC 7296 §3.2 Next Payload values (plus RFC 7383 SKF)."""

    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53  # RFC 7383 Encrypted Fragment


class ProtocolId(IntEnum):
    """RFC 7296 §3.3.1 Protocol ID (also used by Notify and Delete)."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class TransformType(IntEnum):
    """RFC 7296 §3.3.2 Transform Type."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4  # renamed "Key Exchange Method" by RFC 9370
    ESN = 5


class EncrId(IntEnum):
    """Transform Type 1, Encryption Algorithm Transform IDs."""

    ENCR_AES_CBC = 12  # RFC 3602, key length attribute required
    ENCR_AES_CTR = 13
    ENCR_AES_GCM_8 = 18  # RFC 4106 / RFC 5282
    ENCR_AES_GCM_12 = 19
    ENCR_AES_GCM_16 = 20
    ENCR_CHACHA20_POLY1305 = 28  # RFC 7634, no key length attribute


class PrfId(IntEnum):
    """Transform Type 2, Pseudorandom Function Transform IDs."""

    PRF_HMAC_SHA1 = 2
    PRF_AES128_XCBC = 4
    PRF_HMAC_SHA2_256 = 5  # RFC 4868
    PRF_HMAC_SHA2_384 = 6
    PRF_HMAC_SHA2_512 = 7


class IntegId(IntEnum):
    """Transform Type 3, Integrity Algorithm Transform IDs."""

    NONE = 0
    AUTH_HMAC_SHA1_96 = 2
    AUTH_AES_XCBC_96 = 5
    AUTH_HMAC_SHA2_256_128 = 12  # RFC 4868
    AUTH_HMAC_SHA2_384_192 = 13
    AUTH_HMAC_SHA2_512_256 = 14


class DhGroup(IntEnum):
    """Transform Type 4, Diffie-Hellman Group Transform IDs."""

    NONE = 0
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14  # RFC 3526
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19  # RFC 5903
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31  # RFC 8031
    CURVE448 = 32


class EsnId(IntEnum):
    """Transform Type 5, Extended Sequence Numbers Transform IDs."""

    NO_ESN = 0
    ESN = 1


class TransformAttributeType(IntEnum):
    """RFC 7296 §3.3.5 Transform Attribute Types."""

    KEY_LENGTH = 14


class NotifyType(IntEnum):
    """RFC 7296 §3.10.1 Notify Message Types; below 16384 are errors."""

    # Error types.
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41  # RFC 4555
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # Status types.
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    AUTH_LIFETIME = 16403  # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404  # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406  # RFC 5685
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    EAP_ONLY_AUTHENTICATION = 16417  # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418  # RFC 6023
    QUICK_CRASH_DETECTION = 16419  # RFC 6290
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421
    IKEV2_MESSAGE_ID_SYNC = 16422
    IPSEC_REPLAY_COUNTER_SYNC = 16423
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427

    @property
    def is_error(self) -> bool:
        return self < 16384


class IdType(IntEnum):
    """RFC 7296 §3.5 ID Type."""

    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11


class CertEncoding(IntEnum):
    """RFC 7296 §3.6 Certificate Encoding."""

    PKCS7_WRAPPED_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10
    RAW_RSA_KEY = 11
    HASH_AND_URL_X509 = 12
    HASH_AND_URL_X509_BUNDLE = 13


class AuthMethod(IntEnum):
    """RFC 7296 §3.8 Auth Method (plus RFC 4754 / RFC 7427 / RFC 7619)."""

    RSA_DIGITAL_SIGNATURE = 1
    SHARED_KEY_MIC = 2
    DSS_DIGITAL_SIGNATURE = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    NULL_AUTHENTICATION = 13
    DIGITAL_SIGNATURE = 14


class TsType(IntEnum):
    """RFC 7296 §3.13.1 TS Type."""

    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8


class CfgType(IntEnum):
    """RFC 7296 §3.15 CFG Type."""

    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class ConfigAttributeType(IntEnum):
    """RFC 7296 §3.15.1 Configuration Attribute types."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
