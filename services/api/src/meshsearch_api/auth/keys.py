"""The form of an API key, and its slow hash.

A key reads `msk_<key id>_<secret>`: the key id (16 hex digits) is public and finds the key's
row; the secret (32 random bytes, URL-safe base64) is what proves possession. The server keeps
only an argon2id hash of the whole key, so a stolen database gives no usable key; verifying
costs tens of milliseconds of CPU, which the authenticator's cache pays once per key.
"""

from __future__ import annotations

import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from meshsearch_common.identifiers import KEY_ID_FORM

PREFIX = "msk_"
KEY_PATTERN = re.compile(rf"^msk_({KEY_ID_FORM})_([A-Za-z0-9_-]{{43}})$")
MAX_CREDENTIAL_CHARS = 512  # longer authorization values are refused before any parsing

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" profile


def new_key() -> tuple[str, str]:
    """A fresh (key id, whole key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, or None."""
    match = KEY_PATTERN.match(key)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return _hasher.hash(key)


def verify_key(key_hash: str, key: str) -> bool:
    """Whether `key` matches `key_hash` (slow: run it off the event loop)."""
    try:
        return _hasher.verify(key_hash, key)
    except (VerificationError, InvalidHashError):
        return False
