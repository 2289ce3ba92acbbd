"""The command line: naming, stdout/stderr separation, JSON, exit codes, help and docs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import click
import pymupdf
import pytest
from PIL import Image
from support import channel_differences, invoke, run_previewer

import previewer
from previewer.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
PDF = SAMPLES / "report.pdf"  # 2 pages, A4 portrait
JPEG = SAMPLES / "photo.jpg"  # 1600 x 1200


def test_default_names_in_current_directory(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(capsysbinary, "convert", PDF, JPEG)
    assert code == 0, err
    assert sorted(out.decode().splitlines()) == ["photo.jpg.p1.256.png", "report.pdf.p1.256.png"]
    with Image.open(tmp_path / "report.pdf.p1.256.png") as im:
        assert im.format == "PNG" and im.size == (181, 256) and im.mode == "RGB"
    with Image.open(tmp_path / "photo.jpg.p1.256.png") as im:
        assert im.size == (256, 192)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "photo.jpg.p1.256.png",
        "report.pdf.p1.256.png",
    ]


def test_sizes_and_page_ranges(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    out_dir = tmp_path / "thumbs"
    code, out, err = invoke(
        capsysbinary, "convert", PDF, "-o", out_dir, "-s", "128", "-s", "1024x768", "-p", "1-3"
    )
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "report.pdf.p1.1024x768.png",
        "report.pdf.p1.128.png",
        "report.pdf.p2.1024x768.png",
        "report.pdf.p2.128.png",
    ]
    with Image.open(out_dir / "report.pdf.p2.1024x768.png") as im:
        assert im.size == (543, 768)
    assert len(out.decode().splitlines()) == 4


def test_json_lines_and_partial_failure(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pdf"
    code, out, err = invoke(
        capsysbinary, "convert", PDF, missing, JPEG, "-o", tmp_path, "--json", "-p", "all"
    )
    assert code == 10
    by_input = {r["input"]: r for r in map(json.loads, out.decode().splitlines())}
    lines = [by_input[str(PDF)], by_input[str(missing)], by_input[str(JPEG)]]
    assert [r["status"] for r in lines] == ["converted", "failed", "converted"]
    first = lines[0]
    assert first["mime"] == "application/pdf" and first["converter"] == "pdf-pymupdf"
    assert [(o["page"], o["size"], o["width"], o["height"]) for o in first["outputs"]] == [
        (1, "256", 181, 256),
        (2, "256", 181, 256),
    ]
    assert Path(first["outputs"][0]["path"]).is_file()
    error = lines[1]["error"]
    assert error["type"] == "InputError" and error["exit_code"] == 5
    assert str(missing) in error["message"] and "no such file" in error["message"]
    assert "no such file" in err and "1 failed (InputError: 1)" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["convert", "{missing}"], 5, "no such file"),
        (["convert", "{blob}"], 3, "unsupported format application/octet-stream"),
        (["convert", "{empty}"], 5, "file is empty"),
        (["convert", "{pdf}", "-s", "0"], 2, "invalid size"),
        (["convert", "{pdf}", "-s", "big"], 2, "invalid size"),
        (["convert", "{pdf}", "-p", "0"], 2, "pages count from 1"),
        (["convert", "{pdf}", "-p", "7"], 2, "has 2 pages"),
        (["convert", "{pdf}", "--converter", "nope"], 2, "no converter named 'nope'"),
        (
            ["convert", "{pdf}", "--converter", "raster-pillow"],
            3,
            "not allowed to decode application/pdf",
        ),
        (["convert", "{pdf}", "--max-file-size", "100"], 6, "over the limit of 100"),
        (
            ["convert", "{jpeg}", "--max-pixels", "1000"],
            6,
            "1,920,000 pixels, over the limit of 1,000",
        ),
        (["convert"], 2, "Missing argument"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_exit_codes_and_messages(
    capsysbinary: pytest.CaptureFixture[bytes],
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    (tmp_path / "notes.txt").write_text("just some text\n")
    (tmp_path / "blob.bin").write_bytes(random.Random(7).randbytes(4096))
    (tmp_path / "empty.pdf").write_bytes(b"")
    paths = {
        "missing": str(tmp_path / "nope.pdf"),
        "text": str(tmp_path / "notes.txt"),
        "blob": str(tmp_path / "blob.bin"),
        "empty": str(tmp_path / "empty.pdf"),
        "pdf": str(PDF),
        "jpeg": str(JPEG),
    }
    args = [a.format(**paths) for a in args]
    got, out, err = (
        invoke(capsysbinary, *args, "-o", str(tmp_path / "out"))
        if args[:1] == ["convert"] and len(args) > 1
        else invoke(capsysbinary, *args)
    )
    assert got == code, err
    assert message in err
    assert out == b""
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_error_message_names_the_file(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    bad = tmp_path / "garbage.pdf"
    bad.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    code, out, err = invoke(capsysbinary, "convert", bad, "-o", tmp_path)
    assert code == 5
    assert err.startswith(f"previewer: error: {bad}: ")
    assert out == b""


def test_output_to_stdout(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", "-", "-s", "100")
    assert code == 0, err
    with Image.open(io.BytesIO(out)) as im:
        assert im.format == "PNG" and im.size == (71, 100)
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", "-", "-s", "100", "-s", "200")
    assert code == 2 and "one size" in err and out == b""


def test_stdin_input(tmp_path: Path) -> None:
    proc = run_previewer("convert", "-", "-o", tmp_path, "-s", "64", input=JPEG.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == str(tmp_path / "stdin.p1.64.png")
    with Image.open(tmp_path / "stdin.p1.64.png") as im:
        assert im.size == (64, 48)


def test_info_json(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "info", PDF, "--json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["mime"] == "application/pdf"
    assert facts["converter"] == "pdf-pymupdf"
    assert facts["engine"].startswith("PyMuPDF")
    assert facts["pages"] == 2
    assert facts["page_sizes"] == [[595.0, 842.0], [595.0, 842.0]]
    assert facts["units"] == "pt"
    assert facts["bytes"] == PDF.stat().st_size
    assert facts["sha256"] == hashlib.sha256(PDF.read_bytes()).hexdigest()


def test_info_text(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "info", JPEG)
    assert code == 0, err
    text = out.decode()
    assert re.search(r"mime\s+image/jpeg", text)
    assert re.search(r"page 1\s+1600 x 1200 px", text)


def test_converters_listing(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "converters", "--json")
    assert code == 0, err
    listing = {c["name"]: c for c in map(json.loads, out.decode().splitlines())}
    assert listing["pdf-pymupdf"]["available"] is True
    assert "application/pdf" in listing["pdf-pymupdf"]["mime_types"]
    assert listing["pdf-pymupdf"]["version"].startswith("1.28")
    assert listing["raster-pillow"]["available"] is True
    assert "image/jpeg" in listing["raster-pillow"]["mime_types"]
    code, out, err = invoke(capsysbinary, "converters")
    assert code == 0 and "✓ pdf-pymupdf" in out.decode()


def test_mupdf_messages_stay_off_stdout(tmp_path: Path) -> None:
    broken = tmp_path / "broken-xref.pdf"
    data = PDF.read_bytes()
    broken.write_bytes(data.replace(b"startxref", b"startxref\n999999\n%%junk", 1))
    proc = run_previewer("convert", broken, "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == f"{tmp_path / 'broken-xref.pdf.p1.256.png'}\n"


def test_jpeg_conversion_loads_neither_pymupdf_nor_rich(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from previewer.cli import main\n"
        "try:\n"
        f"    main(['convert', {str(JPEG)!r}, '-o', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('pymupdf', 'rich', 'magic') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[-1] == "[]"


def test_pdf_conversion_does_not_load_pillow(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from previewer.cli import main\n"
        "try:\n"
        f"    main(['convert', {str(PDF)!r}, '-o', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('PIL', 'rich', 'magic') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[-1] == "[]"


def test_direct_png_path_matches_the_pillow_path(tmp_path: Path) -> None:
    (direct,) = previewer.convert(PDF, out_dir=tmp_path, sizes=["300x"])
    via_pillow = previewer.render(PDF, size="300x")
    with Image.open(direct.path) as im:
        assert im.size == via_pillow.size == (300, 425)
        assert im.mode == "RGB"
        diff = channel_differences(im, via_pillow)
    assert max(diff) < 2.0, diff


def test_import_loads_no_engine() -> None:
    code = (
        "import sys, previewer\n"
        "print(sorted(m for m in ('pymupdf', 'PIL', 'rich', 'click', 'magic') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.stdout.decode().strip() == "[]"


def _commands() -> list[str]:
    return cli.list_commands(click.Context(cli))


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_and_is_documented(
    capsysbinary: pytest.CaptureFixture[bytes], command: str
) -> None:
    code, out, err = invoke(capsysbinary, command, "--help")
    assert code == 0, err
    assert "Usage: previewer " + command in out.decode()
    readme = (ROOT / "README.md").read_text()
    assert f"previewer {command}" in readme


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


def _examples(command: click.Command) -> list[str]:
    """The example lines of a command's docstring (indented lines after ``Examples:``)."""
    lines = (command.help or "").splitlines()
    if "Examples:" not in [line.strip() for line in lines]:
        return []
    start = [line.strip() for line in lines].index("Examples:") + 1
    examples = []
    for line in lines[start:]:
        if not line.strip():
            break
        examples.append(line.strip())
    return examples


def test_help_shows_examples_one_per_line(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """click keeps a paragraph unwrapped only after a real backspace line; a raw docstring's
    literal backslash-b is printed and the examples run together into one paragraph."""
    with_examples = []
    for path in _command_paths(cli):
        code, out, err = invoke(capsysbinary, *path, "--help")
        text = out.decode()
        assert code == 0, err
        assert "\\b" not in text and "\b" not in text, (path, text)
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            found = command.get_command(click.Context(command), name)
            assert found is not None
            command = found
        examples = _examples(command)
        if examples:
            with_examples.append(" ".join(path))
            shown = [line.strip() for line in text.splitlines()]
            assert "Examples:" in shown, (path, text)
            start = shown.index("Examples:") + 1
            assert shown[start : start + len(examples)] == examples, (path, text)
    assert {"", "convert", "info", "worker", "thumbnail", "desktop"} <= set(with_examples)


def test_readme_documents_every_convert_option() -> None:
    readme = (ROOT / "README.md").read_text()
    for param in cli.commands["convert"].params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                assert opt in readme, f"{opt} is not documented in README.md"


def test_readme_exit_codes_match_the_enum() -> None:
    from previewer.errors import ExitCode

    readme = (ROOT / "README.md").read_text()
    for member in ExitCode:
        assert re.search(rf"\|\s*{int(member)}\s*\|\s*`?{member.name}`?", readme), member


def test_python_dash_m(tmp_path: Path) -> None:
    proc = run_previewer("convert", PDF, "-o", tmp_path, "-q")
    assert proc.returncode == 0 and proc.stderr == b""
    assert (tmp_path / "report.pdf.p1.256.png").is_file()


def test_pdf_named_jpg_is_converted_as_pdf(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    disguised = tmp_path / "holiday.jpg"
    disguised.write_bytes(PDF.read_bytes())
    code, out, err = invoke(capsysbinary, "convert", disguised, "-o", tmp_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["mime"] == "application/pdf" and result["converter"] == "pdf-pymupdf"


def test_encrypted_pdf_needs_password(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    doc = pymupdf.open(PDF)
    locked = tmp_path / "locked.pdf"
    doc.save(locked, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="s3cret", owner_pw="owner")
    code, out, err = invoke(capsysbinary, "convert", locked, "-o", tmp_path)
    assert code == 5 and "needs a password" in err and "--password" in err
    code, out, err = invoke(capsysbinary, "convert", locked, "-o", tmp_path, "--password", "wrong")
    assert code == 5 and "password is wrong" in err
    code, out, err = invoke(capsysbinary, "convert", locked, "-o", tmp_path, "--password", "s3cret")
    assert code == 0, err


def test_same_name_inputs_do_not_overwrite_each_other(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "doc.pdf", tmp_path / "b" / "doc.pdf"
    first.write_bytes(PDF.read_bytes())
    second.write_bytes(PDF.read_bytes())
    code, out, err = invoke(capsysbinary, "convert", first, second, "-o", tmp_path / "out")
    assert code == 10
    assert out.decode().splitlines() == [str(tmp_path / "out" / "doc.pdf.p1.256.png")]
    assert f"{second}: its previews would overwrite those of {first}" in err


def test_keep_temp_reports_the_kept_directory(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", tmp_path, "--keep-temp")
    assert code == 0
    match = re.search(r"keeping work directory (\S+)", err)
    assert match and Path(match.group(1)).is_dir()
    Path(match.group(1)).rmdir()
