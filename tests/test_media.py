"""Video and audio previews through ffmpeg (converters/video.py, audio.py, media.py).

Every input is generated here by ffmpeg from its lavfi sources (``testsrc2``, ``smptebars``,
``color``, ``sine``): tiny sizes and durations, about 0.05-0.1 s each, made once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from netcheck import SECRET, Listener
from PIL import Image, ImageStat
from pngcheck import check_png
from support import clean_env, mean_difference, require_engine, requires_engine, run_previewer

import previewer
from previewer.errors import InputError, LimitExceededError
from previewer.mime import sniff

pytestmark = requires_engine("ffmpeg")

FFMPEG = "/usr/bin/ffmpeg"
W, H = 96, 72
SRC = f"testsrc2=s={W}x{H}:r=10"


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=60,
    )


def _h264() -> list[str]:
    out = subprocess.run(
        [FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
    ).stdout
    if " libx264 " in out:
        return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4"]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input of this module, generated once: name -> path."""
    require_engine("ffmpeg")
    d = tmp_path_factory.mktemp("media")
    h264 = _h264()
    p = {name: d / name for name in (
        "clip.mp4", "clip.mkv", "clip.webm", "clip.avi", "clip.mov", "clip.wmv", "clip.ts",
        "clip.m2v",
        "long.mp4", "black.mp4", "covered.mp4", "rotated.mp4", "cover.png", "cover.mp3",
        "tone.wav", "tone.ogg", "tone.flac", "tone.opus", "voice.webm", "stream.mp4",
    )}  # fmt: skip
    one = ["-f", "lavfi", "-i", f"{SRC}:d=1"]
    _ffmpeg(*one, *h264, "-g", "5", str(p["clip.mp4"]))
    _ffmpeg(*one, *h264, "-g", "5", str(p["clip.mkv"]))
    _ffmpeg(*one, "-c:v", "libvpx", "-b:v", "200k", str(p["clip.webm"]))
    _ffmpeg(*one, "-c:v", "mpeg4", str(p["clip.avi"]))
    _ffmpeg(*one, *h264, str(p["clip.mov"]))
    _ffmpeg(*one, "-c:v", "wmv2", "-f", "asf", str(p["clip.wmv"]))
    _ffmpeg(*one, "-c:v", "mpeg2video", "-f", "mpegts", str(p["clip.ts"]))
    _ffmpeg(*one, "-c:v", "mpeg2video", "-f", "mpeg2video", str(p["clip.m2v"]))
    # 3 s, a keyframe every second, a sound track: three pages, each a different keyframe.
    _ffmpeg(
        "-f", "lavfi", "-i", f"{SRC}:d=3", "-f", "lavfi", "-i", "sine=d=3", *h264, "-g", "10",
        "-c:a", "aac", str(p["long.mp4"]),
    )  # fmt: skip
    # Black for 1 s, then the test pattern: 10 % and 1/3 of 2.5 s are black, 2/3 is not.
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=black:s={W}x{H}:r=10:d=1", "-f", "lavfi", "-i",
        f"{SRC}:d=1.5", "-filter_complex", "[0][1]concat=n=2:v=1:a=0", *h264, "-g", "5",
        str(p["black.mp4"]),
    )  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "smptebars=s=64x48", "-frames:v", "1", str(p["cover.png"]))
    _ffmpeg(
        "-i", str(p["long.mp4"]), "-i", str(p["cover.png"]), "-map", "0:v", "-map", "1:v",
        "-c:v:0", "copy", "-c:v:1", "png", "-disposition:v:1", "attached_pic",
        str(p["covered.mp4"]),
    )  # fmt: skip
    _ffmpeg("-i", str(p["clip.mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=90",
            str(p["rotated.mp4"]))  # fmt: skip
    sine = ["-f", "lavfi", "-i", "sine=f=440:d=1,volume=0.8"]
    _ffmpeg(
        *sine, "-i", str(p["cover.png"]), "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame",
        "-c:v", "png", "-disposition:v:0", "attached_pic", "-id3v2_version", "3",
        "-metadata", "title=Test Tone", "-metadata", "artist=previewer", str(p["cover.mp3"]),
    )  # fmt: skip
    # A tone that fades in: the waveform is low on the left, high on the right.
    fade = ["-f", "lavfi", "-i", "sine=f=440:d=1,volume=6,afade=t=in:d=1"]
    _ffmpeg(*fade, str(p["tone.wav"]))
    _ffmpeg(*fade, "-c:a", "libvorbis", str(p["tone.ogg"]))
    _ffmpeg(*fade, str(p["tone.flac"]))
    _ffmpeg(*fade, "-c:a", "libopus", str(p["tone.opus"]))
    _ffmpeg(*fade, "-c:a", "libopus", str(p["voice.webm"]))
    # A moov-at-start MP4 (cut by the test: ffprobe reads the index, the frames are missing).
    _ffmpeg("-f", "lavfi", "-i", f"{SRC}:d=2", *h264, "-movflags", "+faststart",
            str(p["stream.mp4"]))  # fmt: skip
    return p


def _stddev(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).stddev[0])


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("clip.mp4", "video/mp4"),
        ("clip.mkv", "video/x-matroska"),
        ("clip.webm", "video/webm"),
        ("clip.avi", "video/x-msvideo"),
        ("clip.mov", "video/quicktime"),
        ("clip.wmv", "video/x-ms-asf"),
        ("clip.ts", "video/mp2t"),
        ("clip.m2v", "video/mpeg"),  # an elementary stream: the mpegvideo demuxer, not mpeg
    ],
)
def test_video_containers(media: dict[str, Path], tmp_path: Path, name: str, mime: str) -> None:
    assert sniff(media[name]) == mime
    (preview,) = previewer.convert(media[name], out_dir=tmp_path, sizes=[64])
    assert preview.converter == "video-ffmpeg"
    image = check_png(preview.path, expected_size=(64, 48))
    assert image.mode == "RGB"
    assert _stddev(image) > 30  # the test pattern, not a grey or black frame


def test_black_opening_gives_a_non_uniform_poster(media: dict[str, Path]) -> None:
    image = previewer.render(media["black.mp4"], size=W)
    assert image.size == (W, H)
    assert _stddev(image) > 30


def test_attached_cover_is_page_one(media: dict[str, Path], tmp_path: Path) -> None:
    previews = previewer.convert(media["covered.mp4"], out_dir=tmp_path, sizes=[256], pages="1-2")
    assert [(p.page, p.width, p.height) for p in previews] == [(1, 64, 48), (2, W, H)]
    with Image.open(previews[0].path) as cover:
        r, g, b = cover.convert("RGB").getpixel((4, 10))  # smptebars: grey-white bar at left
        assert min(r, g, b) > 150
    info = previewer.info(media["covered.mp4"])
    assert info.metadata["has_cover"] is True and info.metadata["poster"] == "cover"
    assert info.pages == 4  # the cover, then the 3 frames of a 3 s clip


def test_pages_are_different_keyframes(media: dict[str, Path], tmp_path: Path) -> None:
    proc = run_previewer(
        "convert", media["long.mp4"], "-o", tmp_path, "-p", "1-3", "-s", "96", "--json", text=True
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["page"] for o in result["outputs"]] == [1, 2, 3]
    frames = [Image.open(o["path"]).convert("RGB") for o in result["outputs"]]
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert mean_difference(frames[a], frames[b]) > 3, (a, b)


def test_info_json_shows_duration_codec_dimensions(media: dict[str, Path]) -> None:
    proc = run_previewer("info", media["long.mp4"], "--json", text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["converter"] == "video-ffmpeg" and info["pages"] == 3
    # Raster units: the frames' own size (a small video is not enlarged).
    assert info["page_sizes"] == [[W, H]] * 3 and info["units"] == "px"
    meta = info["metadata"]
    assert abs(meta["duration"] - 3.0) < 0.2
    assert meta["video_codec"] in ("h264", "mpeg4") and meta["audio_codec"] == "aac"
    assert (meta["width"], meta["height"], meta["frame_rate"]) == (W, H, 10.0)
    assert meta["rotation"] == 0 and meta["has_cover"] is False


def test_rotated_video_gives_a_portrait_preview(media: dict[str, Path], tmp_path: Path) -> None:
    (preview,) = previewer.convert(media["rotated.mp4"], out_dir=tmp_path, sizes=[256])
    assert (preview.width, preview.height) == (H, W)
    meta = previewer.info(media["rotated.mp4"]).metadata
    assert meta["rotation"] in (90, 270)
    assert (meta["display_width"], meta["display_height"]) == (H, W)
    assert (meta["width"], meta["height"]) == (W, H)


def test_mp3_cover_art_is_the_preview(media: dict[str, Path], tmp_path: Path) -> None:
    (preview,) = previewer.convert(media["cover.mp3"], out_dir=tmp_path, sizes=[32])
    assert preview.converter == "audio-ffmpeg"
    image = check_png(preview.path, expected_size=(32, 24))
    assert _stddev(image) > 30  # colour bars
    meta = previewer.info(media["cover.mp3"]).metadata
    assert meta["preview"] == "cover" and meta["audio_codec"] == "mp3"
    assert (meta["title"], meta["artist"]) == ("Test Tone", "previewer")
    assert meta["sample_rate"] == 44100 and meta["channels"] == 1


@pytest.mark.parametrize(
    ("name", "codec"),
    [("tone.wav", "pcm_s16le"), ("tone.ogg", "vorbis"), ("tone.flac", "flac"),
     ("tone.opus", "opus"), ("voice.webm", "opus")],
)  # fmt: skip
def test_waveform(media: dict[str, Path], tmp_path: Path, name: str, codec: str) -> None:
    (preview,) = previewer.convert(media[name], out_dir=tmp_path, sizes=[256])
    # An audio-only WebM is sniffed as video/webm and previewed as audio by the video converter.
    assert preview.converter == ("video-ffmpeg" if name.endswith(".webm") else "audio-ffmpeg")
    image = check_png(preview.path, expected_size=(256, 64))
    assert image.mode == "RGBA"
    alpha = image.getchannel("A")
    # The fade-in: the drawn height grows from left to right.
    left = alpha.crop((8, 0, 40, 64)).getbbox()
    right = alpha.crop((216, 0, 248, 64)).getbbox()
    assert right is not None and right[3] - right[1] > 40
    assert left is None or left[3] - left[1] < right[3] - right[1]
    r, g, b, _ = image.getpixel((240, 32))
    assert b > r and b > 120  # blue, drawn opaque
    meta = previewer.info(media[name]).metadata
    assert meta["audio_codec"] == codec and meta["preview"] == "waveform"
    assert abs(meta["duration"] - 1.0) < 0.1


def test_frame_over_the_pixel_budget_is_refused_before_decoding(media: dict[str, Path]) -> None:
    with pytest.raises(LimitExceededError, match=f"{W}x{H}"):
        previewer.info(media["clip.mp4"], limits=previewer.Limits(max_pixels=W * H - 1))


def test_truncated_mp4_is_bad_input(media: dict[str, Path], tmp_path: Path) -> None:
    data = media["stream.mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + 200])  # the index, then 200 bytes of frames
    proc = run_previewer("convert", "cut.mp4", "-o", "out", cwd=tmp_path, text=True)
    assert proc.returncode == 5, proc.stderr
    assert "error: cut.mp4: no decodable video frame (" in proc.stderr
    assert "partial file" in proc.stderr and str(tmp_path) not in proc.stderr
    # The index is missing (moov at the end, cut away): ffprobe's reason, without paths.
    whole = media["clip.mp4"].read_bytes()
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="moov atom not found") as excinfo:
        previewer.convert(headless, out_dir=tmp_path / "out")
    assert "headless.mp4" in str(excinfo.value) and str(tmp_path) not in excinfo.value.message


def test_empty_mp4_is_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    proc = run_previewer("convert", empty, "-o", tmp_path / "out", text=True)
    assert proc.returncode == 5 and "empty.mp4" in proc.stderr and "empty" in proc.stderr


def test_hls_playlist_named_mp4_opens_nothing(tmp_path: Path) -> None:
    from previewer.budgets import Limits
    from previewer.converters.video import VideoConverter
    from previewer.plugin import ConvertContext

    secret = tmp_path / "segment.ts"
    secret.write_text(SECRET)
    out = tmp_path / "out"
    with Listener() as listener:
        playlist = tmp_path / "movie.mp4"
        playlist.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n"
            f"#EXTINF:10,\nfile://{secret}\n#EXTINF:10,\n{secret}\n"
            f"#EXTINF:10,\n{listener.url('/seg.ts')}\n#EXT-X-ENDLIST\n"
        )
        assert sniff(playlist) == "application/vnd.apple.mpegurl"  # never a video type
        proc = run_previewer("convert", playlist, "-o", out, "--json", text=True)
        assert proc.returncode == 3, proc.stderr  # no converter claims playlists
        forced = run_previewer(
            "convert", playlist, "-o", out, "--converter", "video-ffmpeg", text=True
        )
        assert forced.returncode == 5
        assert (
            "movie.mp4: the content is application/vnd.apple.mpegurl, not a video container"
            in forced.stderr
        )
        # Even if content sniffing had said MP4, the pinned demuxer refuses the playlist.
        work = tmp_path / "work"
        work.mkdir()
        ctx = ConvertContext(limits=Limits(), mime="video/mp4", _workdir=lambda: work)
        with pytest.raises(InputError, match="not a readable media file"):
            VideoConverter().open(playlist, ctx)
    assert listener.connections == []
    produced = [p for p in tmp_path.rglob("*") if p.is_file() and p != secret]
    assert all(SECRET.encode() not in p.read_bytes() for p in produced)
    assert SECRET not in proc.stdout + proc.stderr + forced.stdout + forced.stderr


def test_mpeg_ts_sniffing_needs_aligned_sync_bytes() -> None:
    from previewer.mime import sniff_bytes

    packet = b"\x47" + bytes(187)
    assert sniff_bytes(packet * 4) == "video/mp2t"
    assert sniff_bytes((bytes(4) + packet) * 4) == "video/mp2t"  # M2TS: 192-byte packets
    assert sniff_bytes(b"G" + b"plain text, not a transport stream. " * 20) != "video/mp2t"


def test_missing_ffmpeg_is_reported_with_an_install_hint(tmp_path: Path) -> None:
    # previewer converters in a process whose PATH has python but no ffmpeg.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = clean_env(PATH=str(bindir))
    proc = subprocess.run(
        [sys.executable, "-m", "previewer", "converters"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    for name in ("video-ffmpeg", "audio-ffmpeg"):
        (line,) = [i for i, text in enumerate(lines) if name in text]
        block = "\n".join(lines[line : line + 4])
        assert "apt-get install ffmpeg" in block, block
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(64))
    converted = subprocess.run(
        [sys.executable, "-m", "previewer", "convert", str(clip), "-o", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert converted.returncode == 4 and "apt-get install ffmpeg" in converted.stderr
    assert os.environ.get("PATH") != env["PATH"]
