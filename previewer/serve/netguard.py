"""Outbound-request guard of the HTTP service: which URLs it may fetch or call back, and how.

The service makes requests on a client's behalf twice: it downloads a file given by URL and it
posts results to a ``callback_url``. Both are server-side request forgery holes unless every
request goes only where a policy allows. This module owns that decision and the one way to
connect that keeps it:

- :func:`check_url` parses a URL strictly (http/https only, no control characters or
  backslashes, port range, IPv6 literals without zone ids), reads numeric hosts the way the C
  resolver does (``2130706433``, ``0x7f.1``, ``127.1`` and ``0177.0.0.1`` are all 127.0.0.1),
  resolves a name **once** (``getaddrinfo`` in a thread) and checks **every** address returned.
- :func:`address_problem` is the deny-by-default rule: only global unicast addresses pass;
  loopback, private, link-local, CGNAT, benchmarking, documentation, multicast, reserved,
  IPv4-mapped/compatible, 6to4, Teredo, NAT64, ULA and site-local addresses are refused, with
  the embedded IPv4 address of a transition address named in the reason. Networks in
  :attr:`NetPolicy.allow` are exempt when they contain the address exactly as resolved.
- :func:`open_pool` gives an httpcore connection pool whose network backend connects only to
  the checked addresses of that one :class:`Target`, never resolving the name again.

Why httpcore with a pinned network backend: the request keeps the original host name for the
``Host`` header, TLS SNI and certificate verification (httpcore passes the URL's host as
``server_hostname``), while the TCP connection goes to an address that was checked, so a DNS
answer that changes between check and connect (rebinding) cannot redirect it. httpcore is what
httpx runs on, parses HTTP/1.1 robustly (chunked bodies, keep-alive, TLS), and unlike an httpx
client it reads no proxy variables from the environment (a proxy would resolve the name itself).
Redirects are not followed by httpcore; callers follow them hop by hop through
:func:`check_url` again.

Messages name the host and the kind of address, never the resolved address of a name (that
would make the service an oracle for internal DNS) and never a query string or credentials.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpcore

__all__ = [
    "BlockedURLError",
    "NetPolicy",
    "Target",
    "UnresolvableHostError",
    "address_problem",
    "check_url",
    "open_pool",
    "parse_url",
    "request_url",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Special-purpose IPv4 ranges (IANA registry, RFC 6890 and successors), most specific first.
_DENY_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_V4("10.0.0.0/8"), "a private (RFC 1918) address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT (RFC 6598) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("172.16.0.0/12"), "a private (RFC 1918) address"),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "a private (RFC 1918) address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)

# Special-purpose IPv6 ranges, most specific first; anything outside 2000::/3 is refused too.
_DENY_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("::ffff:0:0/96"), "an IPv4-mapped address"),
    (_V6("::/96"), "an IPv4-compatible address"),
    (_V6("64:ff9b::/96"), "a NAT64 address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001::/32"), "a Teredo address"),
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("2001::/23"), "an IETF protocol assignment address"),
    (_V6("2002::/16"), "a 6to4 address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("5f00::/16"), "a segment-routing (SRv6) address"),
    (_V6("fc00::/7"), "a unique local (ULA) address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_][a-z0-9_-]{0,62})*\.?")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
# Characters a request target may carry unescaped (RFC 3986 pchar, "/", "?", and "%").
_TARGET_SAFE = "/?%:@!$&'()*+,;=-._~"


class BlockedURLError(Exception):
    """A URL the policy does not allow: a bad scheme or form, or a refused address.

    The message says why (``"scheme 'file' is not allowed"``, ``"host 'x' resolves to a
    loopback address"``); it never contains a path on this server, a query string or
    credentials.
    """


class UnresolvableHostError(Exception):
    """A host name the resolver could not resolve (possibly a passing failure)."""


@dataclass(frozen=True)
class NetPolicy:
    """What outbound requests may reach, and how much they may take.

    Attributes:
        allow: Networks allowed despite the deny rules (an address is exempt when one of these
            contains it exactly as resolved; tests use ``127.0.0.1/32``).
        max_bytes: Largest body a fetch may download.
        timeout: Seconds a whole fetch (all redirects) or one webhook attempt may take.
        max_redirects: Redirects a fetch follows before failing.
    """

    allow: tuple[IPNetwork, ...] = ()
    max_bytes: int = 100 * 2**20
    timeout: float = 30.0
    max_redirects: int = 5

    @classmethod
    def from_allow(cls, specs: Sequence[str], **kw: typing.Any) -> NetPolicy:
        """Build a policy from textual networks.

        Args:
            specs: Addresses or networks such as ``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"::1"``.
            **kw: The other fields (``max_bytes``, ``timeout``, ``max_redirects``).

        Returns:
            The policy.

        Raises:
            ValueError: If a spec is not an address or network (host bits set included).
        """
        allow: list[IPNetwork] = []
        for spec in specs:
            try:
                allow.append(ipaddress.ip_network(spec.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"allowed network {spec!r} is not valid: {exc}") from exc
        return cls(allow=tuple(allow), **kw)


@dataclass(frozen=True)
class Target:
    """One checked request destination.

    Attributes:
        scheme: ``"http"`` or ``"https"``.
        host: The host as the request names it (lower-case, IDNA-encoded; an IPv6 literal
            without brackets); used for SNI and certificate checks.
        port: The TCP port.
        target: The request target (path and query, percent-encoded), never empty.
        addresses: The checked addresses the connection may go to, in resolver order.
        authorization: A ``Basic`` header value built from the URL's userinfo, if any.
    """

    scheme: str
    host: str
    port: int
    target: str
    addresses: tuple[str, ...] = ()
    authorization: str | None = None

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (brackets for IPv6, port when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            return f"{host}:{self.port}"
        return host

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: how logs and messages name the destination."""
        return f"{self.scheme}://{self.host_header}"

    def url(self) -> str:
        """The URL without credentials (for resolving relative redirects)."""
        return f"{self.origin}{self.target}"


def address_problem(address: IPAddress, policy: NetPolicy) -> str | None:
    """Say why an address may not be reached, or ``None`` if it may.

    Args:
        address: A resolved or literal address.
        policy: Its ``allow`` networks exempt the addresses they contain.

    Returns:
        A phrase such as ``"a loopback address"`` or ``"a 6to4 address embedding 127.0.0.1
        (a loopback address)"``, or ``None``.
    """
    if any(address.version == net.version and address in net for net in policy.allow):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        for net4, label4 in _DENY_V4:
            if address in net4:
                return label4
        return None if address.is_global else "a non-global address"
    plain = ipaddress.IPv6Address(int(address))  # drop any zone id before matching
    for net, label in _DENY_V6:
        if plain in net:
            embedded = _embedded_v4(plain, net)
            if embedded is not None:
                inner = address_problem(embedded, NetPolicy())
                if inner is not None:
                    return f"{label} embedding {embedded} ({inner})"
                return f"{label} embedding {embedded}"
            return label
    if plain not in _GLOBAL_UNICAST_V6:
        return "a reserved IPv6 address"
    return None


def _embedded_v4(
    address: ipaddress.IPv6Address, net: ipaddress.IPv6Network
) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if net.prefixlen == 96 and int(address) > 1:  # IPv4-compatible and NAT64 (last 32 bits)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if net == _V6("64:ff9b:1::/48"):  # RFC 8215 local NAT64 with a /96 prefix
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_url(url: str) -> Target:
    """Parse and check a URL's form, without resolving anything.

    A numeric host is read as the C resolver reads it (``inet_aton``: decimal, octal, hex and
    short forms) and its address is returned in :attr:`Target.addresses` unchecked.

    Args:
        url: An absolute http or https URL.

    Returns:
        The target; ``addresses`` holds the literal address of a numeric host, else is empty.

    Raises:
        BlockedURLError: If the URL is not an http(s) URL of an acceptable form.
    """
    if not isinstance(url, str) or not url:
        raise BlockedURLError("the URL is empty")
    if len(url) > 8192:
        raise BlockedURLError("the URL is longer than 8192 characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise BlockedURLError("the URL contains whitespace, a control character or a backslash")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BlockedURLError("the URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = scheme or "(none)"
        raise BlockedURLError(f"scheme {shown!r} is not allowed: only http and https URLs")
    netloc = parts.netloc
    if not netloc:
        raise BlockedURLError("the URL has no host")
    authorization = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        raw = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode("ascii")
    host, port = _split_host_port(netloc, scheme)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    target = quote(target, safe=_TARGET_SAFE)
    literal = _literal_address(host)
    addresses = (str(literal),) if literal is not None else ()
    if literal is not None and literal.version == 4:
        host = str(literal)  # "0x7f.1" is requested as what it means
    return Target(scheme, host, port, target, addresses, authorization)


def _split_host_port(netloc: str, scheme: str) -> tuple[str, int]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise BlockedURLError("the URL has an unterminated IPv6 literal")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if "%" in host:
            raise BlockedURLError("IPv6 zone identifiers are not allowed")
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise BlockedURLError("the URL has a malformed IPv6 literal") from None
    else:
        host, colon, port_text = netloc.rpartition(":")
        if not colon:
            host, port_text = netloc, ""
        rest = colon + port_text
        host = _host_name(host)
    if rest and not rest.startswith(":"):
        raise BlockedURLError("the URL has a malformed host")
    port_text = rest[1:]
    if not port_text:
        return host, _DEFAULT_PORTS[scheme]
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BlockedURLError("the URL has an invalid port")
    return host, int(port_text)


def _host_name(host: str) -> str:
    if not host:
        raise BlockedURLError("the URL has no host")
    host = unquote(host).lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BlockedURLError("the URL's host is not a valid internationalised name") from None
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        raise BlockedURLError("the URL's host is not a valid host name")
    return host


def _literal_address(host: str) -> IPAddress | None:
    """Return the address a numeric host means to the resolver, or None for a name."""
    if ":" in host:
        return ipaddress.IPv6Address(host)
    labels = host.rstrip(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None  # a name (WHATWG: a host is numeric when its last label is a number)
    try:
        packed = socket.inet_aton(host.rstrip("."))
    except OSError:
        raise BlockedURLError("the URL's host is a malformed numeric address") from None
    return ipaddress.IPv4Address(packed)


async def check_url(url: str, policy: NetPolicy) -> Target:
    """Parse a URL, resolve its host once and check every address.

    Args:
        url: An absolute http or https URL.
        policy: The networks exempt from the deny rules.

    Returns:
        The target, its ``addresses`` being the checked ones a connection may use.

    Raises:
        BlockedURLError: If the URL's form, or any address its host resolves to, is refused.
        UnresolvableHostError: If the host name does not resolve.
    """
    target = parse_url(url)
    if target.addresses:
        address = ipaddress.ip_address(target.addresses[0])
        problem = address_problem(address, policy)
        if problem is not None:
            raise BlockedURLError(f"address {address} is {problem}, which is not allowed")
        return target
    addresses = await _resolve(target.host, target.port)
    for text in addresses:
        problem = address_problem(ipaddress.ip_address(text), policy)
        if problem is not None:
            raise BlockedURLError(
                f"host {target.host!r} resolves to {problem}, which is not allowed"
            )
    return Target(
        target.scheme, target.host, target.port, target.target, addresses, target.authorization
    )


async def _resolve(host: str, port: int) -> tuple[str, ...]:
    try:
        infos = await asyncio.to_thread(
            socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHostError(f"host {host!r} does not resolve") from exc
    found: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            text = f"{text.split('%')[0]}%{sockaddr[3]}"
        if text not in found:
            found.append(text)
    if not found:
        raise UnresolvableHostError(f"host {host!r} has no IPv4 or IPv6 address")
    return tuple(found)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to one target's checked addresses."""

    def __init__(self, target: Target) -> None:
        if not target.addresses:
            raise ValueError("a target must be checked before connecting")
        self._target = target
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host != self._target.host or port != self._target.port:
            raise httpcore.ConnectError("refused to connect to an origin that was not checked")
        error: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._target.addresses:
            # An address literal: anyio connects to it without resolving anything.
            ipaddress.ip_address(address)
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def open_pool(target: Target) -> httpcore.AsyncConnectionPool:
    """Return a connection pool that reaches only ``target``'s checked addresses.

    Use it as an async context manager, for requests to this target only (the pool refuses
    any other origin). TLS verifies the certificate against ``target.host``.

    Args:
        target: A target returned by :func:`check_url`.

    Returns:
        A fresh pool: HTTP/1.1, no connection retries, no proxy.
    """
    return httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context() if target.scheme == "https" else None,
        max_connections=1,
        retries=0,
        http1=True,
        http2=False,
        network_backend=_PinnedBackend(target),
    )


def request_url(target: Target) -> httpcore.URL:
    """The httpcore URL of a target (its host as checked, its port, its request target)."""
    return httpcore.URL(
        scheme=target.scheme.encode("ascii"),
        host=target.host.encode("ascii"),
        port=target.port,
        target=target.target.encode("ascii"),
    )
