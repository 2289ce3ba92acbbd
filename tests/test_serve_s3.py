"""``previewer serve --storage s3://...``: job files in a real S3-compatible server (moto).

moto's server runs as a subprocess on a free loopback port; the service gets dummy credentials
from the AWS environment variables. moto does not check signatures, so the presigned links are
checked for their form (endpoint, key, ``X-Amz-Expires``), not for their security.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from PIL import Image

from tests.servekit import Served, free_port
from tests.support import JPEG, PDF, clean_env, requires_engine, run_previewer, wait_for

ACCESS_KEY = "AKIATESTPREVIEWER01"
SECRET_KEY = "s3-secret-NEVER-shown-7f3a9c"
BUCKET = "previews"
TTL = 600


class Moto:
    """moto's S3-compatible server on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return True
            return False

        wait_for(up, 30, "moto_server")

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto()
    try:
        yield server
    finally:
        server.stop()


def aws_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    # No lookup of instance credentials: nothing but loopback is ever contacted.
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


def png_size(content: bytes) -> tuple[int, int]:
    assert content.startswith(b"\x89PNG"), content[:40]
    with Image.open(io.BytesIO(content)) as image:
        return image.size


@pytest.mark.slow
def test_previews_stored_in_the_bucket_with_presigned_links(tmp_path: Path, moto: Moto) -> None:
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    state = tmp_path / "state"
    served = Served(
        tmp_path / "serve",
        "--state",
        str(state),
        "--ttl",
        str(TTL),
        storage_url=f"s3://{BUCKET}/pfx?endpoint={moto.url}&region=us-east-1",
        env=aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY),
    )
    seen: list[httpx.Response] = []

    def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, url, timeout=60, **kwargs)
        seen.append(response)
        return response

    try:
        pdf = call(
            "POST",
            f"{served.url}/v2/previews/",
            params={"wait": 30},
            files={"file": ("report.pdf", PDF.read_bytes(), "application/pdf")},
            data={"sizes": "200", "pages": "all"},
        ).json()
        photo = call(
            "POST",
            f"{served.url}/v2/previews/",
            params={"sizes": "120", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg", "Content-Disposition": 'filename="photo.jpg"'},
        ).json()
        assert pdf["status"] == "success", pdf
        assert photo["status"] == "success", photo
        assert len(pdf["thumbnails"]) == 2 and pdf["original_file"]["total_pages"] == 2
        assert photo["preview"]["size"] == {"width": 120, "height": 90}
        for job, source in ((pdf, "report.pdf"), (photo, "photo.jpg")):
            prefix = f"pfx/jobs/{job['id']}/"
            keys = set()
            for thumb in job["thumbnails"]:
                # A presigned GET URL of the object, on the bucket's endpoint, expiring.
                url = urlsplit(thumb["url"])
                assert f"{url.scheme}://{url.netloc}" == moto.url
                assert url.path.startswith(f"/{BUCKET}/{prefix}out/"), url.path
                query = parse_qs(url.query)
                assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
                assert query["X-Amz-Credential"][0].startswith(f"{ACCESS_KEY}/")
                assert query["X-Amz-Signature"][0]
                assert TTL - 30 <= int(query["X-Amz-Expires"][0]) <= TTL
                image = call("GET", thumb["url"])
                assert image.status_code == 200
                assert image.headers["content-type"] == "image/png"
                assert png_size(image.content) == (
                    thumb["size"]["width"],
                    thumb["size"]["height"],
                )
                keys.add(url.path.removeprefix(f"/{BUCKET}/"))
            # The input and every preview are objects under the prefix; nothing stays local.
            listed = {
                o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
            }
            assert listed == keys | {f"{prefix}input/{source}"}
            assert not (state / "jobs" / job["id"]).exists()
        assert max(t["size"]["height"] for t in pdf["thumbnails"]) == 200
        # The API serves the first preview from the bucket too.
        first = call("GET", pdf["url"], headers={"Accept": "image/png"})
        assert first.status_code == 200
        assert png_size(first.content) == (
            pdf["preview"]["size"]["width"],
            pdf["preview"]["size"]["height"],
        )
        # A fresh GET gives fresh links to the same objects.
        again = call("GET", photo["url"]).json()
        assert urlsplit(again["preview"]["url"]).path == urlsplit(photo["preview"]["url"]).path

        # DELETE removes the objects; the links then fail.
        assert call("DELETE", pdf["url"]).status_code == 204
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pfx/jobs/{pdf['id']}/")["KeyCount"] == 0
        assert call("GET", pdf["url"]).status_code == 404
        assert call("GET", pdf["preview"]["url"]).status_code == 404
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pfx/jobs/{photo['id']}/")["KeyCount"]

        # Ready while the bucket answers; 503 with the reason once it is gone.
        def ready() -> bool:
            return call("GET", f"{served.url}/readyz").status_code == 200

        wait_for(ready, 60, "readiness")
        assert seen[-1].json()["checks"]["bucket"] is True
        moto.stop()
        down = call("GET", f"{served.url}/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["checks"]["bucket"] is False and body["checks"]["storage"] is True
        assert body["details"] == {
            "bucket": f"cannot reach bucket {BUCKET}: cannot connect to the endpoint"
        }
        # A job whose previews cannot be stored fails, naming the reason.
        failed = call(
            "POST",
            f"{served.url}/v2/previews/",
            params={"sizes": "64", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        ).json()
        assert failed["status"] == "failure", failed
        assert failed["error"]["code"] == "StorageError"
        assert failed["error"]["message"] == (
            "the previews could not be stored: cannot connect to the endpoint"
        )
        # DELETE keeps the job while its files cannot be removed (retry later).
        refused = call("DELETE", photo["url"])
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert call("GET", photo["url"]).json()["status"] == "success"
    finally:
        code, left = served.stop()
    log = served.log()
    assert code == 0, log
    assert not left
    assert f"storage s3://{BUCKET}/pfx/ at {moto.url}" in log
    # No secret key and no server path in any response or in the log.
    for text in [log] + [r.text + str(r.headers) for r in seen]:
        assert SECRET_KEY not in text
        assert str(tmp_path) not in text
    for response in seen:  # the endpoint shows only in the presigned links
        assert moto.url not in response.text.replace(f"{moto.url}/{BUCKET}/pfx/jobs/", "")
    assert not (tmp_path / "serve").exists()  # the S3 URL is the storage; state is --state
    assert (state / "jobs.sqlite3").exists()


@pytest.mark.slow
def test_the_sweeper_deletes_expired_jobs_objects(tmp_path: Path, moto: Moto) -> None:
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    served = Served(
        tmp_path / "serve",
        "--state",
        str(tmp_path / "state"),
        "--ttl",
        "4",
        storage_url=f"s3://{BUCKET}/a/b?endpoint={moto.url}&region=us-east-1",
        env=aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY),
    )
    try:
        job = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "50", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        ).json()
        assert job["status"] == "success", job
        assert int(parse_qs(urlsplit(job["preview"]["url"]).query)["X-Amz-Expires"][0]) <= 4
        prefix = f"a/b/jobs/{job['id']}/"
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["KeyCount"] == 2
        wait_for(
            lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["KeyCount"] == 0,
            15,
            "the sweeper",
        )
        assert httpx.get(job["url"]).status_code == 404
    finally:
        code, _ = served.stop()
    assert code == 0, served.log()


def test_local_storage_with_a_separate_state_directory(tmp_path: Path) -> None:
    storage, state = tmp_path / "files", tmp_path / "state"
    served = Served(storage, "--state", str(state))
    try:
        job = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "80", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        ).json()
        assert job["status"] == "success", job
        # The API's own signed URL, the file under the storage directory.
        assert job["preview"]["url"].startswith(f"{served.url}/v2/files/{job['id']}/")
        assert png_size(httpx.get(job["preview"]["url"]).content) == (80, 60)
        assert [p.suffix for p in (storage / "jobs" / job["id"] / "out").iterdir()] == [".png"]
        assert httpx.get(f"{served.url}/readyz").json()["checks"]["storage"] is True
    finally:
        code, _ = served.stop()
    assert code == 0, served.log()
    assert (state / "jobs.sqlite3").exists() and (state / "signing.key").exists()
    assert not (storage / "jobs.sqlite3").exists() and not (storage / "signing.key").exists()


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    result = run_previewer(
        "serve",
        "--storage",
        f"s3://{ACCESS_KEY}:{SECRET_KEY}@{BUCKET}/pfx",
        "--state",
        tmp_path,
        env=aws_env(),
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "credentials do not belong in the storage URL" in result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr


def test_missing_credentials_and_missing_boto3_are_clear(tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/pfx?endpoint=http://127.0.0.1:9&region=us-east-1"
    empty = tmp_path / "empty"
    empty.write_text("")
    no_creds = run_previewer(
        "serve",
        "--storage",
        url,
        "--state",
        tmp_path / "state",
        env=aws_env(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty)),
        text=True,
    )
    assert no_creds.returncode == 2, no_creds.stderr
    assert "no S3 credentials found: set AWS_ACCESS_KEY_ID" in no_creds.stderr
    # Without boto3 (an import that fails, as when the extra is not installed).
    site = tmp_path / "site"
    (site / "boto3").mkdir(parents=True)
    (site / "boto3" / "__init__.py").write_text("raise ImportError('No module named boto3')\n")
    env = aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    no_boto = run_previewer(
        "serve", "--storage", url, "--state", tmp_path / "state", env=env, text=True
    )
    assert no_boto.returncode == 2, no_boto.stderr
    assert "s3:// storage needs boto3: pip install 'previewer[s3]'" in no_boto.stderr
    bad = run_previewer(
        "serve", "--storage", "s3://previews/p?endpoint=ftp://x&colour=red", env=env, text=True
    )
    assert bad.returncode == 2
    assert "unknown storage URL parameter(s) colour" in bad.stderr


@pytest.mark.slow
@requires_engine("redis-server")
def test_broker_workers_convert_and_the_bucket_keeps_the_files(tmp_path: Path, moto: Moto) -> None:
    from tests.test_queue import Redis, Worker

    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    broker = Redis(tmp_path)
    worker = served = None
    try:
        worker = Worker(broker.url, "s3", tmp_path / "worker.log")
        served = Served(
            tmp_path / "serve",
            "--state",
            str(tmp_path / "state"),
            "--broker",
            broker.url,
            storage_url=f"s3://{BUCKET}?endpoint={moto.url}",
            env=aws_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY),
        )
        job = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "100", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        ).json()
        assert job["status"] == "success", job
        assert "convert_file" in worker.text()
        url = urlsplit(job["preview"]["url"])
        assert url.path == f"/{BUCKET}/jobs/{job['id']}/out/{url.path.rpartition('/')[2]}"
        assert png_size(httpx.get(job["preview"]["url"]).content) == (100, 75)
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/")["KeyCount"]
        assert listed == 2  # the input and the preview
        assert httpx.delete(job["url"]).status_code == 204
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/")["KeyCount"] == 0
    finally:
        if served is not None:
            code, left = served.stop()
            assert code == 0, served.log()
            assert not left
        if worker is not None:
            worker.kill()
        broker.stop()
