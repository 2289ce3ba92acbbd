"""Signed result URLs: HMAC-SHA256 over the path and the expiry, with key rotation.

A URL carries ``kid`` (the key's id), ``exp`` (Unix seconds) and ``sig`` (hex HMAC of the
path, a newline and ``exp``). The first key signs; every key verifies, so a new key can be put
first while URLs signed with the old one stay valid until they expire.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlencode

__all__ = ["SignatureError", "Signer", "load_or_create_key", "parse_key"]


class SignatureError(Exception):
    """A signed URL that does not verify; the message says why (expired, tampered...)."""


def parse_key(spec: str) -> tuple[str, bytes]:
    """Parse ``ID:SECRET``.

    Args:
        spec: The key as given on the command line.

    Returns:
        ``(id, secret bytes)``.

    Raises:
        ValueError: If malformed (the message never repeats the secret).
    """
    kid, sep, secret = spec.partition(":")
    if not sep or not kid or not secret:
        raise ValueError("a signing key is ID:SECRET, both non-empty")
    if not kid.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a signing key's id is letters, digits, - and _ only, not {kid!r}")
    return kid, secret.encode()


def load_or_create_key(path: Path) -> tuple[str, bytes]:
    """The service's own signing key, kept in ``path`` (created once, mode 0600).

    Args:
        path: The key file.

    Returns:
        ``(id, secret)``.
    """
    try:
        return parse_key(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        pass
    spec = f"auto{secrets.token_hex(4)}:{secrets.token_urlsafe(32)}"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(spec + "\n")
    os.replace(tmp, path)
    return parse_key(spec)


class Signer:
    """Signs and verifies URL paths.

    Args:
        keys: ``(id, secret)`` pairs; the first signs, all verify.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._signing = keys[0]
        self._keys: Mapping[str, bytes] = dict(keys)

    @staticmethod
    def _mac(secret: bytes, path: str, exp: int) -> str:
        return hmac.new(secret, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, expires: int) -> str:
        """Return ``path`` with its signature query.

        Args:
            path: The URL path (``/v2/files/...``).
            expires: Unix time after which the URL is refused.

        Returns:
            ``path?kid=..&exp=..&sig=..``.
        """
        kid, secret = self._signing
        query = urlencode({"kid": kid, "exp": expires, "sig": self._mac(secret, path, expires)})
        return f"{path}?{query}"

    def verify(self, path: str, query: Mapping[str, str], *, now: float | None = None) -> None:
        """Check the signature of ``path``.

        Args:
            path: The URL path requested.
            query: Its query parameters.
            now: The time (default: now).

        Raises:
            SignatureError: If a part is missing, the key unknown, the signature wrong or
                the URL expired.
        """
        kid, exp, sig = query.get("kid"), query.get("exp"), query.get("sig")
        if not kid or not exp or not sig:
            raise SignatureError("the URL is not signed (kid, exp and sig are required)")
        secret = self._keys.get(kid)
        if secret is None:
            raise SignatureError("the URL is signed with an unknown key")
        try:
            expires = int(exp)
        except ValueError:
            raise SignatureError("the URL's expiry is not a number") from None
        if not hmac.compare_digest(self._mac(secret, path, expires), sig):
            raise SignatureError("the URL's signature does not match")
        if expires < (time.time() if now is None else now):
            raise SignatureError("the URL has expired")
