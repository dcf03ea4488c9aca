"""ESP and AH transforms: the IKEv2 transform IDs and the per-SA cipher objects.

Each cipher object is built once per SA (keys expanded, HMAC state keyed) and
then turns an ESP header plus plaintext into the wire form and back. The
sequence number arrives as the full 64-bit value so ESN (RFC 4303 §2.2.1) is
handled here, where the ICV input is assembled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

IvSource = Callable[[int], bytes]

_SEQ_HIGH = struct.Struct("!L")
_ESN_AAD = struct.Struct("!LQ")


class Encryption(Enum):
    """ESP encryption transforms (IKEv2 Transform Type 1, RFC 7296 §3.3.2).

    ``key_length`` is the KEYMAT length: AEAD keys carry their 4-byte salt at
    the end (RFC 4106 §8.1, RFC 7634 §4).
    """

    transform_id: int
    key_bits: int
    key_length: int
    salt_length: int
    iv_length: int
    alignment: int
    icv_length: int

    def __init__(
        self,
        transform_id: int,
        key_bits: int,
        salt_length: int,
        iv_length: int,
        alignment: int,
        icv_length: int,
    ) -> None:
        self.transform_id = transform_id
        self.key_bits = key_bits
        self.key_length = key_bits // 8 + salt_length
        self.salt_length = salt_length
        self.iv_length = iv_length
        self.alignment = alignment
        self.icv_length = icv_length

    # transform ID, key bits, salt, IV, padding alignment, AEAD tag
    AES_CBC_128 = (12, 128, 0, 16, 16, 0)
    AES_CBC_256 = (12, 256, 0, 16, 16, 0)
    AES_GCM_16_128 = (20, 128, 4, 8, 4, 16)
    AES_GCM_16_256 = (20, 256, 4, 8, 4, 16)
    CHACHA20_POLY1305 = (28, 256, 4, 8, 4, 16)
    NULL = (11, 0, 0, 0, 4, 0)

    @property
    def is_aead(self) -> bool:
        return self.icv_length > 0

    @classmethod
    def from_transform(cls, transform_id: int, key_bits: int = 0) -> Encryption:
        """The transform an IKEv2 proposal names (ID plus Key Length attribute).

        ChaCha20-Poly1305 and NULL take no Key Length attribute (key_bits 0).
        """
        for member in cls:
            if member.transform_id == transform_id and (
                _key_length_attribute(member) == key_bits
            ):
                return member
        raise ValueError(f"no ESP encryption transform {transform_id}/{key_bits}")


def _key_length_attribute(encryption: Encryption) -> int:
    # RFC 7296 §3.3.5: only the AES transforms carry a Key Length attribute.
    return encryption.key_bits if encryption.transform_id in (12, 20) else 0


class Integrity(Enum):
    """Integrity transforms (IKEv2 Transform Type 3; HMAC-SHA2 per RFC 4868)."""

    transform_id: int
    key_length: int
    icv_length: int
    digest_name: str

    def __init__(
        self, transform_id: int, key_length: int, icv_length: int, digest_name: str
    ) -> None:
        self.transform_id = transform_id
        self.key_length = key_length
        self.icv_length = icv_length
        self.digest_name = digest_name

    NONE = (0, 0, 0, "")
    HMAC_SHA2_256_128 = (12, 32, 16, "sha256")
    HMAC_SHA2_384_192 = (13, 48, 24, "sha384")
    HMAC_SHA2_512_256 = (14, 64, 32, "sha512")

    @classmethod
    def from_transform(cls, transform_id: int) -> Integrity:
        """The integrity transform an IKEv2 proposal names (0: none)."""
        for member in cls:
            if member.transform_id == transform_id:
                return member
        raise ValueError(f"no integrity transform {transform_id}")


class EspCipher(Protocol):
    """What an SA needs from its transform, whatever the algorithm."""

    iv_length: int
    icv_length: int
    alignment: int
    # Ciphertext must be a whole number of these (the CBC block size).
    ciphertext_multiple: int

    def seal(self, header: bytes, sequence: int, plaintext: bytes) -> bytes:
        """Return header | IV | ciphertext | ICV."""
        ...

    def open(self, esp: bytes, sequence: int) -> bytes | None:
        """Return the plaintext, or None when the ICV does not verify."""
        ...


class HmacIcv:
    """A keyed HMAC-SHA2 truncated to the ICV length (RFC 4868 §2.3)."""

    __slots__ = ("_keyed", "icv_length", "esn")

    def __init__(self, integrity: Integrity, key: bytes, esn: bool) -> None:
        self._keyed = hmac.new(key, digestmod=getattr(hashlib, integrity.digest_name))
        self.icv_length = integrity.icv_length
        self.esn = esn

    def compute(self, sequence: int, *parts: bytes | bytearray | memoryview) -> bytes:
        mac = self._keyed.copy()
        for part in parts:
            mac.update(part)
        if self.esn:
            # RFC 4303 §2.2.1 / RFC 4302 §2.5.1: the high-order 32 bits are
            # appended to the ICV input but never sent.
            mac.update(_SEQ_HIGH.pack(sequence >> 32))
        return mac.digest()[: self.icv_length]


class AeadCipher:
    """AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) in ESP."""

    __slots__ = ("_aead", "_salt", "_spi", "_esn", "_iv_source")

    iv_length = 8
    icv_length = 16
    alignment = 4
    ciphertext_multiple = 1

    def __init__(
        self,
        encryption: Encryption,
        key: bytes,
        spi: int,
        esn: bool,
        iv_source: IvSource | None,
    ) -> None:
        secret, self._salt = key[:-4], key[-4:]
        if encryption is Encryption.CHACHA20_POLY1305:
            self._aead: AESGCM | ChaCha20Poly1305 = ChaCha20Poly1305(secret)
        else:
            self._aead = AESGCM(secret)
        self._spi = spi
        self._esn = esn
        self._iv_source = iv_source

    @property
    def aead(self) -> AESGCM | ChaCha20Poly1305:
        return self._aead

    @property
    def salt(self) -> bytes:
        """The 4-byte nonce salt from the keying material (RFC 4106 §8.1)."""
        return self._salt

    def seal(self, header: bytes, sequence: int, plaintext: bytes) -> bytes:
        # The sequence number never repeats within an SA (it hard-expires
        # before wrapping), so it is a valid unique IV (RFC 4106 §3.1).
        if self._iv_source is None:
            iv = sequence.to_bytes(8, "big")
        else:
            iv = self._iv_source(8)
        # RFC 4106 §5 / RFC 7634 §2.1: AAD is SPI | 32-bit sequence number,
        # or with ESN SPI | high 32 bits | low 32 bits.
        aad = _ESN_AAD.pack(self._spi, sequence) if self._esn else header
        return header + iv + self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, esp: bytes, sequence: int) -> bytes | None:
        aad = _ESN_AAD.pack(self._spi, sequence) if self._esn else esp[:8]
        try:
            return self._aead.decrypt(self._salt + esp[8:16], esp[16:], aad)
        except InvalidTag:
            return None


class CbcHmacCipher:
    """AES-CBC (RFC 3602) with an HMAC-SHA2 ICV, encrypt-then-MAC."""

    __slots__ = ("_algorithm", "_icv", "_iv_source", "icv_length")

    iv_length = 16
    alignment = 16
    ciphertext_multiple = 16

    def __init__(self, key: bytes, icv: HmacIcv, iv_source: IvSource | None) -> None:
        self._algorithm = algorithms.AES(key)
        self._icv = icv
        # RFC 3602 §2.3: the IV must be unpredictable, hence random.
        self._iv_source = iv_source or os.urandom
        self.icv_length = icv.icv_length

    def seal(self, header: bytes, sequence: int, plaintext: bytes) -> bytes:
        iv = self._iv_source(16)
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        body = header + iv + encryptor.update(plaintext) + encryptor.finalize()
        return body + self._icv.compute(sequence, body)

    def open(self, esp: bytes, sequence: int) -> bytes | None:
        # Integrity first (RFC 4303 §3.4.4.1), in constant time.
        view = memoryview(esp)
        end = len(esp) - self.icv_length
        expected = self._icv.compute(sequence, view[:end])
        if not hmac.compare_digest(expected, view[end:]):
            return None
        decryptor = Cipher(self._algorithm, modes.CBC(esp[8:24])).decryptor()
        return decryptor.update(view[24:end]) + decryptor.finalize()


class NullHmacCipher:
    """ESP with NULL encryption (RFC 2410): integrity only, payload in clear."""

    __slots__ = ("_icv", "icv_length")

    iv_length = 0
    alignment = 4
    ciphertext_multiple = 1

    def __init__(self, icv: HmacIcv) -> None:
        self._icv = icv
        self.icv_length = icv.icv_length

    def seal(self, header: bytes, sequence: int, plaintext: bytes) -> bytes:
        body = header + plaintext
        return body + self._icv.compute(sequence, body)

    def open(self, esp: bytes, sequence: int) -> bytes | None:
        view = memoryview(esp)
        end = len(esp) - self.icv_length
        expected = self._icv.compute(sequence, view[:end])
        if not hmac.compare_digest(expected, view[end:]):
            return None
        return esp[8:end]


def new_esp_cipher(
    spi: int,
    encryption: Encryption,
    encryption_key: bytes,
    integrity: Integrity,
    integrity_key: bytes,
    esn: bool,
    iv_source: IvSource | None = None,
) -> EspCipher:
    """Build the cipher object for one ESP SA (keys already checked)."""
    if encryption.is_aead:
        return AeadCipher(encryption, encryption_key, spi, esn, iv_source)
    icv = HmacIcv(integrity, integrity_key, esn)
    if encryption is Encryption.NULL:
        return NullHmacCipher(icv)
    return CbcHmacCipher(encryption_key, icv, iv_source)
