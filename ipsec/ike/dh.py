"""Diffie-Hellman for IKEv2 KE payloads: MODP, ECP, Curve25519 and Curve448.

Wire encodings: MODP public values padded to the prime length (RFC 7296
§3.4), ECP as x | y without the 0x04 prefix (RFC 5903 §7), Curve25519/448
as the raw u-coordinate (RFC 8031 §3). The shared secret g^ir is padded to
the prime or field length (RFC 7296 §2.14, RFC 5903 §7). Private values
come from a ``random_bytes`` callable handed in by the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

from .constants import DhGroup
from .crypto import RandomBytes
from .errors import InvalidKePayload, InvalidSyntax, NoProposalChosen


@dataclass(frozen=True, slots=True)
class ModpGroup:
    """An RFC 3526 group; ``exponent_size`` follows its strength estimate."""

    prime: int
    generator: int
    size: int
    exponent_size: int


# RFC 3526 §3-5. p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k);
# tests/ike/test_dh.py recomputes each prime from that formula.
_MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_MODP_3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
_MODP_4096 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)

MODP_GROUPS: dict[int, ModpGroup] = {
    DhGroup.MODP_2048: ModpGroup(_MODP_2048, 2, 256, 48),
    DhGroup.MODP_3072: ModpGroup(_MODP_3072, 2, 384, 48),
    DhGroup.MODP_4096: ModpGroup(_MODP_4096, 2, 512, 64),
}

# RFC 5903 §3: the field size in octets of each curve's coordinates.
ECP_CURVES: dict[int, tuple[ec.EllipticCurve, int]] = {
    DhGroup.ECP_256: (ec.SECP256R1(), 32),
    DhGroup.ECP_384: (ec.SECP384R1(), 48),
    DhGroup.ECP_521: (ec.SECP521R1(), 66),
}

ECP_ORDERS: dict[int, int] = {
    DhGroup.ECP_256: int(
        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16
    ),
    DhGroup.ECP_384: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    DhGroup.ECP_521: int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}

SUPPORTED_GROUPS = (
    DhGroup.MODP_2048,
    DhGroup.MODP_3072,
    DhGroup.MODP_4096,
    DhGroup.ECP_256,
    DhGroup.ECP_384,
    DhGroup.ECP_521,
    DhGroup.CURVE25519,
    DhGroup.CURVE448,
)


class KeyExchange(ABC):
    """One side of one Diffie-Hellman exchange; never shows its private value."""

    group: DhGroup

    @property
    @abstractmethod
    def public_value(self) -> bytes:
        """Key Exchange Data for our KE payload."""

    @abstractmethod
    def shared_secret(self, peer_value: bytes) -> bytes:
        """g^ir from the peer's Key Exchange Data.

        Raises ``InvalidKePayload`` naming this group when the value has the
        wrong length for it (the peer used another group), and
        ``InvalidSyntax`` when the value is not a valid group element.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group.name})"

    def _check_length(self, peer_value: bytes, size: int) -> None:
        if len(peer_value) != size:
            raise InvalidKePayload(
                f"{len(peer_value)}-octet public value for {self.group.name}",
                self.group,
            )


class ModpKeyExchange(KeyExchange):
    """Finite-field DH in pure Python integers.

    ``cryptography`` has deprecated its FFDH API, so the exponentiations are
    done with ``pow``; prefer the ECP and Curve groups where speed matters.
    """

    def __init__(self, group: DhGroup, private_exponent: int) -> None:
        self.group = group
        self._modp = MODP_GROUPS[group]
        self._exponent = private_exponent
        public = pow(self._modp.generator, private_exponent, self._modp.prime)
        self._public = public.to_bytes(self._modp.size)

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        self._check_length(peer_value, self._modp.size)

        # RFC 6989 §2.1: for safe-prime groups, 1 < y < p-1 is the whole check.
        peer = int.from_bytes(peer_value)
        if not 1 < peer < self._modp.prime - 1:
            raise InvalidSyntax(f"{self.group.name} public value out of range")
        secret = pow(peer, self._exponent, self._modp.prime)
        return secret.to_bytes(self._modp.size)


class EcpKeyExchange(KeyExchange):
    def __init__(self, group: DhGroup, private_scalar: int) -> None:
        self.group = group
        self._curve, self._size = ECP_CURVES[group]
        self._key = ec.derive_private_key(private_scalar, self._curve)
        numbers = self._key.public_key().public_numbers()
        self._public = numbers.x.to_bytes(self._size) + numbers.y.to_bytes(self._size)

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        self._check_length(peer_value, 2 * self._size)

        # RFC 6989 §2.3: the point must lie on the curve; cryptography checks it.
        x = int.from_bytes(peer_value[: self._size])
        y = int.from_bytes(peer_value[self._size :])
        try:
            peer = ec.EllipticCurvePublicNumbers(x, y, self._curve).public_key()
        except ValueError:
            raise InvalidSyntax(
                f"{self.group.name} point is not on the curve"
            ) from None
        return self._key.exchange(ec.ECDH(), peer)


class MontgomeryKeyExchange(KeyExchange):
    """Curve25519 / Curve448 (RFC 8031)."""

    def __init__(self, group: DhGroup, private_value: bytes) -> None:
        self.group = group
        self._key: x25519.X25519PrivateKey | x448.X448PrivateKey
        if group == DhGroup.CURVE25519:
            self._key = x25519.X25519PrivateKey.from_private_bytes(private_value)
        else:
            self._key = x448.X448PrivateKey.from_private_bytes(private_value)
        self._public = self._key.public_key().public_bytes_raw()

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        self._check_length(peer_value, len(self._public))

        # RFC 8031 §2: an all-zero result (a small-order point) is refused.
        try:
            if isinstance(self._key, x25519.X25519PrivateKey):
                secret = self._key.exchange(
                    x25519.X25519PublicKey.from_public_bytes(peer_value)
                )
            else:
                secret = self._key.exchange(
                    x448.X448PublicKey.from_public_bytes(peer_value)
                )
        except ValueError:
            secret = b""
        if not any(secret):
            raise InvalidSyntax(f"{self.group.name} shared secret is all zero")
        return secret


_MONTGOMERY_SIZES: dict[int, int] = {DhGroup.CURVE25519: 32, DhGroup.CURVE448: 56}


def private_value_size(group: int) -> int:
    """Octets of randomness ``generate_key_exchange`` asks for."""
    if group in MODP_GROUPS:
        return MODP_GROUPS[group].exponent_size
    if group in ECP_CURVES:
        # 64 extra bits make the reduction modulo the order unbiased enough.
        return ECP_CURVES[group][1] + 8
    if group in _MONTGOMERY_SIZES:
        return _MONTGOMERY_SIZES[group]
    raise NoProposalChosen(f"Diffie-Hellman group {group} is not supported")


def generate_key_exchange(group: int, random_bytes: RandomBytes) -> KeyExchange:
    """A fresh key pair for ``group`` from ``random_bytes(private_value_size)``."""
    drawn = random_bytes(private_value_size(group))
    if group in MODP_GROUPS:
        # The top bit set keeps the exponent at its full size.
        exponent = int.from_bytes(drawn) | 1 << (8 * len(drawn) - 1)
        return ModpKeyExchange(DhGroup(group), exponent)
    if group in ECP_ORDERS:
        scalar = int.from_bytes(drawn) % (ECP_ORDERS[group] - 1) + 1
        return EcpKeyExchange(DhGroup(group), scalar)
    return MontgomeryKeyExchange(DhGroup(group), drawn)


def key_exchange_from_private(group: int, private_value: bytes) -> KeyExchange:
    """Rebuild a key pair from an exact private value (vectors, deterministic tests).

    MODP: the exponent. ECP: the scalar, in [1, n-1]. Curve25519/448: the
    scalar before clamping (RFC 7748 §5).
    """
    if group in MODP_GROUPS:
        exponent = int.from_bytes(private_value)
        if exponent < 2:
            raise ValueError("MODP private exponent below 2")
        return ModpKeyExchange(DhGroup(group), exponent)
    if group in ECP_ORDERS:
        return EcpKeyExchange(DhGroup(group), int.from_bytes(private_value))
    if group in _MONTGOMERY_SIZES:
        return MontgomeryKeyExchange(DhGroup(group), private_value)
    raise NoProposalChosen(f"Diffie-Hellman group {group} is not supported")
