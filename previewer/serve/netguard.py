"""Network policy for URLs the service fetches or calls (simple version).

This is the simple version: it refuses non-HTTP schemes and addresses that are not public
unless an allowed network contains them. The SSRF-safe implementation (resolution pinned per
connection, redirects re-checked) replaces it with the same interface.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BlockedURLError", "NetPolicy", "check_url"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedURLError(Exception):
    """A URL the policy refuses; the message says why (scheme, private address...)."""


@dataclass(frozen=True)
class NetPolicy:
    """What the service may fetch or call.

    Attributes:
        allow: Networks allowed despite the deny rules (private, loopback...).
        max_bytes: Largest body fetched.
        timeout: Seconds for a whole fetch or call.
        max_redirects: Redirects followed.
    """

    allow: tuple[Network, ...] = ()
    max_bytes: int = 100 * 2**20
    timeout: float = 30.0
    max_redirects: int = 5

    @classmethod
    def from_allow(cls, specs: Sequence[str], **kw: Any) -> NetPolicy:
        """Build a policy allowing the networks ``specs`` (``"127.0.0.1"``, ``"10.0.0.0/8"``).

        Args:
            specs: Addresses or CIDR networks.
            **kw: The other fields.

        Returns:
            The policy.

        Raises:
            ValueError: If a spec is not an address or network.
        """
        return cls(allow=tuple(ipaddress.ip_network(s, strict=False) for s in specs), **kw)


def check_url(url: str, policy: NetPolicy) -> None:
    """Refuse ``url`` unless it is http(s) to a public address or an allowed network.

    Args:
        url: The URL.
        policy: The policy.

    Raises:
        BlockedURLError: If refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedURLError(f"only http and https URLs are fetched, not {parts.scheme or 'none'}")
    host = parts.hostname
    if not host:
        raise BlockedURLError("the URL has no host")
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise BlockedURLError(f"the host {host} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in net for net in policy.allow):
            continue
        if not address.is_global:
            raise BlockedURLError(f"the host {host} is a non-public address ({address})")
