"""Token encryption at rest: keys from the environment or a 0600 file, AES-GCM bound to context."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from skytwin.connectors.oauth import (
    InMemoryTokenRepository,
    StoredTokens,
    open_tokens,
    seal_tokens,
)
from skytwin.crypto import (
    KEY_FILE_NAME,
    DecryptionError,
    SecretKeyError,
    TokenCipher,
    key_from_env,
    load_or_create_key,
)


def test_round_trip_and_fresh_nonces() -> None:
    cipher = TokenCipher(secrets.token_bytes(32))
    first = cipher.encrypt("1//refresh-token", context="oauth_connections:1:refresh_token")
    second = cipher.encrypt("1//refresh-token", context="oauth_connections:1:refresh_token")
    assert first != second
    assert "refresh-token" not in first
    assert cipher.decrypt(first, context="oauth_connections:1:refresh_token") == "1//refresh-token"


def test_the_wrong_key_fails() -> None:
    sealed = TokenCipher(secrets.token_bytes(32)).encrypt("secret")
    with pytest.raises(DecryptionError, match="wrong SKYTWIN_SECRET_KEY"):
        TokenCipher(secrets.token_bytes(32)).decrypt(sealed)


def test_a_ciphertext_is_bound_to_its_row_and_column() -> None:
    cipher = TokenCipher(secrets.token_bytes(32))
    sealed = cipher.encrypt("secret", context="oauth_connections:1:refresh_token")
    for context in ("oauth_connections:2:refresh_token", "oauth_connections:1:access_token", ""):
        with pytest.raises(DecryptionError):
            cipher.decrypt(sealed, context=context)


def test_tampering_and_garbage_fail_cleanly() -> None:
    cipher = TokenCipher(secrets.token_bytes(32))
    sealed = cipher.encrypt("secret")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (flipped, "v1.", "v2." + sealed[3:], "not a token", "v1.!!!"):
        with pytest.raises(DecryptionError):
            cipher.decrypt(bad)


def test_the_key_file_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = load_or_create_key(home, None)
    path = home / KEY_FILE_NAME
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert load_or_create_key(home, None) == key
    assert load_or_create_key(home, "") == key  # an empty variable counts as unset
    assert [p.name for p in home.iterdir()] == [KEY_FILE_NAME]  # no temporary left behind


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, None)
    os.chmod(tmp_path / KEY_FILE_NAME, 0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        load_or_create_key(tmp_path, None)


def test_a_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretKeyError, match="32-byte key"):
        load_or_create_key(tmp_path, None)


def test_the_environment_key_wins_over_the_file(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert load_or_create_key(tmp_path, encoded) == raw
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_a_long_passphrase_is_stretched_deterministically() -> None:
    phrase = "correct horse battery staple, jumping over 42 lazy dogs"
    assert key_from_env(phrase) == key_from_env(phrase)
    assert len(key_from_env(phrase)) == 32


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "CHANGEME-please-change-me-before-production-use",
        "your-secret-key-here-0123456789abcdef",
        "placeholder-placeholder-placeholder-1234",
        "short",
        "a" * 64,
        "abababababababababababababababababababab",
    ],
)
def test_placeholders_and_weak_values_are_rejected(value: str) -> None:
    with pytest.raises(SecretKeyError, match="SKYTWIN_SECRET_KEY"):
        key_from_env(value)


def test_a_wrong_sized_key_is_refused() -> None:
    with pytest.raises(SecretKeyError):
        TokenCipher(b"\x00" * 16)
    assert "key" in repr(TokenCipher(secrets.token_bytes(32)))


def test_sealed_tokens_hold_no_plaintext_and_open_only_for_their_connection() -> None:
    cipher = TokenCipher(secrets.token_bytes(32))
    tokens = StoredTokens(refresh_token="1//refresh-xyz", access_token="ya29.access-xyz")
    sealed = seal_tokens(cipher, 7, tokens)
    assert "xyz" not in repr(sealed)
    assert open_tokens(cipher, 7, sealed) == tokens
    with pytest.raises(DecryptionError):
        open_tokens(cipher, 8, sealed)
    assert "xyz" not in repr(tokens)


def test_the_in_memory_repository_stores_only_ciphertext() -> None:
    repository = InMemoryTokenRepository()
    repository.put(1, StoredTokens(refresh_token="1//refresh-xyz", access_token="ya29.abc"))
    stored = repository.rows[1]
    assert stored.refresh_token_enc is not None and "xyz" not in stored.refresh_token_enc
    assert stored.access_token_enc is not None and "abc" not in stored.access_token_enc
