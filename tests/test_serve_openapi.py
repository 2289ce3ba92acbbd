"""openapi.yaml against the service: a valid OpenAPI 3.1 document, the same routes as the app
(both directions), and real answers of the app (statuses, bodies) matching what it documents.

The app runs in-process (its lifespan included) behind httpx's ASGI transport; conversions are
real (PyMuPDF in a child process, as always).
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from starlette.routing import BaseRoute, Mount, Route

from previewer.budgets import Limits
from tests.support import PDF, ROOT

SPEC_PATH = ROOT / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PARAM = re.compile(r"\{[^}]*\}")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


def _shape(path: str) -> str:
    """A path with its parameters unnamed (``/v2/previews/{}/``): names differ, shapes must not."""
    return PARAM.sub("{}", path)


def _served(routes: list[BaseRoute], prefix: str = "") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Mount):
            for path, methods in _served(list(route.routes), prefix + route.path).items():
                out.setdefault(path, set()).update(methods)
        elif isinstance(route, Route):
            methods = set(route.methods or ()) - {"HEAD"}  # Starlette adds HEAD to every GET
            out.setdefault(_shape(prefix + route.path), set()).update(methods)
        else:
            pytest.fail(f"a route of a kind this test does not know: {route!r}")
    # The API also answers its paths without the trailing slash (FilePreviews clients vary):
    # such an alias is documented through its canonical form.
    for path in [p for p in out if not p.endswith("/") and p + "/" in out]:
        assert out[path] == out[path + "/"], f"{path} and {path}/ answer different methods"
        del out[path]
    return out


def _documented(spec: dict[str, Any]) -> dict[str, set[str]]:
    return {
        _shape(path): {m.upper() for m in item if m in METHODS} - {"HEAD"}
        for path, item in spec["paths"].items()
    }


def _settings(tmp: Path, **kw: Any) -> Any:
    from previewer.serve.app import Settings

    kw.setdefault("grace", 5.0)
    return Settings(
        storage=tmp, tokens=kw.pop("tokens", None), signing_keys=[("k1", b"s" * 32)], **kw
    )


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    from previewer.serve.app import create_app

    app = create_app(_settings(tmp_path_factory.mktemp("routes")))
    return _served(list(app.routes))


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    assert spec["openapi"].startswith("3.1.")
    validate(spec)
    assert spec["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http",
        "scheme": "basic",
        "description": spec["components"]["securitySchemes"]["basicAuth"]["description"],
    }


def test_every_route_is_documented(spec: dict[str, Any], app_routes: dict[str, set[str]]) -> None:
    documented = _documented(spec)
    missing = {p: sorted(m - documented.get(p, set())) for p, m in app_routes.items()}
    assert {p: m for p, m in missing.items() if m} == {}


def test_every_documented_route_is_served(
    spec: dict[str, Any], app_routes: dict[str, set[str]]
) -> None:
    documented = _documented(spec)
    extra = {p: sorted(m - app_routes.get(p, set())) for p, m in documented.items()}
    assert {p: m for p, m in extra.items() if m} == {}


def test_public_routes_are_the_documented_ones(spec: dict[str, Any]) -> None:
    """Operations without credentials are exactly the operational ones, the page and the files."""
    public = {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS and op.get("security") == []
    }
    assert public == {
        "GET /",
        "GET /static/{name}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /v2/files/{id}/{name}",
    }
    assert spec["security"] == [{"basicAuth": []}, {}]


# --------------------------------------------------------------------------- live answers


class Contract:
    """Checks answers of the app against the operation the spec documents for them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.seen: set[tuple[str, str, str]] = set()

    def _operation(self, method: str, template: str) -> dict[str, Any]:
        op: dict[str, Any] = self.spec["paths"][template][method.lower()]
        return op

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "components": self.spec["components"]}

    def check(self, method: str, template: str, answer: httpx.Response) -> Any:
        """Assert the status is documented for the operation and the body matches its schema.

        Returns:
            The parsed JSON body (or None for other media types).
        """
        responses = self._operation(method, template)["responses"]
        status = str(answer.status_code)
        assert status in responses, (
            f"{method} {template} answered {status}, not documented: {answer.text[:300]}"
        )
        self.seen.add((method, template, status))
        documented = responses[status]
        if "$ref" in documented:
            documented = self.spec["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
        content = documented.get("content", {})
        media = answer.headers.get("content-type", "").split(";")[0].strip()
        if not content:
            assert answer.content == b"", f"{method} {template} {status} documents no body"
            return None
        assert media in content, f"{method} {template} {status}: {media} not in {sorted(content)}"
        for name in documented.get("headers", {}):
            if name.lower() in ("retry-after", "www-authenticate", "location"):
                assert name.lower() in answer.headers, f"{method} {template} {status}: no {name}"
        if media != "application/json":
            return None
        body = answer.json()
        jsonschema.validate(
            body,
            self._schema(content[media]["schema"]),
            cls=jsonschema.Draft202012Validator,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        return body


@asynccontextmanager
async def _running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000", timeout=60
        ) as client:
            yield client


def _run(coro_fn: Callable[[], Any]) -> None:
    asyncio.run(coro_fn())


@pytest.fixture
def contract(spec: dict[str, Any]) -> Iterator[Contract]:
    yield Contract(spec)


def test_answers_match_the_spec(contract: Contract, tmp_path: Path) -> None:
    from previewer.serve.app import create_app

    app = create_app(_settings(tmp_path / "storage"))
    broken = PDF.read_bytes()[:400]

    async def scenario() -> None:
        async with _running(app) as client:
            c = contract.check
            c("GET", "/healthz", await client.get("/healthz"))
            for _ in range(600):  # engines are probed in the background after start
                ready = c("GET", "/readyz", await client.get("/readyz"))
                if ready["status"] == "ready":
                    break
                await asyncio.sleep(0.05)
            assert ready["status"] == "ready", ready
            c("GET", "/metrics", await client.get("/metrics"))
            listing = c("GET", "/v2/converters/", await client.get("/v2/converters/"))
            assert any(x["name"] == "pdf-pymupdf" and x["available"] for x in listing["converters"])

            # Multipart upload, finished within wait: 200 with two thumbnails.
            answer = await client.post(
                "/v2/previews/?wait=30",
                files={"file": ("report.pdf", PDF.read_bytes(), "application/pdf")},
                data={"sizes": "256", "pages": "1-2", "data": '{"ticket": 7}'},
            )
            done = c("POST", "/v2/previews/", answer)
            assert answer.status_code == 200 and done["status"] == "success", done
            assert [t["page"] for t in done["thumbnails"]] == [1, 2]
            assert max(done["preview"]["size"].values()) == 256
            assert done["original_file"]["total_pages"] == 2
            assert done["user_data"] == {"ticket": 7}
            template = "/v2/previews/{id}/"
            again = c("GET", template, await client.get(f"/v2/previews/{done['id']}/"))
            assert again["thumbnails"] == done["thumbnails"]
            png = await client.get(f"/v2/previews/{done['id']}/", headers={"Accept": "image/png"})
            c("GET", template, png)
            assert png.content.startswith(b"\x89PNG")

            # The signed image URL, and the same URL tampered with.
            url = httpx.URL(done["preview"]["url"])
            image = await client.get(url.raw_path.decode())
            c("GET", "/v2/files/{id}/{name}", image)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
            forged = url.raw_path.decode().replace("sig=", "sig=0")
            c("GET", "/v2/files/{id}/{name}", await client.get(forged))

            # A raw body that is a broken PDF: accepted, and the preview fails naming the file.
            answer = await client.post(
                "/v2/previews/?wait=30&sizes=128",
                content=broken,
                headers={
                    "Content-Type": "application/pdf",
                    "Content-Disposition": 'attachment; filename="broken.pdf"',
                },
            )
            failed = c("POST", "/v2/previews/", answer)
            assert failed["status"] == "failure" and failed["thumbnails"] is None
            assert failed["error"]["code"] == "InputError"
            assert "broken.pdf" in failed["error"]["message"]
            c(
                "GET",
                template,
                await client.get(f"/v2/previews/{failed['id']}/", headers={"Accept": "image/png"}),
            )

            # Without wait: 201 and a pending (or already finished) preview.
            answer = await client.post(
                "/v2/previews/", files={"file": ("again.pdf", PDF.read_bytes(), "application/pdf")}
            )
            created = c("POST", "/v2/previews/", answer)
            assert answer.status_code == 201
            assert answer.headers["location"] == created["url"]

            # Field errors, keyed by field.
            bad = c(
                "POST",
                "/v2/previews/",
                await client.post(
                    "/v2/previews/", json={"url": "ftp://x", "sizes": "big", "colour": 1}
                ),
            )
            assert set(bad["error"]["fields"]) == {"url", "sizes", "colour"}
            c("POST", "/v2/previews/", await client.post("/v2/previews/?wait=99", json={}))

            # Delete (once finished), then it is gone.
            finished = await client.get(f"/v2/previews/{created['id']}/?wait=30")
            assert c("GET", template, finished)["status"] == "success"
            c("DELETE", template, await client.delete(f"/v2/previews/{created['id']}/"))
            c("GET", template, await client.get(f"/v2/previews/{created['id']}/"))
            c("DELETE", template, await client.delete("/v2/previews/not-an-id/"))

            # The page.
            c("GET", "/", await client.get("/"))
            c("GET", "/static/{name}", await client.get("/static/app.js"))
            c("GET", "/static/{name}", await client.get("/static/nothing.js"))

    _run(scenario)
    assert {
        ("POST", "/v2/previews/", "200"),
        ("POST", "/v2/previews/", "201"),
        ("POST", "/v2/previews/", "400"),
        ("GET", "/v2/previews/{id}/", "200"),
        ("GET", "/v2/previews/{id}/", "404"),
        ("GET", "/v2/previews/{id}/", "409"),
        ("DELETE", "/v2/previews/{id}/", "204"),
        ("DELETE", "/v2/previews/{id}/", "404"),
        ("GET", "/v2/files/{id}/{name}", "200"),
        ("GET", "/v2/files/{id}/{name}", "403"),
        ("GET", "/static/{name}", "404"),
    } <= contract.seen


def test_refusals_match_the_spec(contract: Contract, tmp_path: Path) -> None:
    """401 (tokens), 413 (size limit) and 429 (full queue), each as documented."""
    from previewer.serve.app import create_app
    from previewer.serve.auth import Tokens
    from previewer.serve.netguard import NetPolicy

    # A listener that accepts connections and never answers holds the only job place.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    app = create_app(
        _settings(
            tmp_path / "storage",
            tokens=Tokens({"key": "secret"}),
            jobs=1,
            queue_size=0,
            limits=Limits(max_file_size=10_000),
            policy=NetPolicy.from_allow(["127.0.0.1"], timeout=20.0),
        )
    )
    auth = {"Authorization": "Basic " + base64.b64encode(b"key:secret").decode()}

    async def scenario() -> None:
        async with _running(app) as client:
            c = contract.check
            for path in ("/v2/converters/", "/v2/previews/00000000-0000-0000-0000-000000000000/"):
                template = "/v2/previews/{id}/" if "previews" in path else path
                answer = await client.get(path)
                c("GET", template, answer)
                assert answer.status_code == 401
                assert answer.headers["www-authenticate"] == 'Basic realm="previewer"'
            c("POST", "/v2/previews/", await client.post("/v2/previews/", json={}))
            wrong = {"Authorization": "Basic " + base64.b64encode(b"key:nope").decode()}
            assert (await client.get("/v2/converters/", headers=wrong)).status_code == 401
            # Public without credentials.
            for path in ("/healthz", "/", "/static/style.css"):
                assert (await client.get(path)).status_code == 200, path

            too_big = await client.post(
                "/v2/previews/",
                content=b"x" * 20_000,
                headers={**auth, "Content-Type": "image/png"},
            )
            c("POST", "/v2/previews/", too_big)
            assert too_big.status_code == 413

            # A URL whose server never answers holds the only job place while it is fetched.
            hold = asyncio.create_task(
                client.post(
                    "/v2/previews/", json={"url": f"http://127.0.0.1:{port}/slow.pdf"}, headers=auth
                )
            )
            runner = app.state.service.runner
            for _ in range(500):  # until the held request has taken its place
                if runner.admitted:
                    break
                await asyncio.sleep(0.01)
            full = await client.post(
                "/v2/previews/", files={"file": ("a.pdf", b"%PDF-1.4")}, headers=auth
            )
            c("POST", "/v2/previews/", full)
            assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
            assert full.json()["error"]["code"] == "rate_limited"
            silent.close()  # the held fetch fails now
            failed = await hold
            c("POST", "/v2/previews/", failed)
            assert failed.status_code in (502, 504)
            assert failed.json()["error"]["code"] == "fetch_failed"

    try:
        _run(scenario)
    finally:
        silent.close()
    assert {
        ("GET", "/v2/converters/", "401"),
        ("POST", "/v2/previews/", "401"),
        ("POST", "/v2/previews/", "413"),
        ("POST", "/v2/previews/", "429"),
    } <= contract.seen
    assert contract.seen & {("POST", "/v2/previews/", "502"), ("POST", "/v2/previews/", "504")}
