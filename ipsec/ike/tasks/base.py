"""What the tasks of one IKE_SA share, and the task contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from ..config import IkeSaConfig
from ..crypto import RandomBytes, SkCipher
from ..events import IkeEvent
from ..keymat import (
    IkeSaKeys,
    compute_skeyseed,
    derive_ike_sa_keys,
    sk_ciphers,
)
from ..message import IkeMessage
from ..payloads import IdPayload, Payload
from ..proposals import IkeSaSuite

Endpoint = tuple[IPv4Address | IPv6Address, int]
"""An IP address and UDP port."""

SpiAllocator = Callable[[], bytes]
"""Returns a fresh inbound CHILD_SA SPI (4 octets), unique in the SA database."""

NONCE_SIZE = 32
"""RFC 7296 §2.10: at least half the PRF key size; 32 covers HMAC-SHA2-512."""


@dataclass(eq=False)
class IkeSaContext:
    """State of one IKE_SA that several tasks read and complete."""

    config: IkeSaConfig
    is_original_initiator: bool
    random_bytes: RandomBytes = field(repr=False)
    spi_i: bytes
    spi_r: bytes
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    suite: IkeSaSuite | None = None
    keys: IkeSaKeys | None = None
    cipher_i: SkCipher | None = None
    """Protects messages from the original initiator to the responder."""
    cipher_r: SkCipher | None = None
    init_request: bytes = field(default=b"", repr=False)
    """The IKE_SA_INIT request as sent (RealMessage1, RFC 7296 §2.15)."""
    init_response: bytes = field(default=b"", repr=False)
    """The IKE_SA_INIT response as sent (RealMessage2)."""
    remote_id: IdPayload | None = None
    local_endpoint: Endpoint | None = None
    """Our address and port as we send from them, for NAT detection."""
    remote_endpoint: Endpoint | None = None
    """The peer's address and port as its datagrams arrive from them."""
    local_behind_nat: bool = False
    remote_behind_nat: bool = False
    spi_allocator: SpiAllocator | None = None
    """The data plane's get_spi; without it SPIs are drawn from random_bytes."""
    fragmentation: bool = False
    """Both sides sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3)."""
    peer_signature_hashes: frozenset[int] = frozenset()
    """The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4); empty: none sent."""

    @property
    def cipher_out(self) -> SkCipher | None:
        return self.cipher_i if self.is_original_initiator else self.cipher_r

    @property
    def cipher_in(self) -> SkCipher | None:
        return self.cipher_r if self.is_original_initiator else self.cipher_i

    def make_nonce(self) -> bytes:
        return self.random_bytes(NONCE_SIZE)

    def allocate_spi(self) -> bytes:
        """A CHILD_SA SPI; 1-255 are reserved (RFC 4303 §2.1)."""
        if self.spi_allocator is not None:
            # The data plane knows which inbound SPIs are in use.
            return self.spi_allocator()
        spi = bytearray(self.random_bytes(4))
        if not any(spi[:3]):
            spi[2] |= 0x01
        return bytes(spi)

    def install_ike_keys(self, suite: IkeSaSuite, shared_secret: bytes) -> None:
        """SKEYSEED and SK_* once nonces, SPIs and g^ir are known (§2.14)."""
        transforms = suite.transforms
        skeyseed = compute_skeyseed(
            transforms.prf, self.nonce_i, self.nonce_r, shared_secret
        )
        self.suite = suite
        self.keys = derive_ike_sa_keys(
            transforms, skeyseed, self.nonce_i, self.nonce_r, self.spi_i, self.spi_r
        )
        self.cipher_i, self.cipher_r = sk_ciphers(transforms, self.keys)

    def require_keys(self) -> tuple[IkeSaSuite, IkeSaKeys]:
        if self.suite is None or self.keys is None:
            raise RuntimeError("IKE_SA keys are not established yet")
        return self.suite, self.keys


class Task:
    """One concern of one exchange.

    The initiator calls ``build_i`` to fill its request and ``process_i``
    with the response; the responder calls ``process_r`` with the request
    and ``build_r`` to fill its response. A step raises an
    ``IkeNotifyError`` to refuse; ``outcome`` collects the events the
    task produced once the exchange has succeeded.
    """

    def __init__(self, context: IkeSaContext) -> None:
        self.context = context
        self.outcome: list[IkeEvent] = []

    def build_i(self) -> list[Payload]:
        return []

    def process_r(self, request: IkeMessage) -> None:
        return None

    def build_r(self) -> list[Payload]:
        return []

    def process_i(self, response: IkeMessage) -> None:
        return None
