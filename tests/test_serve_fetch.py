"""URL input of the HTTP service: the address policy, one resolution, redirects, caps, errors.

Every server here is a real stdlib HTTP server on a loopback address (127.0.0.1 or 127.0.0.2);
a refused URL must not reach it at all (its accepted-connection count stays 0).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import time
from pathlib import Path

import pytest
from loopback_http import LoopServer, Reply, body_of, redirect, slow, status

from previewer.serve.fetch import Fetched, FetchError, fetch_url, fetch_url_sync, safe_filename
from previewer.serve.netguard import (
    BlockedURLError,
    NetPolicy,
    address_problem,
    check_url,
    parse_url,
)

DATA = bytes(range(256)) * 40  # 10 240 bytes
LOCAL1 = NetPolicy.from_allow(["127.0.0.1/32"], timeout=10.0)
LOCAL2 = NetPolicy.from_allow(["127.0.0.2/32"], timeout=10.0)


def fetch(url: str, dest: Path, policy: NetPolicy) -> Fetched:
    return asyncio.run(fetch_url(url, dest, policy))


def fetch_error(url: str, dest: Path, policy: NetPolicy) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, dest, policy)
    return info.value


@pytest.fixture(scope="module")
def server() -> LoopServer:
    with LoopServer("127.0.0.1") as srv:
        srv.routes.update(
            {
                "/file.pdf": body_of(DATA, "application/pdf; charset=binary"),
                "/named": body_of(
                    DATA, content_disposition='attachment; filename="../../etc/evil name.PDF"'
                ),
                "/named5987": body_of(
                    DATA, content_disposition="attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.docx"
                ),
                "/huge": lambda _req: Reply(200, [], b"x" * 100, length=10**12),
                "/endless": lambda _req: Reply(200, [], chunks=[b"y" * 8192] * 40),
                "/slow": slow(4096, 0.1),
                "/500": status(500),
                "/404": status(404),
                "/loop": redirect("/loop"),
                "/to-file": redirect("file:///etc/passwd"),
                "/nolocation": lambda _req: Reply(302, []),
            }
        )
        yield srv


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


def test_allowed_fetch_writes_the_file_under_a_fresh_name(server: LoopServer, dest: Path) -> None:
    got = fetch(server.url("/file.pdf"), dest, LOCAL1)
    assert got.path.parent == dest
    assert got.path.name.startswith("fetched-") and got.path.suffix == ".pdf"
    assert got.path.read_bytes() == DATA
    assert got.size == len(DATA)
    assert got.content_type == "application/pdf"
    assert got.filename == "file.pdf"
    assert sorted(p.name for p in dest.iterdir()) == [got.path.name]  # no partial file left
    request = server.requests[-1]
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["accept-encoding"] == "identity"


def test_content_disposition_name_is_reduced_to_a_basename(server: LoopServer, dest: Path) -> None:
    got = fetch(server.url("/named"), dest, LOCAL1)
    assert got.filename == "evil name.PDF"
    assert got.path.parent == dest and got.path.suffix == ".pdf"
    assert fetch(server.url("/named5987"), dest, LOCAL1).filename == "résumé.docx"
    assert not (dest.parent / "etc").exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../x.pdf", "x.pdf"),
        ("C:\\Users\\a\\b.doc", "b.doc"),
        ("..", "download"),
        ("", "download"),
        ("a\x00b\x1f.txt", "ab.txt"),
        ("  .hidden ", "hidden"),
        ("n" * 300 + ".pdf", "n" * 196 + ".pdf"),  # 200 characters, extension kept
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_userinfo_becomes_basic_auth_and_is_never_echoed(server: LoopServer, dest: Path) -> None:
    url = f"http://user:pa%40ss@127.0.0.1:{server.port}/file.pdf"
    fetch(url, dest, LOCAL1)
    expected = "Basic " + base64.b64encode(b"user:pa@ss").decode()
    assert server.requests[-1].headers["authorization"] == expected


def test_credentials_go_to_the_first_hop_only(dest: Path) -> None:
    with LoopServer("127.0.0.1") as srv:
        srv.routes["/start"] = redirect("/file")
        srv.routes["/file"] = body_of(DATA)
        got = fetch_url_sync(f"http://user:pw@127.0.0.1:{srv.port}/start", dest, LOCAL1)
        assert got.path.read_bytes() == DATA
        assert "authorization" in srv.requests[0].headers
        assert "authorization" not in srv.requests[1].headers


DENIED = [
    "http://127.0.0.1:{port}/file.pdf",
    "http://[::ffff:127.0.0.1]:{port}/file.pdf",
    "http://[::1]:{port}/file.pdf",
    "http://0x7f.1:{port}/file.pdf",
    "http://2130706433:{port}/file.pdf",
    "http://127.1:{port}/file.pdf",
    "http://0177.0.0.1:{port}/file.pdf",
    "http://127%2e0.0.1:{port}/file.pdf",
    "http://[2002:7f00:1::]:{port}/file.pdf",
    "http://[64:ff9b::7f00:1]:{port}/file.pdf",
    "http://[64:ff9b:1::7f00:1]:{port}/file.pdf",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/file.pdf",  # Teredo, client 127.0.0.1
    "http://[::127.0.0.1]:{port}/file.pdf",
    "http://[fe80::1]:{port}/file.pdf",
    "http://[fd00::1]:{port}/file.pdf",
    "http://169.254.169.254:{port}/latest/meta-data/",
    "http://localhost:{port}/file.pdf",
    "http://10.0.0.1:{port}/file.pdf",
    "http://100.64.0.1:{port}/file.pdf",
    "http://198.18.0.1:{port}/file.pdf",
    "http://0.0.0.0:{port}/file.pdf",
    "http://224.0.0.1:{port}/file.pdf",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_GET",
    "ftp://127.0.0.1:{port}/file.pdf",
    "http://127.0.0.1\\@example.com:{port}/",
    "http://[fe80::1%25lo]:{port}/",
    "http:///file.pdf",
]


@pytest.mark.parametrize("template", DENIED)
def test_denied_urls_are_refused_before_any_connection(
    server: LoopServer, dest: Path, template: str
) -> None:
    before = server.connections
    err = fetch_error(template.format(port=server.port), dest, NetPolicy(timeout=5.0))
    assert err.status == 400
    assert "refused" in str(err)
    assert server.connections == before
    assert list(dest.iterdir()) == []


def test_refusal_names_the_kind_of_address_not_a_resolved_one(dest: Path) -> None:
    err = fetch_error("http://localhost/x", dest, NetPolicy())
    assert "loopback" in str(err) and "127.0.0.1" not in str(err)
    err = fetch_error("http://[::ffff:127.0.0.1]/x", dest, NetPolicy())
    assert "IPv4-mapped" in str(err) and "embedding 127.0.0.1" in str(err)
    err = fetch_error("http://[2002:a00:1::]/x", dest, NetPolicy())
    assert "6to4" in str(err) and "10.0.0.1" in str(err) and "private" in str(err)
    err = fetch_error("gopher://example.com/", dest, NetPolicy())
    assert "scheme 'gopher' is not allowed" in str(err)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"],
)
def test_global_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), NetPolicy()) is None


def test_allow_is_an_exact_network_match() -> None:
    policy = NetPolicy.from_allow(["127.0.0.1", "10.0.0.0/8"])
    assert address_problem(ipaddress.ip_address("127.0.0.1"), policy) is None
    assert address_problem(ipaddress.ip_address("10.9.8.7"), policy) is None
    assert address_problem(ipaddress.ip_address("127.0.0.2"), policy) == "a loopback address"
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")  # not the allowed address as resolved
    assert address_problem(mapped, policy) is not None
    with pytest.raises(ValueError, match="not valid"):
        NetPolicy.from_allow(["10.0.0.1/8"])


def test_numeric_hosts_read_like_the_resolver() -> None:
    for host in ("2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001"):
        assert parse_url(f"http://{host}/").addresses == ("127.0.0.1",), host
        # what the C resolver itself makes of the same text
        assert socket.getaddrinfo(host, 80, socket.AF_INET)[0][4][0] == "127.0.0.1"
    with pytest.raises(BlockedURLError, match="malformed numeric"):
        parse_url("http://1.2.3.4.5/")


def test_redirect_to_a_denied_host_is_refused(dest: Path) -> None:
    with LoopServer("127.0.0.1") as inner, LoopServer("127.0.0.2") as outer:
        inner.routes["/secret"] = body_of(b"internal")
        outer.routes["/go"] = redirect(inner.url("/secret"))
        outer.routes["/go-mapped"] = redirect(f"http://[::ffff:127.0.0.1]:{inner.port}/secret")
        outer.routes["/ok"] = redirect("/file", 301)
        outer.routes["/file"] = body_of(DATA)
        for path in ("/go", "/go-mapped"):
            err = fetch_error(outer.url(path), dest, LOCAL2)
            assert err.status == 400 and "redirect refused" in str(err)
        assert inner.connections == 0
        assert fetch(outer.url("/ok"), dest, LOCAL2).path.read_bytes() == DATA
        assert [r.path for r in outer.requests] == ["/go", "/go-mapped", "/ok", "/file"]
    assert len(list(dest.iterdir())) == 1


def test_redirect_limit_and_bad_redirects(server: LoopServer, dest: Path) -> None:
    before = len(server.requests)
    err = fetch_error(
        server.url("/loop"), dest, NetPolicy.from_allow(["127.0.0.1"], max_redirects=3)
    )
    assert err.status == 502 and "more than 3 redirects" in str(err)
    assert len(server.requests) - before == 4  # the URL and 3 redirects
    err = fetch_error(server.url("/to-file"), dest, LOCAL1)
    assert err.status == 400 and "scheme 'file'" in str(err)
    err = fetch_error(server.url("/nolocation"), dest, LOCAL1)
    assert err.status == 502 and "without Location" in str(err)


def same_port_pair() -> tuple[LoopServer, LoopServer]:
    """Servers on 127.0.0.2 and 127.0.0.1 sharing one port (retrying if that port is taken)."""
    for _ in range(20):
        first = LoopServer("127.0.0.2")
        try:
            return first, LoopServer("127.0.0.1", first.port)
        except OSError:
            first.close()
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


def test_dns_rebinding_cannot_change_where_the_connection_goes(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resolver that answers an allowed address first and a denied one afterwards: the
    # fetch must resolve once and connect to the address it checked.
    checked, rebound = same_port_pair()
    with checked, rebound:
        checked.routes["/file"] = body_of(b"from the checked address")
        rebound.routes["/file"] = body_of(b"from the rebound address")
        real = socket.getaddrinfo
        calls: list[str] = []

        def resolver(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
            if host != "rebind.test":
                return real(host, port, *args, **kwargs)
            calls.append(host)
            address = "127.0.0.2" if len(calls) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        got = fetch(f"http://rebind.test:{checked.port}/file", dest, LOCAL2)
        assert got.path.read_bytes() == b"from the checked address"
        assert calls == ["rebind.test"]
        assert rebound.connections == 0
        assert checked.requests[-1].headers["host"] == f"rebind.test:{checked.port}"


def test_a_name_resolving_to_any_denied_address_is_refused(
    server: LoopServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "mixed.test":
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    before = server.connections
    err = fetch_error(f"http://mixed.test:{server.port}/file.pdf", dest, LOCAL1)
    assert err.status == 400 and "private" in str(err) and "10.1.2.3" not in str(err)
    assert server.connections == before


def test_unresolvable_host_is_a_bad_url(dest: Path) -> None:
    err = fetch_error("http://no-such-host.invalid/x", dest, NetPolicy(timeout=10.0))
    assert err.status == 400 and "does not resolve" in str(err)


def test_announced_size_over_the_cap_is_refused_before_reading(
    server: LoopServer, dest: Path
) -> None:
    err = fetch_error(server.url("/huge"), dest, LOCAL1)
    assert err.status == 413 and str(10**12) in str(err)
    assert list(dest.iterdir()) == []


def test_streamed_size_over_the_cap_aborts_and_leaves_nothing(
    server: LoopServer, dest: Path
) -> None:
    policy = NetPolicy.from_allow(["127.0.0.1/32"], max_bytes=100_000, timeout=10.0)
    err = fetch_error(server.url("/endless"), dest, policy)  # 327 680 bytes, no Content-Length
    assert err.status == 413 and "100000" in str(err)
    assert list(dest.iterdir()) == []
    small = NetPolicy.from_allow(["127.0.0.1/32"], max_bytes=len(DATA))
    assert fetch(server.url("/file.pdf"), dest, small).size == len(DATA)  # exactly the cap is fine


def test_total_time_is_capped(server: LoopServer, dest: Path) -> None:
    policy = NetPolicy.from_allow(["127.0.0.1/32"], timeout=0.5)
    start = time.monotonic()
    err = fetch_error(server.url("/slow"), dest, policy)  # 256 chunks, 0.1 s apart
    assert err.status == 504
    assert time.monotonic() - start < 3
    assert list(dest.iterdir()) == []


def test_upstream_errors_are_502_with_the_status(
    server: LoopServer, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    err = fetch_error(server.url("/500?token=SECRET-TOKEN"), dest, LOCAL1)
    assert err.status == 502 and "HTTP 500" in str(err)
    assert "SECRET-TOKEN" not in str(err) and "SECRET-TOKEN" not in caplog.text
    assert f"127.0.0.1:{server.port}" in caplog.text  # log lines name the host
    assert fetch_error(server.url("/404"), dest, LOCAL1).status == 502
    assert list(dest.iterdir()) == []


def test_connection_refused_is_502(dest: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        err = fetch_error(f"http://127.0.0.1:{port}/x", dest, LOCAL1)
    assert err.status == 502 and "failed" in str(err)


def test_check_url_returns_the_checked_addresses() -> None:
    target = asyncio.run(
        check_url(
            "http://LOCALHOST:8080/a b/ü?q=1#frag".replace(" ", "%20"),
            NetPolicy.from_allow(["127.0.0.1", "::1"]),
        )
    )
    assert target.host == "localhost" and target.port == 8080
    assert set(target.addresses) <= {"127.0.0.1", "::1"} and target.addresses
    assert target.target == "/a%20b/%C3%BC?q=1"
