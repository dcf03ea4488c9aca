"""The key file and AES-GCM sealing of secrets at rest."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from web.crypto import (
    KEY_FILE_NAME,
    KeyFileError,
    load_or_create_key_file,
    rotate_key,
)


def test_key_file_created_owner_only(tmp_path):
    load_or_create_key_file(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600


def test_key_file_reused_not_replaced(tmp_path):
    sealed = load_or_create_key_file(tmp_path).seal("psk-value", "trunk/x")
    again = load_or_create_key_file(tmp_path)
    assert again.open(sealed, "trunk/x") == "psk-value"


def test_seal_opens_with_independent_aesgcm(tmp_path):
    # Oracle: the key file and the stored fields are enough for plain AES-GCM.
    box = load_or_create_key_file(tmp_path)
    sealed = box.seal("digest-secret", "trunk//carrier/password")
    data = json.loads((tmp_path / KEY_FILE_NAME).read_text())
    import base64

    key = base64.b64decode(data["keys"][sealed.key_id])
    plain = AESGCM(key).decrypt(
        sealed.nonce, sealed.ciphertext, b"trunk//carrier/password"
    )
    assert plain == b"digest-secret"
    assert b"digest-secret" not in sealed.ciphertext


def test_seal_bound_to_context(tmp_path):
    box = load_or_create_key_file(tmp_path)
    sealed = box.seal("secret", "trunk//a/password")
    with pytest.raises(InvalidTag):
        box.open(sealed, "trunk//b/password")


def test_seal_nonce_fresh_each_time(tmp_path):
    box = load_or_create_key_file(tmp_path)
    nonces = {box.seal("same", "ctx").nonce for _ in range(50)}
    assert len(nonces) == 50


def test_rotate_key_keeps_old_ciphertexts(tmp_path):
    old = load_or_create_key_file(tmp_path).seal("before", "ctx")
    new_id = rotate_key(tmp_path)
    box = load_or_create_key_file(tmp_path)
    assert box.current == new_id != old.key_id
    assert box.open(old, "ctx") == "before"
    assert box.seal("after", "ctx").key_id == new_id
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_key_file_readable_by_others_refused(tmp_path):
    load_or_create_key_file(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_or_create_key_file(tmp_path)


def test_key_file_malformed_refused(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.write_text("not json")
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_or_create_key_file(tmp_path)
