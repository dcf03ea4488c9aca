"""Opt-in IKE key log in the form of Wireshark's ``ikev2_decryption_table``.

Like the ESP key log (ipsec/esp/keylog.py) it undoes the protection, so it
is enabled only by the SBC_IKE_KEYLOG environment variable or an explicit
argument. Each line is one UAT row: SPIi, SPIr, SK_ei, SK_er, encryption,
SK_ai, SK_ar, integrity; pass it as ``tshark -o
'uat:ikev2_decryption_table:<line>'``. GCM keys keep their 4-octet salt at
the end, as Wireshark expects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .constants import EncrId, IntegId
from .keymat import IkeSaKeys, IkeSaTransforms

KEYLOG_ENVIRONMENT_VARIABLE = "SBC_IKE_KEYLOG"

logger = logging.getLogger("ipsec.ike")

# Wireshark's names for its menu entries (packet-isakmp.c).
_ENCRYPTION_NAMES = {
    (EncrId.ENCR_AES_CBC, 128): "AES-CBC-128 [RFC3602]",
    (EncrId.ENCR_AES_CBC, 192): "AES-CBC-192 [RFC3602]",
    (EncrId.ENCR_AES_CBC, 256): "AES-CBC-256 [RFC3602]",
    (EncrId.ENCR_AES_GCM_16, 128): "AES-GCM-128 with 16 octet ICV [RFC5282]",
    (EncrId.ENCR_AES_GCM_16, 192): "AES-GCM-192 with 16 octet ICV [RFC5282]",
    (EncrId.ENCR_AES_GCM_16, 256): "AES-GCM-256 with 16 octet ICV [RFC5282]",
}
_INTEGRITY_NAMES = {
    None: "NONE [RFC4306]",
    IntegId.AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
}


def decryption_table_row(
    spi_i: bytes, spi_r: bytes, transforms: IkeSaTransforms, keys: IkeSaKeys
) -> str | None:
    """One ``ikev2_decryption_table`` row, or None for a cipher Wireshark lacks."""
    encr = transforms.encr
    encryption = _ENCRYPTION_NAMES.get((encr.encr_id, encr.key_length or 0))
    integrity = _INTEGRITY_NAMES.get(
        transforms.integ.integ_id if transforms.integ else None
    )
    if encryption is None or integrity is None:
        return None
    fields = (
        spi_i.hex(),
        spi_r.hex(),
        keys.sk_ei.hex(),
        keys.sk_er.hex(),
        f'"{encryption}"',
        keys.sk_ai.hex(),
        keys.sk_ar.hex(),
        f'"{integrity}"',
    )
    return ",".join(fields)


class IkeKeyLog:
    """Appends the SK_e*/SK_a* of each established IKE_SA to a file (0600)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Loud on purpose: whoever reads this file can decrypt IKE traffic.
        logger.warning("IKE key log enabled: IKE_SA keys are written to %s", path)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] = os.environ
    ) -> IkeKeyLog | None:
        path = environ.get(KEYLOG_ENVIRONMENT_VARIABLE)
        return cls(path) if path else None

    def log(
        self, spi_i: bytes, spi_r: bytes, transforms: IkeSaTransforms, keys: IkeSaKeys
    ) -> None:
        row = decryption_table_row(spi_i, spi_r, transforms, keys)
        if row is None:
            logger.debug("IKE key log: no Wireshark name for %s", transforms.encr)
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a", encoding="ascii") as file:
            file.write(row + "\n")

    def __repr__(self) -> str:
        return f"IkeKeyLog({self.path!r})"
