"""The page of ``previewer serve`` (``GET /``) in a real browser: headless Chromium via Selenium.

One server and one browser for the module. Four files go through the page's file input at once
(a PDF, a DOCX through LibreOffice, a layered PSD and a truncated PDF); the good ones must show
loaded thumbnails, their page count and sizes, the broken one its error message.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import officegen, psdgen
from tests.support import JPEG, PDF, in_ci, require_engine

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SETTLE = 90.0  # seconds for all four files to finish (one LibreOffice start included)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = f"{', '.join(missing)} missing (Debian: apt-get install chromium chromium-driver)"
        if in_ci():
            pytest.fail(f"{reason} (CI must install the browser)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``previewer serve`` on 127.0.0.1 and a free port, storing in a temporary directory."""
    from tests.servekit import Served

    served = Served(tmp_path_factory.mktemp("serve") / "storage")
    try:
        yield served.url
    finally:
        code, left = served.stop()
        assert code == 0 and not left, served.log()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four inputs: name -> path."""
    root = tmp_path_factory.mktemp("uploads")
    docx = officegen.docx(
        root / "letter.docx", "<w:p><w:r><w:t>Hello from the page test.</w:t></w:r></w:p>"
    )
    psd = psdgen.layered_psd(root / "layers.psd", size=(320, 240), layers=2)
    pdf = root / "report.pdf"
    shutil.copyfile(PDF, pdf)
    broken = root / "broken.pdf"
    broken.write_bytes(PDF.read_bytes()[:400])
    return {"pdf": pdf, "docx": docx, "psd": psd, "broken": broken}


class _PageClient:
    """Requests to an app made of the page's routes alone, in-process (httpx over ASGI)."""

    def __init__(self) -> None:
        from starlette.applications import Starlette

        from previewer.serve.page import page_routes

        self.app = Starlette(routes=page_routes(img_sources=["https://cdn.example"]))

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(go())

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, headers)

    def head(self, path: str) -> httpx.Response:
        return self.request("HEAD", path)


def _page_client() -> _PageClient:
    return _PageClient()


def test_page_routes_serve_the_files_with_types_and_a_strict_policy() -> None:
    client = _page_client()
    kinds = {
        "/": "text/html; charset=utf-8",
        "/static/app.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
        "/static/favicon.svg": "image/svg+xml",
    }
    for path, media_type in kinds.items():
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == media_type
        assert answer.headers["x-content-type-options"] == "nosniff"
        policy = answer.headers["content-security-policy"]
        assert policy.startswith(
            "default-src 'self'; img-src 'self' blob: data: https://cdn.example;"
        )
        assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["cache-control"] == (
            "no-cache" if path == "/" else "public, max-age=300, must-revalidate"
        )
        # Revalidation: the ETag answers 304 without a body.
        again = client.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(answer.content))
    page = client.get("/").text
    assert '<script src="/static/app.js" defer></script>' in page
    assert "<script>" not in page and " style=" not in page  # nothing inline the policy would block
    assert "http://" not in page and "https://" not in page  # nothing from another origin


def test_page_routes_refuse_other_names() -> None:
    client = _page_client()
    for path in (
        "/static/index.html",
        "/static/page.py",
        "/static/..%2Fpage.py",
        "/static/",
        "/static/app.js/x",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
    body = client.get("/static/nope.js").json()
    assert body["error"]["code"] == "not_found"


def test_page_script_never_writes_markup() -> None:
    from previewer.serve.page import STATIC

    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in script, sink


def _cards(driver: object) -> dict[str, object]:
    from selenium.webdriver.common.by import By

    cards = {}
    for card in driver.find_elements(By.CSS_SELECTOR, "#results li.result"):  # type: ignore[attr-defined]
        cards[card.find_element(By.CSS_SELECTOR, "h3.name").text] = card
    return cards


def test_page_previews_uploaded_files(
    server: str, browser: object, uploads: dict[str, Path]
) -> None:
    require_engine("soffice")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server + "/")  # type: ignore[attr-defined]
    assert driver.title == "previewer"  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "sizes").get_attribute("value") == "256"  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "pages").get_attribute("value") == "1"  # type: ignore[attr-defined]

    files = driver.find_element(By.ID, "files")  # type: ignore[attr-defined]
    files.send_keys("\n".join(str(p) for p in uploads.values()))

    def settled(d: object) -> bool:
        cards = _cards(d)
        return len(cards) == len(uploads) and all(
            c.get_attribute("data-status") in ("success", "failure") for c in cards.values()
        )

    WebDriverWait(driver, SETTLE, poll_frequency=0.25).until(settled)
    cards = _cards(driver)
    assert set(cards) == {p.name for p in uploads.values()}

    expected_pages = {"pdf": "2 pages", "docx": "1 page", "psd": "1 page"}
    for kind, pages in expected_pages.items():
        card = cards[uploads[kind].name]
        assert card.get_attribute("data-status") == "success", card.text
        img = card.find_element(By.CSS_SELECTOR, ".thumb img")
        # Loaded, not just present: the image decoded with real pixels.
        WebDriverWait(driver, 10).until(
            lambda d, img=img: d.execute_script("return arguments[0].complete", img)
        )
        width = driver.execute_script("return arguments[0].naturalWidth", img)  # type: ignore[attr-defined]
        height = driver.execute_script("return arguments[0].naturalHeight", img)  # type: ignore[attr-defined]
        assert max(width, height) == 256, (kind, width, height)
        assert card.find_element(By.CSS_SELECTOR, "dd[data-field=pages]").text == pages
        caption = card.find_element(By.CSS_SELECTOR, ".thumb figcaption").text
        assert caption == f"Page 1 · {width}×{height} px", caption
        assert card.find_element(By.CSS_SELECTOR, "dd[data-field=mimetype]").text
        assert card.find_element(By.CSS_SELECTOR, "button.copy").text == "Copy JSON"
        assert not card.find_elements(By.CSS_SELECTOR, ".error")

    broken = cards[uploads["broken"].name]
    assert broken.get_attribute("data-status") == "failure"
    message = broken.find_element(By.CSS_SELECTOR, ".error").text
    assert "broken.pdf" in message or "PDF" in message or "corrupt" in message.lower(), message
    assert not broken.find_elements(By.CSS_SELECTOR, ".thumb img")
    assert broken.find_element(By.CSS_SELECTOR, "button.copy").is_displayed()

    # The page's script ran without errors (a CSP violation would be logged here too).
    severe = [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] == "SEVERE"
    ]
    assert severe == []


DROP_SCRIPT = """
const [name, done] = arguments;
const canvas = document.createElement("canvas");
canvas.width = 640;
canvas.height = 320;
const ctx = canvas.getContext("2d");
ctx.fillStyle = "#c33";
ctx.fillRect(0, 0, 640, 320);
ctx.fillStyle = "#33c";
ctx.fillRect(320, 0, 320, 320);
canvas.toBlob((blob) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, { type: "image/png" }));
  const target = document.getElementById("drop");
  for (const type of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(
      new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true })
    );
  }
  done(document.getElementById("drop").classList.contains("over"));
}, "image/png");
"""


def test_page_takes_dropped_files(server: str, browser: object) -> None:
    """A file dropped on the page (a real DragEvent carrying a File) is previewed like a chosen one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server + "/")  # type: ignore[attr-defined]
    still_over = driver.execute_async_script(DROP_SCRIPT, "dropped.png")  # type: ignore[attr-defined]
    assert still_over is False  # the drop zone's highlight ends with the drop

    def settled(d: object) -> object | None:
        cards = _cards(d)
        card = cards.get("dropped.png")
        return card if card is not None and card.get_attribute("data-status") != "pending" else None

    card = WebDriverWait(driver, 30, poll_frequency=0.25).until(settled)
    assert card.get_attribute("data-status") == "success", card.text
    img = card.find_element(By.CSS_SELECTOR, ".thumb img")
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    )
    size = driver.execute_script(  # type: ignore[attr-defined]
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img
    )
    assert size == [256, 128]
    assert card.find_element(By.CSS_SELECTOR, "dd[data-field=mimetype]").text == "image/png"


def test_page_sends_the_key_and_secret(
    browser: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Against a server with tokens: refused without a key (the key fields open), then accepted."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path_factory.mktemp("tokens")
    from tests.servekit import Served

    tokens = root / "tokens.txt"
    tokens.write_text("pagekey:pa55-w\u00f6rd\n", encoding="utf-8")
    served = Served(root / "storage", "--tokens", str(tokens))
    driver = browser
    try:
        driver.get(served.url + "/")  # type: ignore[attr-defined]
        driver.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
        driver.refresh()  # type: ignore[attr-defined]
        details = driver.find_element(By.ID, "credentials")  # type: ignore[attr-defined]
        assert details.get_attribute("open") is None
        files = driver.find_element(By.ID, "files")  # type: ignore[attr-defined]
        files.send_keys(str(JPEG))

        def last_card(d: object) -> object | None:
            cards = d.find_elements(By.CSS_SELECTOR, "#results li.result")  # type: ignore[attr-defined]
            if cards and cards[-1].get_attribute("data-status") in ("success", "failure"):
                return cards[-1]
            return None

        refused = WebDriverWait(driver, 30).until(last_card)
        assert refused.get_attribute("data-status") == "failure"
        assert "credentials" in refused.find_element(By.CSS_SELECTOR, ".error").text
        assert details.get_attribute("open") is not None  # the key fields opened

        driver.find_element(By.ID, "key").send_keys("pagekey")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "secret").send_keys("pa55-w\u00f6rd")  # type: ignore[attr-defined]
        files.send_keys(str(JPEG))
        WebDriverWait(driver, 60).until(
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == 2
                and last_card(d) is not None
            )
        )
        accepted = last_card(driver)
        assert accepted.get_attribute("data-status") == "success", accepted.text
        img = accepted.find_element(By.CSS_SELECTOR, ".thumb img")
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", img
            )
        )
        assert driver.execute_script("return arguments[0].naturalWidth", img) == 256  # type: ignore[attr-defined]
        # Kept for this tab only.
        assert driver.execute_script("return sessionStorage.getItem('previewer.key')") == "pagekey"  # type: ignore[attr-defined]
        assert driver.execute_script("return localStorage.length") == 0  # type: ignore[attr-defined]
    finally:
        code, left = served.stop()
    assert code == 0 and not left, served.log()


def test_page_files_are_package_data() -> None:
    """Every file the page serves is in the package data pyproject.toml ships."""
    import fnmatch
    import tomllib

    from previewer.serve.page import _TYPES, STATIC
    from tests.support import ROOT

    with (ROOT / "pyproject.toml").open("rb") as fh:
        globs = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["previewer.serve"]
    for name in _TYPES:
        assert (STATIC / name).is_file(), name
        assert any(fnmatch.fnmatch(f"static/{name}", g) for g in globs), name
    assert {p.name for p in STATIC.iterdir()} == set(_TYPES)
