"""LibreOffice sees neither the network nor the host's files, whatever a document links to.

LibreOffice 7.4 fetches linked images of Impress, Draw and Calc documents despite
``BlockUntrustedRefererLinks``, embeds ``file://`` images (local file disclosure), follows an
SVG's ``<image>`` and an RTF ``INCLUDEPICTURE`` field, and fetches an HTML file's stylesheet; only
the sandbox (:mod:`previewer.sandbox`) closes that. Documents generated here link to a listener
on ``127.0.0.1`` that records every connection (there must be none), or to a solid red PNG
planted outside the job (the preview must be the same pixels whether the file exists or not).
All tests share the process's warm LibreOffice.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import officegen
import pytest
from netcheck import Listener
from PIL import Image, ImageChops
from support import requires_engine, same_pixels, wait_until

import previewer
from previewer import sandbox

pytestmark = [
    requires_engine("soffice"),
    pytest.mark.skipif(
        not sandbox.mechanism().network_isolated, reason="no isolation mechanism works here"
    ),
]


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as server:
        yield server


def test_listener_records_a_connection(listener: Listener) -> None:
    # The probe itself works: a plain connection from this process is recorded.
    with socket.create_connection(("127.0.0.1", listener.port)) as conn:
        conn.sendall(b"GET /probe HTTP/1.0\r\n\r\n")
        conn.recv(100)
    assert wait_until(lambda: bool(listener.connections), 5)


def html(path: Path, url: str) -> Path:
    path.write_text(
        "<!DOCTYPE html><html><head>"
        f'<link rel="stylesheet" href="{url}/style.css"></head>'
        f'<body><p>Hello</p><img src="{url}/pixel.png" width="100" height="100"></body></html>'
    )
    return path


REMOTE: dict[str, Callable[[Path, str], Path]] = {
    "linked.odt": lambda p, u: officegen.odf_linked_image(p, u + "/odt.png"),
    "linked.ods": lambda p, u: officegen.odf_linked_image(p, u + "/ods.png"),
    "linked.odp": lambda p, u: officegen.odf_linked_image(p, u + "/odp.png"),
    "linked.odg": lambda p, u: officegen.odf_linked_image(p, u + "/odg.png"),
    "svg.odt": lambda p, u: officegen.odt_with_svg(p, u + "/svg.png"),
    "section.odt": lambda p, u: officegen.odt_with_section(p, u + "/section.odt"),
    "include.rtf": lambda p, u: officegen.rtf_includepicture(p, u + "/rtf.png"),
    "linked.docx": lambda p, u: officegen.docx_linked_image(p, u + "/docx.png"),
    "include.docx": lambda p, u: officegen.docx_includepicture(p, u + "/field.png"),
    "template.docx": lambda p, u: officegen.docx_external_template(p, u + "/t.dotx"),
    "webservice.xlsx": lambda p, u: officegen.xlsx_webservice(p, u + "/ws"),
    "external.xlsx": lambda p, u: officegen.xlsx_external_workbook(p, u + "/book.xlsx"),
}


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_remote_links_are_never_fetched(name: str, tmp_path: Path, listener: Listener) -> None:
    doc = REMOTE[name](tmp_path / name, listener.url(""))

    (preview,) = previewer.convert(doc, out_dir=tmp_path / "out", sizes=[128])

    with Image.open(preview.path) as image:
        assert max(image.size) == 128
    time.sleep(0.3)
    assert listener.connections == []


def test_html_stylesheet_and_image_are_never_fetched(tmp_path: Path, listener: Listener) -> None:
    doc = html(tmp_path / "page.html", listener.url(""))

    (preview,) = previewer.convert(
        doc, out_dir=tmp_path / "out", sizes=[128], converter="office-libreoffice"
    )

    assert preview.path.is_file()
    time.sleep(0.3)
    assert listener.connections == []


LOCAL: dict[str, Callable[[Path, str], Path]] = {
    "odp": lambda p, u: officegen.odf_linked_image(p.with_suffix(".odp"), u),
    "odg": lambda p, u: officegen.odf_linked_image(p.with_suffix(".odg"), u),
    "ods": lambda p, u: officegen.odf_linked_image(p.with_suffix(".ods"), u),
    "odt-svg": lambda p, u: officegen.odt_with_svg(p.with_suffix(".odt"), u),
    "rtf": lambda p, u: officegen.rtf_includepicture(
        p.with_suffix(".rtf"), u.removeprefix("file://")
    ),
}


def red_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (255, 0, 0)).save(path)
    return path


def reddest(image: Image.Image) -> int:
    """How many pixels are strongly red."""
    r, g, b = image.convert("RGB").split()
    mask = ImageChops.subtract(r, ImageChops.lighter(g, b))
    return sum(mask.point(lambda v: 255 if v > 150 else 0).histogram()[255:])


@pytest.mark.parametrize("kind", sorted(LOCAL))
def test_local_files_are_not_disclosed(kind: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "planted.png"
    renders = []
    for present in (True, False):
        if present:
            red_png(secret)
        else:
            secret.unlink()
        job = tmp_path / ("with" if present else "without")
        job.mkdir()
        doc = LOCAL[kind](job / "doc", secret.as_uri())
        (preview,) = previewer.convert(doc, out_dir=job / "out", sizes=[200])
        with Image.open(preview.path) as image:
            renders.append(image.convert("RGB"))

    shown, absent = renders
    assert reddest(shown) == 0, "the planted local image appears in the preview"
    assert same_pixels(shown, absent)
