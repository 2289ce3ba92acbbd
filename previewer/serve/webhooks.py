"""Delivering results to a client's ``callback_url``: signing, the address policy, retries.

:func:`deliver` POSTs one JSON payload, retrying with exponential backoff, and reports what
happened. Every attempt checks the URL again (:func:`previewer.serve.netguard.check_url`:
DNS answers can change between attempts) and connects only to the addresses it checked;
redirects are not followed (a 3xx is a failed delivery).

What the receiver gets:

- **Body**: the payload as JSON (UTF-8, compact), exactly as FilePreviews posted its preview
  object: its published clients (the Laravel ``WebhookController``, wagtail-filepreviews'
  ``filepreviews_webhook`` view) read ``id``, ``status`` and ``user_data`` straight from the
  JSON body, so the body stays the plain object whatever secrets are configured.
- **JWT** (``WebhookSecrets.jwt_secret``, the FilePreviews app secret): header
  ``Authorization: Bearer <token>``, an HS256 JWT (PyJWT) with claims ``iss`` =
  ``"previewer"``, ``iat``, ``exp`` (``iat`` + 300 s), ``jti`` (the message id, as
  ``webhook-id``) and ``body_sha256`` (hex SHA-256 of the exact body bytes). A receiver checks
  the token with the secret, then the body's digest. Carrying the token in a header rather
  than replacing the body keeps existing FilePreviews receivers working unchanged.
- **Standard Webhooks** (``WebhookSecrets.standard_secret``, ``whsec_<base64 key>``): headers
  ``webhook-id`` (``msg_<hex>``, the same on every attempt so receivers can de-duplicate),
  ``webhook-timestamp`` (Unix seconds of the attempt) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), as the ``standardwebhooks`` package
  verifies.

Retries: up to ``attempts`` tries; after try ``n`` (from 0) it sleeps ``base_delay * 2**n``
times a random factor in [0.5, 1.0]. Connection failures, unresolvable hosts, timeouts, HTTP
5xx and 429 are retried; other statuses below 200 or from 300 up, and a refused address, end
delivery at once. Nothing logged or returned contains a secret, a query string or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets as random_secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpcore
import jwt
from jwt.warnings import InsecureKeyLengthWarning

from previewer.serve.netguard import (
    BlockedURLError,
    NetPolicy,
    UnresolvableHostError,
    check_url,
    open_pool,
    request_url,
)

__all__ = ["WebhookSecrets", "deliver", "deliver_sync", "signed_headers"]

log = logging.getLogger(__name__)

_USER_AGENT = b"previewer-webhooks"
_JWT_LIFETIME = 300
_RESPONSE_READ_LIMIT = 64 * 1024
_short_key_logged: list[bool] = []


@dataclass
class WebhookSecrets:
    """Secrets that sign webhook deliveries (either, both or neither).

    Attributes:
        jwt_secret: The app secret: an HS256 JWT in ``Authorization: Bearer`` covers the
            body's SHA-256 (FilePreviews style).
        standard_secret: A Standard Webhooks ``whsec_<base64>`` secret: ``webhook-id``,
            ``webhook-timestamp`` and ``webhook-signature`` headers.
    """

    jwt_secret: str | None = None
    standard_secret: str | None = None

    def __repr__(self) -> str:
        jwt_set = self.jwt_secret is not None
        standard_set = self.standard_secret is not None
        return f"WebhookSecrets(jwt_secret={jwt_set}, standard_secret={standard_set})"


def _standard_key(secret: str) -> bytes:
    text = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Standard Webhooks secret is not whsec_<base64>") from None


def signed_headers(
    body: bytes, *, secrets: WebhookSecrets, msg_id: str, timestamp: int
) -> list[tuple[str, str]]:
    """Return the signature headers for one attempt.

    Args:
        body: The exact body bytes.
        secrets: The configured secrets.
        msg_id: The message id (``msg_...``), the same on every attempt.
        timestamp: The attempt's Unix time in seconds.

    Returns:
        ``(name, value)`` pairs: the Standard Webhooks headers and/or ``Authorization``.

    Raises:
        ValueError: If the Standard Webhooks secret is not ``whsec_<base64>``.
    """
    headers: list[tuple[str, str]] = []
    if secrets.standard_secret is not None:
        key = _standard_key(secrets.standard_secret)
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        headers += [
            ("webhook-id", msg_id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", "v1," + base64.b64encode(digest).decode("ascii")),
        ]
    if secrets.jwt_secret is not None:
        claims = {
            "iss": "previewer",
            "iat": timestamp,
            "exp": timestamp + _JWT_LIFETIME,
            "jti": msg_id,
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        with warnings.catch_warnings():
            # PyJWT warns on every signing with a key under 32 bytes; the operator chose the
            # app secret, so say it once in the log instead of warning at each delivery.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            token = jwt.encode(claims, secrets.jwt_secret, algorithm="HS256")
        if len(secrets.jwt_secret.encode()) < 32 and not _short_key_logged:
            _short_key_logged.append(True)
            log.warning("the webhook JWT secret is shorter than 32 bytes (RFC 7518 3.2)")
        headers.append(("Authorization", f"Bearer {token}"))
    return headers


async def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secrets: WebhookSecrets,
    policy: NetPolicy,
    attempts: int = 4,
    base_delay: float = 1.0,
    on_attempt: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url``, signed, retrying transient failures.

    Args:
        url: The callback URL (http or https), checked against ``policy`` at every attempt.
        payload: A JSON-serialisable object.
        secrets: Which signatures to add.
        policy: Where requests may go; ``policy.timeout`` bounds each attempt.
        attempts: Most tries (at least 1).
        base_delay: Seconds before the second try; doubled after each further one (jittered).
        on_attempt: Called after each attempt with ``{"attempt": n (from 1), "status": int
            or None, "error": str or None, "at": ISO 8601 UTC time the attempt ended}``.

    Returns:
        ``{"state": "delivered" | "failed", "attempts": n, "last_status": int | None,
        "last_error": str | None}``.

    Raises:
        ValueError: If the Standard Webhooks secret is malformed.
        TypeError: If the payload is not JSON-serialisable.
    """
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if secrets.standard_secret is not None:
        _standard_key(secrets.standard_secret)  # fail before any attempt
    msg_id = "msg_" + random_secrets.token_hex(16)
    status: int | None = None
    error: str | None = None
    tries = max(1, attempts)
    made = 0
    for attempt in range(tries):
        made = attempt + 1
        status, error, retry = await _attempt(url, body, msg_id, secrets, policy)
        if on_attempt is not None:
            on_attempt(
                {
                    "attempt": made,
                    "status": status,
                    "error": error,
                    "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                }
            )
        if error is None:
            return {"state": "delivered", "attempts": made, "last_status": status,
                    "last_error": None}  # fmt: skip
        if not retry or made == tries:
            break
        await asyncio.sleep(base_delay * 2**attempt * random.uniform(0.5, 1.0))
    return {"state": "failed", "attempts": made, "last_status": status, "last_error": error}


def deliver_sync(url: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Run :func:`deliver` to completion (for code outside an event loop, such as a worker).

    Args:
        url: The callback URL.
        payload: A JSON-serialisable object.
        **kwargs: :func:`deliver`'s keyword arguments (``secrets`` and ``policy`` required).

    Returns:
        :func:`deliver`'s result.

    Raises:
        RuntimeError: If called from a running event loop (await :func:`deliver` there).
    """
    return asyncio.run(deliver(url, payload, **kwargs))


async def _attempt(
    url: str, body: bytes, msg_id: str, secrets: WebhookSecrets, policy: NetPolicy
) -> tuple[int | None, str | None, bool]:
    """Make one delivery attempt: ``(status, error or None, worth retrying)``."""
    try:
        target = await check_url(url, policy)
    except BlockedURLError as exc:
        log.warning("webhook refused: %s", exc)
        return None, f"callback URL refused: {exc}", False
    except UnresolvableHostError as exc:
        log.warning("webhook not delivered: %s", exc)
        return None, str(exc), True
    headers = [
        ("Host", target.host_header),
        ("User-Agent", _USER_AGENT.decode()),
        ("Content-Type", "application/json"),
        ("Accept", "*/*"),
        *signed_headers(body, secrets=secrets, msg_id=msg_id, timestamp=int(time.time())),
    ]
    if target.authorization is not None and secrets.jwt_secret is None:
        headers.append(("Authorization", target.authorization))
    timeouts = {k: policy.timeout for k in ("connect", "read", "write", "pool")}
    try:
        async with asyncio.timeout(policy.timeout), open_pool(target) as pool:
            async with pool.stream(
                b"POST",
                request_url(target),
                headers=[(k.encode(), v.encode()) for k, v in headers],
                content=body,
                extensions={"timeout": timeouts},
            ) as response:
                status = response.status
                read = 0
                async for chunk in response.aiter_stream():
                    read += len(chunk)
                    if read >= _RESPONSE_READ_LIMIT:
                        break
    except (TimeoutError, httpcore.TimeoutException):
        log.warning("webhook to %s timed out", target.origin)
        return None, f"{target.origin} did not answer within {policy.timeout:g} s", True
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        kind = type(exc).__name__
        log.warning("webhook to %s failed: %s", target.origin, kind)
        return None, f"could not deliver to {target.origin} ({kind})", True
    log.info("webhook to %s answered HTTP %d", target.origin, status)
    if 200 <= status < 300:
        return status, None, False
    retry = status >= 500 or status == 429
    return status, f"{target.origin} answered HTTP {status}", retry
