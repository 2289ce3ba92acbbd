"""Metadata on request: previewer.metadata(), info(metadata=...) and `previewer info --metadata`.

Real engines throughout: Pillow's EXIF reader, PyMuPDF's text layer, Tesseract, ffprobe,
exiftool, psd-tools and LibreOffice. Inputs are generated here (a JPEG with EXIF and GPS, a PNG
with an eXIf chunk, rendered text for OCR, a one-second clip from ffmpeg's test sources, a PSD).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageDraw, ImageFont

import previewer
from previewer.errors import (
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidOptionsError,
)
from previewer.extraction import ALL, KEYS
from tests.psdgen import layered_psd
from tests.support import JPEG, PDF, in_ci, invoke, requires_engine

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def need(program: str) -> str:
    """The program's path; a missing one skips the test here and fails it in CI."""
    path = shutil.which(program)
    if path is None:
        if in_ci():
            pytest.fail(f"{program} is missing (CI must install every engine)", pytrace=False)
        pytest.skip(f"{program} is missing")
    return path


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Previewer Camera Co"
    exif[ExifTags.Base.Model] = "PX-100"
    exif[ExifTags.Base.DateTime] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (33.0, 52.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (151.0, 12.0, 36.0)
    return exif


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("metadata")
    made: dict[str, Path] = {}
    photo = root / "photo.jpg"
    Image.new("RGB", (120, 80), (30, 120, 200)).save(photo, exif=_exif())
    made["jpeg"] = photo
    # A PNG whose header declares 30,000 x 30,000 pixels, with its eXIf chunk after a
    # (truncated) IDAT: reading the EXIF must not decode the image.
    raw = _exif().tobytes()
    png = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    )
    png += _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"eXIf", raw)
    png += _chunk(b"IEND", b"")
    made["png"] = root / "huge.png"
    made["png"].write_bytes(png)
    # Large black words on white, for OCR.
    page = Image.new("RGB", (1400, 400), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(FONT), 96)
    draw.text((60, 60), "QUICK BROWN", fill="black", font=font)
    draw.text((60, 220), "FOX JUMPS", fill="black", font=font)
    made["ocr"] = root / "words.png"
    page.save(made["ocr"])
    made["text"] = root / "notes.txt"
    made["text"].write_text("Plain notes: ünïcode survives.\nSecond line.\n", encoding="utf-8")
    made["psd"] = layered_psd(root / "layers.psd", size=(200, 150), layers=2)
    made["junk"] = root / "junk.gz"  # no converter claims application/gzip
    made["junk"].write_bytes(gzip.compress(b"not a document " * 100))
    return made


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ffmpeg = need("ffmpeg")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        [
            ffmpeg, "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=d=1:s=160x120",
            "-f", "lavfi", "-i", "sine=d=1",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
            str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


def test_exif_of_a_jpeg_without_and_with_gps(files: dict[str, Path]) -> None:
    found = previewer.metadata(files["jpeg"], "exif")
    assert list(found) == ["exif"]
    exif = found["exif"]
    assert exif["Make"] == "Previewer Camera Co"
    assert exif["Model"] == "PX-100"
    assert exif["DateTime"] == "2024:05:06 07:08:09"
    assert not any(k.startswith("GPS") for k in exif)
    json.dumps(exif)  # JSON-safe
    both = previewer.metadata(files["jpeg"], ["exif", "gps"])
    gps = both["gps"]
    assert gps["GPSLatitudeRef"] == "S" and gps["GPSLatitude"] == [33, 52, 12]
    assert gps["latitude"] == pytest.approx(-(33 + 52 / 60 + 12 / 3600))
    assert gps["longitude"] == pytest.approx(151 + 12 / 60 + 36 / 3600)
    everything = previewer.metadata(files["jpeg"], "all")
    assert tuple(everything) == ALL and "gps" not in everything  # a location only when named


def test_png_exif_is_read_from_its_chunk_without_decoding(files: dict[str, Path]) -> None:
    found = previewer.metadata(files["png"], "exif,gps")
    assert found["exif"]["Model"] == "PX-100"
    assert found["gps"]["GPSLongitudeRef"] == "E"


def test_checksum_matches_hashlib(files: dict[str, Path]) -> None:
    data = files["jpeg"].read_bytes()
    found = previewer.metadata(files["jpeg"], "checksum")["checksum"]
    assert found == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "bytes": len(data),
    }
    from_bytes = previewer.metadata(data, "checksum", name="photo.jpg")["checksum"]
    assert from_bytes == found
    with open(files["jpeg"], "rb") as fh:
        assert previewer.metadata(fh, "checksum")["checksum"] == found


def test_text_of_a_pdf_a_text_file_and_an_image(files: dict[str, Path]) -> None:
    text = previewer.metadata(PDF, "text")["text"]
    assert "previewer sample report" in text["text"] and "quick brown fox" in text["text"]
    assert text["pages"] == 2 and text["truncated"] is False and text["source"] == "document"
    assert text["text"].count("\f") == 1  # two pages
    notes = previewer.metadata(files["text"], "text")["text"]
    assert notes["text"] == files["text"].read_text(encoding="utf-8")
    assert notes["source"] == "file"
    assert previewer.metadata(files["jpeg"], "text") == {"text": None}


def test_file_no_converter_claims_still_gets_the_file_keys(files: dict[str, Path]) -> None:
    found = previewer.metadata(files["junk"], "checksum,text,psd,multimedia,exif")
    assert found["checksum"]["sha256"] == hashlib.sha256(files["junk"].read_bytes()).hexdigest()
    assert found["text"] is None and found["psd"] is None
    assert found["multimedia"] is None and found["exif"] is None


def test_ocr_reads_rendered_words(files: dict[str, Path]) -> None:
    need("tesseract")
    ocr = previewer.metadata(files["ocr"], "ocr")["ocr"]
    words = ocr["text"].upper().split()
    for word in ("QUICK", "BROWN", "FOX", "JUMPS"):
        assert word in words, ocr
    assert ocr["pages"] == 1 and ocr["language"] == "eng"


def test_ocr_runs_under_the_timeout(files: dict[str, Path]) -> None:
    need("tesseract")
    with pytest.raises(EngineTimeoutError) as info:
        previewer.metadata(files["ocr"], "ocr", limits=previewer.Limits(timeout=0.01))
    assert info.value.path == str(files["ocr"])


def test_missing_programs_say_how_to_install_them(
    files: dict[str, Path], clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from previewer import extraction, limited, mediaprobe

    # Programs by other names, looked for in this process (no child to patch).
    monkeypatch.setattr(limited, "ISOLATE", False)
    monkeypatch.setattr(extraction, "TESSERACT", "no-such-tesseract")
    monkeypatch.setattr(mediaprobe, "FFPROBE", "no-such-ffprobe")
    with pytest.raises(EngineUnavailableError, match="apt-get install tesseract-ocr"):
        previewer.metadata(files["ocr"], "ocr")
    with pytest.raises(EngineUnavailableError, match="apt-get install ffmpeg"):
        previewer.metadata(clip, "multimedia")
    assert previewer.metadata(files["jpeg"], "multimedia") == {"multimedia": None}


def test_multimedia_of_a_clip(clip: Path) -> None:
    need("ffprobe")
    media = previewer.metadata(clip, "multimedia")["multimedia"]
    assert media["duration"] == pytest.approx(1.0, abs=0.1)
    assert media["bit_rate"] > 0 and "mp4" in media["container"]
    video = [s for s in media["streams"] if s["type"] == "video"]
    audio = [s for s in media["streams"] if s["type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    assert video[0]["codec"] == "h264" and (video[0]["width"], video[0]["height"]) == (160, 120)
    assert video[0]["frame_rate"] == pytest.approx(25, abs=0.5)
    assert audio[0]["codec"] == "aac" and audio[0]["sample_rate"] > 0 and audio[0]["channels"] >= 1
    assert previewer.metadata(PDF, "multimedia") == {"multimedia": None}


def test_exif_of_a_video_comes_from_exiftool(clip: Path) -> None:
    need("exiftool")
    exif = previewer.metadata(clip, "exif")["exif"]
    assert exif["MIMEType"] == "video/mp4" and exif["ImageWidth"] == 160
    assert "SourceFile" not in exif and "Directory" not in exif  # no paths leak


def test_psd_layers(files: dict[str, Path]) -> None:
    psd = previewer.metadata(files["psd"], "psd")["psd"]
    assert psd["canvas"] == [200, 150] and psd["color_mode"] == "RGB"
    assert psd["layer_names"] == ["Background", "Shape 1", "Shape 2"]
    assert previewer.metadata(PDF, "psd") == {"psd": None}


def test_unknown_key_lists_the_valid_ones(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with pytest.raises(InvalidOptionsError) as info:
        previewer.metadata(PDF, "exif,colour")
    for key in KEYS:
        assert key in info.value.message
    with pytest.raises(InvalidOptionsError):
        previewer.info(PDF, metadata=["nope"])
    code, out, err = invoke(capsysbinary, "info", PDF, "--metadata", "checksum,colour")
    assert code == 2 and out == b""
    assert "unknown metadata key 'colour'" in err and "checksum, exif, gps, text" in err


def test_info_carries_the_extracted_metadata(files: dict[str, Path]) -> None:
    facts = previewer.info(files["jpeg"], metadata="exif,checksum")
    assert facts.extracted is not None and facts.extracted["exif"]["Model"] == "PX-100"
    data = facts.to_dict()
    assert data["extracted"]["checksum"]["sha256"] == facts.sha256
    assert "extracted" not in previewer.info(files["jpeg"]).to_dict()


def test_cli_json_and_human_output(
    files: dict[str, Path], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code, out, err = invoke(
        capsysbinary, "info", files["jpeg"], PDF, "--metadata", "exif,gps,text", "--json"
    )
    assert code == 0, err
    first, second = (json.loads(line) for line in out.decode().splitlines())
    assert first["extracted"]["gps"]["GPSLatitudeRef"] == "S"
    assert first["extracted"]["text"] is None
    assert "quick brown fox" in second["extracted"]["text"]["text"]
    assert second["extracted"]["exif"] is None and second["status"] == "ok"
    code, out, err = invoke(capsysbinary, "info", files["jpeg"], "--metadata", "exif,checksum")
    assert code == 0, err
    text = out.decode()
    assert "exif.Model" in text and "PX-100" in text
    assert "checksum.md5" in text and hashlib.md5(files["jpeg"].read_bytes()).hexdigest() in text
    assert "gps" not in text


@requires_engine("soffice")
def test_text_of_an_office_document_through_its_pdf(tmp_path: Path) -> None:
    from tests.officegen import docx

    path = docx(
        tmp_path / "memo.docx",
        "<w:p><w:r><w:t>Quarterly figures are attached</w:t></w:r></w:p>",
    )
    text = previewer.metadata(path, "text")["text"]
    assert "Quarterly figures are attached" in text["text"] and text["source"] == "document"


def test_jpeg_sample_all_keys_are_json(files: dict[str, Path]) -> None:
    need("tesseract")
    found = previewer.metadata(JPEG, "all")
    assert set(found) == set(ALL)
    json.dumps(found)


def test_plugin_documents_may_offer_their_text() -> None:
    from previewer.conform import conform_document

    class Plain:
        page_count = 1
        units = "pt"

        def page_size(self, index: int) -> tuple[float, float]:
            return (100.0, 100.0)

        def render(self, index: int, *, scale: float, clip: object = None) -> Image.Image:
            return Image.new("RGB", (100, 100), "white")

        def close(self) -> None:
            pass

    class WithText(Plain):
        def text(self, *, max_pages: int, max_chars: int) -> str:
            return f"{max_pages} pages, {max_chars} chars"

    assert conform_document(Plain()).text(max_pages=2, max_chars=10) is None
    assert conform_document(WithText()).text(max_pages=2, max_chars=10) == "2 pages, 10 chars"
