"""``previewer serve``: the FilePreviews v2 API against a real server, real clients and engines.

One server (tokens, two signing keys, URL inputs from 127.0.0.1) serves the whole module; files
to fetch come from a loopback HTTP server. The real ``filepreviews`` client talks to it
unchanged.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from filepreviews import FilePreviews
from filepreviews.exceptions import AuthenticationError, InvalidRequestError
from PIL import Image

from tests import officegen
from tests.servekit import FileServer, Served, sign
from tests.support import JPEG, PDF, requires_engine

KEY, SECRET = "app1", "s3cret-app1"
OTHER, OTHER_SECRET = "app2", "s3cret-app2"
NEW_KEY, OLD_KEY = "k2026", "k2025"
NEW_SECRET, OLD_SECRET = "signing-new-0123456789", "signing-old-9876543210"
AUTH = (KEY, SECRET)


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("files")
    (root / "report.pdf").write_bytes(PDF.read_bytes())
    (root / "photo.jpg").write_bytes(JPEG.read_bytes())
    server = FileServer(root)
    yield server
    server.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("serve")
    tokens = base / "tokens.txt"
    tokens.write_text(f"# test credentials\n{KEY}:{SECRET}\n{OTHER}:{OTHER_SECRET}\n")
    served = Served(
        base / "storage",
        "--tokens",
        str(tokens),
        "--allow-net",
        "127.0.0.1",
        "--signing-key",
        f"{NEW_KEY}:{NEW_SECRET}",
        "--signing-key",
        f"{OLD_KEY}:{OLD_SECRET}",
        "--jobs",
        "2",
    )
    yield served
    code, left = served.stop()
    log = served.log()
    assert code == 0, log
    assert not left, f"processes left behind: {left}"
    # No secret, credential or signing key ever reaches the log.
    for secret in (SECRET, OTHER_SECRET, NEW_SECRET, OLD_SECRET):
        assert secret not in log


@pytest.fixture(scope="session")
def client(server: Served) -> FilePreviews:
    return FilePreviews(KEY, SECRET, api_url=f"{server.url}/v2")


def finished(client: FilePreviews, job_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = client.retrieve(job_id)
        if result["status"] != "pending" or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def fetch_png(url: str) -> Image.Image:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    return image


def upload(server: Served, path: Path, *, name: str | None = None, **fields: Any) -> httpx.Response:
    wait = fields.pop("wait", 20)
    return httpx.post(
        f"{server.url}/v2/previews/",
        params={"wait": wait},
        files={"file": (name or path.name, path.read_bytes())},
        data=fields,
        auth=AUTH,
        timeout=60,
    )


def test_pdf_through_the_filepreviews_client(client: FilePreviews, files: FileServer) -> None:
    created = client.generate(
        f"{files.url}/report.pdf",
        size={"height": 200},
        pages="1-2",
        metadata=["checksum"],
        data={"ref": 7},
    )
    assert created["status"] == "pending"
    assert created["user_data"] == {"ref": 7}
    result = finished(client, created["id"])
    assert result["status"] == "success", result
    thumbs = result["thumbnails"]
    assert [t["page"] for t in thumbs] == [1, 2]
    assert result["preview"] == thumbs[0]
    for thumb in thumbs:
        assert thumb["requested_size"] == "x200"
        assert thumb["size"] == {"width": 141, "height": 200}
        assert thumb["original_size"] == {"width": 595, "height": 842}
        assert thumb["resized"] is True
        assert fetch_png(thumb["url"]).size == (141, 200)
    original = result["original_file"]
    assert original["name"] == "report.pdf"
    assert original["extension"] == "pdf"
    assert original["mimetype"] == "application/pdf"
    assert original["type"] == "document"
    assert original["total_pages"] == 2
    assert original["size"] == PDF.stat().st_size
    digest = hashlib.sha256(PDF.read_bytes()).hexdigest()
    assert original["metadata"]["checksum"]["sha256"] == digest
    assert result["user_data"] == {"ref": 7}


def test_image_upload_with_sizes(server: Served) -> None:
    response = upload(server, JPEG, sizes="300x200,64", metadata="exif,checksum")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "success"
    assert [t["size"] for t in job["thumbnails"]] == [
        {"width": 267, "height": 200},
        {"width": 64, "height": 48},
    ]
    assert [fetch_png(t["url"]).size for t in job["thumbnails"]] == [(267, 200), (64, 48)]
    assert job["original_file"]["type"] == "image"
    metadata = job["original_file"]["metadata"]
    assert set(metadata) == {"exif", "checksum"}
    assert metadata["checksum"]["sha256"] == hashlib.sha256(JPEG.read_bytes()).hexdigest()
    assert metadata["checksum"]["bytes"] == JPEG.stat().st_size
    assert response.headers["location"] == job["url"]


def test_jpeg_and_webp_previews(server: Served) -> None:
    for fmt, pil_format, mime in (("jpg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")):
        response = upload(server, PDF, sizes="128", format=fmt)
        assert response.status_code == 200, response.text
        url = response.json()["preview"]["url"]
        got = httpx.get(url, timeout=30)
        assert got.status_code == 200
        assert got.headers["content-type"] == mime
        image = Image.open(io.BytesIO(got.content))
        assert image.format == pil_format
        assert max(image.size) == 128
    bad = upload(server, PDF, format="gif")
    assert bad.status_code == 400
    assert "format" in bad.json()["error"]["fields"]


def test_raw_body_upload_with_query_options(server: Served) -> None:
    response = httpx.post(
        f"{server.url}/v2/previews/",
        params={"sizes": "100", "wait": "20"},
        content=JPEG.read_bytes(),
        headers={"Content-Type": "image/jpeg", "Content-Disposition": 'inline; filename="p.jpg"'},
        auth=AUTH,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["original_file"]["name"] == "p.jpg"
    assert fetch_png(job["preview"]["url"]).size == (100, 75)


def test_invalid_fields_are_named(server: Served, client: FilePreviews) -> None:
    response = httpx.post(
        f"{server.url}/v2/previews/",
        json={
            "url": "ftp://example.org/x.pdf",
            "sizes": ["big"],
            "pages": "x-",
            "metadata": ["thumbnail"],
            "format": "gif",
            "colour": "red",
        },
        auth=AUTH,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error["fields"]) == {"url", "sizes", "pages", "metadata", "format", "colour"}
    assert "thumbnail" in error["fields"]["metadata"][0]
    with pytest.raises(InvalidRequestError) as caught:
        client.generate("not a url")
    assert caught.value.http_status == 400
    assert caught.value.param == "url"


def test_credentials(server: Served, files: FileServer) -> None:
    url = f"{server.url}/v2/previews/"
    missing = httpx.post(url, json={"url": f"{files.url}/report.pdf"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert missing.json()["error"]["code"] == "authentication_error"
    wrong = httpx.post(url, json={"url": f"{files.url}/report.pdf"}, auth=(KEY, OTHER_SECRET))
    assert wrong.status_code == 401
    with pytest.raises(AuthenticationError):
        FilePreviews(KEY, "nope", api_url=f"{server.url}/v2").retrieve("x")


def test_jobs_are_private_to_their_key(server: Served, client: FilePreviews) -> None:
    job = upload(server, PDF, wait=0).json()
    mine = httpx.get(job["url"], auth=AUTH)
    assert mine.status_code == 200
    theirs = httpx.get(job["url"], auth=(OTHER, OTHER_SECRET))
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    with pytest.raises(InvalidRequestError) as caught:
        client.retrieve("00000000-0000-0000-0000-000000000000")
    assert caught.value.http_status == 404


def test_broken_file_fails_with_a_clear_message(server: Served) -> None:
    broken = server.storage.parent / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n" + b"\x00garbage" * 50)
    response = upload(server, broken)
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "failure"
    assert job["thumbnails"] is None
    assert job["error"]["code"] in {"InputError", "EngineError", "UnsupportedFormatError"}
    assert "broken.pdf" in job["error"]["message"]
    assert str(server.storage) not in response.text
    row = sqlite3.connect(server.storage / "jobs.sqlite3").execute(
        "SELECT request, result, error FROM jobs WHERE id = ?", (job["id"],)
    )
    assert str(server.storage) not in repr(row.fetchall())


def test_signed_urls(server: Served) -> None:
    job = upload(server, JPEG, sizes="64").json()
    url = httpx.URL(job["preview"]["url"])
    assert url.params["kid"] == NEW_KEY
    path, exp = url.path, int(url.params["exp"])
    assert httpx.get(url).status_code == 200
    tampered = url.copy_set_param("sig", "0" * 64)
    assert httpx.get(tampered).status_code == 403
    assert "signature" in httpx.get(tampered).json()["error"]["message"]
    longer = url.copy_set_param("exp", str(exp + 10))
    assert httpx.get(longer).status_code == 403
    old = url.copy_with(params={"kid": OLD_KEY, "exp": exp, "sig": sign(OLD_SECRET, path, exp)})
    assert httpx.get(old).status_code == 200  # rotation: an older key still verifies
    past = int(time.time()) - 10
    expired = url.copy_with(
        params={"kid": NEW_KEY, "exp": past, "sig": sign(NEW_SECRET, path, past)}
    )
    response = httpx.get(expired)
    assert response.status_code == 403
    assert "expired" in response.json()["error"]["message"]
    unknown = url.copy_set_param("kid", "nobody")
    assert httpx.get(unknown).status_code == 403
    other = path.rsplit("/", 1)[0] + "/photo.jpg.p1.999.png"
    forged = url.copy_with(
        path=other, params={"kid": NEW_KEY, "exp": exp, "sig": sign(NEW_SECRET, other, exp)}
    )
    assert httpx.get(forged).status_code == 404


def test_wait_turns_into_pending(server: Served) -> None:
    response = upload(server, PDF, sizes="1500", pages="all", wait="0.001")
    assert response.status_code == 202
    assert response.headers["location"] == response.json()["url"]
    assert response.json()["status"] == "pending"
    done = httpx.get(response.json()["url"], params={"wait": 20}, auth=AUTH)
    assert done.json()["status"] == "success"
    assert httpx.post(f"{server.url}/v2/previews/?wait=31", json={}, auth=AUTH).status_code == 400


def test_idempotency_key(server: Served, files: FileServer) -> None:
    body = {"url": f"{files.url}/photo.jpg", "sizes": [32]}
    headers = {"Idempotency-Key": "order-42"}
    url = f"{server.url}/v2/previews/"
    first = httpx.post(url, json=body, headers=headers, auth=AUTH).json()
    again = httpx.post(url, json=body, headers=headers, auth=AUTH).json()
    assert again["id"] == first["id"]
    theirs = httpx.post(url, json=body, headers=headers, auth=(OTHER, OTHER_SECRET)).json()
    assert theirs["id"] != first["id"]


def test_delete(server: Served) -> None:
    job = upload(server, JPEG, sizes="48").json()
    assert (server.storage / "jobs" / job["id"]).is_dir()
    assert httpx.delete(job["url"], auth=(OTHER, OTHER_SECRET)).status_code == 404
    assert httpx.delete(job["url"], auth=AUTH).status_code == 204
    assert httpx.get(job["url"], auth=AUTH).status_code == 404
    assert httpx.get(job["preview"]["url"]).status_code == 404
    assert not (server.storage / "jobs" / job["id"]).exists()


def test_accept_png_gives_the_first_preview(server: Served) -> None:
    job = upload(server, PDF, sizes="120").json()
    response = httpx.get(job["url"], headers={"Accept": "image/png"}, auth=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == httpx.get(job["preview"]["url"]).content
    assert Image.open(io.BytesIO(response.content)).size == (85, 120)


def test_converters_list(server: Served) -> None:
    response = httpx.get(f"{server.url}/v2/converters/", auth=AUTH)
    assert response.status_code == 200
    names = {c["name"]: c for c in response.json()["converters"]}
    assert names["pdf-pymupdf"]["available"] is True
    assert "application/pdf" in names["pdf-pymupdf"]["mime_types"]


def test_url_that_is_not_served_fails_the_request(server: Served, files: FileServer) -> None:
    response = httpx.post(
        f"{server.url}/v2/previews/", json={"url": f"{files.url}/missing.pdf"}, auth=AUTH
    )
    assert response.status_code == 502
    blocked = httpx.post(
        f"{server.url}/v2/previews/", json={"url": "http://10.255.255.1/x.pdf"}, auth=AUTH
    )
    assert blocked.status_code == 400


def test_callback_is_delivered(server: Served, files: FileServer) -> None:
    response = httpx.post(
        f"{server.url}/v2/previews/",
        params={"wait": 20},
        json={"url": f"{files.url}/photo.jpg", "sizes": [40], "callback_url": f"{files.url}/hook"},
        auth=AUTH,
    )
    job = response.json()
    assert job["status"] == "success"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = httpx.get(job["url"], auth=AUTH).json()["callback"]
        if state["state"] != "pending":
            break
        time.sleep(0.05)
    assert state["state"] == "delivered", state
    assert state["last_status"] == 200
    posted = [body for path, _, body in files.posts if path == "/hook"]
    assert any(b["id"] == job["id"] and b["status"] == "success" for b in posted)


def test_health_readiness_metrics(server: Served) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    unknown = httpx.get(f"{server.url}/v3/nothing")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    deadline = time.monotonic() + 20  # ready once the engines have been probed
    while (ready := httpx.get(f"{server.url}/readyz")).status_code != 200:
        assert ready.status_code == 503
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.1)
    assert ready.json()["checks"] == {"storage": True, "pool": True, "engines": True}
    upload(server, JPEG, sizes="16")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'previewer_http_requests_total{method="POST",route="/v2/previews/",status="200"}' in text
    assert (
        'previewer_job_duration_seconds_count{converter="raster-pillow",status="success"}' in text
    )
    assert "previewer_queue_depth 0.0" in text
    assert "previewer_jobs_in_flight" in text
    assert "previewer_rejected_total" in text
    # One access-log line per request, without credentials.
    assert "method=GET path=/healthz route=/healthz status=200" in server.log()
    assert "Authorization" not in server.log()


@requires_engine("soffice")
def test_docx_upload(server: Served) -> None:
    doc = officegen.docx(
        server.storage.parent / "memo.docx", "<w:p><w:r><w:t>Hello</w:t></w:r></w:p>"
    )
    response = upload(server, doc, sizes="150")
    job = response.json()
    assert job["status"] == "success", job
    assert job["original_file"]["extension"] == "docx"
    image = fetch_png(job["preview"]["url"])
    assert max(image.size) == 150
