"""API keys: random, shown once, stored as SHA-256; looked up by their first characters and compared in
constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX_CHARS = 8
KEY_BYTES = 32


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(KEY_BYTES)


def new_key_id() -> str:
    """A key's public id (what ``collection keys`` lists and ``collection revoke`` takes)."""
    return secrets.token_hex(6)


def key_hash(key: str) -> str:
    """Hex SHA-256 of a key: what the store keeps."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of a key, stored in clear to find its row (they tell nothing about the rest)."""
    return key[:PREFIX_CHARS]


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())
