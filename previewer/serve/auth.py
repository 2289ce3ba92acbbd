"""API credentials: the tokens file, HTTP Basic parsing, constant-time checks.

The tokens file holds one ``key:secret`` per line (blank lines and ``#`` comments ignored), or
a JSON object ``{"key": "secret", ...}``. The key names the tenant: a job is visible only to
the key that created it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ANONYMOUS", "TokenError", "Tokens", "basic_credentials", "load_tokens"]

ANONYMOUS = ""
"""The tenant of requests to a service that runs without tokens (loopback only)."""


class TokenError(ValueError):
    """The tokens file cannot be read or parsed (the message says where, never a secret)."""


class Tokens:
    """The accepted ``key -> secret`` pairs.

    Args:
        pairs: The credentials.
    """

    def __init__(self, pairs: Mapping[str, str]) -> None:
        self._pairs = {k.encode(): v.encode() for k, v in pairs.items()}

    def __len__(self) -> int:
        return len(self._pairs)

    def secret_of(self, key: str) -> str | None:
        """The secret of ``key`` (to sign its webhooks), or None for an unknown key."""
        secret = self._pairs.get(key.encode())
        return None if secret is None else secret.decode()

    def check(self, key: str, secret: str) -> bool:
        """Whether ``key:secret`` is a valid pair, compared in constant time.

        Args:
            key: The API key.
            secret: The API secret.

        Returns:
            True when valid.
        """
        wanted = self._pairs.get(key.encode())
        # Compare against something of the right kind even for an unknown key, so the
        # answer takes as long whether the key exists or not.
        ok = hmac.compare_digest(secret.encode(), wanted if wanted is not None else b"\0" * 32)
        return ok and wanted is not None


def load_tokens(path: Path) -> Tokens:
    """Read a tokens file (see the module docstring).

    Args:
        path: The file.

    Returns:
        The tokens.

    Raises:
        TokenError: If unreadable, malformed or empty.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the tokens file {path}: {exc.__class__.__name__}") from exc
    pairs: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TokenError(f"{path}: not valid JSON (line {exc.lineno})") from exc
        if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()):
            raise TokenError(f'{path}: expected {{"key": "secret", ...}} with non-empty strings')
        pairs = dict(data)
    else:
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, secret = line.partition(":")
            if not sep or not key.strip() or not secret.strip():
                raise TokenError(f"{path}, line {number}: expected key:secret")
            pairs[key.strip()] = secret.strip()
    if not pairs:
        raise TokenError(f"{path}: no credentials in the file")
    return Tokens(pairs)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """Parse an ``Authorization: Basic`` header.

    Args:
        header: The header's value.

    Returns:
        ``(key, secret)``, or None when absent or malformed.
    """
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None
