"""Secrets at rest: AES-256-GCM under a key file kept outside the database.

The key file (JSON: the current key id and every key by id) is created once
with mode 0600. Each ciphertext is stored with the id of the key that sealed
it, so a new key can become current while older rows still open. The
associated data binds a ciphertext to its object and field: a sealed
password copied onto another trunk's row fails to open.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE_NAME = "secret.key"
NONCE_BYTES = 12  # NIST SP 800-38D §8.2: 96-bit IVs


class KeyFileError(Exception):
    """The key file is missing, unreadable, malformed or too open."""


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class SecretBox:
    """Seals and opens secrets with the keys of one key file."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise KeyFileError(f"current key {current!r} is not in the key file")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    def seal(self, plaintext: str, context: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        aead = self._keys[self.current]
        ciphertext = aead.encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(self.current, nonce, ciphertext)

    def open(self, sealed: Sealed, context: str) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise KeyFileError(f"no key {sealed.key_id!r} in the key file")
        plaintext = aead.decrypt(sealed.nonce, sealed.ciphertext, context.encode())
        return plaintext.decode()


def load_or_create_key_file(data_dir: Path) -> SecretBox:
    """The key file of ``data_dir``, created (0600) with one fresh key if absent."""
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        _write_key_file(path, {"current": "k1", "keys": {"k1": _new_key()}})
    return _read_key_file(path)


def rotate_key(data_dir: Path) -> str:
    """Add a new key and make it current; older keys stay to open old rows."""
    path = data_dir / KEY_FILE_NAME
    data = _read_json(path)
    key_id = f"k{len(data['keys']) + 1}"
    data["keys"][key_id] = _new_key()
    data["current"] = key_id
    _replace_key_file(path, data)
    return key_id


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _write_key_file(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key that rows may still be sealed with.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        json.dump(data, stream)


def _replace_key_file(path: Path, data: dict[str, Any]) -> None:
    staging = path.with_suffix(".new")
    staging.unlink(missing_ok=True)
    _write_key_file(staging, data)
    os.replace(staging, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(f"{path} is readable by others (mode {mode:o})")
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        message = f"cannot read key file {path}: {type(exc).__name__}"
        raise KeyFileError(message) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise KeyFileError(f"{path} is not a key file")
    return data


def _read_key_file(path: Path) -> SecretBox:
    data = _read_json(path)
    keys = {key_id: base64.b64decode(text) for key_id, text in data["keys"].items()}
    current = data.get("current")
    if not isinstance(current, str):
        raise KeyFileError(f"{path} names no current key")
    return SecretBox(keys, current)
