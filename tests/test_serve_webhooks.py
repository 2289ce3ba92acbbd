"""Webhook delivery of the HTTP service: signatures checked by real verifiers, retries, policy.

The receiver is a real stdlib HTTP server on 127.0.0.1; Standard Webhooks signatures are
verified with the ``standardwebhooks`` package and the JWT with PyJWT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
import time
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from loopback_http import LoopServer, Recorded, Reply, status
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from previewer.serve.netguard import NetPolicy
from previewer.serve.webhooks import WebhookSecrets, deliver, deliver_sync

STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32byt").decode()
JWT_SECRET = "filepreviews-app-secret-for-tests"
PAYLOAD = {
    "id": "42764e04-9094-467c-96b3-49d31ff4423d",
    "status": "success",
    "user_data": {"document_id": 7, "note": "é"},
    "thumbnails": [{"page": 1, "size": {"width": 200, "height": 150}}],
}
LOCAL = NetPolicy.from_allow(["127.0.0.1/32"], timeout=5.0)
BOTH = WebhookSecrets(jwt_secret=JWT_SECRET, standard_secret=STANDARD_SECRET)


def run_deliver(url: str, *, secrets: WebhookSecrets = BOTH, policy: NetPolicy = LOCAL,
                attempts: int = 4, log: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    return asyncio.run(
        deliver(
            url,
            PAYLOAD,
            secrets=secrets,
            policy=policy,
            attempts=attempts,
            base_delay=0.01,
            on_attempt=None if log is None else log.append,
        )  # fmt: skip
    )


def counting(*codes: int):  # type: ignore[no-untyped-def]
    """A route answering the given statuses in turn, then 200."""
    seen: list[int] = []

    def route(_req: Recorded) -> Reply:
        code = codes[len(seen)] if len(seen) < len(codes) else 200
        seen.append(code)
        return Reply(code, [], b"ok")

    return route


@pytest.fixture(scope="module")
def receiver() -> LoopServer:
    with LoopServer("127.0.0.1") as srv:
        srv.routes["/hook"] = lambda _req: Reply(204)
        srv.routes["/always500"] = status(500)
        srv.routes["/404"] = status(404)
        srv.routes["/moved"] = lambda _req: Reply(301, [("Location", "/hook")])
        yield srv


def last(receiver: LoopServer, path: str) -> Recorded:
    return [r for r in receiver.requests if r.path.startswith(path)][-1]


def test_delivery_is_signed_and_verifies(receiver: LoopServer) -> None:
    attempts: list[dict[str, Any]] = []
    result = run_deliver(receiver.url("/hook?source=test"), log=attempts)
    assert result == {"state": "delivered", "attempts": 1, "last_status": 204, "last_error": None}
    assert [a["status"] for a in attempts] == [204] and attempts[0]["error"] is None
    assert attempts[0]["attempt"] == 1 and attempts[0]["at"].endswith("+00:00")
    req = last(receiver, "/hook")
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    # the body is the plain payload, as FilePreviews receivers read it
    assert json.loads(req.body) == PAYLOAD
    # Standard Webhooks: the real package verifies id, timestamp and signature
    assert Webhook(STANDARD_SECRET).verify(req.body, req.headers) == PAYLOAD
    assert req.headers["webhook-id"].startswith("msg_")
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    # JWT: HS256 with the app secret, covering the body's digest
    scheme, token = req.headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer="previewer")
    assert claims["body_sha256"] == hashlib.sha256(req.body).hexdigest()
    assert claims["jti"] == req.headers["webhook-id"]
    assert claims["exp"] > time.time()


def test_tampering_fails_verification(receiver: LoopServer) -> None:
    run_deliver(receiver.url("/hook"))
    req = last(receiver, "/hook")
    headers = dict(req.headers)
    version, signature = headers["webhook-signature"].split(",", 1)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(WebhookVerificationError):
        Webhook(STANDARD_SECRET).verify(
            req.body, {**headers, "webhook-signature": f"{version},{flipped}"}
        )
    tampered_body = req.body.replace(b"success", b"failure")
    with pytest.raises(WebhookVerificationError):
        Webhook(STANDARD_SECRET).verify(tampered_body, headers)
    other = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(req.body, headers)
    token = headers["authorization"].split(" ", 1)[1]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "a-wrong-secret-of-more-than-32-bytes", algorithms=["HS256"])
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["body_sha256"] != hashlib.sha256(tampered_body).hexdigest()


def test_unsigned_delivery_has_no_signature_headers(receiver: LoopServer) -> None:
    assert run_deliver(receiver.url("/hook"), secrets=WebhookSecrets())["state"] == "delivered"
    req = last(receiver, "/hook")
    assert "webhook-signature" not in req.headers and "authorization" not in req.headers
    assert json.loads(req.body) == PAYLOAD


def test_retries_until_delivered(receiver: LoopServer) -> None:
    receiver.routes["/flaky"] = counting(500, 500)
    attempts: list[dict[str, Any]] = []
    result = run_deliver(receiver.url("/flaky"), log=attempts)
    assert result == {"state": "delivered", "attempts": 3, "last_status": 200, "last_error": None}
    assert [a["status"] for a in attempts] == [500, 500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert "HTTP 500" in attempts[0]["error"]
    sent = [r for r in receiver.requests if r.path == "/flaky"]
    assert len(sent) == 3
    assert len({r.headers["webhook-id"] for r in sent}) == 1  # one message, retried
    for req in sent:
        assert Webhook(STANDARD_SECRET).verify(req.body, req.headers) == PAYLOAD


def test_429_is_retried(receiver: LoopServer) -> None:
    receiver.routes["/busy"] = counting(429)
    result = run_deliver(receiver.url("/busy"))
    assert result["state"] == "delivered" and result["attempts"] == 2


def test_always_500_fails_after_four_attempts(receiver: LoopServer) -> None:
    before = len([r for r in receiver.requests if r.path == "/always500"])
    attempts: list[dict[str, Any]] = []
    result = run_deliver(receiver.url("/always500"), log=attempts)
    assert result["state"] == "failed" and result["attempts"] == 4
    assert result["last_status"] == 500 and "HTTP 500" in result["last_error"]
    assert len(attempts) == 4
    assert len([r for r in receiver.requests if r.path == "/always500"]) - before == 4


def test_backoff_grows(receiver: LoopServer) -> None:
    stamps: list[float] = []
    asyncio.run(
        deliver(
            receiver.url("/always500"),
            PAYLOAD,
            secrets=BOTH,
            policy=LOCAL,
            attempts=4,
            base_delay=0.1,
            on_attempt=lambda _a: stamps.append(time.monotonic()),
        )  # fmt: skip
    )
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # base_delay * 2**n times a factor in [0.5, 1]: 0.05-0.1, 0.1-0.2, 0.2-0.4 s
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    assert sum(gaps) < 2.0


@pytest.mark.parametrize(("path", "code"), [("/404", 404), ("/moved", 301)])
def test_other_statuses_are_not_retried(receiver: LoopServer, path: str, code: int) -> None:
    result = run_deliver(receiver.url(path))
    assert result["state"] == "failed" and result["attempts"] == 1
    assert result["last_status"] == code


def test_connection_failures_are_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening
        attempts: list[dict[str, Any]] = []
        result = run_deliver(f"http://127.0.0.1:{port}/hook", log=attempts)
    assert result["state"] == "failed" and result["attempts"] == 4
    assert result["last_status"] is None and "could not deliver" in result["last_error"]
    assert all(a["status"] is None and a["error"] for a in attempts)


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/hook",
        "http://localhost:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://2130706433:{port}/hook",
        "file:///etc/passwd",
    ],  # fmt: skip
)
def test_denied_callback_fails_without_any_connection(receiver: LoopServer, template: str) -> None:
    before = receiver.connections
    attempts: list[dict[str, Any]] = []
    result = run_deliver(
        template.format(port=receiver.port), policy=NetPolicy(timeout=5.0), log=attempts
    )
    assert result["state"] == "failed" and result["attempts"] == 1
    assert result["last_status"] is None and "refused" in result["last_error"]
    assert receiver.connections == before
    assert len(attempts) == 1


def test_callback_checked_at_every_attempt(
    receiver: LoopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name resolves to an allowed address, then (after a 500) to a denied one.
    receiver.routes["/recheck"] = status(500)
    real = socket.getaddrinfo
    calls: list[str] = []

    def resolver(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "hooks.test":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "127.0.0.1" if len(calls) == 1 else "10.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    result = run_deliver(f"http://hooks.test:{receiver.port}/recheck")
    assert result["state"] == "failed" and result["attempts"] == 2
    assert "private" in result["last_error"] and "10.0.0.1" not in result["last_error"]
    assert calls == ["hooks.test", "hooks.test"]
    assert len([r for r in receiver.requests if r.path == "/recheck"]) == 1


def test_secrets_never_logged_or_returned(
    receiver: LoopServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_deliver(receiver.url("/always500?token=QUERY-SECRET"), attempts=2)
    text = caplog.text + json.dumps(result) + repr(BOTH)
    for secret in (JWT_SECRET, STANDARD_SECRET, STANDARD_SECRET[6:], "QUERY-SECRET"):
        assert secret not in text
    assert f"127.0.0.1:{receiver.port}" in caplog.text


def test_malformed_standard_secret_is_refused_before_sending(receiver: LoopServer) -> None:
    before = receiver.connections
    with pytest.raises(ValueError, match="whsec_"):
        run_deliver(
            receiver.url("/hook"), secrets=WebhookSecrets(standard_secret="whsec_not base64!")
        )
    assert receiver.connections == before


def test_short_jwt_secret_still_signs(
    receiver: LoopServer, caplog: pytest.LogCaptureFixture
) -> None:
    short = WebhookSecrets(jwt_secret="k3y!")
    assert run_deliver(receiver.url("/hook"), secrets=short)["state"] == "delivered"
    token = last(receiver, "/hook").headers["authorization"].split(" ", 1)[1]
    with pytest.warns(InsecureKeyLengthWarning):
        claims = jwt.decode(token, "k3y!", algorithms=["HS256"])
    assert claims["body_sha256"] == hashlib.sha256(last(receiver, "/hook").body).hexdigest()
    assert "k3y!" not in caplog.text


def test_sync_variant(receiver: LoopServer) -> None:
    result = deliver_sync(
        receiver.url("/hook"), {"id": "x"}, secrets=WebhookSecrets(), policy=LOCAL
    )
    assert result["state"] == "delivered"
    assert json.loads(last(receiver, "/hook").body) == {"id": "x"}
