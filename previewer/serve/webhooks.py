"""Webhook delivery when a job ends (simple version).

This is the simple version: one plain JSON POST, no signature and no retries. The full
implementation (FilePreviews JWT bodies, Standard Webhooks signatures, retries with backoff)
replaces it with the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from previewer.serve.netguard import BlockedURLError, NetPolicy, check_url

__all__ = ["WebhookSecrets", "deliver"]


@dataclass
class WebhookSecrets:
    """Secrets that sign webhook bodies.

    Attributes:
        jwt_secret: FilePreviews style: the body is a JWT (HS256) signed with the app secret.
        standard_secret: A Standard Webhooks ``whsec_...`` secret.
    """

    jwt_secret: str | None = None
    standard_secret: str | None = None


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
    """POST ``payload`` to ``url``.

    Args:
        url: The callback URL.
        payload: The JSON body.
        secrets: Signing secrets (unused in this version).
        policy: What may be called.
        attempts: Attempts at most (one in this version).
        base_delay: Delay before the first retry (unused in this version).
        on_attempt: Called with the delivery state after each attempt.

    Returns:
        The delivery state ``{"state", "attempts", "last_status", "last_error"}``.
    """
    import httpx

    state: dict[str, Any] = {
        "state": "failed",
        "attempts": 1,
        "last_status": None,
        "last_error": None,
    }
    try:
        check_url(url, policy)
        async with httpx.AsyncClient(timeout=policy.timeout) as client:
            response = await client.post(url, json=payload)
        state["last_status"] = response.status_code
        if 200 <= response.status_code < 300:
            state["state"] = "delivered"
        else:
            state["last_error"] = f"HTTP {response.status_code}"
    except BlockedURLError as exc:
        state["last_error"] = str(exc)
    except httpx.HTTPError as exc:
        state["last_error"] = type(exc).__name__
    if on_attempt is not None:
        on_attempt(dict(state))
    return state
