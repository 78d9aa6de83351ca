"""Encryption at rest for OAuth tokens: AES-256-GCM with a key from the environment or a file.

The key is `SKYTWIN_SECRET_KEY` when set (32 bytes in base64, or a long random
passphrase stretched with HKDF), else a random key generated once into
`<SKYTWIN_HOME>/secret.key` (mode 0600) and reused. Every ciphertext is bound
to a context string (for example ``"oauth_connections:42:refresh_token"``)
through AES-GCM's associated data, so a value copied to another row or column
does not decrypt. Nothing here logs, and errors never include a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
KEY_FILE_NAME = "secret.key"
MIN_PASSPHRASE_CHARS = 32
_NONCE_BYTES = 12
_MIN_DISTINCT_CHARS = 10
_VERSION = "v1"
_AAD_PREFIX = b"skytwin-token/v1\x00"
# Words that mark a value copied from an example rather than generated. All have six or
# more letters, so a random encoded key contains one with odds below one in 10^7.
_PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "your-secret",
    "your_secret",
    "yoursecret",
    "secret-key",
    "secret_key",
    "replace",
    "insecure",
    "password",
    "xxxxxx",
)


class SecretKeyError(ValueError):
    """The secret key (SKYTWIN_SECRET_KEY or the key file) cannot be used; the message says why."""


class DecryptionError(ValueError):
    """A ciphertext did not decrypt: wrong key, wrong context, or tampered."""


def _b64decode(text: str) -> bytes:
    # validate=True: a passphrase with spaces must not "decode" by dropping characters.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def key_from_env(value: str) -> bytes:
    """The 32-byte key for a SKYTWIN_SECRET_KEY value; SecretKeyError if it is a placeholder."""
    text = value.strip()
    lowered = text.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        raise SecretKeyError(
            "SKYTWIN_SECRET_KEY looks like a placeholder; generate one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise SecretKeyError(
            f"SKYTWIN_SECRET_KEY is too short ({len(text)} characters); use at least "
            f"{MIN_PASSPHRASE_CHARS} random characters, e.g. secrets.token_urlsafe(32)"
        )
    if len(set(text)) < _MIN_DISTINCT_CHARS:
        raise SecretKeyError(
            "SKYTWIN_SECRET_KEY is not random enough (too few distinct characters)"
        )
    try:
        raw = _b64decode(text)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == KEY_BYTES:
        return raw
    # A passphrase rather than an encoded key: stretch it into a key of the right size.
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=b"skytwin-secret-key", info=b"tokens"
    ).derive(text.encode())


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyError(
            f"{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
        )
    try:
        key = _b64decode(path.read_text().strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{path} does not hold a base64 {KEY_BYTES}-byte key")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new random key to `path` atomically, never replacing one that exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process won the race; then its key is the one to use.
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)


def load_or_create_key(home: Path, env_value: str | None) -> bytes:
    """The token key: SKYTWIN_SECRET_KEY if set, else home/secret.key (created on first use)."""
    if env_value is not None and env_value.strip():
        return key_from_env(env_value)
    path = home / KEY_FILE_NAME
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


class TokenCipher:
    """Encrypts short secrets (OAuth tokens) to printable strings and back."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a token key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "TokenCipher(<key hidden>)"

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        """Encrypt `plaintext`, bound to `context`; a fresh nonce makes every result different."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _AAD_PREFIX + context.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, token: str, *, context: str = "") -> str:
        """Decrypt what `encrypt` made with the same key and context; DecryptionError otherwise."""
        version, _, payload = token.partition(".")
        if version != _VERSION or not payload:
            raise DecryptionError("not a SkyTwin token ciphertext (unknown format)")
        try:
            raw = _b64decode(payload)
        except (binascii.Error, ValueError):
            raise DecryptionError("not a SkyTwin token ciphertext (bad encoding)") from None
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        try:
            plaintext = self._aead.decrypt(nonce, sealed, _AAD_PREFIX + context.encode())
        except (InvalidTag, ValueError):
            raise DecryptionError(
                "token ciphertext did not decrypt: wrong SKYTWIN_SECRET_KEY, wrong context, "
                "or tampered data"
            ) from None
        return plaintext.decode()
