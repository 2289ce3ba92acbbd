"""Damaged and oddly encrypted PDFs that PDF readers draw: previewer draws them too.

Every input is generated here: PDFs written byte by byte (so the damage is exactly the one meant),
or by PyMuPDF's own encryption.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pymupdf
import pytest
from pngcheck import check_png
from support import run_previewer

import previewer
from previewer.errors import EncryptedError, ExitCode, InputError, InvalidOptionsError
from previewer.mime import sniff

CONTENT = b"1 0 0 rg 10 10 50 30 re f"
PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R >>"
STREAM = b"<< /Length %d >>\nstream\n" % len(CONTENT) + CONTENT + b"\nendstream"
ID = "00112233445566778899aabbccddeeff"


def raw_pdf(objects: list[bytes], trailer: bytes = b"", header: bytes = b"%PDF-1.7\n") -> bytes:
    """A PDF with a correct cross-reference table for ``objects`` (numbered from 1)."""
    out, offsets = header, []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (len(objects) + 1, trailer)
    return out + b"startxref\n%d\n%%%%EOF\n" % xref


def tree_pdf(pages_node: bytes, *extra: bytes) -> bytes:
    """One real page (a red box) under the given /Pages node (object 2)."""
    return raw_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", pages_node, PAGE, STREAM, *extra])


def _red_box(path: Path) -> None:
    image = check_png(path, expected_size=(256, 128))
    assert image.getpixel((40, 100))[:3] == (255, 0, 0)  # the box at 10..60, 10..40 pt


# --------------------------------------------------------------------------- page trees

TREES = {
    "count-too-large": b"<< /Type /Pages /Kids [3 0 R] /Count 5 >>",
    "count-huge": b"<< /Type /Pages /Kids [3 0 R] /Count 2000000000 >>",
    "count-negative": b"<< /Type /Pages /Kids [3 0 R] /Count -3 >>",
    "count-zero": b"<< /Type /Pages /Kids [3 0 R] /Count 0 >>",
    "kids-loop": b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
}


@pytest.mark.parametrize("damage", sorted(TREES))
def test_damaged_page_tree_renders_page_1_and_the_count_is_unknown(
    damage: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{damage}.pdf"
    path.write_bytes(tree_pdf(TREES[damage]))

    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256], pages="all")
    _red_box(preview.path)
    facts = previewer.info(path)

    assert facts.pages is None
    assert facts.page_sizes == [(200.0, 100.0)]
    assert facts.to_dict()["pages"] is None
    assert facts.metadata["page_tree"].startswith("damaged: ")
    assert facts.metadata["page_tree"].endswith("; 1 found")


def test_loop_below_the_root_is_cut_and_the_page_found(tmp_path: Path) -> None:
    path = tmp_path / "deep-loop.pdf"
    loop = b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>"
    path.write_bytes(tree_pdf(b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 3 >>", loop))

    facts = previewer.info(path)

    assert facts.pages is None and facts.page_sizes == [(200.0, 100.0)]
    assert "loops" in facts.metadata["page_tree"]
    _red_box(previewer.convert(path, out_dir=tmp_path / "out", pages="1-5")[0].path)


def test_page_beyond_the_pages_found_names_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "loop.pdf"
    path.write_bytes(tree_pdf(TREES["kids-loop"]))

    with pytest.raises(InvalidOptionsError, match="page tree is damaged and only 1 page") as exc:
        previewer.convert(path, out_dir=tmp_path / "out", pages="2")
    assert "loop.pdf" in str(exc.value)


def test_cli_info_shows_an_unknown_page_count(tmp_path: Path) -> None:
    path = tmp_path / "count.pdf"
    path.write_bytes(tree_pdf(TREES["count-too-large"]))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_previewer("info", path, *args, text=True, timeout=60)

    as_json, as_text = cli("--json"), cli()

    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    facts = json.loads(as_json.stdout)
    assert facts["pages"] is None and facts["page_sizes"] == [[200.0, 100.0]]
    assert "pages             unknown (damaged; 1 found)" in as_text.stdout


def test_sound_pdf_still_has_a_known_count(tmp_path: Path) -> None:
    path = tmp_path / "ok.pdf"
    path.write_bytes(tree_pdf(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"))
    facts = previewer.info(path)
    assert facts.pages == 1 and "page_tree" not in facts.metadata


def test_page_tree_without_any_page_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "empty-tree.pdf"
    path.write_bytes(tree_pdf(b"<< /Type /Pages /Kids [2 0 R] /Count 4 >>"))
    with pytest.raises(InputError, match="no pages") as exc:
        previewer.convert(path, out_dir=tmp_path / "out")
    assert exc.value.exit_code == ExitCode.BAD_INPUT


# --------------------------------------------------------------------------- headers


def _doc_pdf(tmp_path: Path) -> bytes:
    doc = pymupdf.open()
    page = doc.new_page(width=200, height=100)
    page.draw_rect(pymupdf.Rect(10, 60, 60, 90), color=(1, 0, 0), fill=(1, 0, 0))
    data: bytes = doc.tobytes()
    doc.close()
    return data


@pytest.mark.parametrize(
    "damage", ["junk-2k-before", "header-misspelt", "header-missing", "header-lowercase"]
)
def test_pdf_with_a_damaged_header_is_sniffed_and_repaired(damage: str, tmp_path: Path) -> None:
    data = _doc_pdf(tmp_path)
    assert data.startswith(b"%PDF-")
    first_line = data.index(b"\n") + 1
    damaged = {
        "junk-2k-before": b"X" * 2000 + b"\n" + data,
        "header-misspelt": b"%PDX-1.7\n" + data[first_line:],
        "header-missing": data[first_line:],
        "header-lowercase": b"%pdf-1.7\n" + data[first_line:],
    }[damage]
    path = tmp_path / f"{damage}.bin"
    path.write_bytes(damaged)

    assert sniff(path) == "application/pdf"
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256])
    assert preview.converter == "pdf-pymupdf"
    image = check_png(preview.path, expected_size=(256, 128))
    assert image.getpixel((40, 100))[:3] == (255, 0, 0)


def test_text_mentioning_pdf_objects_is_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"Notes on PDF syntax. An object reads:\n1 0 obj\n<< >>\nendobj\nThe end.\n")
    assert sniff(path) == "text/plain"


# --------------------------------------------------------------------------- encryption


@pytest.mark.parametrize(
    "method",
    [pymupdf.PDF_ENCRYPT_AES_256, pymupdf.PDF_ENCRYPT_AES_128, pymupdf.PDF_ENCRYPT_RC4_128],
)
def test_owner_password_only_opens_without_a_password(method: int, tmp_path: Path) -> None:
    path = tmp_path / "owner-only.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=200, height=100)
    page.draw_rect(pymupdf.Rect(10, 60, 60, 90), color=(1, 0, 0), fill=(1, 0, 0))
    doc.save(path, encryption=method, owner_pw="owner", user_pw="", permissions=0)
    doc.close()

    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256])
    image = check_png(preview.path, expected_size=(256, 128))
    assert image.getpixel((40, 100))[:3] == (255, 0, 0)
    # A wrong password given for it does not matter either: the empty one opens it.
    assert previewer.info(path, password="wrong").pages == 1


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def attachments_only_pdf(user: bytes, *, stream_filter: bytes = b"/Identity") -> bytes:
    """A PDF whose standard security handler (V4, R4) encrypts only embedded files (/EFF).

    O and U are computed as PDF 32000-1:2008 algorithms 3-5 say, for the user password ``user``.
    """
    pad = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
    ident = bytes.fromhex(ID)

    def padded(password: bytes) -> bytes:
        return (password + pad)[:32]

    def rounds(key: bytes, data: bytes) -> bytes:
        data = _rc4(key, data)
        for i in range(1, 20):
            data = _rc4(bytes(b ^ i for b in key), data)
        return data

    digest = hashlib.md5(padded(b"owner")).digest()
    for _ in range(50):
        digest = hashlib.md5(digest).digest()
    owner = rounds(digest, padded(user))
    digest = hashlib.md5(padded(user) + owner + (-4).to_bytes(4, "little", signed=True) + ident)
    key = digest.digest()
    for _ in range(50):
        key = hashlib.md5(key).digest()
    user_entry = rounds(key, hashlib.md5(pad + ident).digest()) + b"\0" * 16
    encrypt = (
        b"<< /Filter /Standard /V 4 /R 4 /Length 128 /P -4 /O <%s> /U <%s>"
        b" /CF << /StdCF << /CFM /AESV2 /AuthEvent /EFOpen /Length 16 >> >>"
        b" /StmF %s /StrF /Identity /EFF /StdCF >>"
        % (owner.hex().encode(), user_entry.hex().encode(), stream_filter)
    )
    return raw_pdf(
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
        + [PAGE, STREAM, encrypt],
        b"/Encrypt 5 0 R /ID [<%s> <%s>] " % (ID.encode(), ID.encode()),
    )


def test_pdf_with_only_its_attachments_encrypted_renders(tmp_path: Path) -> None:
    path = tmp_path / "attachments-locked.pdf"
    data = attachments_only_pdf(b"secret")
    path.write_bytes(data)
    check = pymupdf.open(path)
    assert check.needs_pass and not check.authenticate("")  # what MuPDF alone makes of it
    assert check.authenticate("secret")
    check.close()

    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256])

    _red_box(preview.path)
    assert path.read_bytes() == data  # the input is never touched
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [preview.path.name]
    assert previewer.info(path).page_sizes == [(200.0, 100.0)]


def test_pdf_with_encrypted_streams_still_needs_its_password(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    path.write_bytes(attachments_only_pdf(b"secret", stream_filter=b"/StdCF"))
    with pytest.raises(EncryptedError, match="needs a password"):
        previewer.convert(path, out_dir=tmp_path / "out")


def test_user_password_still_needed_for_aes_256(tmp_path: Path) -> None:
    path = tmp_path / "locked256.pdf"
    doc = pymupdf.open()
    doc.new_page(width=200, height=100)
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="user")
    doc.close()
    with pytest.raises(EncryptedError):
        previewer.info(path)
    assert previewer.info(path, password="user").pages == 1


# --------------------------------------------------------------------------- no area


@pytest.mark.parametrize("size", ['width="0" height="0"', 'width="0" height="50"'])
def test_zero_size_svg_is_bad_input(size: str, tmp_path: Path) -> None:
    path = tmp_path / "zero.svg"
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" {size}><rect width="9" height="9"/></svg>'
    )

    with pytest.raises(InputError, match="has no area") as exc:
        previewer.convert(path, out_dir=tmp_path / "out")
    assert exc.value.exit_code == ExitCode.BAD_INPUT == 5
    proc = run_previewer("convert", path, "-o", tmp_path / "out", text=True, timeout=60)
    assert proc.returncode == 5 and "zero.svg: page 1 has no area" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_thumbnail_cache_entry_of_a_damaged_tree_states_no_page_count(tmp_path: Path) -> None:
    from pngcheck import png_chunks

    from previewer import freedesktop

    path = tmp_path / "loop.pdf"
    path.write_bytes(tree_pdf(TREES["kids-loop"]))
    root = tmp_path / "cache" / "thumbnails"

    report = freedesktop.fill_cache([path], sizes=("normal",), root=root)

    assert report.exit_code == 0, report.results
    entry = root / "normal" / freedesktop.thumbnail_name(freedesktop.to_uri(path))
    keys = {
        data.split(b"\0", 1)[0].decode(): data.split(b"\0", 1)[1].decode()
        for kind, data in png_chunks(entry.read_bytes())
        if kind == b"tEXt"
    }
    assert keys["Thumb::Mimetype"] == "application/pdf"
    assert "Thumb::Document::Pages" not in keys  # unknown, not the one page found


def test_loop_before_the_first_page_is_cut_too(tmp_path: Path) -> None:
    path = tmp_path / "loop-first.pdf"
    path.write_bytes(tree_pdf(b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>"))

    _red_box(previewer.convert(path, out_dir=tmp_path / "out")[0].path)
    assert previewer.info(path).pages is None


def test_page_tree_of_non_pages_is_bad_input_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "bad-page.pdf"
    # The only kid is a string, not a page: MuPDF's page map fails, the rebuilt tree is empty.
    path.write_bytes(
        raw_pdf(
            [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
            + [b"(not a page)"]
        )
    )
    with pytest.raises(
        InputError, match="no pages .the page tree holds an object that is not a page"
    ):
        previewer.convert(path, out_dir=tmp_path / "out")
