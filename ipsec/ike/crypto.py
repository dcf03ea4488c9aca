"""IKEv2 transforms on ``cryptography``: prf, prf+, integrity and the SK cipher.

Pure functions of their inputs: nothing here draws randomness or keeps
state beyond the keys it is handed. Objects holding keys never show them in
``repr``/``str``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import EncrId, IntegId, PrfId
from .errors import DropReason, IkeMessageDropped, InvalidSyntax, NoProposalChosen

RandomBytes = Callable[[int], bytes]
"""Source of randomness handed in by the caller (``os.urandom`` in production)."""


# ---------------------------------------------------------------------------
# PRF and prf+ (RFC 7296 §2.13)


@dataclass(frozen=True, slots=True)
class PrfAlgorithm:
    prf_id: PrfId
    hash_name: str
    output_size: int

    @property
    def key_size(self) -> int:
        """Preferred key size; HMAC PRFs take their output size (RFC 4868 §2.1.2)."""
        return self.output_size

    def prf(self, key: bytes, data: bytes) -> bytes:
        mac = hmac.HMAC(key, _HASHES[self.hash_name]())
        mac.update(data)
        return mac.finalize()

    def prf_plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 §2.13): T1 | T2 | ... with Tn = prf(K, Tn-1 | S | n)."""
        blocks_needed = -(-length // self.output_size)
        if blocks_needed > 255:
            raise ValueError(f"prf+ cannot produce {length} octets")
        blocks = []
        previous = b""
        for counter in range(1, blocks_needed + 1):
            previous = self.prf(key, previous + seed + bytes((counter,)))
            blocks.append(previous)
        return b"".join(blocks)[:length]


_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

PRFS: dict[int, PrfAlgorithm] = {
    PrfId.PRF_HMAC_SHA2_256: PrfAlgorithm(PrfId.PRF_HMAC_SHA2_256, "sha256", 32),
    PrfId.PRF_HMAC_SHA2_384: PrfAlgorithm(PrfId.PRF_HMAC_SHA2_384, "sha384", 48),
    PrfId.PRF_HMAC_SHA2_512: PrfAlgorithm(PrfId.PRF_HMAC_SHA2_512, "sha512", 64),
}


def prf_algorithm(prf_id: int) -> PrfAlgorithm:
    try:
        return PRFS[prf_id]
    except KeyError:
        raise NoProposalChosen(f"PRF {prf_id} is not supported") from None


# ---------------------------------------------------------------------------
# Integrity (RFC 4868: HMAC-SHA2 truncated to half the hash)


@dataclass(frozen=True, slots=True)
class IntegAlgorithm:
    integ_id: IntegId
    hash_name: str
    key_size: int
    icv_size: int

    def compute(self, key: bytes, data: bytes) -> bytes:
        mac = hmac.HMAC(key, _HASHES[self.hash_name]())
        mac.update(data)
        return mac.finalize()[: self.icv_size]


INTEGS: dict[int, IntegAlgorithm] = {
    IntegId.AUTH_HMAC_SHA2_256_128: IntegAlgorithm(
        IntegId.AUTH_HMAC_SHA2_256_128, "sha256", 32, 16
    ),
    IntegId.AUTH_HMAC_SHA2_384_192: IntegAlgorithm(
        IntegId.AUTH_HMAC_SHA2_384_192, "sha384", 48, 24
    ),
    IntegId.AUTH_HMAC_SHA2_512_256: IntegAlgorithm(
        IntegId.AUTH_HMAC_SHA2_512_256, "sha512", 64, 32
    ),
}


def integ_algorithm(integ_id: int) -> IntegAlgorithm:
    try:
        return INTEGS[integ_id]
    except KeyError:
        raise NoProposalChosen(
            f"integrity algorithm {integ_id} is not supported"
        ) from None


# ---------------------------------------------------------------------------
# Encryption


@dataclass(frozen=True, slots=True)
class EncrAlgorithm:
    """Sizes of one encryption transform as used in IKE and ESP.

    ``key_size`` counts the key material taken from prf+, which for the AEAD
    ciphers includes a 4-octet salt at its end (RFC 5282 §7.1, RFC 7634 §2).
    """

    encr_id: EncrId
    key_length: int | None
    """Key Length attribute in bits, None for ciphers that take none."""
    key_size: int
    iv_size: int
    block_size: int
    icv_size: int
    salt_size: int

    @property
    def is_aead(self) -> bool:
        return self.icv_size > 0


_AES_KEY_LENGTHS = (128, 192, 256)
_AEAD_SALT_SIZE = 4
_AEAD_IV_SIZE = 8
_AEAD_ICV_SIZE = 16
_AES_BLOCK_SIZE = 16


def encr_algorithm(encr_id: int, key_length: int | None) -> EncrAlgorithm:
    """Resolve an ENCR transform and its Key Length attribute (in bits)."""
    if encr_id == EncrId.ENCR_CHACHA20_POLY1305 and key_length is None:
        # RFC 7634 §2: a 256-bit key, no Key Length attribute, block size 1.
        return EncrAlgorithm(
            EncrId.ENCR_CHACHA20_POLY1305,
            None,
            32 + _AEAD_SALT_SIZE,
            _AEAD_IV_SIZE,
            1,
            _AEAD_ICV_SIZE,
            _AEAD_SALT_SIZE,
        )
    if key_length not in _AES_KEY_LENGTHS:
        raise NoProposalChosen(f"encryption {encr_id} with key length {key_length}")
    if encr_id == EncrId.ENCR_AES_GCM_16:
        # RFC 5282 §3: 8-octet explicit IV, 16-octet ICV, no block alignment.
        return EncrAlgorithm(
            EncrId.ENCR_AES_GCM_16,
            key_length,
            key_length // 8 + _AEAD_SALT_SIZE,
            _AEAD_IV_SIZE,
            1,
            _AEAD_ICV_SIZE,
            _AEAD_SALT_SIZE,
        )
    if encr_id == EncrId.ENCR_AES_CBC:
        return EncrAlgorithm(
            EncrId.ENCR_AES_CBC,
            key_length,
            key_length // 8,
            _AES_BLOCK_SIZE,
            _AES_BLOCK_SIZE,
            0,
            0,
        )
    raise NoProposalChosen(f"encryption algorithm {encr_id} is not supported")


# ---------------------------------------------------------------------------
# The SK payload cipher for one direction (RFC 7296 §3.14, RFC 5282 §5)


@dataclass(frozen=True, slots=True)
class SkCipher:
    """Protects or unprotects SK payload contents in one direction.

    ``associated`` is everything the ICV covers before the IV: the IKE
    header and the SK (or SKF) payload header. For AEAD it is the AAD; for
    AES-CBC it is prepended to IV and ciphertext under the HMAC.
    """

    encr: EncrAlgorithm
    integ: IntegAlgorithm | None
    encryption_key: bytes = field(repr=False)
    integrity_key: bytes = field(repr=False, default=b"")
    _aead: AESGCM | ChaCha20Poly1305 | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        if len(self.encryption_key) != self.encr.key_size:
            raise ValueError("encryption key does not match the algorithm")
        if not self.encr.is_aead and self.integ is None:
            raise ValueError("AES-CBC needs an integrity algorithm")
        if self.encr.is_aead:
            # Built once: the cipher context is reused for every message.
            key = self.encryption_key[: -self.encr.salt_size]
            aead = (
                ChaCha20Poly1305(key)
                if self.encr.encr_id == EncrId.ENCR_CHACHA20_POLY1305
                else AESGCM(key)
            )
            object.__setattr__(self, "_aead", aead)

    @property
    def icv_size(self) -> int:
        if self.encr.is_aead:
            return self.encr.icv_size
        return self.integ.icv_size if self.integ else 0

    @property
    def overhead(self) -> int:
        """Octets an SK payload adds around its padded plaintext."""
        return self.encr.iv_size + self.icv_size

    def padded_size(self, plaintext_size: int) -> int:
        """Size of plaintext + padding + Pad Length, a multiple of the block size."""
        block = self.encr.block_size
        return (plaintext_size // block + 1) * block

    def seal(self, associated: bytes, iv: bytes, padded: bytes) -> bytes:
        """Return IV | ciphertext | ICV for already padded plaintext."""
        if self._aead is not None:
            return iv + self._aead.encrypt(self._nonce(iv), padded, associated)
        encryptor = Cipher(
            algorithms.AES(self.encryption_key), modes.CBC(iv)
        ).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return iv + ciphertext + self._icv(associated + iv + ciphertext)

    def open(self, associated: bytes, protected: bytes) -> bytes:
        """Verify and decrypt IV | ciphertext | ICV; return padded plaintext.

        A failure here means the message is discarded unanswered (RFC 7296
        §2.21.1), so it raises ``IkeMessageDropped``.
        """
        iv_size = self.encr.iv_size
        ciphertext_size = len(protected) - iv_size - self.icv_size
        if ciphertext_size <= 0 or ciphertext_size % self.encr.block_size:
            raise IkeMessageDropped(DropReason.ENCRYPTED_PAYLOAD_TOO_SHORT)
        iv = protected[:iv_size]
        if self._aead is not None:
            try:
                return self._aead.decrypt(
                    self._nonce(iv), protected[iv_size:], associated
                )
            except InvalidTag:
                raise IkeMessageDropped(DropReason.INTEGRITY_CHECK_FAILED) from None
        return self._open_cbc(associated, protected, iv)

    def _open_cbc(self, associated: bytes, protected: bytes, iv: bytes) -> bytes:
        icv_at = len(protected) - self.icv_size
        expected = self._icv(associated + protected[:icv_at])
        if not constant_time.bytes_eq(expected, protected[icv_at:]):
            raise IkeMessageDropped(DropReason.INTEGRITY_CHECK_FAILED)
        decryptor = Cipher(
            algorithms.AES(self.encryption_key), modes.CBC(iv)
        ).decryptor()
        return decryptor.update(protected[len(iv) : icv_at]) + decryptor.finalize()

    def _icv(self, data: bytes) -> bytes:
        if self.integ is None:
            raise ValueError("AES-CBC needs an integrity algorithm")
        return self.integ.compute(self.integrity_key, data)

    def _nonce(self, iv: bytes) -> bytes:
        # RFC 5282 §4 / RFC 7634 §2: nonce = salt (from the key material) | IV.
        return self.encryption_key[-self.encr.salt_size :] + iv


def nat_detection_hash(spi_i: bytes, spi_r: bytes, address: bytes, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port) for NAT_DETECTION_* notifies (RFC 7296 §2.23).

    ``address`` is the packed IPv4 or IPv6 address; ``spi_r`` is zero in the
    IKE_SA_INIT request.
    """
    digest = hashes.Hash(hashes.SHA1())
    digest.update(spi_i + spi_r + address + port.to_bytes(2))
    return digest.finalize()


def strip_padding(padded: bytes) -> bytes:
    """Remove Padding and Pad Length (RFC 7296 §3.14) from decrypted content."""
    if not padded:
        raise InvalidSyntax("empty encrypted content")
    pad_length = padded[-1]
    if pad_length + 1 > len(padded):
        raise InvalidSyntax(f"Pad Length {pad_length} exceeds the content")
    return padded[: len(padded) - pad_length - 1]


def pad(plaintext: bytes, padded_size: int) -> bytes:
    """Append zero Padding and the Pad Length octet up to ``padded_size``."""
    pad_length = padded_size - len(plaintext) - 1
    return plaintext + bytes(pad_length) + bytes((pad_length,))
